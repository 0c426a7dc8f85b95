//! The host's side of an isolated instance: a child process per opened instance, and the
//! provider-abi objects that stand for it.
//!
//! [`IsolatedTransport`], [`IsolatedPreprocessor`] and [`IsolatedHook`] implement the same
//! `#[sabi_trait]` interfaces a library's objects do, so workers, the queue manager and the
//! inbound manager call them like any instance and cannot tell the difference. Each call is a
//! frame on the calls socket and a reply; notices, status changes and log records come on the
//! events socket, read by a thread per child and handed to the instance's host services.
//!
//! A child that dies in a call (a signal, `abort`, `exit`, the OOM killer, its
//! `memory_limit`) fails that call with an error of kind `Panicked`, naming the signal or exit
//! code, the call and its message; its worker then drops this object and starts a fresh
//! child after the usual backoff. The message gets a crash mark in the quarantine first, so
//! that the queue manager sees it when it handles the answer.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use parking_lot::Mutex;
use provider_abi::abi_stable::sabi_trait::TD_Opaque;
use provider_abi::abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec};
use provider_abi::hook::{HookActionAbi, HookFfi, HookFfi_TO, HookObject};
use provider_abi::host::{HostObject, NoticeAbi, ProviderStateAbi};
use provider_abi::preprocessor::{
    PreprocessedAbi, PreprocessorFfi, PreprocessorFfi_TO, PreprocessorObject,
};
use provider_abi::transport::{
    RecipientOutcomeAbi, TransportFfi, TransportFfi_TO, TransportObject,
};
use provider_abi::{
    Address, ErrorKind, HookMessage, InboundMessage, MessageId, MessageRef, ProviderError,
    ProviderKind,
};

use super::calls;
use super::child::{CALLS_FD, CONTENT_FD, EVENTS_FD};
use super::content::SharedContent;
use super::wire::{read_frame, write_frame, Decoder, Encoder, Malformed, MAX_EVENT, MAX_FRAME};
use crate::observe::metrics::{metrics, ByInstance};
use crate::providers::quarantine::Quarantine;
use crate::providers::status::StatusTable;

/// What every child of one isolated instance is started with.
pub struct Isolation {
    /// The library file.
    pub library: PathBuf,
    /// The provider's kind.
    pub kind: ProviderKind,
    /// The provider's name in the library.
    pub provider: String,
    /// The instance's name.
    pub instance: String,
    /// The instance's configuration text.
    pub config: String,
    /// The cap on the child's data memory (`memory_limit`), in bytes.
    pub memory_limit: Option<u64>,
    /// The instance's call timeout: a child that does not answer within it is killed.
    pub timeout: Option<Duration>,
    /// Where the instance's row (state, child pids, restarts, faults) is kept.
    pub status: StatusTable,
    /// Where crash marks go.
    pub quarantine: Quarantine,
}

/// How many of a child's last lines on standard error are kept for the report of its death.
const LAST_WORDS: usize = 5;

/// The longest line of a child's output logged as one; longer ones are cut into pieces.
const LONGEST_LINE: u64 = 4096;

/// A reply buffer larger than this is let go before the next call.
const LARGE_FRAME: usize = 4 << 20;

/// What a child wrote on its standard error, last lines first to go.
#[derive(Clone, Default)]
struct LastWords(Arc<Mutex<VecDeque<String>>>);

/// One running child.
struct Child {
    isolation: Arc<Isolation>,
    process: std::process::Child,
    calls: UnixStream,
    content: SharedContent,
    frame: Vec<u8>,
    last_words: LastWords,
    /// Closed when the child's standard error ends.
    stderr_closed: Receiver<()>,
    /// Set once the child is gone: every later call fails with it.
    gone: Option<ProviderError>,
}

