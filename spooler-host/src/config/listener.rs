//! A listener's settings: the `[[listener]]` tables of the profile, read and checked.
//!
//! ```toml
//! [[listener]]
//! address = "127.0.0.1:2525"            # required; several listeners may be configured
//! tls_certificate = "/etc/spooler/cert.pem"  # with tls_key: STARTTLS is offered
//! tls_key = "/etc/spooler/key.pem"
//! implicit_tls = false                  # true: TLS from the first byte (port 465 style)
//! allowed_networks = ["127.0.0.0/8", "::1/128"]  # may send without AUTH (the default)
//! users_file = "/etc/spooler/users"     # `name:$6$...` lines: AUTH PLAIN and LOGIN
//! max_sessions = 256                    # beyond it: 421 and close
//! command_timeout = "5m"                # the whole of one command line; silence in DATA
//! message_time_limit = "10m"            # the whole of DATA's content
//! max_recipients = 1000                 # per message; beyond it: 452 4.5.3
//! # What one client address (IPv6: its /64) may do, as Postfix's anvil counts it:
//! max_sessions_per_client = 32          # default: max_sessions / 8
//! connection_rate = 600                 # new connections a minute (0: no limit)
//! message_rate = 3000                   # messages a minute (0: no limit)
//! auth_penalty = "15s"                  # the longest delay after failed AUTH ("0s": none)
//! auth_ban_after = 10                   # failed AUTH before a ban (0: never)
//! auth_ban_time = "1h"
//! client_limits_exempt = ["127.0.0.0/8"]  # default: allowed_networks
//! hostname = "mail.example.com"         # in the greeting and Received: (default: this host)
//! domain_types = { "localhost" = "LOCAL" }  # recipient domains that are not SMTP
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::network::Network;
use crate::base::units::optional_duration;

/// How many sessions one listener serves at once by default.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// How long a client may take over one command (and stay silent in DATA) by default:
/// RFC 5321 asks a server to wait 5 minutes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a client may take over DATA's content by default: RFC 5321's 10 minutes for the
/// end of the data.
pub const DEFAULT_MESSAGE_TIME_LIMIT: Duration = Duration::from_secs(600);

/// The most recipients of one message by default (Postfix's `smtpd_recipient_limit`).
pub const DEFAULT_MAX_RECIPIENTS: usize = 1000;

/// One `[[listener]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    address: String,
    tls_certificate: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    implicit_tls: bool,
    allowed_networks: Option<Vec<String>>,
    users_file: Option<PathBuf>,
    max_sessions: Option<usize>,
    #[serde(default, deserialize_with = "optional_duration")]
    command_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    message_time_limit: Option<Duration>,
    max_recipients: Option<usize>,
    max_sessions_per_client: Option<usize>,
    connection_rate: Option<u32>,
    message_rate: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    auth_penalty: Option<Duration>,
    auth_ban_after: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    auth_ban_time: Option<Duration>,
    client_limits_exempt: Option<Vec<String>>,
    hostname: Option<String>,
    #[serde(default)]
    domain_types: std::collections::BTreeMap<String, String>,
}

/// A checked listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Where it listens.
    pub address: SocketAddr,
    /// The certificate chain and private key files (PEM), if it offers TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// TLS from the first byte instead of STARTTLS.
    pub implicit_tls: bool,
    /// Clients in these networks may send without authenticating.
    pub allowed_networks: Vec<Network>,
    /// The users who may authenticate, if any.
    pub users_file: Option<PathBuf>,
    /// The most sessions at once.
    pub max_sessions: usize,
    /// How long one command line may take in all, counted from the answer to the one
    /// before; and how long a client may stay silent during DATA.
    pub command_timeout: Duration,
    /// How long DATA's content may take in all, from the `354`.
    pub message_time_limit: Duration,
    /// The most recipients of one message.
    pub max_recipients: usize,
    /// What one client may do.
    pub clients: ClientLimits,
    /// The name it greets with, if not the machine's.
    pub hostname: Option<String>,
    /// Recipient domains (lower case) whose recipients get another address type than SMTP,
    /// written `TYPE:local-part`.
    pub domain_types: Vec<(String, String)>,
}

