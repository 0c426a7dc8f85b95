//! Runs a provider through the host's contract without the host. Add it as a
//! dev-dependency, and call the check for your provider's kind from a test with your
//! library function (the one you pass to `export_library!`), the provider's name in it, and
//! a configuration. Each check says what broke, in words that say what the host needs.
//!
//! Providers are opened as the host opens them: through the library's exported entry points,
//! behind the same panic barrier, with a [`TestHost`] recording what they tell the host.
//!
//! - [`check_transport`]: one outcome per recipient for one and for several recipients, odd
//!   messages (no headers, an empty body, no content, bytes that are not UTF-8) answered and
//!   not panicked over, a second
//!   instance opened beside the first (the host opens one per `parallel`) and a reopen
//!   after the first is dropped (the host reopens after a fault).
//! - [`check_pull`]: inbound mail not removed by a pull, back after a reopen until it is
//!   acknowledged, and gone once it is.
//! - [`check_store`]: a submission durable across a reopen, due messages locked once until
//!   unlocked, a finished message moved to Sent Items, and folders paged with a cursor.
//! - [`check_preprocessor`]: one verdict the host knows per message, odd messages answered
//!   and not panicked over, changes that name only the message's own recipients, a second
//!   instance and a reopen.
//! - [`check_hook`]: one action the host knows per message, inbound and outbound, odd
//!   messages answered and not panicked over, moves that name a folder, a second instance and
//!   a reopen.
//!
//! For tests of your own, [`open_transport`], [`open_store`], [`open_preprocessor`] and
//! [`open_hook`] open a provider the same way, and [`submit`], [`process`] and [`run_hook`]
//! call it as the host does; [`message`] makes a message to hand them.
//!
//! For tests of code that drives providers (the host's own threads, a client), there are
//! doubles: [`MemoryStore`], a complete store in memory that a test can look into and make
//! fail, and [`ScriptedTransport`], a transport that answers as the test scripts and records
//! what it was asked. [`store_object`] and [`transport_object`] put them (or any [`Store`]
//! and [`Transport`]) behind the same panic barrier as a library's entry points, as the
//! objects the host holds.
//!
//! # Example
//!
//! A hook that moves mail from `boss@example.com` to a folder, checked against the contract
//! and then tried on a message, both through its library's entry points:
//!
//! ```
//! use provider_abi::headers::header;
//! use provider_abi::{
//!     export_library, Direction, Hook, HookAction, HookMessage, Library, OpenContext,
//!     ProviderError,
//! };
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     folder: String,
//! }
//!
//! struct Boss {
//!     folder: String,
//! }
//!
//! impl Hook for Boss {
//!     fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError> {
//!         let from_boss = header(&message.message.content, "From")
//!             .is_some_and(|from| from.contains("boss@example.com"));
//!         Ok(if from_boss && message.direction == Direction::Inbound {
//!             HookAction::MoveTo { folder: self.folder.as_str().into() }
//!         } else {
//!             HookAction::Leave
//!         })
//!     }
//! }
//!
//! fn library() -> Library {
//!     Library::new("hook-boss", "0.1.0").hook("boss", |context: &OpenContext| {
//!         let config: Config = context.config_as()?;
//!         Ok(Boss { folder: config.folder })
//!     })
//! }
//!
//! export_library!(library);
//!
//! // In a #[test]:
//! provider_testkit::check_hook(library, "boss", "folder = \"Boss\"").unwrap();
//!
//! let (mut hook, _host) = provider_testkit::open_hook(library, "boss", "folder = \"Boss\"").unwrap();
//! let mail = provider_testkit::message(&["LOCAL:me"], "From: boss@example.com\r\n\r\nNow.\r\n");
//! let action = provider_testkit::run_hook(&mut hook, Direction::Inbound, "Inbox", &mail);
//! assert_eq!(action, Ok(HookAction::MoveTo { folder: "Boss".into() }));
//!
//! let misspelt = provider_testkit::open_hook(library, "boss", "fodler = \"Boss\"").err().unwrap();
//! assert!(misspelt.message().contains("unknown field `fodler`"));
//! ```

use std::sync::{Arc, Mutex};

mod memory_store;
mod scripted;

pub use memory_store::MemoryStore;
pub use scripted::{Call, ScriptedTransport, Submission};

use provider_abi::abi_stable::sabi_trait::TD_Opaque;
use provider_abi::abi_stable::std_types::{RArc, ROption, RResult, RSlice, RStr, RString};
use provider_abi::export::{self, LibraryCell};
use provider_abi::hook::HookObject;
use provider_abi::host::{
    HostServices, HostServices_TO, LogLevel, LogRecord, LogSink, NoticeAbi, ProviderStateAbi,
};
use provider_abi::library::OpenArgs;
use provider_abi::preprocessor::PreprocessorObject;
use provider_abi::store::{
    Delivery, Finish, NewMessage, ShapeCell, StoreBatch, StoreObject, OUTBOX, SENT_ITEMS,
};
use provider_abi::transport::TransportObject;
use provider_abi::{
    Address, DeliveryState, Direction, Envelope, ErrorKind, HookAction, HookMessage, Library,
    MessageId, Notice, OpenContext, Preprocessed, ProviderError, ProviderState, Recipient,
    RecipientKind, RecipientOutcome, Store, StoredMessage, Timestamp, Transport,
};

