//! Services the host hands to every provider: a log sink, notifications and its status row.

use std::fmt;

use abi_stable::{
    sabi_trait,
    std_types::{RArc, ROption, RStr, RString},
    StableAbi,
};

/// A log level as it crosses the boundary; mirrors `log::LevelFilter`.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Logging off (only as a maximum level).
    Off,
    /// `log::Level::Error`.
    Error,
    /// `log::Level::Warn`.
    Warn,
    /// `log::Level::Info`.
    Info,
    /// `log::Level::Debug`.
    Debug,
    /// `log::Level::Trace`.
    Trace,
}

impl From<log::Level> for LogLevel {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        }
    }
}

impl From<log::LevelFilter> for LogLevel {
    fn from(filter: log::LevelFilter) -> Self {
        filter.to_level().map_or(LogLevel::Off, LogLevel::from)
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// One log record from a provider.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// Its level (never [`LogLevel::Off`]).
    pub level: LogLevel,
    /// Its target, by default the module path inside the provider (`transport_directory`).
    pub target: RStr<'a>,
    /// The formatted message.
    pub message: RStr<'a>,
    /// The source file, if known.
    pub file: ROption<RStr<'a>>,
    /// The source line, if known.
    pub line: ROption<u32>,
}

/// Where a provider library's `log` records go: the host's logger.
///
/// The export macro installs it as the library's `log` logger when the library is loaded, so
/// `log::info!` inside a provider appears in the host's output, filtered by `RUST_LOG`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct LogSink {
    /// The most verbose level the host will print; the library filters before formatting.
    pub max_level: LogLevel,
    /// Whether the host prints records of this level and target.
    pub enabled: extern "C" fn(level: LogLevel, target: RStr<'_>) -> bool,
    /// Prints one record.
    pub log: extern "C" fn(record: LogRecord<'_>),
}

/// What a provider tells the host, unprompted.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 8, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum Notice {
    /// Inbound mail is waiting: pull it now.
    NewMail,
    /// The messaging system is reachable again: send this transport's waiting mail now.
    BackOnline,
    /// The provider's status row changed.
    StatusChanged,
    /// (Stores shared by several hosts, since 1.2.) Another host changed the shared queue or
    /// delivered mail into a folder: check in with the store and look at the queue now.
    StoreChanged,
}

/// The ABI-stable wrapper of [`Notice`].
pub type NoticeAbi = Notice_NE;

/// Whether a provider can do its work now.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 8, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ProviderState {
    /// Working.
    Online,
    /// Its messaging system is unreachable; messages for it wait.
    Offline,
    /// It failed and needs attention; the text says why.
    Error,
}

impl fmt::Display for ProviderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ProviderState::Online => "online",
            ProviderState::Offline => "offline",
            ProviderState::Error => "error",
        })
    }
}

/// The ABI-stable wrapper of [`ProviderState`].
pub type ProviderStateAbi = ProviderState_NE;

/// The host's side of one provider instance: it knows which provider is calling.
///
/// Implemented by the host; providers use it through [`Host`].
#[sabi_trait]
pub trait HostServices: Send + Sync + Clone {
    /// Tells the host something happened; see [`Notice`].
    fn notify(&self, notice: NoticeAbi);

    /// Sets this provider's row in the status table (`text` says why, for offline and error).
    #[sabi(last_prefix_field)]
    fn set_status(&self, state: ProviderStateAbi, text: RString);
}

/// The FFI object behind [`Host`].
pub type HostObject = HostServices_TO<'static, RArc<()>>;

/// A provider's handle to the host, cheap to clone and usable from any thread the provider
/// starts (a watcher thread may call [`Host::notify`]).
#[derive(Clone)]
pub struct Host(HostObject);

impl Host {
    /// Wraps the host's FFI object.
    pub fn from_object(object: HostObject) -> Self {
        Host(object)
    }

    /// Tells the host something happened.
    pub fn notify(&self, notice: Notice) {
        self.0.notify(NoticeAbi::new(notice));
    }

    /// Sets this provider's status row.
    pub fn set_status(&self, state: ProviderState, text: impl Into<String>) {
        self.0
            .set_status(ProviderStateAbi::new(state), RString::from(text.into()));
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Host")
    }
}

/// This machine's host name, as the host and every provider write it: in greetings and
/// `HELO`, `Received:` and `Message-ID` fields, report senders and lease owners. One copy,
/// so they never disagree; `localhost` when the system has none to give.
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buffer = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        if let (0, Ok(name)) = (done, std::str::from_utf8(&buffer[..end])) {
            if !name.is_empty() {
                return name.to_owned();
            }
        }
    }
    "localhost".into()
}
