//! One SMTP connection to one server, and the transactions made on it.
//!
//! A session connects lazily, keeps its connection between messages (checked with NOOP
//! before reuse after a pause; a reused connection the server has closed meanwhile is
//! replaced at once), and uses PIPELINING (RFC 2920) when the server offers it: MAIL, the
//! RCPTs and DATA go in one write and their replies are read after it.
//!
//! A transaction either reaches the server, and then every recipient has its answer, or it
//! does not (no connection, a refused greeting, a failed STARTTLS): the caller learns why,
//! and decides whether to defer the recipients (a smart host) or to try the next mail
//! exchanger (MX delivery).

use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use provider_abi::transport::is_enhanced_status_code;
use provider_abi::{Address, MessageRef, RecipientOutcome};
use transport_support::tls::certificate_error;

use crate::data;
use crate::reachability::{self, Reachability};

/// How a session protects its connection.
pub enum Security {
    /// Plain text.
    Plain,
    /// STARTTLS before anything else is said; a server without it is not talked to.
    Starttls(TlsParameters),
    /// TLS from the first byte (SMTPS).
    Implicit(TlsParameters),
    /// STARTTLS when the server offers it, its certificate not checked, and plain text when
    /// it does not or the handshake fails (Postfix's `smtp_tls_security_level = may`).
    Opportunistic(TlsParameters),
}

/// What every session of one transport shares.
pub struct Client {
    /// The transport instance's name, for the log.
    pub name: String,
    pub client_id: ClientId,
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
}

/// The transaction did not reach the server.
#[derive(Debug, Clone)]
pub struct Unreached {
    /// Why, in words.
    pub reason: String,
    /// Whether it was TLS that failed (no STARTTLS offered, a failed handshake, a refused
    /// certificate), rather than the connection or the greeting.
    pub tls: bool,
}

/// A connection that could not be made, and whether TLS was the step that failed.
struct NotConnected {
    error: lettre::transport::smtp::Error,
    tls: bool,
}

impl NotConnected {
    fn plain(error: lettre::transport::smtp::Error) -> NotConnected {
        NotConnected { error, tls: false }
    }

    fn tls(error: lettre::transport::smtp::Error) -> NotConnected {
        NotConnected { error, tls: true }
    }
}

/// How long a connection may sit idle before it is checked with NOOP before reuse. Within a
/// busy stream of messages no check is made: it would cost a round trip per message.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// A connection (open or not yet) to one server.
pub struct Session {
    /// Where to connect: a host name or an IP address.
    host: String,
    port: u16,
    /// The server as messages name it (`mx.example.net[192.0.2.1]:25`).
    label: String,
    security: Security,
    connection: Option<SmtpConnection>,
    /// Whether the open connection's server offers PIPELINING.
    pipelining: bool,
    /// When the connection last finished a command.
    last_used: Instant,
    /// The smart host's online state, which connecting updates; none for an exchanger.
    reachability: Option<Reachability>,
}

impl Session {
    /// A session with `host:port`, named `label` in messages.
    pub fn new(host: String, port: u16, label: String, security: Security) -> Session {
        Session {
            host,
            port,
            label,
            security,
            connection: None,
            pipelining: false,
            last_used: Instant::now(),
            reachability: None,
        }
    }

    /// This session keeps `reachability` up to date at each connection attempt.
    pub fn reporting_to(mut self, reachability: Reachability) -> Session {
        self.reachability = Some(reachability);
        self
    }

    /// When the session last finished a command.
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// Whether its TLS verifies the server's certificate (what an MTA-STS `enforce` policy
    /// requires of a connection).
    pub fn verifies_tls(&self) -> bool {
        matches!(self.security, Security::Starttls(_) | Security::Implicit(_))
    }

