//! The SMTP transport: outbound mail to one smart host, on `lettre`'s SMTP client.
//!
//! Each message is one SMTP transaction with all of its recipients (the host gives Bcc
//! recipients transactions of their own), and every recipient gets its own answer from the
//! server's replies:
//! - a 2xx to RCPT and then to the end of DATA: delivered, with the server's words;
//! - a 5xx: failed, with the enhanced status code and the server's text, for the report;
//! - a 4xx, a refused or timed-out connection, a 4xx greeting or a 421: deferred, so the
//!   host keeps the message and tries again (store and forward).
//!
//! The connection stays open between messages (checked with NOOP before reuse after a
//! pause; a reused connection the server has closed meanwhile is replaced at once); for
//! parallel connections, give the transport `parallel = N` in the profile. With a server
//! that offers PIPELINING (RFC 2920), MAIL, the RCPTs and DATA go in one write and their
//! replies are read after it: one round trip where there were two and more. With
//! `domains = [...]` it takes only recipients in those domains and answers "not mine" for
//! the others, which the host offers to the next transport (a transport map).
//!
//! ```toml
//! [[transport]]
//! provider = "smtp"
//! parallel = 4
//! config = { host = "smtp.example.com", port = 587, tls = "starttls", username = "spooler", password_file = "/etc/spooler/smtp-password" }
//! ```
//!
//! TLS (`tls = "starttls"`, the default, or `"implicit"`) always verifies the server's
//! certificate: it must chain to a trusted CA and be issued for `host`. The trusted CAs are
//! the public ones (Mozilla's list, built in) or, with `ca_file = "/path/ca.pem"`, instead
//! exactly the CA certificates in that PEM file (for a private or self-signed CA). A
//! certificate that is not trusted, or not issued for `host`, is refused: the message is
//! deferred, and its answer and the log say so and what to set.
//! `accept_invalid_certificates = true` turns verification off (only for testing).
//!
//! The AUTH password is `password`, or what the file `password_file` holds
//! (its trailing line end dropped), so that it need not stand in the profile.
//!
//! A smart host that cannot be connected to at all takes the transport offline, and a probe
//! brings it back online as soon as it listens again (`reachability`).

mod data;
mod reachability;

use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, SmtpConnection, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use provider_abi::{
    export_library, Address, Library, MessageRef, OpenContext, ProviderError, RecipientOutcome,
    Transport,
};
use reachability::Reachability;
use serde::Deserialize;

/// How the connection is protected.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// Plain text (only for a smart host on this machine or a trusted network).
    None,
    /// Plain text, upgraded with STARTTLS before anything else is said.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The smart host.
    host: String,
    /// Its port [default: 465 with implicit TLS, otherwise 25].
    port: Option<u16>,
    /// `starttls` (default), `implicit` or `none`.
    #[serde(default = "default_tls")]
    tls: TlsMode,
    /// Accept a certificate that does not verify (a test server's).
    #[serde(default)]
    accept_invalid_certificates: bool,
    /// A PEM file of the CA certificates to trust instead of the built-in public roots.
    ca_file: Option<String>,
    /// AUTH user name; with `password` or `password_file`.
    username: Option<String>,
    /// AUTH password.
    password: Option<String>,
    /// A file holding the AUTH password (its trailing line end dropped).
    password_file: Option<String>,
    /// The name given in EHLO, and the domain of `LOCAL:` senders [default: this host's name].
    helo: Option<String>,
    /// How long to wait for the server at each step, in seconds.
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// The address types it claims.
    #[serde(default = "default_types")]
    address_types: Vec<String>,
    /// Only recipients in these domains (like a Postfix transport map); for the others it
    /// answers "not mine" and the host offers them to the next transport.
    domains: Option<Vec<String>>,
}

fn default_tls() -> TlsMode {
    TlsMode::Starttls
}

fn default_timeout() -> u64 {
    60
}

fn default_types() -> Vec<String> {
    vec!["SMTP".into()]
}

/// The transport instance: its settings and, between messages, its open connection.
pub struct SmtpTransport {
    name: String,
    host: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    client_id: ClientId,
    helo: String,
    timeout: Duration,
    address_types: Vec<String>,
    domains: Option<Vec<String>>,
    connection: Option<SmtpConnection>,
    /// Whether the open connection's server offers PIPELINING.
    pipelining: bool,
    /// When the connection last finished a command; a connection idle for longer than
    /// [`CHECK_AFTER_IDLE`] is checked with NOOP before reuse.
    last_used: Instant,
    /// Online or offline, as connecting to the smart host found it.
    reachability: Reachability,
}

