//! The profile: which store, transports (in routing order), preprocessors and hooks to open,
//! with their settings, and the retry policy. Read from one TOML file; without one, the
//! defaults run the embedded store in the data folder and nothing else. This layer owns
//! the profile's types (`listener`, `http`, `network`, `retry`, `destinations`, `tls` for
//! their tables) and reading them; the layers above act on them (`retention` for
//! `[store]`'s keep times).
//!
//! May call: `base` only.
//!
//! ```toml
//! data_dir = "/var/lib/spooler"        # default: $XDG_DATA_HOME/spooler
//!
//! [store]                              # default: the embedded store in data_dir
//! provider = "embedded"
//! config = { path = "/var/lib/spooler/store.sqlite" }
//! keep_sent = "1d"                     # Sent Items, from submission; "0s": delete at once
//! keep_reports = "7d"                  # reports in the Inbox (see `config::retention`)
//!
//! [[transport]]                        # routing order is file order
//! provider = "directory"
//! name = "fax-gateway"                 # instance name; default: the provider's
//! config = { path = "/var/spool/fax", address_type = "FAX" }
//! isolate = true                       # in a process of its own (default: bundled no, others yes)
//! memory_limit = "512M"                # the isolated process's data memory cap; default: none
//!
//! [[preprocessor]]
//! provider = "distribution-lists"
//! config = { lists = { "LOCAL:team" = ["SMTP:ann@example.com"] } }
//!
//! [retry]
//! min_delay = "1m"
//! max_delay = "1h"
//! max_lifetime = "5d"
//! delay_warning = "4h"                 # optional: warn the sender once
//!
//! [destinations]                       # deliveries to one domain at once (`config::destinations`)
//! concurrency = 20
//!
//! [limits]
//! max_in_flight = 256
//! max_message_size = "50M"
//! quarantine_after = 3                 # crashes of a provider in one message's calls: held
//!
//! [submission]
//! duplicate_window = "24h"             # a resubmission within it is recognised; "0s": off
//! client_retry = "60s"                 # how long `submit` retries a lost connection
//! myorigin = "example.org"             # bare names (root) go to name@myorigin; default: LOCAL
//! alias_pipes_and_files = false        # `|command` and `/file` aliases: PIPE: and FILE:
//! public_socket = "/run/spooler/submit.sock"  # other users' sendmail; default: none
//!
//! aliases = "/etc/aliases"             # default: /etc/aliases if it exists; "" for none
//! log_format = "json"                  # the log on standard error: "text" (default) or "json"
//!
//! [[listener]]                         # an SMTP listener (see `config::listener`)
//! address = "127.0.0.1:2525"
//!
//! [http]                               # metrics, admin API, events, dashboard (`config::http`)
//! address = "127.0.0.1:8025"
//! token_file = "/etc/spooler/http-token"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::http::{HttpConfig, RawHttp};
use crate::config::listener::{ListenerConfig, RawListener};
use destinations::{destination_policy, DestinationPolicy, RawDestinations};
use origin::Origin;
use retention::Retention;
use retry::RetryPolicy;

pub mod destinations;
pub mod http;
pub mod listener;
pub mod network;
pub mod origin;
pub mod retention;
pub mod retry;
pub mod tls;

use crate::base::units::{duration, optional_duration, optional_size, size};

/// What the profile says about local names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalNames {
    /// The alias file, if any.
    pub aliases: Option<PathBuf>,
    /// The domain that qualifies a bare name for SMTP; none: bare names are `LOCAL`.
    pub myorigin: Option<String>,
    /// Whether `|command` and `/file` targets in aliases are passed on (as `PIPE:`/`FILE:`).
    pub pipes_and_files: bool,
}

/// Crashes of one message against one instance before it is held, unless the profile says
/// otherwise (`limits.quarantine_after`).
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;

