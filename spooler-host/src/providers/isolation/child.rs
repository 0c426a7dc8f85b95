//! The child's side: `spooler-host run-provider`, the host's own binary run again to hold one
//! isolated provider instance.
//!
//! The host hands over three descriptors: the calls socket ([`CALLS_FD`]), the events socket
//! ([`EVENTS_FD`]) and the content file ([`CONTENT_FD`]). The child loads the library with the
//! host's own loader (the same checks), reads the `OPEN` frame with the instance's
//! configuration, opens the instance through the library's entry point exactly as the host
//! would, and then answers calls one at a time until the host closes the calls socket. The
//! provider's `Host` services and its log records go back as events, from whichever thread
//! the provider uses them on. Nothing here catches a native fault: dying is this process's
//! job, and the host's to notice.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use parking_lot::Mutex;
use provider_abi::abi_stable::sabi_trait::TD_Opaque;
use provider_abi::abi_stable::std_types::{RArc, RSlice, RStr, RString};
use provider_abi::hook::HookMessage;
use provider_abi::host::{HostServices, HostServices_TO, NoticeAbi, ProviderStateAbi};
use provider_abi::library::OpenArgs;
use provider_abi::preprocessor::PreprocessorObject;
use provider_abi::transport::TransportObject;
use provider_abi::{Envelope, HookObject, MessageRef, ProviderError, ProviderKind, ProviderState};

use super::calls;
use super::content::SharedContent;
use super::wire::{read_frame, write_frame, Decoder, Encoder, Malformed, MAX_FRAME};
use crate::providers::loader;

/// The calls socket in the child.
pub const CALLS_FD: i32 = 3;
/// The events socket in the child.
pub const EVENTS_FD: i32 = 4;
/// The content file in the child.
pub const CONTENT_FD: i32 = 5;

/// What the host tells the child on its command line.
pub struct RunnerArgs {
    /// The library file.
    pub library: PathBuf,
    /// The provider's kind.
    pub kind: ProviderKind,
    /// The provider's name in the library's manifest.
    pub provider: String,
    /// The instance's name.
    pub instance: String,
    /// The host's log level, so that the provider does not format what the host drops.
    pub log_level: log::LevelFilter,
}

/// The events socket, shared by every thread of the provider.
#[derive(Clone)]
struct Events(Arc<Mutex<UnixStream>>);

impl Events {
    fn send(&self, frame: Encoder) {
        // A host that is gone takes this process with it (PR_SET_PDEATHSIG); nothing to do.
        write_frame(&mut *self.0.lock(), &frame.into_bytes()).ok();
    }
}

impl HostServices for Events {
    fn notify(&self, notice: NoticeAbi) {
        if let Ok(notice) = notice.as_enum() {
            let mut frame = Encoder::new(calls::NOTICE);
            frame.notice(*notice);
            self.send(frame);
        }
    }

    fn set_status(&self, state: ProviderStateAbi, text: RString) {
        let mut frame = Encoder::new(calls::STATUS);
        frame
            .state(state.as_enum().copied().unwrap_or(ProviderState::Error))
            .str(&text);
        self.send(frame);
    }
}

/// The child's logger: every record goes to the host, which logs it as its own.
struct Forwarder(Events);

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut frame = Encoder::new(calls::LOG);
        frame
            .u8(record.level() as u8)
            .str(record.target())
            .str(&record.args().to_string());
        self.0.send(frame);
    }

    fn flush(&self) {}
}

/// The opened instance.
enum Instance {
    Transport(TransportObject),
    Preprocessor(PreprocessorObject),
    Hook(HookObject),
}