/// How long a connection may sit idle before it is checked with NOOP before reuse. Within a
/// busy stream of messages no check is made: it would cost a round trip per message.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

impl SmtpTransport {
    /// Opens the transport from its configuration (it connects lazily, at the first message).
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let name = context.name().to_owned();
        // The helpers' words name the key themselves.
        let bad = |why: String| context.config_error("", why);
        let config: Config = context.config_as()?;
        let password =
            transport_support::password(config.password, config.password_file.as_deref())
                .map_err(bad)?;
        let credentials = match (config.username, password) {
            (Some(user), Some(password)) => Some(Credentials::new(user, password)),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "username and password (or password_file) go together".into()
                ))
            }
        };
        let tls_parameters = match config.tls {
            TlsMode::None if config.ca_file.is_some() => {
                return Err(context.config_error(
                    "ca_file",
                    "it is for TLS, and tls = \"none\"; set tls = \"starttls\" or \"implicit\"",
                ))
            }
            TlsMode::None => None,
            _ => Some(
                tls_parameters(
                    &config.host,
                    config.ca_file.as_deref(),
                    config.accept_invalid_certificates,
                )
                .map_err(bad)?,
            ),
        };
        let helo = config.helo.unwrap_or_else(provider_abi::host::hostname);
        if let Some(bad_type) = config
            .address_types
            .iter()
            .find(|t| !provider_abi::address::is_address_type(t))
        {
            return Err(context.config_error(
                "address_types",
                format!("`{bad_type}` is not an address type (letters, digits, '-' or '_')"),
            ));
        }
        let port = config.port.unwrap_or(if config.tls == TlsMode::Implicit {
            465
        } else {
            25
        });
        Ok(SmtpTransport {
            reachability: Reachability::new(
                format!("{}:{port}", config.host),
                context.host().clone(),
            ),
            port,
            host: config.host,
            tls: config.tls,
            tls_parameters,
            credentials,
            client_id: ClientId::Domain(helo.clone()),
            helo,
            timeout: Duration::from_secs(config.timeout_secs.max(1)),
            address_types: config
                .address_types
                .iter()
                .map(|t| t.to_ascii_uppercase())
                .collect(),
            domains: config
                .domains
                .map(|domains| domains.iter().map(|d| d.to_ascii_lowercase()).collect()),
            connection: None,
            pipelining: false,
            last_used: Instant::now(),
            name,
        })
    }

    /// The open connection, reused if the server still answers NOOP, or a new one.
    fn connection(&mut self) -> Result<&mut SmtpConnection, lettre::transport::smtp::Error> {
        let idle = self.last_used.elapsed() >= CHECK_AFTER_IDLE;
        let alive = self
            .connection
            .as_mut()
            .is_some_and(|c| !idle || c.test_connected());
        if !alive {
            self.connection = None;
            let implicit = self
                .tls_parameters
                .as_ref()
                .filter(|_| self.tls == TlsMode::Implicit);
            let connected = SmtpConnection::connect(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.client_id,
                implicit,
                None,
            );
            match connected
                .as_ref()
                .err()
                .and_then(reachability::connect_failure)
            {
                Some(cause) => self.reachability.unreachable(cause),
                None => self.reachability.connected(),
            }
            let mut connection = connected?;
            if self.tls == TlsMode::Starttls {
                let parameters = self
                    .tls_parameters
                    .as_ref()
                    .expect("STARTTLS has TLS parameters");
                connection.starttls(parameters, &self.client_id)?;
            }
            // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one: ask
            // again (RFC 5321 allows a second EHLO; it resets nothing but the transaction).
            let features = connection.command(Ehlo::new(self.client_id.clone()))?;
            self.pipelining = features.message().any(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
            });
            if let Some(credentials) = &self.credentials {
                connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials)?;
            }
            log::debug!("{}: connected to {}:{}", self.name, self.host, self.port);
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    /// The envelope sender for MAIL FROM: SMTP senders as they are, `LOCAL:user` as
    /// `user@<helo>`, and the null sender for reports.
    fn mail_from(&self, message: &MessageRef<'_>) -> Option<lettre::Address> {
        let sender = &message.envelope.sender;
        if message.envelope.is_report {
            return None;
        }
        let text = if sender.has_type("SMTP") {
            sender.address().to_owned()
        } else {
            format!("{}@{}", sender.address(), self.helo)
        };
        text.parse().ok()
    }

    /// One SMTP transaction for `recipients`.
    fn transaction(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Vec<RecipientOutcome> {
        let server = format!("{}:{}", self.host, self.port);
        let mut outcomes: Vec<Option<RecipientOutcome>> = vec![None; recipients.len()];
        let mut addresses = Vec::with_capacity(recipients.len());
        for (index, recipient) in recipients.iter().enumerate() {
            match recipient.address().parse::<lettre::Address>() {
                Ok(address) => addresses.push((index, address)),
                Err(_) => {
                    outcomes[index] = Some(RecipientOutcome::failed(
                        "5.1.3",
                        format!(
                            "x-spooler; `{}` is not an SMTP address",
                            recipient.address()
                        ),
                        "the address is not valid",
                    ))
                }
            }
        }
        if addresses.is_empty() {
            return outcomes.into_iter().flatten().collect();
        }
        let rcpts: Vec<Rcpt> = addresses
            .iter()
            .map(|(_, address)| Rcpt::new(address.clone(), vec![]))
            .collect();
        let pipelined = match self.begin(&message, &rcpts) {
            Ok(pipelined) => pipelined,
            Err(outcome) => {
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| outcome.clone()))
                    .collect()
            }
        };
        for ((index, _), rcpt) in addresses.iter().zip(rcpts) {
            let Some(connection) = self.connection.as_mut() else {
                break;
            };
            let reply = if pipelined {
                connection.read_response()
            } else {
                connection.command(rcpt)
            };
            if let Err(error) = reply {
                outcomes[*index] = Some(answer_to_error(&error, "RCPT TO"));
                if !error.is_permanent() && !error.is_transient() {
                    self.after_error(&error);
                    break;
                }
            }
        }
        let accepted: Vec<usize> = addresses
            .iter()
            .map(|(index, _)| *index)
            .filter(|&i| outcomes[i].is_none())
            .collect();
        let Some(connection) = self.connection.as_mut() else {
            let reason = format!("the connection to {server} was lost");
            return outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| RecipientOutcome::deferred(reason.clone(), None)))
                .collect();
        };
        let data = if pipelined {
            connection.read_response()
        } else if accepted.is_empty() {
            // Nothing to send: end the transaction as if DATA had been refused.
            connection.command(Rset)
        } else {
            connection.command(Data)
        };
        if accepted.is_empty() {
            match data {
                // A pipelined DATA the server took without a recipient: it waits for content
                // we will not send, so the connection goes.
                Ok(_) if pipelined => self.drop_connection(),
                Ok(_) => {}
                Err(error) => self.after_error(&error),
            }
        } else {
            // `send_content` sends the content and the final dot after DATA's 354.
            let data =
                data.and_then(|_| data::send_content(connection, message.content.as_slice()));
            let outcome = match &data {
                Ok(response) => RecipientOutcome::delivered(describe(response)),
                Err(error) => answer_to_error(error, "DATA"),
            };
            if let Err(error) = &data {
                self.after_error(error);
            }
            for index in accepted {
                outcomes[index] = Some(outcome.clone());
            }
        }
        self.last_used = Instant::now();
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    RecipientOutcome::deferred("not attempted after the connection failed", None)
                })
            })
            .collect()
    }

    /// Starts a transaction: MAIL FROM, and with PIPELINING the RCPTs and DATA in the same
    /// write (their replies are left for the caller to read); true if they were sent. A
    /// reused connection that fails here without a reply, or with 421, was closed by the
    /// server while idle: it is replaced once, so the message is not deferred for what is no
    /// fault of the server's.
    fn begin(
        &mut self,
        message: &MessageRef<'_>,
        rcpts: &[Rcpt],
    ) -> Result<bool, RecipientOutcome> {
        let from = self.mail_from(message);
        let mut reused = self.connection.is_some();
        loop {
            let server = format!("{}:{}", self.host, self.port);
            let name = self.name.clone();
            self.connection().map_err(|error| {
                let reason = match transport_support::tls::certificate_refusal(&server, &error) {
                    Some(refusal) => {
                        log::warn!("{name}: {refusal}");
                        refusal
                    }
                    None => format!("cannot talk to {server}: {}", explain(&error)),
                };
                RecipientOutcome::deferred(reason, None)
            })?;
            let mut group = Mail::new(from.clone(), vec![]).to_string();
            if self.pipelining {
                for rcpt in rcpts {
                    group.push_str(&rcpt.to_string());
                }
                group.push_str(&Data.to_string());
            }
            let connection = self.connection.as_mut().expect("connected above");
            match connection.command(group) {
                Ok(_) => return Ok(self.pipelining),
                Err(error) if reused && closed_by_server(&error) => {
                    log::debug!(
                        "{}: {server} had closed the connection; reconnecting",
                        self.name
                    );
                    self.connection = None;
                    reused = false;
                }
                Err(error) => {
                    let outcome = answer_to_error(&error, "MAIL FROM");
                    if self.pipelining {
                        // The replies to the RCPTs and DATA are still to come.
                        self.drop_connection();
                    } else {
                        self.after_error(&error);
                    }
                    return Err(outcome);
                }
            }
        }
    }

    /// Closes the connection without a word, ending any transaction under way.
    fn drop_connection(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            connection.abort();
        }
    }

    /// After an error the connection is only kept if the server answered normally (a reply
    /// code); anything else (network, 421) drops it.
    fn after_error(&mut self, error: &lettre::transport::smtp::Error) {
        let closing = error.status().is_some_and(|code| code.to_string() == "421");
        if closing || !(error.is_permanent() || error.is_transient()) {
            self.drop_connection();
        } else if let Some(connection) = self.connection.as_mut() {
            if connection.command(Rset).is_err() {
                self.connection = None;
            }
        }
    }
}

