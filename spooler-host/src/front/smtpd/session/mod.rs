//! One SMTP session (RFC 5321 with ESMTP's PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES, STARTTLS, AUTH and DSN), as a state machine over the bytes the
//! client sent: the greeting, the commands in the order a transaction allows, and DATA,
//! whose 250 comes only once the message is in the Outbox.
//!
//! The session does no I/O of its own, so that one event loop can serve many sessions
//! (`reactor`) and a thread can serve one over a blocking TLS stream (`threaded`) with the
//! same code. A driver reads into [`Session::input`], runs [`Session::advance`], and does
//! what the [`Step`] it gets asks: send [`Session::replies`] and read more, commit a message
//! and hand the answer to [`Session::submitted`], wait, switch to TLS, or close. Replies are
//! buffered while pipelined commands are waiting and sent when the session needs more
//! input, or when they grow past `MAX_PENDING_REPLIES` (a client that pipelines without
//! reading costs that much at most). Time is the driver's too: it closes the session at
//! [`Session::deadline`], by which the command (or message) under way must be complete. This file holds the session's loop and replies; `transaction` the mail transaction
//! (MAIL, RCPT, DATA and the submission), `security` STARTTLS, AUTH and the relay rule,
//! `input` the bytes read and not yet taken.

mod input;
mod security;
mod transaction;

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::clients::Lease;
use super::command::{self, SmtpCommand, Unreadable};
use super::dsn::Dsn;
use super::message::DataReader;
use super::Shared;
pub use input::Input;
use input::Line;
use security::Sasl;
pub use transaction::Submit;

/// The longest command line taken (RFC 5321: 512 octets; AUTH responses may be longer).
const MAX_COMMAND_LINE: usize = 4096;
/// Replies beyond which the session stops taking commands until they are sent.
const MAX_PENDING_REPLIES: usize = 64 * 1024;
/// Errors after which the session is closed (Postfix's `smtpd_hard_error_limit`).
const MAX_ERRORS: usize = 20;
/// NOOP, RSET, VRFY and HELP commands a session may send (`smtpd_junk_command_limit`).
const MAX_JUNK_COMMANDS: usize = 100;

/// The message being built.
#[derive(Default)]
struct Transaction {
    /// The sender as submitted; `None` for the null reverse path `<>`.
    sender: Option<String>,
    recipients: Vec<String>,
    dsn: Dsn,
}

/// What the session reads next.
enum SessionMode {
    /// SmtpCommand lines.
    Commands,
    /// The rest of a command line too long to take, dropped.
    LongLine,
    /// The message of a DATA command for this transaction.
    Data(Transaction, DataReader),
    /// The answer to a `334` challenge.
    Sasl(Sasl),
    /// Nothing: the session is over.
    Closed,
}

/// What a session needs its driver to do next.
pub enum Step {
    /// Send the replies and read more input.
    NeedInput,
    /// Commit this message and give the answer to [`Session::submitted`] before advancing
    /// again (the replies to commands after DATA must follow its answer).
    Submit(Submit),
    /// Send the replies (waiting for the client to read them), then advance again, without
    /// reading: there is more input to take.
    Flush,
    /// Send nothing and advance again at this time: the AUTH answer of a client that failed
    /// before is delayed. Only this session waits.
    Pause(Instant),
    /// Send the replies, then encrypt the connection and call [`Session::tls_started`].
    StartTls,
    /// Send the replies and close the connection.
    Close,
}

/// A session's state.
pub struct Session {
    shared: Arc<Shared>,
    peer: IpAddr,
    /// Whether the connection is encrypted.
    tls: bool,
    /// What the client sent and the session has not taken yet.
    pub input: Input,
    /// Replies not sent yet.
    pub replies: Vec<u8>,
    mode: SessionMode,
    /// The client's EHLO or HELO name, and whether it said EHLO.
    greeted: Option<(String, bool)>,
    user: Option<String>,
    transaction: Option<Transaction>,
    errors: usize,
    junk: usize,
    /// When the command (or the message) under way must be complete.
    deadline: Instant,
    /// When the replies may go, if they are held back.
    pause: Option<Instant>,
    /// The session's place in its client's count: held until the session ends.
    _lease: Option<Lease>,
}