/// One provider instance the profile opens.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The provider's name in its library's manifest.
    pub provider: String,
    /// The instance's name in logs, statuses and reports.
    pub name: String,
    /// Its settings, as the TOML text of its `config` table.
    pub config: String,
    /// How many copies run side by side, each on its own thread with its own provider
    /// (for a transport: parallel connections).
    pub parallel: usize,
    /// How long one call may run before it is abandoned and the provider reopened on a
    /// fresh thread (`timeout`; default [`DEFAULT_CALL_TIMEOUT`]). A store has none: its
    /// calls are never abandoned.
    pub timeout: Option<Duration>,
    /// Whether it runs in a process of its own (`isolate`); `None`: as the library's default
    /// says (see `providers::isolation`).
    pub isolate: Option<bool>,
    /// The cap on an isolated instance's data memory, in bytes (`memory_limit`).
    pub memory_limit: Option<u64>,
    /// Where its table sits in the profile file, for its configuration errors; `None` for a
    /// table the host made up (the default store).
    pub origin: Option<Origin>,
}

/// Two instances are configured alike when they would run alike: where their tables sit in
/// the file is left out, so that a reload after lines were added above an instance keeps
/// it running.
impl PartialEq for ProviderConfig {
    fn eq(&self, other: &Self) -> bool {
        // Destructured, so that a new field must be placed on one side or the other.
        let ProviderConfig {
            provider,
            name,
            config,
            parallel,
            timeout,
            isolate,
            memory_limit,
            origin: _,
        } = self;
        *provider == other.provider
            && *name == other.name
            && *config == other.config
            && *parallel == other.parallel
            && *timeout == other.timeout
            && *isolate == other.isolate
            && *memory_limit == other.memory_limit
    }
}

/// How long a transport, preprocessor or hook call may run by default: longer than any
/// sensible delivery (Postfix waits up to 10 minutes for the end of DATA), so only a call
/// that hangs is cut off.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The whole profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Where the store, the control socket and other state live.
    pub data_dir: PathBuf,
    /// The providers folder, if the profile names one.
    pub providers: Option<PathBuf>,
    /// The store.
    pub store: ProviderConfig,
    /// How long finished mail stays in the store.
    pub retention: Retention,
    /// The transports, in routing order.
    pub transports: Vec<ProviderConfig>,
    /// The preprocessors, in the order they run.
    pub preprocessors: Vec<ProviderConfig>,
    /// The hooks, in the order they run.
    pub hooks: Vec<ProviderConfig>,
    /// When deferred recipients are tried again, and for how long.
    pub retry: RetryPolicy,
    /// How many deliveries to one destination run at once.
    pub destinations: DestinationPolicy,
    /// How many messages the queue manager holds in memory at most.
    pub max_in_flight: usize,
    /// How many crashes of one provider in calls about one message hold that message.
    pub quarantine_after: u32,
    /// The largest message a client may submit, in bytes.
    pub max_message_size: usize,
    /// How long a submission is remembered, so that the same message submitted again (a
    /// client retrying after a lost answer) returns the first one's id; zero: not at all.
    pub duplicate_window: Duration,
    /// How long `submit` keeps trying after a lost connection or a temporary refusal.
    pub client_retry: Duration,
    /// What bare local names become, and the alias table.
    pub local_names: LocalNames,
    /// The socket other users' `sendmail` submits through, if any.
    pub public_socket: Option<PathBuf>,
    /// The SMTP listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The HTTP front end, if the profile has an `[http]` table.
    pub http: Option<HttpConfig>,
    /// How `run` writes its log on standard error.
    pub log_format: LogFormat,
}

/// How the host writes its log on standard error (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// env_logger's lines: `[time LEVEL target] message`.
    #[default]
    Text,
    /// One JSON object per line (`time`, `level`, `target`, `message`, and the message's
    /// `id`, `transport`, `recipient`, `outcome` where a line has them), for Loki, Elastic
    /// or journald.
    Json,
}

