//! The POP3 transport: inbound mail from a mailbox on a real mail server.
//!
//! POP3 rather than IMAP because the spooler's inbound contract is exactly POP3's: take
//! every waiting message, and delete each at the source once it is safe. UIDL gives every
//! message a stable id across sessions, and deletion is transactional (DELE takes effect at
//! QUIT), so a crash at any point leaves the message on the server rather than losing it.
//!
//! Each fetch opens a session, reads up to 100 messages (RETR) and keeps the session open;
//! the host acknowledges each one after its store commit, which marks it deleted (DELE), and
//! when all are acknowledged the session ends with QUIT, which deletes them. A message not
//! acknowledged (the store failed) is not deleted and comes again at the next fetch.
//!
//! ```toml
//! [[transport]]
//! provider = "pop3"
//! config = { host = "mail.example.com", tls = "implicit", username = "spooler", password_file = "/etc/spooler/pop3-password", poll_interval_secs = 60 }
//! ```
//!
//! `tls` is `stls` (the default: plain text on port 110 upgraded with STLS before the
//! login; a server that does not offer STLS is refused, never used in plain text),
//! `implicit` (POP3S: TLS from the first byte, port 995) or `none` (plain text, port 110:
//! only on loopback or a trusted network). TLS always verifies the server's certificate: it
//! must chain to a trusted CA and be issued for `host`. The trusted CAs are the public ones
//! (Mozilla's list, built in) or, with `ca_file = "/path/ca.pem"`, instead exactly the CA
//! certificates in that PEM file (for a private or self-signed CA). A refused certificate
//! ends the session before the password is sent, and the error says why and what to set.
//!
//! The password is `password`, or what the file `password_file` holds (its trailing line
//! end dropped), so that it need not stand in the profile.

mod pop3;

#[cfg(test)]
mod fuzz;

use std::collections::HashMap;
use std::time::Duration;

use provider_abi::{
    export_library, Address, InboundMessage, Library, MessageRef, OpenContext, ProviderError,
    RecipientOutcome, Transport,
};
use serde::Deserialize;

use pop3::{Pop3Error, Security, Session};

/// How many messages one fetch takes at most.
const BATCH: usize = 100;

/// How the session is protected.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// Plain text (only on loopback or a trusted network).
    None,
    /// Plain text upgraded with STLS before the login.
    Stls,
    /// TLS from the first byte (POP3S, port 995).
    Implicit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    host: String,
    /// The port [default: 995 with implicit TLS, otherwise 110].
    port: Option<u16>,
    /// `stls` (default), `implicit` or `none`.
    #[serde(default = "default_tls")]
    tls: TlsMode,
    /// A PEM file of the CA certificates to trust instead of the built-in public roots.
    ca_file: Option<String>,
    username: String,
    password: Option<String>,
    /// A file holding the password (its trailing line end dropped).
    password_file: Option<String>,
    #[serde(default = "default_poll")]
    poll_interval_secs: u32,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
}

fn default_tls() -> TlsMode {
    TlsMode::Stls
}

fn default_poll() -> u32 {
    60
}

fn default_timeout() -> u64 {
    30
}

/// A fetch whose messages are not all acknowledged yet.
struct OpenFetch {
    session: Session,
    /// Unique id to message number, for the messages still to be acknowledged.
    waiting: HashMap<String, u32>,
}

/// The transport instance.
pub struct Pop3Transport {
    host: String,
    port: u16,
    security: Security,
    username: String,
    password: String,
    poll_interval_secs: u32,
    timeout: Duration,
    fetch: Option<OpenFetch>,
}

impl Pop3Transport {
    /// Opens the transport from its configuration (it connects at the first fetch).
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        // The helpers' words name the key themselves.
        let bad = |why: String| context.config_error("", why);
        let config: Config = context.config_as()?;
        let password =
            transport_support::password(config.password, config.password_file.as_deref())
                .map_err(bad)?
                .ok_or_else(|| bad("no password: set `password` or `password_file`".into()))?;
        let security = match config.tls {
            TlsMode::None if config.ca_file.is_some() => {
                return Err(context.config_error(
                    "ca_file",
                    "it is for TLS, and tls = \"none\"; set tls = \"stls\" or \"implicit\"",
                ))
            }
            TlsMode::None => Security::None,
            TlsMode::Stls => Security::Stls(
                transport_support::tls::client_config(config.ca_file.as_deref()).map_err(bad)?,
            ),
            TlsMode::Implicit => Security::Implicit(
                transport_support::tls::client_config(config.ca_file.as_deref()).map_err(bad)?,
            ),
        };
        Ok(Pop3Transport {
            port: config.port.unwrap_or(if config.tls == TlsMode::Implicit {
                995
            } else {
                110
            }),
            host: config.host,
            security,
            username: config.username,
            password,
            poll_interval_secs: config.poll_interval_secs,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            fetch: None,
        })
    }

    fn server(&self) -> String {
        format!("{}@{}:{}", self.username, self.host, self.port)
    }

    fn failure(&self, doing: &str, error: Pop3Error) -> ProviderError {
        let server = format!("{}:{}", self.host, self.port);
        match transport_support::tls::certificate_refusal(&server, &error) {
            Some(refusal) => ProviderError::temporary(format!("POP3 {}: {refusal}", self.server())),
            None => ProviderError::temporary(format!("POP3 {}: {doing}: {error}", self.server())),
        }
    }

    /// Ends an earlier fetch without deleting what was not acknowledged.
    fn end_fetch(&mut self) {
        if let Some(fetch) = self.fetch.take() {
            if let Err(error) = fetch.session.quit() {
                log::warn!("POP3 {}: ending the session: {error}", self.server());
            }
        }
    }
}