impl Session {
    /// A session with a client at `peer`; `tls` if the connection is encrypted from the
    /// start; holding `lease` until it ends. Nothing is said until [`Session::greet`].
    pub fn new(shared: Arc<Shared>, peer: IpAddr, tls: bool, lease: Option<Lease>) -> Session {
        let deadline = Instant::now() + shared.config.command_timeout;
        Session {
            shared,
            peer,
            tls,
            input: Input::new(),
            replies: Vec::with_capacity(1024),
            mode: SessionMode::Commands,
            greeted: None,
            user: None,
            transaction: None,
            errors: 0,
            junk: 0,
            deadline,
            pause: None,
            _lease: lease,
        }
    }

    /// What every session of its listener shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The client's address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// When the command (or the message) under way must be complete: the driver closes the
    /// session then, with [`Session::timed_out`].
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Gives the client the command timeout for its next command, from now.
    fn restart_clock(&mut self) {
        self.deadline = Instant::now() + self.shared.config.command_timeout;
    }

    /// Says the greeting.
    pub fn greet(&mut self) {
        self.restart_clock();
        let greeting = format!("{} ESMTP spooler-host", self.shared.hostname);
        self.reply_text(220, &greeting);
    }

    /// Takes what it can of the input, and says what the session needs next.
    pub fn advance(&mut self) -> Step {
        loop {
            match std::mem::replace(&mut self.mode, SessionMode::Commands) {
                SessionMode::Closed => {
                    self.mode = SessionMode::Closed;
                    return Step::Close;
                }
                SessionMode::Commands => match self.input.line(MAX_COMMAND_LINE) {
                    Line::Complete(line) => {
                        self.restart_clock();
                        if let Some(step) = self.dispatch(&line) {
                            return step;
                        }
                    }
                    Line::TooLong => self.error(500, "5.5.2", "line too long"),
                    Line::Unfinished => return Step::NeedInput,
                    Line::Dropped => self.mode = SessionMode::LongLine,
                },
                SessionMode::LongLine => {
                    if !self.input.skip_line() {
                        self.mode = SessionMode::LongLine;
                        return Step::NeedInput;
                    }
                    self.error(500, "5.5.2", "line too long");
                }
                SessionMode::Data(transaction, mut reader) => {
                    let (taken, data) = reader.take(self.input.unread());
                    self.input.consume(taken);
                    let Some(data) = data else {
                        self.mode = SessionMode::Data(transaction, reader);
                        return Step::NeedInput;
                    };
                    self.restart_clock();
                    if let Some(submit) = self.message(transaction, data) {
                        return Step::Submit(submit);
                    }
                }
                SessionMode::Sasl(stage) => match self.input.line(MAX_COMMAND_LINE) {
                    Line::Complete(line) => {
                        self.restart_clock();
                        self.sasl_answer(stage, &line);
                    }
                    Line::TooLong => self.error(500, "5.5.2", "line too long"),
                    Line::Unfinished => {
                        self.mode = SessionMode::Sasl(stage);
                        return Step::NeedInput;
                    }
                    Line::Dropped => self.mode = SessionMode::LongLine,
                },
            }
            if self.errors >= MAX_ERRORS {
                self.reply(421, "4.7.0", "too many errors, closing the connection");
                self.mode = SessionMode::Closed;
            }
            if let Some(until) = self.pause.take() {
                // The client waits for the answer: its clock starts again after it.
                self.deadline = until + self.shared.config.command_timeout;
                return Step::Pause(until);
            }
            if self.replies.len() >= MAX_PENDING_REPLIES {
                return Step::Flush;
            }
        }
    }

    /// The connection ended (or failed with `error`) while the session waited for input.
    pub fn client_left(&self, error: Option<&io::Error>) {
        match (&self.mode, error) {
            (SessionMode::Data(..), _) => log::info!(
                "listener: {}: the client went away during DATA ({}); nothing stored",
                self.peer,
                error.map_or_else(|| "the connection ended".to_owned(), |e| e.to_string())
            ),
            (_, Some(error)) => log::debug!("listener: {}: {error}", self.peer),
            (_, None) => {}
        }
    }