/// A profile that could not be read, naming the file and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    file: PathBuf,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration {}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    data_dir: Option<PathBuf>,
    providers: Option<PathBuf>,
    store: Option<RawStore>,
    #[serde(default, rename = "transport")]
    transports: Vec<RawProvider>,
    #[serde(default, rename = "preprocessor")]
    preprocessors: Vec<RawProvider>,
    #[serde(default, rename = "hook")]
    hooks: Vec<RawProvider>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    destinations: RawDestinations,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    submission: RawSubmission,
    aliases: Option<PathBuf>,
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    http: Option<RawHttp>,
    #[serde(default)]
    log_format: LogFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSubmission {
    #[serde(deserialize_with = "duration")]
    duplicate_window: Duration,
    #[serde(deserialize_with = "duration")]
    client_retry: Duration,
    myorigin: Option<String>,
    alias_pipes_and_files: bool,
    public_socket: Option<PathBuf>,
}

/// The default duplicate window: a day, longer than any client keeps retrying.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Default for RawSubmission {
    fn default() -> Self {
        RawSubmission {
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            client_retry: Duration::from_secs(60),
            myorigin: None,
            alias_pipes_and_files: false,
            public_socket: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    provider: String,
    name: Option<String>,
    #[serde(default)]
    config: toml::Table,
    parallel: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    timeout: Option<Duration>,
    isolate: Option<bool>,
    #[serde(default, deserialize_with = "optional_size")]
    memory_limit: Option<usize>,
}

/// The `[store]` table: a provider instance without a call timeout, parallel copies or
/// isolation (each refused with its reason), and the retention settings. Without a
/// `provider`, the embedded store in the data folder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    provider: Option<String>,
    name: Option<String>,
    config: Option<toml::Table>,
    parallel: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    timeout: Option<Duration>,
    isolate: Option<bool>,
    #[serde(default, deserialize_with = "optional_size")]
    memory_limit: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    keep_sent: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    keep_reports: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    #[serde(deserialize_with = "duration")]
    min_delay: Duration,
    #[serde(deserialize_with = "duration")]
    max_delay: Duration,
    #[serde(deserialize_with = "duration")]
    max_lifetime: Duration,
    #[serde(deserialize_with = "optional_duration")]
    delay_warning: Option<Duration>,
}

