//! One SMTP session (RFC 5321 with ESMTP's PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES, STARTTLS, AUTH and DSN): the greeting, the commands in the order a
//! transaction allows, and DATA, whose 250 comes only once the message is in the Outbox.
//! Replies are buffered while pipelined commands are waiting and sent before the session
//! waits for more. This file holds the session's loop and replies; `transaction` the mail
//! transaction (MAIL, RCPT, DATA and the submission), `security` STARTTLS, AUTH and the
//! relay rule.

mod security;
mod transaction;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::unix::net::UnixStream;

use super::command::{self, Command, Unreadable};
use super::dsn::Dsn;
use super::tls::Stream;
use super::Shared;

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
