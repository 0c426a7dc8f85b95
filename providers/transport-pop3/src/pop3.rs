//! A POP3 client (RFC 1939), just what fetching needs: USER/PASS, UIDL, RETR, DELE, QUIT,
//! over plain text, TLS from the first byte (POP3S), or plain text upgraded with STLS
//! (RFC 2595) before anything else is said.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// How the session is protected.
pub enum Security {
    /// Plain text.
    None,
    /// Plain text upgraded with STLS before logging in; a server without STLS is refused.
    Stls(Arc<ClientConfig>),
    /// TLS from the first byte (POP3S).
    Implicit(Arc<ClientConfig>),
}

/// One POP3 session.
pub struct Session {
    stream: BufReader<Stream>,
}

/// The connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buffer),
            Stream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buffer),
            Stream::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// A POP3 failure: the server's `-ERR` text, the network's, or TLS that could not be had.
#[derive(Debug)]
pub enum Pop3Error {
    /// The server answered `-ERR`.
    Refused(String),
    /// The connection failed (a refused certificate among others, inside the I/O error).
    Network(io::Error),
    /// TLS could not be set up, and the session was not continued without it.
    Tls(String),
}

impl std::fmt::Display for Pop3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pop3Error::Refused(text) => write!(f, "the server said -ERR {text}"),
            Pop3Error::Network(error) => write!(f, "{error}"),
            Pop3Error::Tls(text) => write!(f, "{text}"),
        }
    }
}

impl std::error::Error for Pop3Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Pop3Error::Network(error) => Some(error),
            Pop3Error::Refused(_) | Pop3Error::Tls(_) => None,
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
    /// Connects, sets up TLS as `security` says, and logs in.
    pub fn open(
        host: &str,
        port: u16,
        security: &Security,
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
        let stream = match security {
            Security::Implicit(config) => handshake(stream, config, host)?,
            Security::None | Security::Stls(_) => Stream::Plain(stream),
        };
        let mut session = Session {
            stream: BufReader::new(stream),
        };
        status_line(&mut session.stream)?;
        if let Security::Stls(config) = security {
            session = session.starttls(config, host)?;
        }
        session.command(&format!("USER {user}"))?;
        session.command(&format!("PASS {password}"))?;
        Ok(session)
    }

    /// STLS: the session goes on over TLS, or not at all.
    fn starttls(mut self, config: &Arc<ClientConfig>, host: &str) -> Result<Session, Pop3Error> {
        match self.command("STLS") {
            Ok(_) => {}
            Err(Pop3Error::Refused(text)) => {
                return Err(Pop3Error::Tls(format!(
                    "the server does not offer STLS (it answered -ERR {text}), and the password \
                     is not sent in plain text; set `tls = \"implicit\"` if it offers POP3S \
                     (port 995), or `tls = \"none\"` only on a trusted network"
                )))
            }
            Err(error) => return Err(error),
        }
        if !self.stream.buffer().is_empty() {
            return Err(Pop3Error::Tls(
                "the server sent more after agreeing to STLS; not continuing".into(),
            ));
        }
        match self.stream.into_inner() {
            Stream::Plain(stream) => Ok(Session {
                stream: BufReader::new(handshake(stream, config, host)?),
            }),
            Stream::Tls(_) => Err(Pop3Error::Tls(
                "STLS on a session that is already in TLS".into(),
            )),
        }
    }

    /// Sends a command and reads its one-line answer.
    fn command(&mut self, line: &str) -> Result<String, Pop3Error> {
        let writer = self.stream.get_mut();
        writer.write_all(format!("{line}\r\n").as_bytes())?;
        writer.flush()?;
        status_line(&mut self.stream)
    }

    /// Every message's number and unique id.
    pub fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.command("UIDL")?;
        Ok(uid_listing(&body(&mut self.stream)?))
    }

    /// Message `number`'s content.
    pub fn retr(&mut self, number: u32) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("RETR {number}"))?;
        body(&mut self.stream)
    }

    /// Marks message `number` deleted (done at QUIT).
    pub fn dele(&mut self, number: u32) -> Result<(), Pop3Error> {
        self.command(&format!("DELE {number}")).map(|_| ())
    }

    /// Ends the session; the server now deletes what was marked. A TLS session is then
    /// closed properly (close_notify), so the server sees an orderly end.
    pub fn quit(mut self) -> Result<(), Pop3Error> {
        self.command("QUIT")?;
        if let Stream::Tls(stream) = self.stream.get_mut() {
            // The server has answered QUIT: a close_notify that cannot be sent changes nothing.
            stream.conn.send_close_notify();
            stream.flush().ok();
        }
        Ok(())
    }
}

/// The TLS handshake on `stream`, for the name `host`, done before anything is said, so a
/// refused certificate ends the session before the password is sent.
fn handshake(
    mut stream: TcpStream,
    config: &Arc<ClientConfig>,
    host: &str,
) -> Result<Stream, Pop3Error> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| Pop3Error::Tls(format!("`{host}` is not a host name or address for TLS")))?;
    let mut connection = ClientConnection::new(Arc::clone(config), name)
        .map_err(|e| Pop3Error::Tls(format!("TLS: {e}")))?;
    while connection.is_handshaking() {
        connection.complete_io(&mut stream)?;
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(connection, stream))))
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