impl Drop for Pop3Transport {
    fn drop(&mut self) {
        self.end_fetch();
    }
}

impl Transport for Pop3Transport {
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
        self.end_fetch();
        let mut session = Session::open(
            &self.host,
            self.port,
            &self.security,
            &self.username,
            &self.password,
            self.timeout,
        )
        .map_err(|e| self.failure("cannot log in", e))?;
        let listing = session.uidl().map_err(|e| self.failure("UIDL", e))?;
        let mut messages = Vec::new();
        let mut waiting = HashMap::new();
        for (number, uid) in listing.into_iter().take(BATCH) {
            let content = session
                .retr(number)
                .map_err(|e| self.failure(&format!("RETR {number}"), e))?;
            waiting.insert(uid.clone(), number);
            messages.push(InboundMessage {
                source_id: uid.into(),
                sender: None.into(),
                recipients: Default::default(),
                content: content.into(),
            });
        }
        if messages.is_empty() {
            session.quit().map_err(|e| self.failure("QUIT", e))?;
        } else {
            log::info!(
                "POP3 {}: fetched {} message(s)",
                self.server(),
                messages.len()
            );
            self.fetch = Some(OpenFetch { session, waiting });
        }
        Ok(messages)
    }

    fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
        let server = self.server();
        let Some(fetch) = self.fetch.as_mut() else {
            return Err(ProviderError::temporary(format!(
                "POP3 {server}: no fetch is open; {source_id} stays and comes again"
            )));
        };
        let Some(number) = fetch.waiting.remove(source_id) else {
            return Err(ProviderError::permanent(format!(
                "POP3 {server}: {source_id} was not fetched in this session"
            )));
        };
        let marked = fetch.session.dele(number);
        let done = fetch.waiting.is_empty();
        if let Err(error) = marked {
            self.fetch = None;
            return Err(self.failure(&format!("DELE {number}"), error));
        }
        if done {
            // QUIT makes the deletions happen.
            let fetch = self.fetch.take().expect("checked above");
            fetch
                .session
                .quit()
                .map_err(|e| self.failure("QUIT (deleting the stored messages)", e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProviderError> {
        Ok(())
    }

    fn poll_interval_secs(&self) -> Option<u32> {
        Some(self.poll_interval_secs.max(1))
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "pop3",
        &[],
        Pop3Transport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::ErrorKind;
    use provider_testkit::{check_pull, message, open_transport, submit};
    use spooler_tests::{free_port, real_server, Dovecot, Site};

    fn config(port: u16) -> String {
        format!(
            "host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nusername = \"test\"\npassword = \"secret\"\ntimeout_secs = 5"
        )
    }

    #[test]
    fn keeps_the_hosts_inbound_contract() {
        if real_server("dovecot").is_none() {
            return;
        }
        let site = Site::with_providers(&[]);
        let dovecot = Dovecot::start(&site);
        for n in 0..3 {
            dovecot.deliver(
                &format!("m{n}"),
                &format!("Subject: {n}\r\n\r\nBody {n}.\r\n"),
            );
        }
        assert_eq!(check_pull(library, "pop3", &config(dovecot.port)), Ok(3));
        assert_eq!(dovecot.messages_on_server(), 0, "acknowledged: deleted");
    }

    #[test]
    fn outbound_mail_is_not_its_own_and_a_server_down_is_temporary() {
        let (mut transport, _) = open_transport(library, "pop3", &config(free_port())).unwrap();
        assert!(transport.address_types().unwrap().is_empty());
        let outcomes = submit(&mut transport, &message(&["SMTP:bob@example.net"], "x"));
        assert_eq!(outcomes, Ok(vec![RecipientOutcome::NotMine]));
        let error = transport.pull().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Temporary, "{error}");
        assert!(error.message().contains("cannot log in"), "{error}");
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let refused = |config: &str| {
            let error = open_transport(library, "pop3", config)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        let misspelt = refused("host = \"pop.example.com\"\nusename = \"ann\"");
        assert!(
            misspelt.starts_with(
                "instance \"pop3-test\": key usename at line 2: unknown field `usename`"
            ),
            "{misspelt}"
        );
        let password = refused("host = \"pop.example.com\"\nusername = \"ann\"");
        assert!(password.contains("no password"), "{password}");
    }
}