/// What a provider told the host: its notices and status changes, in order.
#[derive(Clone, Default)]
pub struct TestHost {
    notices: Arc<Mutex<Vec<Notice>>>,
    statuses: Arc<Mutex<Vec<(ProviderState, String)>>>,
}

impl TestHost {
    /// The notices so far.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// The status changes so far.
    pub fn statuses(&self) -> Vec<(ProviderState, String)> {
        self.statuses.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl HostServices for TestHost {
    fn notify(&self, notice: NoticeAbi) {
        if let (Ok(mut notices), Ok(notice)) = (self.notices.lock(), notice.as_enum()) {
            notices.push(*notice);
        }
    }

    fn set_status(&self, state: ProviderStateAbi, text: RString) {
        if let (Ok(mut statuses), Ok(state)) = (self.statuses.lock(), state.as_enum()) {
            statuses.push((*state, text.into_string()));
        }
    }
}

extern "C" fn log_enabled(_level: LogLevel, _target: RStr<'_>) -> bool {
    true
}

extern "C" fn log_to_stderr(record: LogRecord<'_>) {
    eprintln!("[{}] {}", record.target, record.message);
}

/// Loads `library` as the host does (its `load` entry point, with a log sink printing to
/// standard error), ready to open providers.
fn loaded(library: fn() -> Library) -> Result<LibraryCell, ProviderError> {
    let cell = LibraryCell::new();
    let sink = LogSink {
        max_level: LogLevel::Debug,
        enabled: log_enabled,
        log: log_to_stderr,
    };
    export::load(&cell, sink, library).into_result()?;
    Ok(cell)
}

fn arguments(provider: &str, config: &str, host: &TestHost) -> OpenArgs {
    OpenArgs {
        name: provider.into(),
        instance: format!("{provider}-test").into(),
        config: config.into(),
        host: HostServices_TO::from_ptr(RArc::new(host.clone()), TD_Opaque),
    }
}

/// A library's entry point that opens one kind of provider: one of `export`'s `open_*`.
type EntryPoint<T> = fn(&LibraryCell, OpenArgs) -> RResult<T, ProviderError>;

/// Opens `provider` of `library` with `config` through `entry`, as the host does: the one
/// path every kind takes.
fn open<T>(
    library: fn() -> Library,
    provider: &str,
    config: &str,
    entry: EntryPoint<T>,
) -> Result<(T, TestHost), ProviderError> {
    let host = TestHost::default();
    let cell = loaded(library)?;
    let opened = entry(&cell, arguments(provider, config, &host)).into_result()?;
    Ok((opened, host))
}

/// Opens transport `provider` of `library` with `config`, as the host does.
pub fn open_transport(
    library: fn() -> Library,
    provider: &str,
    config: &str,
) -> Result<(TransportObject, TestHost), ProviderError> {
    open(library, provider, config, export::open_transport)
}

/// Opens store `provider` of `library` with `config`, as the host does.
pub fn open_store(
    library: fn() -> Library,
    provider: &str,
    config: &str,
) -> Result<(StoreObject, TestHost), ProviderError> {
    open(library, provider, config, export::open_store)
}

/// Opens preprocessor `provider` of `library` with `config`, as the host does.
pub fn open_preprocessor(
    library: fn() -> Library,
    provider: &str,
    config: &str,
) -> Result<(PreprocessorObject, TestHost), ProviderError> {
    open(library, provider, config, export::open_preprocessor)
}

/// Opens hook `provider` of `library` with `config`, as the host does.
pub fn open_hook(
    library: fn() -> Library,
    provider: &str,
    config: &str,
) -> Result<(HookObject, TestHost), ProviderError> {
    open(library, provider, config, export::open_hook)
}

/// The name an in-process provider has in its library.
const IN_PROCESS: &str = "in-process";

/// `store` as the host holds an open store: behind the panic barrier of a library's entry
/// points, so that a panic in it is an [`ErrorKind::Panicked`] error.
///
/// ```
/// use provider_abi::Timestamp;
/// use provider_testkit::{store_object, MemoryStore};
///
/// let memory = MemoryStore::new();
/// // What a host's opener returns, once per (re)open:
/// let open = move || store_object(memory.open());
/// let mut store = open();
/// assert!(store.next_due().into_result().unwrap().is_none());
/// ```
pub fn store_object<S: Store>(store: S) -> StoreObject {
    let library =
        Library::new(IN_PROCESS, env!("CARGO_PKG_VERSION")).store(IN_PROCESS, &[], once(store));
    in_process(library, export::open_store)
}

/// `transport` as the host holds an open transport: behind the panic barrier of a library's
/// entry points, so that a panic in it is an [`ErrorKind::Panicked`] error. See
/// [`ScriptedTransport`] for an example.
pub fn transport_object<T: Transport>(transport: T) -> TransportObject {
    let library = Library::new(IN_PROCESS, env!("CARGO_PKG_VERSION")).transport(
        IN_PROCESS,
        &[],
        once(transport),
    );
    in_process(library, export::open_transport)
}

/// A constructor that hands out `provider`, once.
fn once<P: Send + 'static>(
    provider: P,
) -> impl Fn(&OpenContext) -> Result<P, ProviderError> + Send + Sync + 'static {
    let provider = parking_lot::Mutex::new(Some(provider));
    move |_| Ok(provider.lock().take().expect("opened once"))
}