impl Child {
    /// Starts a child and opens the instance in it.
    fn start(isolation: &Arc<Isolation>, host: HostObject) -> Result<Child, ProviderError> {
        let instance = &isolation.instance;
        let cannot = |what: &str, error: io::Error| {
            ProviderError::temporary(format!(
                "{instance}: cannot start its process ({what}: {error})"
            ))
        };
        let (calls, calls_child) = UnixStream::pair().map_err(|e| cannot("socket", e))?;
        let (events, events_child) = UnixStream::pair().map_err(|e| cannot("socket", e))?;
        let content = SharedContent::create().map_err(|e| cannot("content file", e))?;
        let content_child = content
            .file()
            .try_clone()
            .map_err(|e| cannot("content file", e))?;
        let handed = [
            above_stdio(calls_child.as_raw_fd()).map_err(|e| cannot("descriptor", e))?,
            above_stdio(events_child.as_raw_fd()).map_err(|e| cannot("descriptor", e))?,
            above_stdio(content_child.as_raw_fd()).map_err(|e| cannot("descriptor", e))?,
        ];
        let executable = std::env::current_exe().map_err(|e| cannot("its executable", e))?;
        let mut command = Command::new(executable);
        command
            .arg("run-provider")
            .arg("--library")
            .arg(&isolation.library)
            .arg("--kind")
            .arg(isolation.kind.to_string())
            .arg("--provider")
            .arg(&isolation.provider)
            .arg("--instance")
            .arg(instance)
            .arg("--log-level")
            .arg(log::max_level().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let targets = [CALLS_FD, EVENTS_FD, CONTENT_FD];
        let raw: Vec<i32> = handed.iter().map(AsRawFd::as_raw_fd).collect();
        let memory_limit = isolation.memory_limit;
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls between fork and exec (dup2, prctl, getppid,
        // setrlimit), on descriptors that stay open in the parent until spawn returns. std runs
        // this after it has put the standard descriptors in place.
        unsafe {
            command.pre_exec(move || {
                // What a provider prints on standard output is logged like its standard
                // error (std has set up the pipe on 2 by now).
                if libc::dup2(2, 1) < 0 {
                    return Err(io::Error::last_os_error());
                }
                for (&from, &to) in raw.iter().zip(&targets) {
                    if libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                die_with_parent(parent)?;
                if let Some(limit) = memory_limit {
                    let limit = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut process = command.spawn().map_err(|e| cannot("spawn", e))?;
        drop((handed, calls_child, events_child, content_child));
        let pid = process.id();
        let last_words = LastWords::default();
        let stderr_closed =
            keep_last_words(process.stderr.take(), instance, pid, last_words.clone());
        relay_events(events, instance, host);
        isolation.status.process_started(instance, pid);
        // Each read and write waits at most the call's timeout (a child that sends a byte
        // now and then stays alive; the watchdog abandons its call meanwhile).
        calls
            .set_read_timeout(isolation.timeout)
            .and_then(|()| calls.set_write_timeout(isolation.timeout))
            .map_err(|e| cannot("socket", e))?;
        let mut child = Child {
            isolation: Arc::clone(isolation),
            process,
            calls,
            content,
            frame: Vec::new(),
            last_words,
            stderr_closed,
            gone: None,
        };
        let mut open = Encoder::new(calls::OPEN);
        open.str(&isolation.config);
        child.ask(open, None, None, |_| Ok(())).into_result()?;
        log::info!("{instance}: runs isolated in process {pid}");
        Ok(child)
    }

    /// Makes one call and reads its reply with `read`.
    fn ask<T>(
        &mut self,
        request: Encoder,
        content: Option<&[u8]>,
        message: Option<MessageId>,
        read: impl FnOnce(&mut Decoder<'_>) -> Result<T, Malformed>,
    ) -> RResult<T, ProviderError> {
        if let Some(gone) = &self.gone {
            return RResult::RErr(gone.clone());
        }
        // A large reply (a pull of big messages) is not kept for the child's whole life.
        if self.frame.capacity() > LARGE_FRAME {
            self.frame = Vec::new();
        }
        let request = request.into_bytes();
        let tag = request[0];
        if let Some(content) = content {
            if let Err(error) = self.content.write(content) {
                return RResult::RErr(ProviderError::temporary(format!(
                    "{}: cannot hand the message to its process: {error}",
                    self.isolation.instance
                )));
            }
        }
        // A child that died between calls (killed from outside, or a thread of its own that
        // faulted) is not this call's fault, nor its message's.
        if matches!(self.process.try_wait(), Ok(Some(_)))
            || write_frame(&mut self.calls, &request).is_err()
        {
            return RResult::RErr(self.died(tag, message, Failure::EndedBefore));
        }
        let failure = match read_frame(&mut self.calls, &mut self.frame, MAX_FRAME) {
            Ok(true) => {
                let read = match self.frame.split_first() {
                    Some((&calls::OK, reply)) => read(&mut Decoder::new(reply)).map(Ok),
                    Some((&calls::FAILED, reply)) => Decoder::new(reply).error().map(Err),
                    Some((other, _)) => Err(Malformed(format!("a reply tagged {other}"))),
                    None => Err(Malformed("an empty reply".into())),
                };
                match read {
                    Ok(result) => return result.into(),
                    Err(Malformed(why)) => Failure::Malformed(why),
                }
            }
            Ok(false) => Failure::Ended,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Failure::TimedOut
            }
            Err(_) => Failure::Ended,
        };
        RResult::RErr(self.died(tag, message, failure))
    }

    /// Kills what is left of the child, reports how it ended, marks the call's message and
    /// returns the error that call fails with.
    fn died(&mut self, tag: u8, message: Option<MessageId>, failure: Failure) -> ProviderError {
        let isolation = Arc::clone(&self.isolation);
        let instance = isolation.instance.as_str();
        let pid = self.process.id();
        self.process.kill().ok();
        let status = self.process.wait();
        // The last words are complete once standard error closes (or a moment passes, if
        // something the provider started still holds it open).
        self.stderr_closed.recv_timeout(Duration::from_secs(1)).ok();
        let said: Vec<String> = self.last_words.0.lock().iter().cloned().collect();
        let how = match (&failure, status) {
            (Failure::EndedBefore, Ok(status)) => {
                format!("had ended ({}) before", describe(status))
            }
            (Failure::EndedBefore, Err(error)) => format!("had ended ({error}) before"),
            (Failure::TimedOut, _) => format!(
                "did not answer within {:?} (its timeout) and was killed during",
                isolation.timeout.unwrap_or_default()
            ),
            (Failure::Malformed(why), _) => {
                format!("answered with a malformed frame ({why}) and was killed during")
            }
            (Failure::Ended, Ok(status)) => format!("{} during", describe(status)),
            (Failure::Ended, Err(error)) => {
                format!("ended (its status is unknown: {error}) during")
            }
        };
        let call = match message {
            Some(id) => format!("{} of message {id}", calls::name(tag)),
            None => calls::name(tag).to_owned(),
        };
        let mut text = format!("{instance}: its process (pid {pid}) {how} {call}");
        if let Some(limit) = isolation.memory_limit {
            if said
                .iter()
                .any(|line| line.contains("memory allocation of"))
            {
                text += &format!(" after reaching its memory_limit of {limit} bytes");
            }
        }
        if let Some(last) = said.last() {
            text += &format!(" (its last words: {last})");
        }
        // A call that timed out may be slow, not poisonous: only deaths mark the message.
        if let (Some(id), Failure::Ended | Failure::Malformed(_)) = (message, &failure) {
            let crashes = isolation.quarantine.record(instance, Some(id));
            text += &format!(
                "; crash {crashes} of {} before message {id} is held",
                isolation.quarantine.threshold()
            );
        }
        log::error!("{text}");
        isolation.status.process_ended(instance, pid, Some(&text));
        // A child killed for its timeout was slow, not crashed; its replacement is counted
        // as a restart by the worker that opens it.
        if !matches!(failure, Failure::TimedOut) {
            metrics()
                .provider_panics
                .get_or_create(&ByInstance {
                    instance: instance.to_owned(),
                })
                .inc();
        }
        let error = ProviderError::new(ErrorKind::Panicked, text);
        self.gone = Some(error.clone());
        error
    }
}

/// How a call found the child gone.
enum Failure {
    /// The child had died before the call was made.
    EndedBefore,
    /// The calls socket ended: the child died in the call.
    Ended,
    /// No answer within the timeout.
    TimedOut,
    /// An answer this host cannot read.
    Malformed(String),
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.gone.is_some() {
            return;
        }
        // The end of the calls socket tells the child to drop its provider and exit; one that
        // does not within a moment is killed.
        self.calls.shutdown(std::net::Shutdown::Both).ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.process.kill().ok();
        self.process.wait().ok();
        self.isolation
            .status
            .process_ended(&self.isolation.instance, self.process.id(), None);
    }
}

/// `signal 11 (SIGSEGV)`, `exit code 0`.
fn describe(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!("was killed by signal {signal} ({})", signal_name(signal)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => format!("ended ({status})"),
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV, a memory access fault",
        libc::SIGABRT => "SIGABRT: it aborted",
        libc::SIGKILL => "SIGKILL: the OOM killer, its memory limit or an operator",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => "a signal",
    }
}

/// A duplicate of `fd` numbered above the descriptors the child gets, so that putting them in
/// place cannot overwrite one another.
fn above_stdio(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor we hold; the result is checked.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Called in the child before exec: the child gets SIGKILL when the host's thread that
/// started it ends, so no child outlives a host that died (even by SIGKILL).
#[cfg(target_os = "linux")]
fn die_with_parent(parent: u32) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe and have no memory arguments here.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_parent: u32) -> io::Result<()> {
    Ok(())
}

/// Reads the child's standard error on a thread: each line is logged, the last few kept.
/// The receiver is closed when standard error ends.
fn keep_last_words(
    stderr: Option<std::process::ChildStderr>,
    instance: &str,
    pid: u32,
    last_words: LastWords,
) -> Receiver<()> {
    let (closed, on_close) = bounded::<()>(0);
    let instance = instance.to_owned();
    let Some(stderr) = stderr else {
        return on_close;
    };
    thread::Builder::new()
        .name(format!("stderr {instance}"))
        .spawn(move || {
            // Bytes, not text: output that is not UTF-8 is shown with replacements, and the
            // pipe is drained to its end whatever comes (a provider writing to a closed pipe
            // would fail).
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut reader)
                    .take(LONGEST_LINE)
                    .read_until(b'\n', &mut line)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                log::warn!("{instance} (process {pid}) wrote: {line}");
                let mut words = last_words.0.lock();
                if words.len() == LAST_WORDS {
                    words.pop_front();
                }
                words.push_back(line);
            }
            drop(closed);
        })
        .expect("the system can start a thread");
    on_close
}

/// Hands the child's events to the instance's host services and its log records to the
/// host's logger, on a thread that ends with the events socket.
fn relay_events(events: UnixStream, instance: &str, host: HostObject) {
    let name = format!("events {instance}");
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut events = BufReader::new(events);
            let mut frame = Vec::new();
            while let Ok(true) = read_frame(&mut events, &mut frame, MAX_EVENT) {
                let Some((&tag, fields)) = frame.split_first() else {
                    continue;
                };
                let mut fields = Decoder::new(fields);
                match tag {
                    calls::NOTICE => {
                        if let Ok(Some(notice)) = fields.notice() {
                            host.notify(NoticeAbi::new(notice));
                        }
                    }
                    calls::STATUS => {
                        if let (Ok(state), Ok(text)) = (fields.state(), fields.str()) {
                            host.set_status(ProviderStateAbi::new(state), text.into());
                        }
                    }
                    calls::LOG => {
                        if let (Ok(level), Ok(target), Ok(message)) =
                            (fields.u8(), fields.str(), fields.str())
                        {
                            log_record(level, target, message);
                        }
                    }
                    _ => {}
                }
            }
        })
        .expect("the system can start a thread");
}

fn log_record(level: u8, target: &str, message: &str) {
    let level = match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{message}"))
            .build(),
    );
}

/// The message id a call is about, if the message has one yet (inbound mail has not).
fn about(message: &MessageRef<'_>) -> Option<MessageId> {
    Some(message.envelope.id).filter(|id| id.0 != 0)
}

fn with_message(tag: u8, message: &MessageRef<'_>) -> Encoder {
    let mut request = Encoder::new(tag);
    request
        .envelope(message.envelope)
        .u64(message.content.len() as u64);
    request
}

/// A transport instance in a child process.
pub struct IsolatedTransport(Mutex<Child>);

impl TransportFfi for IsolatedTransport {
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError> {
        let request = Encoder::new(calls::ADDRESS_TYPES);
        self.0
            .lock()
            .ask(request, None, None, |reply| reply.strings())
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: RSlice<'_, Address>,
    ) -> RResult<RVec<RecipientOutcomeAbi>, ProviderError> {
        let mut request = with_message(calls::SUBMIT, &message);
        request.addresses(&recipients);
        let content = Some(message.content.as_slice());
        self.0
            .get_mut()
            .ask(request, content, about(&message), |reply| reply.outcomes())
    }

