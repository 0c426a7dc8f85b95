//! One SMTP session (RFC 5321 with ESMTP's PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES, STARTTLS, AUTH and DSN): the greeting, the commands in the order a
//! transaction allows, and DATA, whose 250 comes only once the message is in the Outbox.
//! Replies are buffered while pipelined commands are waiting and sent before the session
//! waits for more.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;

use provider_abi::{Address, Property, Timestamp};

use super::auth;
use super::command::{self, Command, Unreadable};
use super::dsn::{self, Dsn};
use super::message::{self, Data};
use super::tls::Stream;
use super::Shared;
use crate::clients::aliases::local_name;
use crate::clients::mailbox;
use crate::clients::protocol::{Failure, Response, Submission};
use crate::queue::reports::rfc5322_date;

/// The longest command line taken (RFC 5321: 512 octets; AUTH responses may be longer).
const MAX_COMMAND_LINE: usize = 4096;
/// The most recipients of one message (Postfix's `smtpd_recipient_limit`).
const MAX_RECIPIENTS: usize = 1000;
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

/// How a session goes on after a command.
enum Next {
    Continue,
    Close,
}

/// A session's state.
struct Session<'a> {
    shared: &'a Shared,
    peer: IpAddr,
    reader: BufReader<Stream>,
    replies: Vec<u8>,
    /// The client's EHLO or HELO name, and whether it said EHLO.
    greeted: Option<(String, bool)>,
    user: Option<String>,
    transaction: Option<Transaction>,
    errors: usize,
    junk: usize,
}

/// Serves one connection until the client quits, goes away or times out.
pub fn serve(socket: TcpStream, peer: IpAddr, shared: &Shared) {
    let timeout = Some(shared.config.command_timeout);
    if let Err(error) = socket
        .set_read_timeout(timeout)
        .and_then(|()| socket.set_write_timeout(timeout))
        .and_then(|()| socket.set_nodelay(true))
    {
        log::warn!("listener: {peer}: {error}");
        return;
    }
    let stream = match (&shared.tls, shared.config.implicit_tls) {
        (Some(tls), true) => match Stream::encrypt(socket, tls) {
            Ok(stream) => stream,
            Err(error) => {
                log::warn!("listener: {peer}: {error}");
                return;
            }
        },
        _ => Stream::Plain(socket),
    };
    converse(stream, peer, shared);
}

/// Serves a session over a connection to one of the host's own sockets (`sendmail -bs`):
/// a local client, allowed to send as one on the loopback address is.
pub fn serve_local(socket: UnixStream, shared: &Shared) {
    let timeout = Some(shared.config.command_timeout);
    if let Err(error) = socket
        .set_read_timeout(timeout)
        .and_then(|()| socket.set_write_timeout(timeout))
    {
        log::warn!("sendmail -bs: {error}");
        return;
    }
    converse(
        Stream::Local(socket),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        shared,
    );
}

/// Runs the session until the client quits, goes away or times out.
fn converse(stream: Stream, peer: IpAddr, shared: &Shared) {
    let mut session = Session {
        shared,
        peer,
        reader: BufReader::with_capacity(16 * 1024, stream),
        replies: Vec::with_capacity(1024),
        greeted: None,
        user: None,
        transaction: None,
        errors: 0,
        junk: 0,
    };
    if let Err(error) = session.run() {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                session.reply(421, "4.4.2", "timeout exceeded, closing the connection");
                session.flush().ok();
                log::info!(
                    "listener: {peer}: closed a session idle for {:?}",
                    shared.config.command_timeout
                );
            }
            _ => log::debug!("listener: {peer}: {error}"),
        }
    }
}