/// TLS for `host`, verified against the built-in public roots or, with `ca_file`, against
/// exactly the CA certificates in that file.
fn tls_parameters(
    host: &str,
    ca_file: Option<&str>,
    accept_invalid_certificates: bool,
) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned())
        .dangerous_accept_invalid_certs(accept_invalid_certificates);
    if let Some(file) = ca_file {
        builder = builder.certificate_store(CertificateStore::None);
        for certificate in transport_support::tls::read_ca_file(file)? {
            let certificate = Certificate::from_der(certificate.to_vec())
                .map_err(|e| format!("ca_file {file}: {e}"))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS for {host}: {}", explain(&e)))
}

impl SmtpTransport {
    /// Whether the recipient's domain is one this transport serves.
    fn serves(&self, recipient: &Address) -> bool {
        let Some(domains) = &self.domains else {
            return true;
        };
        let domain = recipient
            .address()
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase());
        domain.is_some_and(|domain| domains.contains(&domain))
    }
}

impl Drop for SmtpTransport {
    fn drop(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            connection.quit().ok();
        }
    }
}

impl Transport for SmtpTransport {
    fn address_types(&self) -> Vec<String> {
        self.address_types.clone()
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        let mine: Vec<usize> = (0..recipients.len())
            .filter(|&i| self.serves(&recipients[i]))
            .collect();
        let mut outcomes = vec![RecipientOutcome::NotMine; recipients.len()];
        if !mine.is_empty() {
            let addresses: Vec<Address> = mine.iter().map(|&i| recipients[i].clone()).collect();
            for (index, outcome) in mine.into_iter().zip(self.transaction(message, &addresses)) {
                outcomes[index] = outcome;
            }
        }
        for (recipient, outcome) in recipients.iter().zip(&outcomes) {
            log::debug!(
                "{}: message {} to {recipient}: {outcome:?}",
                self.name,
                message.envelope.id
            );
        }
        Ok(outcomes)
    }
}