/// The provider of `library` opened by its entry point `open`, as the host opens one.
fn in_process<O>(library: Library, open: EntryPoint<O>) -> O {
    let arguments = arguments(IN_PROCESS, "", &TestHost::default());
    open(&LibraryCell::from(library), arguments)
        .into_result()
        .expect("an in-process provider opens")
}

/// Hands `message` to an open transport for all its recipients, as the host does; an
/// outcome this `provider-abi` does not know is an error.
pub fn submit(
    transport: &mut TransportObject,
    message: &StoredMessage,
) -> Result<Vec<RecipientOutcome>, ProviderError> {
    let addresses: Vec<Address> = message
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let outcomes = transport
        .submit(message.as_ref(), RSlice::from_slice(&addresses))
        .into_result()?;
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome
                .into_enum()
                .map_err(|_| ProviderError::permanent("an outcome this provider-abi does not know"))
        })
        .collect()
}

/// Hands `message` to an open preprocessor, as the host does; a verdict this
/// `provider-abi` does not know is an error.
pub fn process(
    preprocessor: &mut PreprocessorObject,
    message: &StoredMessage,
) -> Result<Preprocessed, ProviderError> {
    let verdict = preprocessor.process(message.as_ref()).into_result()?;
    verdict
        .into_enum()
        .map_err(|_| ProviderError::permanent("a verdict this provider-abi does not know"))
}

/// Runs an open hook on `message`, going `direction` and headed for `folder`, as the host
/// does; an action this `provider-abi` does not know is an error.
pub fn run_hook(
    hook: &mut HookObject,
    direction: Direction,
    folder: &str,
    message: &StoredMessage,
) -> Result<HookAction, ProviderError> {
    let action = hook
        .run(HookMessage {
            direction,
            folder: RStr::from_str(folder),
            message: message.as_ref(),
        })
        .into_result()?;
    action
        .into_enum()
        .map_err(|_| ProviderError::permanent("an action this provider-abi does not know"))
}

/// A message from `ann@example.com` to `recipients` (`TYPE:address`), with `content`.
pub fn message(recipients: &[&str], content: &str) -> StoredMessage {
    let recipients = recipients
        .iter()
        .map(|r| {
            Recipient::new(
                Address::parse(r).expect("a valid address"),
                RecipientKind::To,
            )
        })
        .collect();
    let mut envelope = Envelope::new(
        Address::parse("ann@example.com").expect("a valid address"),
        recipients,
    );
    envelope.id = MessageId(1);
    StoredMessage {
        envelope,
        folder: OUTBOX.into(),
        content: content.as_bytes().to_vec().into(),
    }
}

/// A plain message with headers and a body.
const PLAIN: &str = "From: ann@example.com\r\nSubject: testkit\r\n\r\nHello from the testkit.\r\n";

/// Contents a provider must answer without panicking: a plain message, no headers at all,
/// headers and an empty body, nothing, bytes that are not UTF-8, and header lines without
/// a colon or folded oddly.
const ODD: [&[u8]; 6] = [
    PLAIN.as_bytes(),
    b"no headers and no empty line",
    b"Subject: empty body\r\n\r\n",
    b"",
    b"Subject: \xff\xfe not UTF-8\r\n\r\n\xc3\x28\r\n",
    b"no colon here\r\n continued\r\nSubject:\r\n\r\nbody",
];

/// [`message`] with raw `content`.
fn message_with(recipients: &[&str], content: &[u8]) -> StoredMessage {
    StoredMessage {
        content: content.to_vec().into(),
        ..message(recipients, "")
    }
}

/// What a panic in a call means for the host, for the checks' words.
fn panicked(what: &str, content: &[u8], error: &ProviderError) -> String {
    format!(
        "it panicked on {:?} (the host contains it, but {what} and reopens the provider): {error}",
        String::from_utf8_lossy(content)
    )
}

/// Checks transport `provider` of `library` against the host's contract, with `recipients`
/// it takes (`TYPE:address`, at least one). Says what broke.
pub fn check_transport(
    library: fn() -> Library,
    provider: &str,
    config: &str,
    recipients: &[&str],
) -> Result<(), String> {
    let open = || {
        open_transport(library, provider, config)
            .map(|(transport, _)| transport)
            .map_err(|e| format!("{provider} does not open with this configuration: {e}"))
    };
    let mut transport = open()?;
    let claimed = transport
        .address_types()
        .into_result()
        .map_err(|e| format!("address_types failed: {e}"))?;
    for recipient in recipients {
        let address = Address::parse(recipient).map_err(|e| e.to_string())?;
        if !claimed.iter().any(|t| address.has_type(t)) {
            return Err(format!(
                "{provider} claims {claimed:?}, not the type of {recipient}"
            ));
        }
    }
    submit_once(&mut transport, &recipients[..1], PLAIN.as_bytes())?;
    for content in ODD {
        submit_once(&mut transport, recipients, content)?;
    }
    let mut second = open().map_err(|e| format!("a second instance beside the first: {e}"))?;
    submit_once(&mut second, recipients, PLAIN.as_bytes())?;
    drop(transport);
    drop(second);
    let mut reopened = open().map_err(|e| format!("reopening after a drop: {e}"))?;
    submit_once(&mut reopened, recipients, PLAIN.as_bytes())
}

