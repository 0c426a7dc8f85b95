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
const MAX_LINE: usize = 1 << 20;

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
        session.status_line()?;
        session.command(&format!("USER {user}"))?;
        session.command(&format!("PASS {password}"))?;
        Ok(session)
    }

    /// Sends a command and reads its one-line answer.
    fn command(&mut self, line: &str) -> Result<String, Pop3Error> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.status_line()
    }

    fn status_line(&mut self) -> Result<String, Pop3Error> {
        let line = self.line()?;
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        match text.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(Pop3Error::Refused(
                text.trim_start_matches("-ERR").trim().to_owned(),
            )),
        }
    }

    fn line(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )
            .into());
        }
        Ok(line)
    }

    /// A multi-line answer's body, un-dot-stuffed, with CRLF line ends.
    fn body(&mut self) -> Result<Vec<u8>, Pop3Error> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let content = line.strip_suffix(b"\n").unwrap_or(&line);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content == b"." {
                return Ok(body);
            }
            body.extend_from_slice(
                content
                    .strip_prefix(b".")
                    .filter(|_| content.starts_with(b".."))
                    .unwrap_or(content),
            );
            body.extend_from_slice(b"\r\n");
        }
    }

    /// Every message's number and unique id.
    pub fn uidl(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.command("UIDL")?;
        let listing = String::from_utf8_lossy(&self.body()?).into_owned();
        Ok(listing
            .lines()
            .filter_map(|line| {
                let (number, uid) = line.split_once(' ')?;
                Some((number.parse().ok()?, uid.trim().to_owned()))
            })
            .collect())
    }

    /// Message `number`'s content.
    pub fn retr(&mut self, number: u32) -> Result<Vec<u8>, Pop3Error> {
        self.command(&format!("RETR {number}"))?;
        self.body()
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