impl Session<'_> {
    fn run(&mut self) -> io::Result<()> {
        let greeting = format!("{} ESMTP spooler-host", self.shared.hostname);
        self.reply_text(220, &greeting);
        loop {
            let Some(line) = self.command_line()? else {
                return Ok(());
            };
            let next = match line {
                Some(line) => self.dispatch(&line)?,
                None => {
                    self.error(500, "5.5.2", "line too long");
                    Next::Continue
                }
            };
            if matches!(next, Next::Close) {
                return self.flush();
            }
            if self.errors >= MAX_ERRORS {
                self.reply(421, "4.7.0", "too many errors, closing the connection");
                return self.flush();
            }
        }
    }

    /// The next command line without its line ending: `None` at the end of the connection,
    /// `Some(None)` for a line over [`MAX_COMMAND_LINE`] (read to its end and dropped).
    fn command_line(&mut self) -> io::Result<Option<Option<String>>> {
        if self.reader.buffer().is_empty() {
            self.flush()?;
        }
        let mut line = Vec::new();
        self.reader
            .by_ref()
            .take(MAX_COMMAND_LINE as u64 + 2)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Ok(None);
        }
        if !line.ends_with(b"\n") {
            if line.len() < MAX_COMMAND_LINE {
                return Ok(None); // The connection ended mid-line.
            }
            let mut rest = Vec::new();
            while !rest.ends_with(b"\n") {
                rest.clear();
                let read = self
                    .reader
                    .by_ref()
                    .take(MAX_COMMAND_LINE as u64)
                    .read_until(b'\n', &mut rest)?;
                if read == 0 {
                    return Ok(None);
                }
            }
            return Ok(Some(None));
        }
        let text = String::from_utf8_lossy(&line);
        Ok(Some(Some(text.trim_end_matches(['\r', '\n']).to_owned())))
    }

    fn dispatch(&mut self, line: &str) -> io::Result<Next> {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(Unreadable::Unknown(verb)) => {
                let verb: String = verb.chars().take(32).collect();
                self.error(500, "5.5.2", &format!("command {verb} not recognized"));
                return Ok(Next::Continue);
            }
            Err(Unreadable::Syntax(why)) => {
                self.error(501, "5.5.4", why);
                return Ok(Next::Continue);
            }
        };
        match command {
            Command::Ehlo(name) => self.hello(name, true),
            Command::Helo(name) => self.hello(name, false),
            Command::Mail(path, parameters) => self.mail(&path, &parameters),
            Command::Rcpt(path, parameters) => self.rcpt(&path, &parameters),
            Command::Data => return self.data().map(|()| Next::Continue),
            Command::Rset => {
                self.transaction = None;
                self.junk_reply(250, "2.0.0", "Ok");
            }
            Command::Noop => self.junk_reply(250, "2.0.0", "Ok"),
            Command::Vrfy => self.junk_reply(
                252,
                "2.5.2",
                "Cannot VRFY user, but will accept the message and attempt delivery",
            ),
            Command::Help => self.junk_reply(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH (RFC 5321)",
            ),
            Command::Quit => {
                self.reply(221, "2.0.0", "Bye");
                return Ok(Next::Close);
            }
            Command::StartTls => return self.start_tls(),
            Command::Auth(mechanism, initial) => self.authenticate(&mechanism, initial)?,
        }
        Ok(Next::Continue)
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
            format!("SIZE {}", self.shared.max_message_size),
            "8BITMIME".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.shared.tls.is_some() && !self.stream().is_tls() {
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

    fn mail(&mut self, path: &str, parameters: &[command::Parameter]) {
        if self.greeted.is_none() {
            return self.error(503, "5.5.1", "send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "nested MAIL command");
        }
        if !self.may_send() {
            return self.refuse_relay();
        }
        let mut dsn = Dsn::default();
        for parameter in parameters {
            let value = parameter.value.as_deref();
            let outcome = match parameter.keyword.as_str() {
                "SIZE" => match value.and_then(|v| v.parse::<u64>().ok()) {
                    Some(size) if size > self.shared.max_message_size as u64 => {
                        let text = format!(
                            "message size exceeds the limit of {} bytes",
                            self.shared.max_message_size
                        );
                        return self.error(552, "5.3.4", &text);
                    }
                    Some(_) => Ok(()),
                    None => Err("SIZE takes a number of bytes".to_owned()),
                },
                "BODY" => match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("7BIT" | "8BITMIME") => Ok(()),
                    _ => Err("BODY takes 7BIT or 8BITMIME".to_owned()),
                },
                // Who authenticated at a previous hop: taken and not relied on.
                "AUTH" => Ok(()),
                keyword @ ("RET" | "ENVID") => dsn.mail_parameter(keyword, value),
                other => {
                    let text = format!("the MAIL parameter {other} is not supported");
                    return self.error(555, "5.5.4", &text);
                }
            };
            if let Err(why) = outcome {
                return self.error(501, "5.5.4", &why);
            }
        }
        let sender = if path.is_empty() {
            None
        } else {
            match checked("SMTP", path) {
                Ok(address) => Some(address),
                Err(why) => return self.error(553, "5.1.7", &format!("sender {why}")),
            }
        };
        self.transaction = Some(Transaction {
            sender,
            recipients: Vec::new(),
            dsn,
        });
        self.reply(250, "2.1.0", "Ok");
    }

    fn rcpt(&mut self, path: &str, parameters: &[command::Parameter]) {
        let address = self.recipient_address(path);
        let Some(transaction) = self.transaction.as_mut() else {
            return self.error(503, "5.5.1", "need MAIL before RCPT");
        };
        if transaction.recipients.len() >= MAX_RECIPIENTS {
            let text = format!("too many recipients (at most {MAX_RECIPIENTS} per message)");
            return self.reply(452, "4.5.3", &text);
        }
        let address = match address {
            Ok(address) => address,
            Err(why) => return self.error(553, "5.1.3", &format!("recipient {why}")),
        };
        let mut notify = None;
        let mut original = None;
        for parameter in parameters {
            let value = parameter.value.as_deref();
            let outcome = match parameter.keyword.as_str() {
                "NOTIFY" => dsn::notify(value).map(|n| notify = Some(n)),
                "ORCPT" => dsn::original_recipient(value).map(|o| original = Some(o)),
                other => {
                    let text = format!("the RCPT parameter {other} is not supported");
                    return self.error(555, "5.5.4", &text);
                }
            };
            if let Err(why) = outcome {
                return self.error(501, "5.5.4", &why);
            }
        }
        transaction.dsn.recipient(&address, notify, original);
        transaction.recipients.push(address);
        self.reply(250, "2.1.5", "Ok");
    }

    /// `TYPE:local-part` for a domain the listener maps to a type, else `SMTP:path`,
    /// checked; or why not.
    fn recipient_address(&self, path: &str) -> Result<String, String> {
        // A path without a domain (`RCPT TO:<root>`, RFC 5321's `<postmaster>`) is a local
        // name: the submission path qualifies it and looks it up in the alias table.
        if let Some(name) = local_name(path).filter(|_| !path.contains(':')) {
            return Ok(name);
        }
        if let Some((local, domain)) = path.rsplit_once('@') {
            let domain = domain.to_ascii_lowercase();
            let mapped = self
                .shared
                .config
                .domain_types
                .iter()
                .find(|(d, _)| *d == domain);
            if let Some((_, address_type)) = mapped {
                return checked(address_type, local);
            }
        }
        checked("SMTP", path)
    }

    fn data(&mut self) -> io::Result<()> {
        let Some(transaction) = self.transaction.take() else {
            self.error(503, "5.5.1", "need MAIL and RCPT before DATA");
            return Ok(());
        };
        if transaction.recipients.is_empty() {
            self.error(554, "5.5.1", "no valid recipients");
            return Ok(());
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        self.flush()?;
        let content = match message::read(&mut self.reader, self.shared.max_message_size) {
            Ok(Data::Message(content)) => content,
            Ok(Data::TooBig) => {
                let text = format!(
                    "message size exceeds the limit of {} bytes",
                    self.shared.max_message_size
                );
                self.reply(552, "5.3.4", &text);
                return Ok(());
            }
            Ok(Data::LineTooLong) => {
                let text = format!(
                    "a line of the message is longer than {} octets",
                    message::MAX_TEXT_LINE
                );
                self.reply(500, "5.5.2", &text);
                return Ok(());
            }
            Err(error) => {
                log::info!(
                    "listener: {}: the client went away during DATA ({error}); nothing stored",
                    self.peer
                );
                return Err(error);
            }
        };
        self.submit(transaction, content);
        Ok(())
    }

    /// Puts the message into the Outbox as `submit` does, and answers with its id.
    fn submit(&mut self, transaction: Transaction, content: Vec<u8>) {
        let now = Timestamp::now();
        let content = message::with_trace(content, &self.received(now), &self.shared.hostname, now);
        let null_sender = transaction.sender.is_none();
        let sender = transaction
            .sender
            .unwrap_or_else(|| format!("SMTP:MAILER-DAEMON@{}", self.shared.hostname));
        let mut submission = Submission::new(&sender, transaction.recipients, content.len());
        let reports = transaction.dsn.reports();
        submission.delivery_report = reports.delivery && !null_sender;
        // A message from the null sender is itself a report: never answered with one.
        submission.no_non_delivery_report = !reports.non_delivery || null_sender;
        let properties: Vec<Property> = transaction.dsn.properties();
        match self
            .shared
            .control
            .submit_with(&submission, content, properties)
        {
            Response::Submitted { id } => {
                self.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
            }
            Response::Error { message, failure } => {
                let message = message.replace(['\r', '\n'], " ");
                let (code, enhanced) = match failure {
                    Failure::Temporary if message.contains("full") => (452, "4.3.1"),
                    Failure::Temporary => (451, "4.3.0"),
                    Failure::BadAddress => (550, "5.1.3"),
                    Failure::BadMessage => (554, "5.6.0"),
                    Failure::Refused => (554, "5.7.1"),
                };
                log::warn!("listener: {}: refused a message: {message}", self.peer);
                self.reply(code, enhanced, &message);
            }
            other => {
                log::error!("listener: the host answered a submission with {other:?}");
                self.reply(451, "4.3.0", "internal error; try again");
            }
        }
    }

    /// The `Received:` field of a message from this session.
    fn received(&self, now: Timestamp) -> String {
        let (name, extended) = self
            .greeted
            .as_ref()
            .map(|(name, extended)| (name.as_str(), *extended))
            .unwrap_or(("unknown", false));
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let protocol = match (extended, self.stream().is_tls(), self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        format!(
            "Received: from {name} ([{}])\r\n\tby {} (spooler-host) with {protocol};\r\n\t{}\r\n",
            self.peer,
            self.shared.hostname,
            rfc5322_date(now)
        )
    }

    fn start_tls(&mut self) -> io::Result<Next> {
        let Some(tls) = self.shared.tls.clone() else {
            self.error(502, "5.5.1", "STARTTLS is not offered here");
            return Ok(Next::Continue);
        };
        if self.stream().is_tls() {
            self.error(503, "5.5.1", "TLS is already active");
            return Ok(Next::Continue);
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        self.flush()?;
        // Whatever the client sent after STARTTLS in clear text is dropped (it could have
        // been injected by someone in between): the buffer goes with the reader.
        let reader = std::mem::replace(&mut self.reader, BufReader::new(Stream::Switching));
        let socket = reader
            .into_inner()
            .into_plain()
            .ok_or_else(|| io::Error::other("STARTTLS over TLS"))?;
        self.reader = BufReader::with_capacity(16 * 1024, Stream::encrypt(socket, &tls)?);
        self.greeted = None;
        self.user = None;
        self.transaction = None;
        Ok(Next::Continue)
    }

    fn authenticate(&mut self, mechanism: &str, initial: Option<String>) -> io::Result<()> {
        if self.shared.users.is_none() {
            self.error(502, "5.5.1", "AUTH is not offered here");
            return Ok(());
        }
        if !self.auth_offered() {
            self.error(
                538,
                "5.7.11",
                "encryption required: use STARTTLS before AUTH",
            );
            return Ok(());
        }
        if self.user.is_some() {
            self.error(503, "5.5.1", "already authenticated");
            return Ok(());
        }
        if self.transaction.is_some() {
            self.error(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            );
            return Ok(());
        }
        let credentials = match mechanism {
            "PLAIN" => {
                let Some(response) = self.sasl_response(initial, "")? else {
                    return Ok(());
                };
                auth::plain(&response)
            }
            "LOGIN" => {
                let Some(user) = self.sasl_response(initial, "Username:")? else {
                    return Ok(());
                };
                let Some(password) = self.sasl_response(None, "Password:")? else {
                    return Ok(());
                };
                Some((
                    String::from_utf8_lossy(&user).into_owned(),
                    String::from_utf8_lossy(&password).into_owned(),
                ))
            }
            _ => {
                self.error(
                    504,
                    "5.5.4",
                    "unrecognized authentication type (use PLAIN or LOGIN)",
                );
                return Ok(());
            }
        };
        let users = self.shared.users.as_ref().expect("checked above");
        match credentials {
            Some((user, password)) if users.check(&user, &password) => {
                log::info!("listener: {}: authenticated as {user}", self.peer);
                self.user = Some(user);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            Some((user, _)) => {
                log::warn!("listener: {}: authentication failed for {user}", self.peer);
                self.error(535, "5.7.8", "authentication credentials invalid");
            }
            None => self.error(501, "5.5.2", "malformed authentication response"),
        }
        Ok(())
    }

    /// The decoded SASL response: the initial one, or the answer to a `334` challenge;
    /// `None` when the client cancelled or sent no base64 (answered already).
    fn sasl_response(
        &mut self,
        initial: Option<String>,
        challenge: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let text = match initial {
            Some(text) => text,
            None => {
                let challenge = auth::encode(challenge.as_bytes());
                self.reply_text(334, &challenge);
                match self.command_line()? {
                    Some(Some(line)) => line,
                    Some(None) => {
                        self.error(500, "5.5.2", "line too long");
                        return Ok(None);
                    }
                    None => return Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        if text.trim() == "*" {
            self.error(501, "5.0.0", "authentication cancelled");
            return Ok(None);
        }
        match auth::decode(&text) {
            Some(bytes) => Ok(Some(bytes)),
            None => {
                self.error(501, "5.5.2", "the response is not base64");
                Ok(None)
            }
        }
    }

    fn auth_offered(&self) -> bool {
        self.shared.users.is_some() && (self.stream().is_tls() || is_loopback(self.peer))
    }

    fn may_send(&self) -> bool {
        self.user.is_some()
            || self
                .shared
                .config
                .allowed_networks
                .iter()
                .any(|network| network.contains(self.peer))
    }

    fn refuse_relay(&mut self) {
        log::warn!(
            "listener: {}: refused mail from outside the allowed networks without AUTH",
            self.peer
        );
        if self.shared.users.is_some() {
            self.error(530, "5.7.0", "authentication required");
        } else {
            let text = format!(
                "relay access denied: {} is not in the listener's allowed networks",
                self.peer
            );
            self.error(554, "5.7.1", &text);
        }
    }

    fn stream(&self) -> &Stream {
        self.reader.get_ref()
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

    fn flush(&mut self) -> io::Result<()> {
        if self.replies.is_empty() {
            return Ok(());
        }
        let stream = self.reader.get_mut();
        stream.write_all(&self.replies)?;
        stream.flush()?;
        self.replies.clear();
        Ok(())
    }
}

/// `address` of `address_type`, if its syntax is good for the type; or why not.
fn checked(address_type: &str, address: &str) -> Result<String, String> {
    let address = Address::new(address_type, address).map_err(|e| e.to_string())?;
    match mailbox::syntax_error(&address) {
        Some(why) => Err(why),
        None => Ok(address.to_string()),
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
