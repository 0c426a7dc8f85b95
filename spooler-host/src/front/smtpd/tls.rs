//! The stream a session reads and writes, plain or encrypted (the server configuration is
//! `config::tls`'s).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A session's connection.
pub enum Stream {
    /// Clear text.
    Plain(TcpStream),
    /// TLS over the connection.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// A connection to one of the host's own sockets (`sendmail -bs`), in clear text.
    Local(UnixStream),
    /// Neither, for the moment STARTTLS takes the connection out of its reader.
    Switching,
}

impl Stream {
    /// The connection wrapped in TLS; the handshake happens at the first read or write.
    pub fn encrypt(socket: TcpStream, config: &Arc<ServerConfig>) -> io::Result<Stream> {
        let connection = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(StreamOwned::new(connection, socket))))
    }

    /// Reads wait at most `timeout` from now on.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Stream::Plain(socket) => socket.set_read_timeout(timeout),
            Stream::Tls(tls) => tls.sock.set_read_timeout(timeout),
            Stream::Local(socket) => socket.set_read_timeout(timeout),
            Stream::Switching => Err(switching()),
        }
    }

    /// The clear-text connection, if it is one (for STARTTLS).
    pub fn into_plain(self) -> Option<TcpStream> {
        match self {
            Stream::Plain(socket) => Some(socket),
            Stream::Tls(_) | Stream::Local(_) | Stream::Switching => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buffer),
            Stream::Local(socket) => socket.read(buffer),
            Stream::Tls(tls) => tls.read(buffer),
            Stream::Switching => Err(switching()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buffer),
            Stream::Local(socket) => socket.write(buffer),
            Stream::Tls(tls) => tls.write(buffer),
            Stream::Switching => Err(switching()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Local(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
            Stream::Switching => Err(switching()),
        }
    }
}

fn switching() -> io::Error {
    io::Error::other("the connection is being switched to TLS")
}