/// What one client (an address; an IPv6 client by its /64, which one subscriber usually
/// holds whole) may do, across its sessions: Postfix's anvil limits, Dovecot's AUTH penalty
/// and Stalwart's ban. The counts are the host's, for every listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// The most sessions at once.
    pub max_sessions: usize,
    /// The most new connections a minute, if limited.
    pub connection_rate: Option<u32>,
    /// The most messages (MAIL commands) a minute, if limited.
    pub message_rate: Option<u32>,
    /// The longest delay of an AUTH answer after failures (zero: none). The delay doubles
    /// from 1 s with each failure, up to this.
    pub auth_penalty: Duration,
    /// Failed authentications after which the client is banned, if ever.
    pub auth_ban_after: Option<u32>,
    /// How long a ban lasts; also how long failures are remembered.
    pub auth_ban_time: Duration,
    /// Clients the session, connection and message limits and the ban do not apply to (the
    /// AUTH penalty does: it only slows a guesser down).
    pub exempt: Vec<Network>,
}

impl ClientLimits {
    /// Whether the limits apply to `client`.
    pub fn apply_to(&self, client: std::net::IpAddr) -> bool {
        !self.exempt.iter().any(|network| network.contains(client))
    }
}

impl ListenerConfig {
    /// The settings of a `sendmail -bs` session on the host's own socket: no TLS, no users,
    /// the default timeouts, and no client limits (the one client is this machine's user).
    pub fn local() -> ListenerConfig {
        ListenerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            implicit_tls: false,
            allowed_networks: Network::loopback(),
            users_file: None,
            max_sessions: 1,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            message_time_limit: DEFAULT_MESSAGE_TIME_LIMIT,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            clients: ClientLimits {
                max_sessions: 1,
                connection_rate: None,
                message_rate: None,
                auth_penalty: Duration::ZERO,
                auth_ban_after: None,
                auth_ban_time: Duration::ZERO,
                exempt: Network::loopback(),
            },
            hostname: None,
            domain_types: Vec::new(),
        }
    }
}

impl RawListener {
    /// Checks the table; `key` (e.g. `listener[0]`) names it in errors.
    pub fn check(self, key: &str) -> Result<ListenerConfig, String> {
        let address = self.address.parse::<SocketAddr>().map_err(|_| {
            format!(
                "{key}.address: `{}` is not an IP address and port, e.g. \"127.0.0.1:2525\"",
                self.address
            )
        })?;
        let tls = match (self.tls_certificate, self.tls_key) {
            (Some(certificate), Some(key_file)) => Some((certificate, key_file)),
            (None, None) => None,
            _ => {
                return Err(format!(
                    "{key}: tls_certificate and tls_key go together; give both or neither"
                ))
            }
        };
        if self.implicit_tls && tls.is_none() {
            return Err(format!(
                "{key}.implicit_tls: needs tls_certificate and tls_key"
            ));
        }
        let allowed_networks = match self.allowed_networks {
            Some(networks) => networks_at(&networks, &format!("{key}.allowed_networks"))?,
            None => Network::loopback(),
        };
        let exempt = match self.client_limits_exempt {
            Some(networks) => networks_at(&networks, &format!("{key}.client_limits_exempt"))?,
            None => allowed_networks.clone(),
        };
        let max_sessions = self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        if max_sessions == 0 {
            return Err(format!("{key}.max_sessions: expected at least 1"));
        }
        let command_timeout = positive(
            self.command_timeout,
            DEFAULT_COMMAND_TIMEOUT,
            &format!("{key}.command_timeout"),
        )?;
        let message_time_limit = positive(
            self.message_time_limit,
            DEFAULT_MESSAGE_TIME_LIMIT,
            &format!("{key}.message_time_limit"),
        )?;
        let max_recipients = self.max_recipients.unwrap_or(DEFAULT_MAX_RECIPIENTS);
        if max_recipients == 0 {
            return Err(format!("{key}.max_recipients: expected at least 1"));
        }
        let per_client = self
            .max_sessions_per_client
            .unwrap_or((max_sessions / 8).max(1));
        if per_client == 0 {
            return Err(format!(
                "{key}.max_sessions_per_client: expected at least 1"
            ));
        }
        let clients = ClientLimits {
            max_sessions: per_client,
            connection_rate: limit(self.connection_rate, 600),
            message_rate: limit(self.message_rate, 3000),
            auth_penalty: self.auth_penalty.unwrap_or(Duration::from_secs(15)),
            auth_ban_after: limit(self.auth_ban_after, 10),
            auth_ban_time: positive(
                self.auth_ban_time,
                Duration::from_secs(3600),
                &format!("{key}.auth_ban_time"),
            )?,
            exempt,
        };
        let mut domain_types = Vec::new();
        for (domain, address_type) in self.domain_types {
            let valid_type = !address_type.is_empty()
                && address_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_type {
                return Err(format!(
                    "{key}.domain_types: `{address_type}` (for {domain}) is not an address type \
                     such as LOCAL"
                ));
            }
            domain_types.push((
                domain.to_ascii_lowercase(),
                address_type.to_ascii_uppercase(),
            ));
        }
        Ok(ListenerConfig {
            address,
            tls,
            implicit_tls: self.implicit_tls,
            allowed_networks,
            users_file: self.users_file,
            max_sessions,
            command_timeout,
            message_time_limit,
            max_recipients,
            clients,
            hostname: self.hostname,
            domain_types,
        })
    }
}

