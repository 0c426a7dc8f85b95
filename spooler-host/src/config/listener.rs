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
//! command_timeout = "5m"                # per command, and per chunk of DATA
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

/// How long a client may take over one command (or one chunk of DATA) by default: RFC 5321
/// asks a server to wait 5 minutes.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// How long one command may take.
    pub command_timeout: Duration,
    /// The name it greets with, if not the machine's.
    pub hostname: Option<String>,
    /// Recipient domains (lower case) whose recipients get another address type than SMTP,
    /// written `TYPE:local-part`.
    pub domain_types: Vec<(String, String)>,
}

impl ListenerConfig {
    /// The settings of a `sendmail -bs` session on the host's own socket: no TLS, no users,
    /// the default timeout.
    pub fn local() -> ListenerConfig {
        ListenerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            implicit_tls: false,
            allowed_networks: Network::loopback(),
            users_file: None,
            max_sessions: 1,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
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
            Some(networks) => networks
                .iter()
                .map(|text| {
                    text.parse::<Network>()
                        .map_err(|why| format!("{key}.allowed_networks: {why}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Network::loopback(),
        };
        let max_sessions = self.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS);
        if max_sessions == 0 {
            return Err(format!("{key}.max_sessions: expected at least 1"));
        }
        let command_timeout = self.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        if command_timeout.is_zero() {
            return Err(format!("{key}.command_timeout: expected more than 0s"));
        }
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
            hostname: self.hostname,
            domain_types,
        })
    }
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
