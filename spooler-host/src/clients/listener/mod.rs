//! The SMTP listener: applications that speak SMTP hand mail to the spooler, which puts it
//! into the Outbox exactly as `submit` does (the same checks, size limit, exactly-once key
//! and group commit, through [`Control::submit_with`]).
//!
//! Each `[[listener]]` of the profile gets a thread accepting connections and one thread per
//! session, at most `max_sessions` at once (beyond them a client is answered `421` and
//! closed); a session thread serves the next connection when its session ends. `settings` reads the profile's table, `network` the allowed networks, `command`
//! the command lines, `session` runs a session, `message` reads DATA and adds the trace
//! fields, `dsn` maps DSN parameters, `auth` checks users, `tls` serves TLS.

mod auth;
mod command;
mod dsn;
mod message;
mod network;
mod session;
pub mod settings;
mod tls;

use std::io::Write;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, TrySendError};
use rustls::ServerConfig;

use crate::clients::control::Control;
use settings::ListenerConfig;

/// What every session of one listener shares.
pub struct Shared {
    config: ListenerConfig,
    /// The name in the greeting and in `Received:` fields.
    hostname: String,
    tls: Option<Arc<ServerConfig>>,
    users: Option<auth::Users>,
    control: Control,
    max_message_size: usize,
}

/// Opens every configured listener and serves it on threads of its own. Fails, naming the
/// listener, if an address cannot be had or a TLS or users file cannot be read.
pub fn start(
    listeners: &[ListenerConfig],
    control: &Control,
    max_message_size: usize,
) -> Result<(), String> {
    let mut opened = Vec::new();
    for config in listeners {
        let socket = TcpListener::bind(config.address)
            .map_err(|e| format!("listener {}: cannot listen there: {e}", config.address))?;
        let tls = config
            .tls
            .as_ref()
            .map(|(certificate, key)| tls::server_config(certificate, key))
            .transpose()
            .map_err(|why| format!("listener {}: {why}", config.address))?;
        let users = config
            .users_file
            .as_deref()
            .map(auth::Users::load)
            .transpose()
            .map_err(|why| format!("listener {}: {why}", config.address))?;
        let shared = Shared {
            hostname: config
                .hostname
                .clone()
                .unwrap_or_else(crate::spooler::hostname),
            config: config.clone(),
            tls,
            users,
            control: control.clone(),
            max_message_size,
        };
        opened.push((socket, Arc::new(shared)));
    }
    for (socket, shared) in opened {
        log::info!(
            "SMTP listener on {} ({} sessions at most)",
            shared.config.address,
            shared.config.max_sessions
        );
        std::thread::Builder::new()
            .name(format!("listener {}", shared.config.address))
            .spawn(move || accept(socket, shared))
            .map_err(|e| format!("cannot start a thread for a listener: {e}"))?;
    }
    Ok(())
}

/// Serves `sendmail -bs` on a connection to the host's socket: the listener's SMTP session,
/// with no TLS (the connection never leaves the machine) and no users file, answering as
/// to a client on the loopback address.
pub fn serve_local(connection: UnixStream, control: &Control, max_message_size: usize) {
    let shared = Shared {
        config: ListenerConfig::local(),
        hostname: crate::spooler::hostname(),
        tls: None,
        users: None,
        control: control.clone(),
        max_message_size,
    };
    session::serve_local(connection, &shared);
}

/// How long a session thread with nothing to do waits for the next connection before it ends.
const IDLE_THREAD: Duration = Duration::from_secs(60);

/// Accepts connections for ever, each session on a thread of its own while there is room:
/// an idle session thread takes the connection if there is one (starting a thread costs
/// more than a short session), else a new thread starts, up to `max_sessions` threads.
fn accept(socket: TcpListener, shared: Arc<Shared>) {
    let threads = Arc::new(AtomicUsize::new(0));
    // A rendezvous: a connection is handed over only to a thread waiting for one.
    let (hand, take) = bounded::<(TcpStream, IpAddr)>(0);
    for connection in socket.incoming() {
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                log::warn!("listener {}: {error}", shared.config.address);
                // Out of file descriptors, most likely: give sessions time to end.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let peer = match connection.peer_addr() {
            Ok(peer) => peer.ip(),
            Err(_) => continue,
        };
        let (connection, peer) = match hand.try_send((connection, peer)) {
            Ok(()) => continue,
            Err(TrySendError::Full(work) | TrySendError::Disconnected(work)) => work,
        };
        if threads.fetch_add(1, Ordering::SeqCst) >= shared.config.max_sessions {
            threads.fetch_sub(1, Ordering::SeqCst);
            log::warn!(
                "listener {}: refused {peer}: {} sessions already",
                shared.config.address,
                shared.config.max_sessions
            );
            refuse(connection, &shared.hostname);
            continue;
        }
        let guard = ThreadCount(Arc::clone(&threads));
        let shared = Arc::clone(&shared);
        let take = take.clone();
        let spawned = std::thread::Builder::new()
            .name("smtp session".into())
            .stack_size(1 << 20)
            .spawn(move || {
                let _guard = guard;
                session::serve(connection, peer, &shared);
                while let Ok((connection, peer)) = take.recv_timeout(IDLE_THREAD) {
                    session::serve(connection, peer, &shared);
                }
            });
        if let Err(error) = spawned {
            log::error!("listener: cannot start a thread for a session: {error}");
        }
    }
}

/// Tells a client there is no room, without waiting on it.
fn refuse(mut connection: TcpStream, hostname: &str) {
    connection
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok();
    let text = format!("421 4.7.0 {hostname} too many sessions, try again later\r\n");
    connection.write_all(text.as_bytes()).ok();
}

/// One session thread counted while it lives.
struct ThreadCount(Arc<AtomicUsize>);

impl Drop for ThreadCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