    fn pull(&mut self) -> RResult<RVec<InboundMessage>, ProviderError> {
        let request = Encoder::new(calls::PULL);
        self.0
            .get_mut()
            .ask(request, None, None, |reply| reply.inbound())
    }

    fn acknowledge(&mut self, source_id: RStr<'_>) -> RResult<(), ProviderError> {
        let mut request = Encoder::new(calls::ACKNOWLEDGE);
        request.str(&source_id);
        self.0.get_mut().ask(request, None, None, |_| Ok(()))
    }

    fn flush(&mut self) -> RResult<(), ProviderError> {
        let request = Encoder::new(calls::FLUSH);
        self.0.get_mut().ask(request, None, None, |_| Ok(()))
    }

    fn is_online(&mut self) -> RResult<bool, ProviderError> {
        let request = Encoder::new(calls::IS_ONLINE);
        self.0
            .get_mut()
            .ask(request, None, None, |reply| reply.bool())
    }

    fn poll_interval_secs(&self) -> RResult<ROption<u32>, ProviderError> {
        let request = Encoder::new(calls::POLL_INTERVAL);
        self.0.lock().ask(request, None, None, |reply| {
            reply.optional_u32().map(Into::into)
        })
    }

    fn delivers_per_domain(&self) -> RResult<bool, ProviderError> {
        let request = Encoder::new(calls::DELIVERS_PER_DOMAIN);
        self.0.lock().ask(request, None, None, |reply| reply.bool())
    }
}

/// A preprocessor instance in a child process.
pub struct IsolatedPreprocessor(Mutex<Child>);

impl PreprocessorFfi for IsolatedPreprocessor {
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError> {
        let request = Encoder::new(calls::ADDRESS_TYPES);
        self.0
            .lock()
            .ask(request, None, None, |reply| reply.strings())
    }

