//! The SMTP listener: applications that speak SMTP hand mail to the spooler, which puts it
//! into the Outbox exactly as `submit` does (the same checks, size limit, exactly-once key
//! and group commit, through [`Control::submit_with`]).
//!
//! Each `[[listener]]` of the profile gets one thread per session, at most `max_sessions` at
//! once (beyond them a client is answered `421` and closed). Session threads take their
//! connections from the listening socket themselves and serve the next when a session ends. `settings` reads the profile's table, `network` the allowed networks, `command`
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

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
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
        wait_at_most(&socket, IDLE_THREAD)
            .map_err(|e| format!("listener {}: {e}", shared.config.address))?;
        let sessions = Arc::new(Sessions {
            socket,
            shared,
            threads: Mutex::new(Threads {
                alive: 1,
                waiting: 0,
            }),
        });
        start_session_thread(sessions)
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

/// How long a session thread with nothing to do waits for the next connection before it
/// ends (unless no other thread is waiting).
const IDLE_THREAD: Duration = Duration::from_secs(60);

/// The stack of a session thread.
const SESSION_STACK: usize = 1 << 20;

/// One listener's socket and session threads.
struct Sessions {
    socket: TcpListener,
    shared: Arc<Shared>,
    threads: Mutex<Threads>,
}

/// The session threads of a listener, counted.
struct Threads {
    /// Threads that live (serving, or waiting for a connection).
    alive: usize,
    /// Threads waiting for a connection.
    waiting: usize,
}

/// A session thread: takes connections from the listening socket and serves them, for as
/// long as there is work. Taking them straight from the socket spares each connection a
/// hand-over from an accepting thread, a context switch that costs more than a short
/// session's own work on a busy machine. One thread always waits: one that takes a
/// connection while no other waits starts another; beyond `max_sessions` sessions the
/// waiting thread answers `421` and waits again.
fn take_connections(sessions: &Arc<Sessions>) {
    let max_sessions = sessions.shared.config.max_sessions;
    loop {
        sessions.threads.lock().waiting += 1;
        let accepted = sessions.socket.accept();
        let mut threads = sessions.threads.lock();
        threads.waiting -= 1;
        let (connection, peer) = match accepted {
            Ok((connection, peer)) => (connection, peer.ip()),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if threads.waiting > 0 {
                    threads.alive -= 1;
                    return;
                }
                continue;
            }
            Err(error) => {
                drop(threads);
                log::warn!("listener {}: {error}", sessions.shared.config.address);
                // Out of file descriptors, most likely: give sessions time to end.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let serving = threads.alive - threads.waiting;
        if serving > max_sessions {
            drop(threads);
            log::warn!(
                "listener {}: refused {peer}: {max_sessions} sessions already",
                sessions.shared.config.address,
            );
            refuse(connection, &sessions.shared.hostname);
            continue;
        }
        if threads.waiting == 0 {
            threads.alive += 1;
            if let Err(error) = start_session_thread(Arc::clone(sessions)) {
                threads.alive -= 1;
                log::error!("listener: cannot start a thread for a session: {error}");
            }
        }
        drop(threads);
        session::serve(connection, peer, &sessions.shared);
    }
}

/// Starts a session thread of `sessions` (counted by the caller).
fn start_session_thread(sessions: Arc<Sessions>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("smtp session".into())
        .stack_size(SESSION_STACK)
        .spawn(move || take_connections(&sessions))
        .map(drop)
}

/// Makes `accept` on `socket` give up after `idle` (`SO_RCVTIMEO`), so that idle session
/// threads can end.
fn wait_at_most(socket: &TcpListener, idle: Duration) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: idle.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the descriptor is the listener's own, open while it lives, and `timeout` is a
    // valid `timeval` of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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