/// Checks the inbound side of transport `provider` of `library`, opened with `config`,
/// against the host's contract, on the messages waiting in its messaging system (put at
/// least one there first). Returns how many it fetched; says what broke.
///
/// The host pulls, commits what it got to the store, and only then acknowledges each message
/// by its source id: so a pull must not remove anything, a message not acknowledged must
/// come again after a reopen (the host may have crashed before its commit), and one
/// acknowledged must not (it is stored).
pub fn check_pull(library: fn() -> Library, provider: &str, config: &str) -> Result<usize, String> {
    let open = || {
        open_transport(library, provider, config)
            .map(|(transport, _)| transport)
            .map_err(|e| format!("{provider} does not open with this configuration: {e}"))
    };
    let pull = |transport: &mut TransportObject| -> Result<Vec<String>, String> {
        let messages = transport
            .pull()
            .into_result()
            .map_err(|e| format!("pull: {e}"))?;
        let mut ids: Vec<String> = messages
            .iter()
            .map(|m| m.source_id.as_str().to_owned())
            .collect();
        ids.sort();
        if ids.iter().any(|id| id.is_empty()) {
            return Err(
                "a pulled message without a source id (the host acknowledges by it)".into(),
            );
        }
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(format!("two pulled messages share a source id: {ids:?}"));
        }
        Ok(ids)
    };
    let mut transport = open()?;
    let first = pull(&mut transport)?;
    if first.is_empty() {
        return Err(
            "nothing to pull: put at least one message in its messaging system first".into(),
        );
    }
    drop(transport);
    let mut transport = open().map_err(|e| format!("reopening: {e}"))?;
    let again = pull(&mut transport)?;
    if again != first {
        return Err(format!(
            "pulled {first:?}, then without acknowledging anything {again:?} after a reopen: \
             what was not acknowledged must come again (the host commits before it acknowledges)"
        ));
    }
    for id in &again {
        transport
            .acknowledge(RStr::from_str(id))
            .into_result()
            .map_err(|e| format!("acknowledging {id}: {e}"))?;
    }
    drop(transport);
    let mut transport = open().map_err(|e| format!("reopening: {e}"))?;
    let last = pull(&mut transport)?;
    if let Some(id) = last.iter().find(|id| first.contains(id)) {
        return Err(format!(
            "{id} came again after it was acknowledged: the host stored it, so it is a duplicate"
        ));
    }
    Ok(first.len())
}

/// One submission: one outcome per recipient, and no panic.
fn submit_once(
    transport: &mut TransportObject,
    recipients: &[&str],
    content: &[u8],
) -> Result<(), String> {
    match submit(transport, &message_with(recipients, content)) {
        Ok(outcomes) if outcomes.len() == recipients.len() => Ok(()),
        Ok(outcomes) => Err(format!(
            "{} outcomes for {} recipients; the host needs exactly one per recipient",
            outcomes.len(),
            recipients.len()
        )),
        Err(error) if error.kind() == ErrorKind::Panicked => {
            Err(panicked("defers the message", content, &error))
        }
        Err(_) => Ok(()),
    }
}

/// Checks preprocessor `provider` of `library` against the host's contract, with
/// `recipients` it looks at (`TYPE:address`, at least one). Says what broke.
///
/// Every message gets one verdict the host knows, or an error (the host defers the
/// message); odd messages are answered, not panicked over; the changes name only the
/// message's own recipients; a second instance opens beside the first (the host opens one
/// per thread) and a new one after both are dropped (the host reopens after a panic).
pub fn check_preprocessor(
    library: fn() -> Library,
    provider: &str,
    config: &str,
    recipients: &[&str],
) -> Result<(), String> {
    let open = || {
        open_preprocessor(library, provider, config)
            .map(|(preprocessor, _)| preprocessor)
            .map_err(|e| format!("{provider} does not open with this configuration: {e}"))
    };
    let mut preprocessor = open()?;
    let claimed = preprocessor
        .address_types()
        .into_result()
        .map_err(|e| format!("address_types failed: {e}"))?;
    for recipient in recipients {
        let address = Address::parse(recipient).map_err(|e| e.to_string())?;
        if !claimed.is_empty() && !claimed.iter().any(|t| address.has_type(t)) {
            return Err(format!(
                "{provider} looks at {claimed:?}, not at the type of {recipient}"
            ));
        }
    }
    process_once(&mut preprocessor, &recipients[..1], PLAIN.as_bytes())?;
    for content in ODD {
        process_once(&mut preprocessor, recipients, content)?;
    }
    let mut second = open().map_err(|e| format!("a second instance beside the first: {e}"))?;
    process_once(&mut second, recipients, PLAIN.as_bytes())?;
    drop(preprocessor);
    drop(second);
    let mut reopened = open().map_err(|e| format!("reopening after a drop: {e}"))?;
    process_once(&mut reopened, recipients, PLAIN.as_bytes())
}