    /// The client took too long (past [`Session::deadline`], or silent for the command
    /// timeout): says so, to be sent before closing.
    pub fn timed_out(&mut self) {
        self.reply(421, "4.4.2", "timeout exceeded, closing the connection");
        let what = match self.mode {
            SessionMode::Data(..) => format!(
                "its message took longer than {:?} or it was silent for {:?}; nothing stored",
                self.shared.config.message_time_limit, self.shared.config.command_timeout
            ),
            _ => format!(
                "a command took it longer than {:?}",
                self.shared.config.command_timeout
            ),
        };
        self.mode = SessionMode::Closed;
        log::info!("listener: {}: closed the session: {what}", self.peer);
    }

    fn dispatch(&mut self, line: &str) -> Option<Step> {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(Unreadable::Unknown(verb)) => {
                let verb: String = verb.chars().take(32).collect();
                self.error(500, "5.5.2", &format!("command {verb} not recognized"));
                return None;
            }
            Err(Unreadable::Syntax(why)) => {
                self.error(501, "5.5.4", why);
                return None;
            }
        };
        match command {
            SmtpCommand::Ehlo(name) => self.hello(name, true),
            SmtpCommand::Helo(name) => self.hello(name, false),
            SmtpCommand::Mail(path, parameters) => self.mail(&path, &parameters),
            SmtpCommand::Rcpt(path, parameters) => self.rcpt(&path, &parameters),
            SmtpCommand::Data => self.data(),
            SmtpCommand::Rset => {
                self.transaction = None;
                self.junk_reply(250, "2.0.0", "Ok");
            }
            SmtpCommand::Noop => self.junk_reply(250, "2.0.0", "Ok"),
            SmtpCommand::Vrfy => self.junk_reply(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept the message and attempt delivery",
            ),
            SmtpCommand::Help => self.junk_reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH (RFC 5321)",
            ),
            SmtpCommand::Quit => {
                self.reply(221, "2.0.0", "Bye");
                self.mode = SessionMode::Closed;
                return Some(Step::Close);
            }
            SmtpCommand::StartTls => return self.start_tls(),
            SmtpCommand::Auth(mechanism, initial) => self.authenticate(&mechanism, initial),
        }
        None
    }

    fn hello(&mut self, name: String, extended: bool) {
        self.transaction = None;
        let hostname = self.shared.hostname.clone();
        if !extended {
            self.reply_text(250, &hostname);
            self.greeted = Some((name, false));
            return;
        }
        let mut lines = vec![
            hostname,
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.shared.intake.rules().max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.shared.tls.is_some() && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        lines.push("DSN".to_owned());
        let last = lines.len() - 1;
        for (index, line) in lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            self.replies
                .extend_from_slice(format!("250{separator}{line}\r\n").as_bytes());
        }
        self.greeted = Some((name, true));
    }

    fn junk_reply(&mut self, code: u16, enhanced: &str, text: &str) {
        self.junk += 1;
        if self.junk > MAX_JUNK_COMMANDS {
            self.errors = MAX_ERRORS;
        }
        self.reply(code, enhanced, text);
    }

    /// A reply that counts as an error of the client.
    fn error(&mut self, code: u16, enhanced: &str, text: &str) {
        self.errors += 1;
        self.reply(code, enhanced, text);
    }

    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        if enhanced.is_empty() {
            self.reply_text(code, text);
        } else {
            self.reply_text(code, &format!("{enhanced} {text}"));
        }
    }

    fn reply_text(&mut self, code: u16, text: &str) {
        self.replies
            .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
    }
}

fn is_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        v4 => v4.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::transaction::checked;
    use super::*;

    #[test]
    fn loopback_includes_mapped_addresses() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn recipients_are_checked_for_their_type() {
        assert_eq!(
            checked("SMTP", "bob@example.com").unwrap(),
            "SMTP:bob@example.com"
        );
        assert_eq!(checked("LOCAL", "alice").unwrap(), "LOCAL:alice");
        assert!(checked("SMTP", "bob").is_err());
    }
}