impl Default for RawRetry {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        RawRetry {
            min_delay: policy.min_delay,
            max_delay: policy.max_delay,
            max_lifetime: policy.max_lifetime,
            delay_warning: policy.delay_warning,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_in_flight: usize,
    quarantine_after: u32,
    #[serde(deserialize_with = "size")]
    max_message_size: usize,
}

/// The default largest message: 50 MiB, like many mail systems' limit (and, base64-encoded
/// attachments being a third larger, room for about 35 MiB of attachments).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 50 * 1024 * 1024;

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_in_flight: 256,
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl Profile {
    /// The profile in `file`; `data_dir` from the command line overrides the file's.
    pub fn read(file: &Path, data_dir: Option<PathBuf>) -> Result<Profile, ConfigError> {
        let error = |message: String| ConfigError {
            file: file.to_owned(),
            message,
        };
        let text =
            std::fs::read_to_string(file).map_err(|e| error(format!("cannot read it: {e}")))?;
        let raw: RawProfile = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        let mut profile = Profile::from_raw(raw, data_dir).map_err(error)?;
        profile.locate_tables(file, &text);
        Ok(profile)
    }

    /// Notes where each provider table sits in `text`, the profile in `file`.
    fn locate_tables(&mut self, file: &Path, text: &str) {
        let tables = origin::provider_tables(file, text, |key, index| {
            let instance = match key {
                "store" => Some(&self.store),
                "transport" => self.transports.get(index),
                "preprocessor" => self.preprocessors.get(index),
                _ => self.hooks.get(index),
            };
            instance.map(|i| i.name.clone()).unwrap_or_default()
        });
        self.store.origin = tables.store;
        for (instances, origins) in [
            (&mut self.transports, tables.transports),
            (&mut self.preprocessors, tables.preprocessors),
            (&mut self.hooks, tables.hooks),
        ] {
            for (instance, origin) in instances.iter_mut().zip(origins) {
                instance.origin = Some(origin);
            }
        }
    }

    /// The defaults: the embedded store in the data folder, no transports.
    pub fn defaults(data_dir: Option<PathBuf>) -> Profile {
        Profile::from_raw(RawProfile::default(), data_dir).expect("the default profile is valid")
    }

    fn from_raw(raw: RawProfile, data_dir: Option<PathBuf>) -> Result<Profile, String> {
        let data_dir = data_dir.or(raw.data_dir).unwrap_or_else(default_data_dir);
        let (store, retention) = store(raw.store, &data_dir)?;
        let instances = |raws: Vec<RawProvider>, key: &str| {
            raws.into_iter()
                .enumerate()
                .map(|(index, raw)| instance(raw, &format!("{key}[{index}]")))
                .collect::<Result<Vec<_>, String>>()
        };
        let transports = instances(raw.transports, "transport")?;
        let preprocessors = instances(raw.preprocessors, "preprocessor")?;
        let hooks = instances(raw.hooks, "hook")?;
        let mut names: Vec<&str> = std::iter::once(&store)
            .chain(&transports)
            .chain(&preprocessors)
            .chain(&hooks)
            .map(|p| p.name.as_str())
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!(
                "two provider instances are named `{}`; give one a different `name`",
                pair[0]
            ));
        }
        let retry = retry_and_limits(&raw.retry, &raw.limits)?;
        let destinations = destination_policy(raw.destinations)?;
        let listeners = raw
            .listeners
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.check(&format!("listener[{index}]")))
            .collect::<Result<Vec<_>, String>>()?;
        let http = raw.http.map(RawHttp::check).transpose()?;
        Ok(Profile {
            listeners,
            http,
            log_format: raw.log_format,
            data_dir,
            providers: raw.providers,
            store,
            retention,
            transports,
            preprocessors,
            hooks,
            retry,
            destinations,
            max_in_flight: raw.limits.max_in_flight,
            quarantine_after: raw.limits.quarantine_after,
            max_message_size: raw.limits.max_message_size,
            duplicate_window: raw.submission.duplicate_window,
            client_retry: raw.submission.client_retry,
            public_socket: raw.submission.public_socket,
            local_names: local_names(
                raw.aliases,
                raw.submission.myorigin,
                raw.submission.alias_pipes_and_files,
            )?,
        })
    }

    /// The control socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    /// The socket this process's `sendmail` uses: the control socket for the spooler's user
    /// (the data folder's owner) and root, the public submission socket for other users
    /// when there is one.
    pub fn submission_socket(&self) -> PathBuf {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let owner = std::fs::metadata(&self.data_dir).map(|m| m.uid()).ok();
        match &self.public_socket {
            Some(public) if me != 0 && owner != Some(me) => public.clone(),
            _ => self.socket_path(),
        }
    }
}

/// The alias file the system has, used when the profile names none.
const SYSTEM_ALIASES: &str = "/etc/aliases";

/// The `[store]` table checked, with its retention; the embedded store in `data_dir` when
/// the table names no provider.
fn store(raw: Option<RawStore>, data_dir: &Path) -> Result<(ProviderConfig, Retention), String> {
    let Some(raw) = raw else {
        return Ok((embedded_store(data_dir)?, Retention::default()));
    };
    if raw.timeout.is_some() {
        return Err(
            "store.timeout: a store call is never abandoned (the queue depends on its \
                    answer); remove the key"
                .into(),
        );
    }
    if raw.isolate == Some(true) || raw.memory_limit.is_some() {
        return Err(
            "store.isolate: the store always runs in the host's process (every message \
                    passes through it, and without it no mail moves at all, isolated or not); \
                    remove the key"
                .into(),
        );
    }
    if raw.parallel.is_some_and(|parallel| parallel != 1) {
        return Err("store.parallel: a store runs once; remove the key".into());
    }
    let defaults = Retention::default();
    let retention = Retention {
        keep_sent: raw.keep_sent.unwrap_or(defaults.keep_sent),
        keep_reports: raw.keep_reports.unwrap_or(defaults.keep_reports),
    };
    let store = match raw.provider {
        Some(provider) => ProviderConfig {
            timeout: None,
            ..instance(
                RawProvider {
                    provider,
                    name: raw.name,
                    config: raw.config.unwrap_or_default(),
                    parallel: None,
                    timeout: None,
                    isolate: raw.isolate,
                    memory_limit: None,
                },
                "store",
            )?
        },
        None if raw.name.is_some() || raw.config.is_some() => {
            return Err(
                "store.provider: name the store provider that `name` and `config` are \
                        for (\"embedded\" for the default), or remove them"
                    .into(),
            )
        }
        None => embedded_store(data_dir)?,
    };
    Ok((store, retention))
}