/// One message through a preprocessor: a verdict the host knows whose changes name the
/// message's recipients, or an error, and no panic.
fn process_once(
    preprocessor: &mut PreprocessorObject,
    recipients: &[&str],
    content: &[u8],
) -> Result<(), String> {
    let message = message_with(recipients, content);
    let changes = match process(preprocessor, &message) {
        Ok(Preprocessed::Accept(changes)) => changes,
        Ok(Preprocessed::Reject { reason }) if reason.trim().is_empty() => {
            return Err("a rejection without a reason (the report's reader needs one)".into())
        }
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == ErrorKind::Panicked => {
            return Err(panicked("defers the message", content, &error))
        }
        Err(_) => return Ok(()),
    };
    let known = |address: &Address| {
        message
            .envelope
            .recipients
            .iter()
            .any(|r| &r.address == address)
    };
    let foreign = changes
        .remove_recipients
        .iter()
        .chain(changes.undeliverable.iter().map(|u| &u.address))
        .find(|address| !known(address));
    match foreign {
        Some(address) => Err(format!(
            "its changes name {address}, not a recipient of the message (the host ignores it)"
        )),
        None => Ok(()),
    }
}

/// Checks hook `provider` of `library` against the host's contract, opened with `config`.
/// Says what broke.
///
/// Every message, inbound and outbound, gets one action the host knows, or an error (the
/// host goes on without the hook); odd messages are answered, not panicked over; a move
/// names a folder; a second instance opens beside the first and a new one after both are
/// dropped (the host reopens after a panic).
pub fn check_hook(library: fn() -> Library, provider: &str, config: &str) -> Result<(), String> {
    let open = || {
        open_hook(library, provider, config)
            .map(|(hook, _)| hook)
            .map_err(|e| format!("{provider} does not open with this configuration: {e}"))
    };
    let mut hook = open()?;
    for content in ODD {
        hook_once(&mut hook, Direction::Inbound, "Inbox", content)?;
        hook_once(&mut hook, Direction::Outbound, SENT_ITEMS, content)?;
    }
    let mut second = open().map_err(|e| format!("a second instance beside the first: {e}"))?;
    hook_once(&mut second, Direction::Inbound, "Inbox", PLAIN.as_bytes())?;
    drop(hook);
    drop(second);
    let mut reopened = open().map_err(|e| format!("reopening after a drop: {e}"))?;
    hook_once(
        &mut reopened,
        Direction::Outbound,
        SENT_ITEMS,
        PLAIN.as_bytes(),
    )
}

/// One message through a hook: an action the host knows, or an error, and no panic.
fn hook_once(
    hook: &mut HookObject,
    direction: Direction,
    folder: &str,
    content: &[u8],
) -> Result<(), String> {
    let message = message_with(&["SMTP:bob@example.net", "LOCAL:carol"], content);
    match run_hook(hook, direction, folder, &message) {
        Ok(HookAction::MoveTo { folder }) if folder.trim().is_empty() => Err(format!(
            "a move to a folder without a name ({direction:?}, {:?})",
            String::from_utf8_lossy(content)
        )),
        Err(error) if error.kind() == ErrorKind::Panicked => Err(panicked(
            "goes on without the hook for this message",
            content,
            &error,
        )),
        _ => Ok(()),
    }
}