/// Runs the child until the host closes the calls socket.
pub fn serve(args: RunnerArgs) -> ExitCode {
    // SAFETY: the host starts this mode with these descriptors open and owned by nobody else
    // (providers::isolation::proxy); nothing else in this process uses them.
    let (calls_socket, events, content) = unsafe {
        (
            UnixStream::from_raw_fd(CALLS_FD),
            UnixStream::from_raw_fd(EVENTS_FD),
            File::from_raw_fd(CONTENT_FD),
        )
    };
    // Whatever the provider starts (a helper program) must not inherit them: a process
    // holding the calls socket would keep the host from seeing this one die.
    for fd in [CALLS_FD, EVENTS_FD, CONTENT_FD] {
        // SAFETY: fcntl on descriptors this process owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let events = Events(Arc::new(Mutex::new(events)));
    if log::set_boxed_logger(Box::new(Forwarder(events.clone()))).is_ok() {
        log::set_max_level(args.log_level);
    }
    match run(&args, calls_socket, events, content) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            // Seen by the host on this process's standard error, with the exit code.
            eprintln!("{}: {why}", args.instance);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunnerArgs, socket: UnixStream, events: Events, content: File) -> Result<(), String> {
    let mut content = SharedContent::open(content).map_err(|e| format!("the content file: {e}"))?;
    let mut reader = BufReader::new(socket.try_clone().map_err(|e| e.to_string())?);
    let mut writer = socket;
    let mut frame = Vec::new();
    let opened = match read_frame(&mut reader, &mut frame, MAX_FRAME) {
        Ok(true) if frame.first() == Some(&calls::OPEN) => {
            let config = Decoder::new(&frame[1..])
                .str()
                .map_err(|Malformed(why)| why)?
                .to_owned();
            open(args, config, events)
        }
        Ok(true) => return Err("the host's first call was not `open`".into()),
        Ok(false) => return Ok(()),
        Err(error) => return Err(format!("reading the calls socket: {error}")),
    };
    let mut instance = match opened {
        Ok(instance) => {
            reply(&mut writer, Ok(Encoder::new(calls::OK)))?;
            instance
        }
        Err(error) => return reply(&mut writer, Err(error)),
    };
    loop {
        match read_frame(&mut reader, &mut frame, MAX_FRAME) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(error) => return Err(format!("reading the calls socket: {error}")),
        }
        let (&tag, arguments) = frame.split_first().ok_or("an empty call")?;
        let answer = answer(&mut instance, tag, Decoder::new(arguments), &mut content)
            .map_err(|Malformed(why)| format!("a malformed {} call: {why}", calls::name(tag)))?;
        reply(&mut writer, answer)?;
    }
}

fn reply(writer: &mut UnixStream, answer: Result<Encoder, ProviderError>) -> Result<(), String> {
    let frame = answer.unwrap_or_else(|error| {
        let mut frame = Encoder::new(calls::FAILED);
        frame.error(&error);
        frame
    });
    write_frame(writer, &frame.into_bytes()).map_err(|e| format!("answering the host: {e}"))
}

/// Loads the library and opens the instance through its entry point.
fn open(args: &RunnerArgs, config: String, events: Events) -> Result<Instance, ProviderError> {
    let library = loader::load_file(&args.library).map_err(|refusal| {
        ProviderError::configuration(format!("{}: {refusal}", args.library.display()))
    })?;
    let found = library
        .providers()
        .any(|(kind, info)| kind == args.kind && info.name == args.provider);
    if !found {
        return Err(ProviderError::configuration(format!(
            "{} offers no {} provider `{}`",
            args.library.display(),
            args.kind,
            args.provider
        )));
    }
    let open_args = OpenArgs {
        name: args.provider.as_str().into(),
        instance: args.instance.as_str().into(),
        config: config.into(),
        host: HostServices_TO::from_ptr(RArc::new(events), TD_Opaque),
    };
    let root = library.root;
    match args.kind {
        ProviderKind::Transport => root.open_transport()(open_args)
            .into_result()
            .map(Instance::Transport),
        ProviderKind::Preprocessor => root.open_preprocessor()(open_args)
            .into_result()
            .map(Instance::Preprocessor),
        ProviderKind::Hook => root.open_hook()(open_args)
            .into_result()
            .map(Instance::Hook),
        kind => Err(ProviderError::configuration(format!(
            "a {kind} cannot run in a process of its own"
        ))),
    }
}