/// The outcome an SMTP error stands for: 5xx failed (with the enhanced code and the
/// server's text), anything else deferred.
fn answer_to_error(error: &lettre::transport::smtp::Error, step: &str) -> RecipientOutcome {
    let text = server_text(error);
    match error.status() {
        Some(code) if error.is_permanent() => {
            let status = enhanced_code(&text).unwrap_or_else(|| "5.0.0".into());
            RecipientOutcome::failed(
                status,
                format!("smtp; {code} {text}"),
                format!("the server refused it at {step}: {code} {text}"),
            )
        }
        Some(code) => {
            RecipientOutcome::deferred(format!("the server answered {code} {text} at {step}"), None)
        }
        None => RecipientOutcome::deferred(format!("{step} failed: {}", explain(error)), None),
    }
}

/// The server's own words in an error (`lettre` prints them after the reply code).
fn server_text(error: &lettre::transport::smtp::Error) -> String {
    let shown = error.to_string();
    shown
        .split_once("): ")
        .map(|(_, text)| text.trim().to_owned())
        .unwrap_or(shown)
}

/// Whether `error` says the server has closed the connection: no reply at all, or 421.
fn closed_by_server(error: &lettre::transport::smtp::Error) -> bool {
    error.status().is_none_or(|code| code.to_string() == "421")
}