/// The default store: the embedded one, in `data_dir`.
fn embedded_store(data_dir: &Path) -> Result<ProviderConfig, String> {
    let mut config = toml::Table::new();
    let path = data_dir.join("store.sqlite");
    config.insert("path".into(), path.to_string_lossy().into_owned().into());
    Ok(ProviderConfig {
        provider: "embedded".into(),
        name: "embedded".into(),
        config: toml::to_string(&config).map_err(|e| e.to_string())?,
        parallel: 1,
        timeout: None,
        isolate: None,
        memory_limit: None,
        origin: None,
    })
}

/// The `[retry]` policy, checked with the `[limits]` table.
fn retry_and_limits(retry: &RawRetry, limits: &RawLimits) -> Result<RetryPolicy, String> {
    let policy = RetryPolicy {
        min_delay: retry.min_delay,
        max_delay: retry.max_delay,
        max_lifetime: retry.max_lifetime,
        delay_warning: retry.delay_warning,
    };
    if policy.min_delay > policy.max_delay {
        return Err("retry.min_delay is longer than retry.max_delay".into());
    }
    if limits.max_in_flight == 0 {
        return Err("limits.max_in_flight: expected at least 1".into());
    }
    if limits.quarantine_after == 0 {
        return Err("limits.quarantine_after: expected at least 1".into());
    }
    if limits.max_message_size == 0 {
        return Err("limits.max_message_size: expected at least 1 byte".into());
    }
    Ok(policy)
}

fn local_names(
    aliases: Option<PathBuf>,
    myorigin: Option<String>,
    pipes_and_files: bool,
) -> Result<LocalNames, String> {
    if let Some(domain) = &myorigin {
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "submission.myorigin: expected a domain such as example.org, found `{domain}`"
            ));
        }
    }
    let aliases = match aliases {
        Some(file) if file.as_os_str().is_empty() => None,
        Some(file) => Some(file),
        None => Some(PathBuf::from(SYSTEM_ALIASES)).filter(|file| file.exists()),
    };
    Ok(LocalNames {
        aliases,
        myorigin: myorigin.map(|domain| domain.to_ascii_lowercase()),
        pipes_and_files,
    })
}

fn instance(raw: RawProvider, key: &str) -> Result<ProviderConfig, String> {
    if raw.provider.trim().is_empty() {
        return Err(format!("{key}.provider: expected a provider name"));
    }
    let name = raw.name.unwrap_or_else(|| raw.provider.clone());
    if name.trim().is_empty() || name.contains(char::is_whitespace) {
        return Err(format!(
            "{key}.name: expected a name without spaces, found `{name}`"
        ));
    }
    let parallel = raw.parallel.unwrap_or(1);
    if !(1..=64).contains(&parallel) {
        return Err(format!(
            "{key}.parallel: expected 1 to 64, found {parallel}"
        ));
    }
    if raw.memory_limit.is_some() && raw.isolate == Some(false) {
        return Err(format!(
            "{key}.memory_limit: only an isolated instance has a memory limit; remove it or \
             remove `isolate = false`"
        ));
    }
    Ok(ProviderConfig {
        provider: raw.provider,
        name,
        config: toml::to_string(&raw.config).map_err(|e| format!("{key}.config: {e}"))?,
        parallel,
        timeout: Some(raw.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)),
        isolate: raw.isolate,
        memory_limit: raw.memory_limit.map(|bytes| bytes as u64),
        origin: None,
    })
}