/// Runs one call; `Err` only when the frame does not read.
fn answer(
    instance: &mut Instance,
    tag: u8,
    mut arguments: Decoder<'_>,
    content: &mut SharedContent,
) -> Result<Result<Encoder, ProviderError>, Malformed> {
    let mut ok = Encoder::new(calls::OK);
    let result = match (instance, tag) {
        (Instance::Transport(transport), calls::ADDRESS_TYPES) => {
            transport.address_types().into_result().map(|types| {
                ok.strings(&types);
            })
        }
        (Instance::Preprocessor(preprocessor), calls::ADDRESS_TYPES) => {
            preprocessor.address_types().into_result().map(|types| {
                ok.strings(&types);
            })
        }
        (Instance::Transport(transport), calls::SUBMIT) => {
            let (envelope, content) = message_of(&mut arguments, content)?;
            let recipients = arguments.addresses()?;
            let message = MessageRef {
                envelope: &envelope,
                content: RSlice::from_slice(content),
            };
            transport
                .submit(message, RSlice::from_slice(&recipients))
                .into_result()
                .map(|outcomes| {
                    ok.outcomes(&outcomes);
                })
        }
        (Instance::Transport(transport), calls::PULL) => {
            transport.pull().into_result().map(|messages| {
                ok.inbound(&messages);
            })
        }
        (Instance::Transport(transport), calls::ACKNOWLEDGE) => {
            let source_id = arguments.str()?;
            transport
                .acknowledge(RStr::from_str(source_id))
                .into_result()
        }
        (Instance::Transport(transport), calls::FLUSH) => transport.flush().into_result(),
        (Instance::Transport(transport), calls::IS_ONLINE) => {
            transport.is_online().into_result().map(|online| {
                ok.bool(online);
            })
        }
        (Instance::Transport(transport), calls::POLL_INTERVAL) => {
            transport.poll_interval_secs().into_result().map(|secs| {
                ok.optional_u32(secs.into_option());
            })
        }
        (Instance::Transport(transport), calls::DELIVERS_PER_DOMAIN) => transport
            .delivers_per_domain()
            .into_result()
            .map(|per_domain| {
                ok.bool(per_domain);
            }),
        (Instance::Preprocessor(preprocessor), calls::PROCESS) => {
            let (envelope, content) = message_of(&mut arguments, content)?;
            let message = MessageRef {
                envelope: &envelope,
                content: RSlice::from_slice(content),
            };
            preprocessor.process(message).into_result().map(|result| {
                ok.preprocessed(&result);
            })
        }
        (Instance::Hook(hook), calls::RUN) => {
            let (envelope, content) = message_of(&mut arguments, content)?;
            let direction = arguments.direction()?;
            let folder = arguments.str()?;
            let message = HookMessage {
                direction,
                folder: RStr::from_str(folder),
                message: MessageRef {
                    envelope: &envelope,
                    content: RSlice::from_slice(content),
                },
            };
            hook.run(message).into_result().map(|action| {
                ok.hook_action(&action);
            })
        }
        (_, tag) => return Err(Malformed(format!("{} for this kind", calls::name(tag)))),
    };
    Ok(result.map(|()| ok))
}

/// A call's message: its envelope from the frame, its content (by the length the frame
/// names) from the shared file.
fn message_of<'c>(
    arguments: &mut Decoder<'_>,
    content: &'c mut SharedContent,
) -> Result<(Envelope, &'c [u8]), Malformed> {
    let envelope = arguments.envelope()?;
    let length = arguments.u64()? as usize;
    let content = content
        .read(length)
        .map_err(|error: io::Error| Malformed(format!("the content: {error}")))?;
    Ok((envelope, content))
}