/// Checks store `provider` of `library` against the host's contract, opened with `config`
/// (which must name an empty, private place: the check writes and reopens it). Says what
/// broke.
pub fn check_store(library: fn() -> Library, provider: &str, config: &str) -> Result<(), String> {
    let open = || {
        open_store(library, provider, config)
            .map(|(store, _)| store)
            .map_err(|e| format!("{provider} does not open with this configuration: {e}"))
    };
    let mut store = open()?;
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut envelope = message(&["SMTP:bob@example.net"], PLAIN).envelope;
        envelope.preprocessed = true;
        let content = format!("Subject: message {n}\r\n\r\nBody {n}.\r\n");
        let receipt = store
            .commit(StoreBatch {
                submit: RSlice::from_slice(&[NewMessage {
                    envelope,
                    content: RSlice::from_slice(content.as_bytes()),
                }]),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .map_err(|e| format!("a submission was refused: {e}"))?;
        match receipt.submitted.as_slice() {
            [id] => ids.push(*id),
            other => {
                return Err(format!(
                    "one submission, {} ids in the receipt",
                    other.len()
                ))
            }
        }
    }
    drop(store);

    let mut store = open().map_err(|e| format!("reopening: {e}"))?;
    let first = store
        .get(ids[0])
        .into_result()
        .map_err(|e| format!("get: {e}"))?
        .into_option()
        .ok_or("a committed submission is gone after a reopen: commit must be durable")?;
    if !first.content.as_slice().starts_with(b"Subject: message 0") {
        return Err("the content read back is not the content stored".into());
    }
    let far_future = Timestamp(i64::MAX / 2);
    let locked = store
        .lock_due(far_future, 3)
        .into_result()
        .map_err(|e| format!("lock_due: {e}"))?;
    if locked.len() != 3 {
        return Err(format!("lock_due(limit 3) of 5 due gave {}", locked.len()));
    }
    let rest = store
        .lock_due(far_future, 10)
        .into_result()
        .map_err(|e| format!("lock_due: {e}"))?;
    if rest.len() != 2
        || rest
            .iter()
            .any(|m| locked.iter().any(|l| l.envelope.id == m.envelope.id))
    {
        return Err("a locked message was handed out again before it was unlocked".into());
    }
    let unlock: Vec<MessageId> = rest.iter().map(|m| m.envelope.id).collect();
    let finish = [Finish {
        id: ids[0],
        move_to: ROption::RSome(SENT_ITEMS.into()),
    }];
    store
        .commit(StoreBatch {
            unlock: RSlice::from_slice(&unlock),
            finish: RSlice::from_slice(&finish),
            ..StoreBatch::EMPTY
        })
        .into_result()
        .map_err(|e| format!("finishing and unlocking: {e}"))?;
    let again = store
        .lock_due(far_future, 10)
        .into_result()
        .map_err(|e| format!("lock_due: {e}"))?;
    if again.len() != 2 {
        return Err(format!(
            "after unlocking 2 messages, lock_due gave {} (unlocked messages are due again)",
            again.len()
        ));
    }
    let sent = store
        .list_page(RStr::from_str(SENT_ITEMS), ROption::RNone, 10)
        .into_result()
        .map_err(|e| format!("list_page: {e}"))?;
    if sent.len() != 1 || sent[0].envelope.id != ids[0] {
        return Err("a finished message did not move to Sent Items".into());
    }
    let first_page = store
        .list_page(RStr::from_str(OUTBOX), ROption::RNone, 2)
        .into_result()
        .map_err(|e| format!("list_page: {e}"))?;
    let cursor = first_page.last().map(|m| m.envelope.id);
    let second_page = store
        .list_page(RStr::from_str(OUTBOX), cursor.into(), 10)
        .into_result()
        .map_err(|e| format!("list_page after a cursor: {e}"))?;
    let paged: Vec<MessageId> = first_page
        .iter()
        .chain(second_page.iter())
        .map(|m| m.envelope.id)
        .collect();
    if paged != ids[1..] {
        return Err(format!(
            "paging the Outbox by twos gave {paged:?}, not the four left in id order {:?}",
            &ids[1..]
        ));
    }
    check_queue_shape(&mut store)?;
    check_held_count(&mut store)?;
    check_prune(&mut store)
}

/// Pruning (provider-abi 1.4): the Outbox is refused; in a folder of three messages (one a
/// report), reports only removes the report, a limit of one removes one, the oldest, and
/// nothing newer than `before` goes. Its size is some bytes. A store that cannot
/// (`Unsupported`, the default) passes: the host keeps everything and says so.
fn check_prune(store: &mut StoreObject) -> Result<(), String> {
    let now = Timestamp::now();
    let future = now.plus(std::time::Duration::from_secs(3600));
    match store
        .prune(RStr::from_str(OUTBOX), false, future, 10)
        .into_result()
    {
        Err(error) if error.kind() == ErrorKind::Unsupported => return Ok(()),
        Ok(removed) => return Err(format!("prune removed {removed} Outbox messages")),
        Err(_) => {}
    }
    let folder = "Archive";
    let envelopes: Vec<Envelope> = (0..3)
        .map(|n| {
            let mut envelope = message(&["SMTP:bob@example.net"], PLAIN).envelope;
            envelope.is_report = n == 1;
            envelope
        })
        .collect();
    let deliveries: Vec<Delivery<'_>> = envelopes
        .iter()
        .map(|envelope| Delivery {
            folder: RStr::from_str(folder),
            envelope: envelope.clone(),
            content: RSlice::from_slice(PLAIN.as_bytes()),
        })
        .collect();
    let receipt = store
        .commit(StoreBatch {
            deliver: RSlice::from_slice(&deliveries),
            ..StoreBatch::EMPTY
        })
        .into_result()
        .map_err(|e| format!("delivering into {folder}: {e}"))?;
    let delivered = receipt.delivered.as_slice();
    let mut prune = |reports_only: bool, before: Timestamp, limit: u32| {
        store
            .prune(RStr::from_str(folder), reports_only, before, limit)
            .into_result()
            .map_err(|e| format!("prune: {e}"))
    };
    let past = Timestamp(now.0 - 3_600_000);
    if prune(false, past, 10)? != 0 {
        return Err("prune removed messages submitted after `before`".into());
    }
    if prune(true, future, 10)? != 1 {
        return Err("prune with reports_only did not remove exactly the one report".into());
    }
    if prune(false, future, 1)? != 1 {
        return Err("prune with limit 1 did not remove one message".into());
    }
    let left = store
        .list_page(RStr::from_str(folder), ROption::RNone, 10)
        .into_result()
        .map_err(|e| format!("list_page: {e}"))?;
    if left.len() != 1 || left[0].envelope.id != delivered[2] {
        return Err(format!(
            "after pruning the report and then the oldest, {folder} should hold the newest \
             message only; it holds {} message(s)",
            left.len()
        ));
    }
    match store.size_on_disk().into_result() {
        Ok(0) => Err("size_on_disk said 0 bytes for a store holding messages".into()),
        Ok(_) => Ok(()),
        Err(error) => Err(format!("size_on_disk: {error}")),
    }
}

/// After [`check_queue_shape`], the Outbox holds one held message among five: the count
/// (provider-abi 1.3) says 1. A store that cannot count (`Unsupported`, the default) passes.
fn check_held_count(store: &mut StoreObject) -> Result<(), String> {
    match store.held_messages().into_result() {
        Ok(1) => Ok(()),
        Ok(other) => Err(format!(
            "held_messages said {other}; the Outbox holds one held message among five"
        )),
        Err(error) if error.kind() == ErrorKind::Unsupported => Ok(()),
        Err(error) => Err(format!("held_messages: {error}")),
    }
}

/// The queue's shape (provider-abi 1.3) of an Outbox holding four messages to
/// `bob@example.net` and, submitted here, one held message whose pending recipients count
/// under their domain (the last `@`, lower case) or their type, and whose delivered one does
/// not; its age moves from bucket to bucket at exactly each bound. A store that says it
/// cannot count (`Unsupported`, the default) passes: the host tells the operator so.
fn check_queue_shape(store: &mut StoreObject) -> Result<(), String> {
    let mut envelope = message(
        &[
            "SMTP:Carol@Example.ORG",
            "SMTP:\"a@b\"@example.org",
            "FAX:+1 555 0100",
            "SMTP:done@example.com",
        ],
        PLAIN,
    )
    .envelope;
    envelope.preprocessed = true;
    envelope.held = true;
    envelope.recipients[3].status.state = DeliveryState::Delivered;
    let receipt = store
        .commit(StoreBatch {
            submit: RSlice::from_slice(&[NewMessage {
                envelope,
                content: RSlice::from_slice(b"Subject: shaped\r\n\r\nBody.\r\n"),
            }]),
            ..StoreBatch::EMPTY
        })
        .into_result()
        .map_err(|e| format!("a submission was refused: {e}"))?;
    let submitted_at = store
        .get(receipt.submitted[0])
        .into_result()
        .map_err(|e| format!("get: {e}"))?
        .into_option()
        .ok_or("a committed submission is gone")?
        .envelope
        .submitted_at;
    let bounds = [60, 3600];
    let mut shape_at = |age_ms: i64| {
        let now = Timestamp(submitted_at.0 + age_ms);
        store
            .queue_shape(now, RSlice::from_slice(&bounds))
            .into_result()
            .map(|cells| sorted_cells(cells.into_vec()))
    };
    if let Err(error) = shape_at(0) {
        if error.kind() == ErrorKind::Unsupported {
            return Ok(());
        }
    }
    for (age_ms, bucket) in [(60_000, 0), (60_001, 1), (3_600_001, 2)] {
        let cells = shape_at(age_ms).map_err(|e| format!("queue_shape: {e}"))?;
        let expected = vec![
            ("FAX".to_owned(), bucket, 1),
            ("example.org".to_owned(), bucket, 2),
        ];
        let shaped: Vec<(String, u32, u64)> = cells
            .iter()
            .filter(|cell| cell.0 != "example.net")
            .cloned()
            .collect();
        let bob: u64 = cells
            .iter()
            .filter(|c| c.0 == "example.net")
            .map(|c| c.2)
            .sum();
        if shaped != expected || bob != 4 {
            return Err(format!(
                "queue_shape at {age_ms} ms of age, bounds {bounds:?} s: {cells:?}; expected \
                 {expected:?} and 4 recipients of example.net (domain after the last @ in \
                 lower case, type for other types, held messages counted, delivered \
                 recipients not, bucket = first bound not below the age)"
            ));
        }
    }
    Ok(())
}

/// Cells as (domain, bucket, recipients), sorted, to compare.
fn sorted_cells(cells: Vec<ShapeCell>) -> Vec<(String, u32, u64)> {
    let mut cells: Vec<_> = cells
        .into_iter()
        .map(|c| (c.domain.into_string(), c.bucket, c.recipients))
        .collect();
    cells.sort();
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::{
        Changes, Hook, InboundMessage, MessageRef, OpenContext, Preprocessor, Transport,
    };

    /// Answers once for all recipients, however many there are.
    struct OneAnswer;

    impl Transport for OneAnswer {
        fn address_types(&self) -> Vec<String> {
            vec!["TEST".into()]
        }

        fn submit(
            &mut self,
            _message: MessageRef<'_>,
            _recipients: &[Address],
        ) -> Result<Vec<RecipientOutcome>, ProviderError> {
            Ok(vec![RecipientOutcome::delivered("all of them")])
        }
    }

    /// Panics on a message without headers.
    struct Fussy;

    impl Transport for Fussy {
        fn address_types(&self) -> Vec<String> {
            vec!["TEST".into()]
        }

        fn submit(
            &mut self,
            message: MessageRef<'_>,
            recipients: &[Address],
        ) -> Result<Vec<RecipientOutcome>, ProviderError> {
            let text = std::str::from_utf8(message.content.as_slice()).unwrap();
            let (head, _) = text.split_once("\r\n\r\n").expect("a message has headers");
            Ok(recipients
                .iter()
                .map(|_| RecipientOutcome::delivered(head.len().to_string()))
                .collect())
        }
    }

    fn one_answer() -> Library {
        Library::new("one-answer", "0.1.0")
            .transport("one", &["TEST"], |_: &OpenContext| Ok(OneAnswer))
    }

    fn fussy() -> Library {
        Library::new("fussy", "0.1.0").transport("fussy", &["TEST"], |_: &OpenContext| Ok(Fussy))
    }

    /// Removes a recipient the message does not have; panics on a message without headers.
    struct Careless;

    impl Preprocessor for Careless {
        fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError> {
            let text = String::from_utf8_lossy(message.content.as_slice());
            assert!(text.contains("\r\n\r\n"), "a message has headers");
            let mut changes = Changes::default();
            changes
                .remove_recipients
                .push(Address::parse("SMTP:nobody@example.org").unwrap());
            Ok(Preprocessed::Accept(changes))
        }
    }

    /// Moves everything to a folder without a name, or, configured so, panics on no content.
    struct Mover {
        panics: bool,
    }

    impl Hook for Mover {
        fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError> {
            if !self.panics {
                return Ok(HookAction::MoveTo { folder: "".into() });
            }
            assert!(!message.message.content.is_empty(), "no content");
            Ok(HookAction::Leave)
        }
    }

    fn careless() -> Library {
        Library::new("careless", "0.1.0")
            .preprocessor("careless", &[], |_: &OpenContext| Ok(Careless))
    }

    fn mover() -> Library {
        Library::new("mover", "0.1.0").hook("mover", |context: &OpenContext| {
            Ok(Mover {
                panics: context.config().contains("panics"),
            })
        })
    }

    /// Inbound mail on a "server" of its own, removed when pulled instead of when
    /// acknowledged, unless configured to keep it until acknowledged.
    static SERVER: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Pulling {
        keeps: bool,
    }

    impl Transport for Pulling {
        fn address_types(&self) -> Vec<String> {
            Vec::new()
        }

        fn submit(
            &mut self,
            _message: MessageRef<'_>,
            recipients: &[Address],
        ) -> Result<Vec<RecipientOutcome>, ProviderError> {
            Ok(recipients
                .iter()
                .map(|_| RecipientOutcome::NotMine)
                .collect())
        }

        fn pull(&mut self) -> Result<Vec<InboundMessage>, ProviderError> {
            let mut server = SERVER.lock().unwrap();
            let ids = if self.keeps {
                server.clone()
            } else {
                std::mem::take(&mut *server)
            };
            Ok(ids
                .into_iter()
                .map(|id| InboundMessage {
                    source_id: id.into(),
                    sender: None.into(),
                    recipients: Default::default(),
                    content: b"Subject: in\r\n\r\nx".to_vec().into(),
                })
                .collect())
        }

        fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
            SERVER.lock().unwrap().retain(|id| id != source_id);
            Ok(())
        }
    }

    fn pulling() -> Library {
        Library::new("pulling", "0.1.0").transport("pulling", &[], |context: &OpenContext| {
            Ok(Pulling {
                keeps: context.config().contains("keeps"),
            })
        })
    }

    #[test]
    fn a_transport_that_loses_inbound_mail_before_it_is_acknowledged_is_told() {
        *SERVER.lock().unwrap() = vec!["1".into(), "2".into()];
        let lost = check_pull(pulling, "pulling", "").unwrap_err();
        assert!(lost.contains("must come again"), "{lost}");
        let empty = check_pull(pulling, "pulling", "keeps").unwrap_err();
        assert!(empty.contains("nothing to pull"), "{empty}");
        *SERVER.lock().unwrap() = vec!["1".into(), "2".into()];
        assert_eq!(check_pull(pulling, "pulling", "keeps"), Ok(2));
    }

    #[test]
    fn a_preprocessor_that_breaks_the_contract_is_told_what_it_broke() {
        let foreign = check_preprocessor(careless, "careless", "", &["TEST:a"]).unwrap_err();
        assert!(
            foreign.contains("name SMTP:nobody@example.org, not a recipient"),
            "{foreign}"
        );
        let (mut opened, _) = open_preprocessor(careless, "careless", "").unwrap();
        let error = process(&mut opened, &message(&["TEST:a"], "no headers")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Panicked, "{error}");
    }

    #[test]
    fn a_hook_that_breaks_the_contract_is_told_what_it_broke() {
        let nameless = check_hook(mover, "mover", "").unwrap_err();
        assert!(nameless.contains("a folder without a name"), "{nameless}");
        let panicked = check_hook(mover, "mover", "panics").unwrap_err();
        assert!(panicked.contains("it panicked on \"\""), "{panicked}");
        let missing = check_hook(mover, "nothing", "").unwrap_err();
        assert!(missing.contains("does not open"), "{missing}");
    }

    #[test]
    fn a_transport_that_breaks_the_contract_is_told_what_it_broke() {
        let one = check_transport(one_answer, "one", "", &["TEST:a", "TEST:b"]).unwrap_err();
        assert!(one.contains("1 outcomes for 2 recipients"), "{one}");
        let panicked = check_transport(fussy, "fussy", "", &["TEST:a"]).unwrap_err();
        assert!(
            panicked.contains("it panicked on \"no headers"),
            "{panicked}"
        );
        let unclaimed = check_transport(fussy, "fussy", "", &["SMTP:a@b.c"]).unwrap_err();
        assert!(
            unclaimed.contains("not the type of SMTP:a@b.c"),
            "{unclaimed}"
        );
        let missing = check_transport(fussy, "nothing", "", &["TEST:a"]).unwrap_err();
        assert!(missing.contains("does not open"), "{missing}");
    }
}