/// What went wrong, with the cause chain (`connection refused`, `timed out`).
fn explain(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// `5.1.1` from `5.1.1 <bob@example.com>: Recipient address rejected`.
fn enhanced_code(text: &str) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let parts: Vec<&str> = first.split('.').collect();
    let valid = parts.len() == 3
        && ["2", "4", "5"].contains(&parts[0])
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    valid.then(|| first.to_owned())
}

fn describe(response: &Response) -> String {
    format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    )
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "smtp",
        &["SMTP"],
        SmtpTransport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::{ErrorKind, ProviderState};
    use provider_testkit::{check_transport, message, open_transport, submit};
    use spooler_tests::{free_port, real_server, SmtpSink};

    const RECIPIENTS: [&str; 2] = ["SMTP:bob@example.net", "SMTP:carol@example.org"];

    fn config(port: u16) -> String {
        format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nhelo = \"testkit.example\"\ntimeout_secs = 5")
    }

    #[test]
    fn keeps_the_hosts_transport_contract_with_a_server() {
        if real_server("smtp-sink").is_none() {
            return;
        }
        let sink = SmtpSink::discarding(free_port(), &[]);
        check_transport(library, "smtp", &config(sink.port), &RECIPIENTS).unwrap();
        let (mut transport, _) = open_transport(library, "smtp", &config(sink.port)).unwrap();
        let outcomes = submit(
            &mut transport,
            &message(&RECIPIENTS, "Subject: hi\r\n\r\nx\r\n"),
        );
        assert!(
            matches!(
                outcomes.as_deref(),
                Ok([
                    RecipientOutcome::Delivered { .. },
                    RecipientOutcome::Delivered { .. }
                ])
            ),
            "{outcomes:?}"
        );
    }

    #[test]
    fn keeps_the_hosts_transport_contract_with_the_server_down() {
        let port = free_port();
        check_transport(library, "smtp", &config(port), &RECIPIENTS).unwrap();
        let (mut transport, host) = open_transport(library, "smtp", &config(port)).unwrap();
        let outcomes = submit(
            &mut transport,
            &message(&RECIPIENTS, "Subject: hi\r\n\r\nx\r\n"),
        );
        assert!(
            matches!(
                outcomes.as_deref(),
                Ok([
                    RecipientOutcome::Deferred { .. },
                    RecipientOutcome::Deferred { .. }
                ])
            ),
            "a refused connection defers every recipient: {outcomes:?}"
        );
        let statuses = host.statuses();
        assert!(
            matches!(
                &statuses[..],
                [(ProviderState::Offline, text)]
                    if text.starts_with(&format!("cannot connect to 127.0.0.1:{port}: "))
                        && text.to_lowercase().contains("refused")
            ),
            "and takes the transport offline: {statuses:?}"
        );
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let refused = |config: &str| {
            let error = open_transport(library, "smtp", config)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        assert_eq!(
            refused("host = \"mail.example.com\"\nport = \"x\""),
            "instance \"smtp-test\": key port at line 2: invalid type: string \"x\", expected u16"
        );
        let misspelt = refused("host = \"mail.example.com\"\nprot = 25");
        assert!(
            misspelt
                .starts_with("instance \"smtp-test\": key prot at line 2: unknown field `prot`"),
            "{misspelt}"
        );
        let ca = refused("host = \"mail.example.com\"\ntls = \"none\"\nca_file = \"/ca.pem\"");
        assert!(ca.contains("key ca_file: it is for TLS"), "{ca}");
        let user = refused("host = \"mail.example.com\"\nusername = \"spooler\"");
        assert!(user.contains("username and password"), "{user}");
    }

    #[test]
    fn enhanced_codes_are_read_from_the_server_text() {
        assert_eq!(
            enhanced_code("5.1.1 <bob@example.com>: Recipient address rejected").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_code("Error: command failed"), None);
        assert_eq!(enhanced_code("5.x.1 nope"), None);
    }

    #[test]
    fn tls_is_verified_against_the_ca_file_when_one_is_given() {
        let missing = tls_parameters("mail.example.com", Some("/nonexistent/ca.pem"), false)
            .err()
            .unwrap();
        assert!(
            missing.contains("ca_file /nonexistent/ca.pem: cannot read it"),
            "{missing}"
        );
        assert!(tls_parameters("mail.example.com", None, false).is_ok());
    }
}
