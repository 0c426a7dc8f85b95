//! The listener's TLS: a rustls server configuration from the certificate chain and key
//! files (PEM) the profile names, and the stream a session reads and writes, plain or
//! encrypted.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The server configuration for `certificate` (a chain, leaf first) and `key`.
pub fn server_config(certificate: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "cannot read the certificate file {}: {e}",
                certificate.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate file {} holds no certificate (expected PEM)",
            certificate.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the key file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "the certificate {} and key {} cannot be used: {e}",
                certificate.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

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