    /// The open connection, reused if the server still answers NOOP, or a new one.
    fn connection(&mut self, client: &Client) -> Result<&mut SmtpConnection, NotConnected> {
        let idle = self.last_used.elapsed() >= CHECK_AFTER_IDLE;
        let alive = self
            .connection
            .as_mut()
            .is_some_and(|c| !idle || c.test_connected());
        if !alive {
            self.connection = None;
            let mut connection = self.connect(client)?;
            // lettre keeps only the EHLO keywords it knows, and PIPELINING is not one: ask
            // again (RFC 5321 allows a second EHLO; it resets nothing but the transaction).
            let features = connection
                .command(Ehlo::new(client.client_id.clone()))
                .map_err(NotConnected::plain)?;
            self.pipelining = features.message().any(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
            });
            if let Some(credentials) = &client.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .map_err(NotConnected::plain)?;
            }
            log::debug!("{}: connected to {}", client.name, self.label);
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    /// A new connection, greeted and protected as `security` says.
    fn connect(&mut self, client: &Client) -> Result<SmtpConnection, NotConnected> {
        let implicit = match &self.security {
            Security::Implicit(parameters) => Some(parameters),
            _ => None,
        };
        let connected = SmtpConnection::connect(
            (self.host.as_str(), self.port),
            Some(client.timeout),
            &client.client_id,
            implicit,
            None,
        );
        if let Some(reachability) = &mut self.reachability {
            match connected
                .as_ref()
                .err()
                .and_then(reachability::connect_failure)
            {
                Some(cause) => reachability.unreachable(cause),
                None => reachability.connected(),
            }
        }
        let mut connection = connected.map_err(|error| {
            if implicit.is_some() && (error.is_tls() || certificate_error(&error).is_some()) {
                NotConnected::tls(error)
            } else {
                NotConnected::plain(error)
            }
        })?;
        match &self.security {
            Security::Starttls(parameters) => {
                connection
                    .starttls(parameters, &client.client_id)
                    .map_err(NotConnected::tls)?;
            }
            Security::Opportunistic(parameters) if connection.can_starttls() => {
                if let Err(error) = connection.starttls(parameters, &client.client_id) {
                    log::info!(
                        "{}: STARTTLS with {} failed ({}); going on in plain text",
                        client.name,
                        self.label,
                        explain(&error)
                    );
                    connection.abort();
                    connection = SmtpConnection::connect(
                        (self.host.as_str(), self.port),
                        Some(client.timeout),
                        &client.client_id,
                        None,
                        None,
                    )
                    .map_err(NotConnected::plain)?;
                }
            }
            _ => {}
        }
        Ok(connection)
    }

    /// One SMTP transaction from `from` for `recipients`: an answer for each, or why the
    /// server was not reached (no recipient was offered to it then).
    pub fn transaction(
        &mut self,
        client: &Client,
        from: Option<lettre::Address>,
        message: &MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, Unreached> {
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
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let rcpts: Vec<Rcpt> = addresses
            .iter()
            .map(|(_, address)| Rcpt::new(address.clone(), vec![]))
            .collect();
        let pipelined = match self.begin(client, from, &rcpts)? {
            Ok(pipelined) => pipelined,
            Err(outcome) => {
                return Ok(outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| outcome.clone()))
                    .collect())
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
            let reason = format!("the connection to {} was lost", self.label);
            return Ok(outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| RecipientOutcome::deferred(reason.clone(), None)))
                .collect());
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
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    RecipientOutcome::deferred("not attempted after the connection failed", None)
                })
            })
            .collect())
    }

    /// Starts a transaction: MAIL FROM, and with PIPELINING the RCPTs and DATA in the same
    /// write (their replies are left for the caller to read). `Ok(Ok(true))` if they were
    /// sent, `Ok(Err(answer))` if MAIL FROM was refused, `Err` if the server was not
    /// reached. A reused connection that fails here without a reply, or with 421, was closed
    /// by the server while idle: it is replaced once, so the message is not deferred for
    /// what is no fault of the server's.
    fn begin(
        &mut self,
        client: &Client,
        from: Option<lettre::Address>,
        rcpts: &[Rcpt],
    ) -> Result<Result<bool, RecipientOutcome>, Unreached> {
        let mut reused = self.connection.is_some();
        loop {
            let label = self.label.clone();
            // A smart host's refused certificate is told with the keys to set (`host`,
            // `ca_file`); an exchanger's by the caller, which knows the domain's TLS policy.
            let smart_host = self.reachability.is_some();
            self.connection(client)
                .map_err(|NotConnected { error, tls }| Unreached {
                    reason: match transport_support::tls::certificate_refusal(&label, &error)
                        .filter(|_| smart_host)
                    {
                        Some(refusal) => {
                            log::warn!("{}: {refusal}", client.name);
                            refusal
                        }
                        None => format!("cannot talk to {label}: {}", explain(&error)),
                    },
                    tls,
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
                Ok(_) => return Ok(Ok(self.pipelining)),
                Err(error) if reused && closed_by_server(&error) => {
                    log::debug!(
                        "{}: {label} had closed the connection; reconnecting",
                        client.name
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
                    return Ok(Err(outcome));
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

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut connection) = self.connection.take() {
            connection.quit().ok();
        }
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
pub fn explain(error: &lettre::transport::smtp::Error) -> String {
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
    is_enhanced_status_code(first).then(|| first.to_owned())
}

fn describe(response: &Response) -> String {
    format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_are_read_from_the_server_text() {
        assert_eq!(
            enhanced_code("5.1.1 <bob@example.com>: Recipient address rejected").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(enhanced_code("Error: command failed"), None);
        assert_eq!(enhanced_code("5.x.1 nope"), None);
    }
}
