//! The `[http]` table: where the HTTP front end (metrics, admin API, events, dashboard)
//! listens, the token that guards it, and its TLS.
//!
//! ```toml
//! [http]
//! address = "127.0.0.1:8025"              # off when the table is absent
//! token_file = "/etc/spooler/http-token"  # a bearer token: required for /api/
//! tls_certificate = "/etc/spooler/cert.pem"  # with tls_key: HTTPS only
//! tls_key = "/etc/spooler/key.pem"
//! webhook = "http://127.0.0.1:9000/spooler-events"  # POST each delivery event there
//! ```
//!
//! A non-loopback address must have both TLS and a token: the API can delete mail, and a
//! token sent in clear text over a network is a token given away.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The `[http]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    address: String,
    token_file: Option<PathBuf>,
    tls_certificate: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    webhook: Option<String>,
}

/// The checked `[http]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Where it listens.
    pub address: SocketAddr,
    /// The file holding the bearer token, if the API is guarded.
    pub token_file: Option<PathBuf>,
    /// The certificate chain and key files (PEM), for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where delivery events are POSTed, if anywhere.
    pub webhook: Option<Webhook>,
}

/// A webhook URL, checked: plain `http://host:port/path` (a relay on the same machine or
/// network; HTTPS webhooks go through such a relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written.
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// The path (with any query) to POST to.
    pub path: String,
}

impl Webhook {
    fn parse(url: &str) -> Result<Webhook, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!(
                "http.webhook: `{url}` is not an http:// URL; the host POSTs events in plain \
                 HTTP (to an HTTPS endpoint, go through a local relay)"
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("http.webhook: `{url}` names no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Webhook {
            url: url.to_owned(),
            authority,
            path: path.to_owned(),
        })
    }
}

impl RawHttp {
    /// Checks the table.
    pub fn check(self) -> Result<HttpConfig, String> {
        let address = self.address.parse::<SocketAddr>().map_err(|_| {
            format!(
                "http.address: `{}` is not an IP address and port, e.g. \"127.0.0.1:8025\"",
                self.address
            )
        })?;
        let tls = match (self.tls_certificate, self.tls_key) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            _ => {
                return Err(
                    "http: tls_certificate and tls_key go together; give both or neither".into(),
                )
            }
        };
        if !address.ip().is_loopback() && (tls.is_none() || self.token_file.is_none()) {
            return Err(format!(
                "http.address: {address} is not a loopback address, so the HTTP server needs \
                 both TLS (tls_certificate, tls_key) and a token (token_file): anyone on the \
                 network could otherwise read and delete mail. Use 127.0.0.1 or add both."
            ));
        }
        let webhook = self.webhook.as_deref().map(Webhook::parse).transpose()?;
        Ok(HttpConfig {
            address,
            token_file: self.token_file,
            tls,
            webhook,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(address: &str) -> RawHttp {
        RawHttp {
            address: address.into(),
            token_file: None,
            tls_certificate: None,
            tls_key: None,
            webhook: None,
        }
    }

    #[test]
    fn a_network_address_without_tls_and_token_is_refused() {
        let error = raw("0.0.0.0:8025").check().unwrap_err();
        assert!(error.contains("not a loopback address"), "{error}");
        let mut guarded = raw("192.0.2.1:8025");
        guarded.token_file = Some("/t".into());
        assert!(guarded.check().is_err());
        assert!(raw("127.0.0.1:8025").check().is_ok());
        assert!(raw("[::1]:8025").check().is_ok());
    }

    #[test]
    fn webhooks_are_plain_http_urls() {
        let hook = Webhook::parse("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(hook.authority, "127.0.0.1:9000");
        assert_eq!(hook.path, "/hook?x=1");
        assert_eq!(
            Webhook::parse("http://relay").unwrap().authority,
            "relay:80"
        );
        assert!(Webhook::parse("https://example.com/").is_err());
    }
}
