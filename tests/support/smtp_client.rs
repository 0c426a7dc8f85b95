//! A plain SMTP client for the listener's tests: whole replies read line by line, for what
//! real clients do not do (relaying, dropping mid-DATA, holding sessions, guessing passwords)
//! and for the protocol's details; from 127.0.0.1 or from another loopback address, so that
//! one test can be several clients of the per-client limits.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::PROMPTLY;

/// A TCP connection to `127.0.0.1:port` from the loopback address `source` (any port), as a
/// client on another machine of `127.0.0.0/8` would make it; connecting gives up after
/// [`PROMPTLY`].
pub fn connect_from(source: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(),
        PROMPTLY,
    )?;
    Ok(socket.into())
}

/// A plain SMTP client that reads whole replies, each within a read timeout ([`PROMPTLY`]
/// unless changed).
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    /// Connects from 127.0.0.1 and returns the client and the greeting.
    pub fn connect(port: u16) -> (SmtpClient, String) {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("the listener accepts");
        SmtpClient::greeting_on(stream)
    }

    /// Connects from the loopback address `source` (127.0.0.x) to 127.0.0.1 and returns
    /// the client and the greeting.
    pub fn connect_from(source: Ipv4Addr, port: u16) -> (SmtpClient, String) {
        let stream = connect_from(source, port).expect("the listener accepts");
        SmtpClient::greeting_on(stream)
    }

    fn greeting_on(stream: TcpStream) -> (SmtpClient, String) {
        stream
            .set_read_timeout(Some(PROMPTLY))
            .expect("a read timeout");
        let mut client = SmtpClient {
            reader: BufReader::new(stream.try_clone().expect("a second handle")),
            writer: stream,
        };
        let greeting = client.reply();
        (client, greeting)
    }

    /// Connects from 127.0.0.1, expects the greeting and says EHLO; the EHLO reply.
    pub fn greeted(port: u16) -> (SmtpClient, String) {
        let (client, greeting) = SmtpClient::connect(port);
        client.ehlo_after(&greeting)
    }

    /// Connects from `source`, expects the greeting and says EHLO; the EHLO reply.
    pub fn greeted_from(source: Ipv4Addr, port: u16) -> (SmtpClient, String) {
        let (client, greeting) = SmtpClient::connect_from(source, port);
        client.ehlo_after(&greeting)
    }

    fn ehlo_after(mut self, greeting: &str) -> (SmtpClient, String) {
        assert!(greeting.starts_with("220 "), "{greeting}");
        let ehlo = self.command("EHLO client.example");
        assert!(ehlo.starts_with("250"), "{ehlo}");
        (self, ehlo)
    }

    /// The connection's writing half, for writes of its own (a few bytes at a time).
    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// How long a reply may take to come before [`SmtpClient::reply`] gives up.
    pub fn set_read_timeout(&self, limit: Duration) {
        self.writer
            .set_read_timeout(Some(limit))
            .expect("a read timeout");
    }

    /// Sends `text`; a failure if the connection is gone.
    pub fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("sending");
    }

    /// Sends `text`, or says why not (the server closed the connection).
    pub fn try_send(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(text.as_bytes())
    }

    /// One whole reply (all its lines); empty if the connection ended (or nothing came
    /// within the read timeout).
    pub fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return text;
            }
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return text;
            }
        }
    }

    /// One whole reply if it comes within `limit` (a reply the client did not ask for, such
    /// as a `421` that follows another); empty if none came.
    pub fn reply_within(&mut self, limit: Duration) -> String {
        self.set_read_timeout(limit);
        let reply = self.reply();
        self.set_read_timeout(PROMPTLY);
        reply
    }

    /// Sends the command `line` and returns its reply.
    pub fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"));
        self.reply()
    }

    /// Sends the command `line` and returns its reply; empty if the server had closed the
    /// connection.
    pub fn try_command(&mut self, line: &str) -> String {
        match self.try_send(&format!("{line}\r\n")) {
            Ok(()) => self.reply(),
            Err(_) => String::new(),
        }
    }

    /// `AUTH PLAIN` with `user` and `password` in one line; the reply (empty if the server
    /// had closed the connection).
    pub fn auth_plain(&mut self, user: &str, password: &str) -> String {
        let response = base64(format!("\0{user}\0{password}").as_bytes());
        self.try_command(&format!("AUTH PLAIN {response}"))
    }

    /// MAIL, RCPT, DATA and `content`; the reply to the end of the data.
    pub fn send_message(&mut self, sender: &str, recipient: &str, content: &str) -> String {
        self.start_data(sender, recipient);
        self.send(content);
        self.command(".")
    }

    /// MAIL, RCPT and DATA for one recipient, each expected to be taken: the client may send
    /// the message next.
    pub fn start_data(&mut self, sender: &str, recipient: &str) {
        let mail = self.command(&format!("MAIL FROM:<{sender}>"));
        assert!(mail.starts_with("250"), "{mail}");
        let rcpt = self.command(&format!("RCPT TO:<{recipient}>"));
        assert!(rcpt.starts_with("250"), "{rcpt}");
        let data = self.command("DATA");
        assert!(data.starts_with("354"), "{data}");
    }
}

/// `bytes` in base64 (RFC 4648, with padding), as SASL responses are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (i, &byte)| {
            group | u32::from(byte) << (16 - 8 * i)
        });
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(group >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_as_rfc_4648_writes_it() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"app"), "YXBw");
        assert_eq!(base64(b"\0app\0secret"), "AGFwcABzZWNyZXQ=");
    }
}
