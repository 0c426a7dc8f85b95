//! A POP3 client (RFC 1939), just what fetching needs: USER/PASS, UIDL, RETR, DELE, QUIT.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One POP3 session.
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A POP3 failure: the server's `-ERR` text, or the network's.
#[derive(Debug)]
pub enum Pop3Error {
    /// The server answered `-ERR`.
    Refused(String),
    /// The connection failed.
    Network(io::Error),
}

impl std::fmt::Display for Pop3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pop3Error::Refused(text) => write!(f, "the server said -ERR {text}"),
            Pop3Error::Network(error) => write!(f, "{error}"),
        }
    }
}

impl From<io::Error> for Pop3Error {
    fn from(error: io::Error) -> Self {
        Pop3Error::Network(error)
    }
}

/// The longest line a server may send (RFC 1939 allows 512 for responses; messages lines
/// are longer, but not this long).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The longest multi-line answer (a message, a UIDL listing) this transport takes: larger
/// than the host's default `limits.max_message_size`, so that a server sending without end
/// cannot make it hold more.
pub(crate) const MAX_ANSWER: usize = 64 << 20;

impl Session {
    /// Connects and logs in.
    pub fn open(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Session, Pop3Error> {
        let stream = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .find_map(|address| TcpStream::connect_timeout(&address, timeout).ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("cannot connect to {host}:{port}"),
                )
            })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut session = Session {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        status_line(&mut session.reader)?;
        session.command(&format!("USER {user}"))?;
        session.command(&format!("PASS {password}"))?;
        Ok(session)
    }

    /// Sends a command and reads its one-line answer.
    fn command(&mut self, line: &str) -> Result<String, Pop3Error> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        status_line(&mut self.reader)
    }

    /// Every message's number and unique id.
    pub fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.command("UIDL")?;
        Ok(uid_listing(&body(&mut self.reader)?))
    }

    /// Message `number`'s content.
    pub fn retr(&mut self, number: u32) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("RETR {number}"))?;
        body(&mut self.reader)
    }

    /// Marks message `number` deleted (done at QUIT).
    pub fn dele(&mut self, number: u32) -> Result<(), Pop3Error> {
        self.command(&format!("DELE {number}")).map(|_| ())
    }

    /// Ends the session; the server now deletes what was marked.
    pub fn quit(mut self) -> Result<(), Pop3Error> {
        self.command("QUIT").map(|_| ())
    }
}

/// Reads a one-line answer: `+OK`'s text, or `-ERR`'s as [`Pop3Error::Refused`].
pub(crate) fn status_line(reader: &mut impl BufRead) -> Result<String, Pop3Error> {
    let line = line(reader)?;
    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
    match text.strip_prefix("+OK") {
        Some(rest) => Ok(rest.trim().to_owned()),
        None => Err(Pop3Error::Refused(
            text.trim_start_matches("-ERR").trim().to_owned(),
        )),
    }
}

/// Reads one line with its line end; a line longer than [`MAX_LINE`] is an error.
fn line(reader: &mut impl BufRead) -> Result<Vec<u8>, Pop3Error> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )
        .into());
    }
    if read == MAX_LINE && !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server sent a line longer than {MAX_LINE} bytes"),
        )
        .into());
    }
    Ok(line)
}

/// Reads a multi-line answer's body, un-dot-stuffed, with CRLF line ends; one longer than
/// [`MAX_ANSWER`] is an error.
pub(crate) fn body(reader: &mut impl BufRead) -> Result<Vec<u8>, Pop3Error> {
    let mut body = Vec::new();
    loop {
        let line = line(reader)?;
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok(body);
        }
        let content = content
            .strip_prefix(b".")
            .filter(|_| content.starts_with(b".."))
            .unwrap_or(content);
        if body.len() + content.len() + 2 > MAX_ANSWER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server sent an answer longer than {MAX_ANSWER} bytes; \
                     this transport takes no larger message (remove it from the mailbox)"
                ),
            )
            .into());
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
}

/// The message numbers and unique ids of a UIDL listing; lines that are not
/// `number uid`, with the uid printable ASCII as RFC 1939 has it, are skipped (their
/// messages stay on the server).
pub(crate) fn uid_listing(listing: &[u8]) -> Vec<(u32, String)> {
    String::from_utf8_lossy(listing)
        .lines()
        .filter_map(|line| {
            let (number, uid) = line.split_once(' ')?;
            let uid = uid.trim();
            let printable = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_graphic());
            Some((number.parse().ok()?, printable.then(|| uid.to_owned())?))
        })
        .collect()
}