/// `$XDG_DATA_HOME/spooler`, else `~/.local/share/spooler`, else `./spooler-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("spooler");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/spooler");
    }
    PathBuf::from("spooler-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_key() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("spooler.toml");
        std::fs::write(&file, "[retry]\nmin_delay = \"soon\"\n").unwrap();
        let error = Profile::read(&file, None).unwrap_err().to_string();
        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(error.contains("min_delay"), "{error}");
        assert!(error.contains("`soon` is not a duration"), "{error}");
    }

    #[test]
    fn the_store_table_sets_retention_with_or_without_naming_the_store() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("spooler.toml");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Profile::read(&file, Some(folder.path().into())).map_err(|e| e.to_string())
        };
        let defaults = read("").unwrap();
        assert_eq!(defaults.retention, Retention::default());
        assert!(defaults.retention.files_sent());

        let relay = read("[store]\nkeep_sent = \"0s\"\nkeep_reports = \"2d\"\n").unwrap();
        assert_eq!(relay.store.provider, "embedded", "the default store");
        assert!(relay.store.config.contains("store.sqlite"));
        assert!(!relay.retention.files_sent());
        assert_eq!(
            relay.retention.keep_reports,
            Duration::from_secs(2 * 86_400)
        );

        let named = read(
            "[store]\nprovider = \"postgres\"\nconfig = { url = \"postgres://h/db\" }\n\
             keep_sent = \"3h\"\n",
        )
        .unwrap();
        assert_eq!(named.store.provider, "postgres");
        assert_eq!(named.retention.keep_sent, Duration::from_secs(3 * 3600));
        assert_eq!(
            named.retention.keep_reports,
            retention::DEFAULT_KEEP_REPORTS
        );

        let error = read("[store]\nkeep_sent = \"a while\"\n").unwrap_err();
        assert!(error.contains("keep_sent"), "{error}");
        let error = read("[store]\nconfig = { path = \"/tmp/x.sqlite\" }\n").unwrap_err();
        assert!(error.contains("store.provider"), "{error}");
    }

    #[test]
    fn log_format_is_text_json_or_an_error_at_its_line() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("spooler.toml");
        let read = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Profile::read(&file, Some(folder.path().into()))
        };
        assert_eq!(read("").unwrap().log_format, LogFormat::Text);
        assert_eq!(Profile::defaults(None).log_format, LogFormat::Text);
        let json = read("log_format = \"json\"\n").unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        let error = read("# logs\nlog_format = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(&file.display().to_string()), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("log_format"), "{error}");
        assert!(error.contains("`text` or `json`"), "{error}");
    }

    #[test]
    fn provider_tables_pass_through_as_text() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("spooler.toml");
        std::fs::write(
            &file,
            "[[transport]]\nprovider = \"directory\"\nname = \"fax\"\nconfig = { path = \"/x\", address_type = \"FAX\" }\n",
        )
        .unwrap();
        let profile = Profile::read(&file, Some(folder.path().into())).unwrap();
        assert_eq!(profile.transports[0].name, "fax");
        let table: toml::Table = toml::from_str(&profile.transports[0].config).unwrap();
        assert_eq!(table["address_type"].as_str(), Some("FAX"));
        assert!(profile.store.config.contains("store.sqlite"));
    }

    #[test]
    fn provider_errors_point_into_the_file_and_moving_a_table_changes_nothing_else() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("spooler.toml");
        let table = "[[transport]]\nprovider = \"smtp\"\nname = \"smarthost\"\nconfig = { host = \"mx\", tls = \"sometimes\" }\n";
        std::fs::write(&file, table).unwrap();
        let first = Profile::read(&file, Some(folder.path().into())).unwrap();
        std::fs::write(&file, format!("# the smart host\n\n{table}")).unwrap();
        let moved = Profile::read(&file, Some(folder.path().into())).unwrap();
        let explain = |profile: &Profile| {
            profile.transports[0]
                .origin
                .as_ref()
                .expect("an origin")
                .explain(
                    "smarthost",
                    "instance \"smarthost\": key tls at line 2: unknown variant `sometimes`",
                )
        };
        assert_eq!(
            explain(&moved),
            format!(
                "{}:6: key `tls` of [[transport]] \"smarthost\": unknown variant `sometimes`",
                file.display()
            )
        );
        assert_ne!(explain(&first), explain(&moved));
        assert_eq!(first.transports[0], moved.transports[0], "runs alike");
        assert!(
            first.store.origin.is_none(),
            "the default store is the host's"
        );
    }
}