    fn process(&mut self, message: MessageRef<'_>) -> RResult<PreprocessedAbi, ProviderError> {
        let request = with_message(calls::PROCESS, &message);
        let content = Some(message.content.as_slice());
        self.0
            .get_mut()
            .ask(request, content, about(&message), |reply| {
                reply.preprocessed()
            })
    }
}

/// A hook instance in a child process.
pub struct IsolatedHook(Mutex<Child>);

impl HookFfi for IsolatedHook {
    fn run(&mut self, message: HookMessage<'_>) -> RResult<HookActionAbi, ProviderError> {
        let mut request = with_message(calls::RUN, &message.message);
        request.direction(message.direction).str(&message.folder);
        let content = Some(message.message.content.as_slice());
        self.0
            .get_mut()
            .ask(request, content, about(&message.message), |reply| {
                reply.hook_action()
            })
    }
}

/// Opens a transport instance in a child process.
pub fn transport(
    isolation: &Arc<Isolation>,
    host: HostObject,
) -> Result<TransportObject, ProviderError> {
    let child = Child::start(isolation, host)?;
    Ok(TransportFfi_TO::from_value(
        IsolatedTransport(Mutex::new(child)),
        TD_Opaque,
    ))
}

/// Opens a preprocessor instance in a child process.
pub fn preprocessor(
    isolation: &Arc<Isolation>,
    host: HostObject,
) -> Result<PreprocessorObject, ProviderError> {
    let child = Child::start(isolation, host)?;
    Ok(PreprocessorFfi_TO::from_value(
        IsolatedPreprocessor(Mutex::new(child)),
        TD_Opaque,
    ))
}

/// Opens a hook instance in a child process.
pub fn hook(isolation: &Arc<Isolation>, host: HostObject) -> Result<HookObject, ProviderError> {
    let child = Child::start(isolation, host)?;
    Ok(HookFfi_TO::from_value(
        IsolatedHook(Mutex::new(child)),
        TD_Opaque,
    ))
}