/// The networks written at `key`.
fn networks_at(texts: &[String], key: &str) -> Result<Vec<Network>, String> {
    texts
        .iter()
        .map(|text| {
            text.parse::<Network>()
                .map_err(|why| format!("{key}: {why}"))
        })
        .collect()
}

/// A duration that must not be zero, `default` if not given.
fn positive(given: Option<Duration>, default: Duration, key: &str) -> Result<Duration, String> {
    match given.unwrap_or(default) {
        zero if zero.is_zero() => Err(format!("{key}: expected more than 0s")),
        duration => Ok(duration),
    }
}

/// A count limit where 0 means none, `default` if not given.
fn limit(given: Option<u32>, default: u32) -> Option<u32> {
    Some(given.unwrap_or(default)).filter(|&count| count > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ListenerConfig, String> {
        toml::from_str::<RawListener>(text)
            .map_err(|e| e.to_string())?
            .check("listener[0]")
    }

    #[test]
    fn the_address_alone_gives_loopback_only_and_the_defaults() {
        let config = read("address = \"127.0.0.1:2525\"").unwrap();
        assert_eq!(config.address, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(config.allowed_networks, Network::loopback());
        assert_eq!(config.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(config.command_timeout, DEFAULT_COMMAND_TIMEOUT);
        assert!(config.tls.is_none());
        assert_eq!(config.clients.max_sessions, DEFAULT_MAX_SESSIONS / 8);
        assert_eq!(config.clients.auth_ban_after, Some(10));
        assert_eq!(config.clients.exempt, config.allowed_networks);
        assert!(!config.clients.apply_to("127.0.0.2".parse().unwrap()));
        assert!(config.clients.apply_to("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn client_limits_can_be_turned_off_or_made_to_apply_to_everyone() {
        let config = read(
            "address = \"127.0.0.1:2525\"\nconnection_rate = 0\nauth_ban_after = 0\n\
             client_limits_exempt = []",
        )
        .unwrap();
        assert_eq!(config.clients.connection_rate, None);
        assert_eq!(config.clients.auth_ban_after, None);
        assert!(config.clients.apply_to("127.0.0.1".parse().unwrap()));
        let error = read("address = \"127.0.0.1:25\"\nauth_ban_time = \"0s\"").unwrap_err();
        assert!(error.contains("listener[0].auth_ban_time"), "{error}");
    }

    #[test]
    fn mistakes_name_the_key() {
        let error = read("address = \"localhost\"").unwrap_err();
        assert!(error.contains("listener[0].address"), "{error}");
        let error = read("address = \"127.0.0.1:25\"\ntls_key = \"k.pem\"").unwrap_err();
        assert!(error.contains("go together"), "{error}");
        let error =
            read("address = \"127.0.0.1:25\"\nallowed_networks = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(error.contains("allowed_networks"), "{error}");
        let error =
            read("address = \"127.0.0.1:25\"\ndomain_types = { x = \"LO CAL\" }").unwrap_err();
        assert!(error.contains("not an address type"), "{error}");
    }
}
