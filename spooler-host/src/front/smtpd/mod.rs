//! The SMTP listener: applications that speak SMTP hand mail to the spooler, which puts it
//! into the Outbox exactly as `submit` does (the same checks, size limit, exactly-once key
//! and group commit, through [`Intake`]).
//!
//! Each `[[listener]]` of the profile gets an event loop on a thread of its own that serves
//! its clear-text sessions, at most `max_sessions` at once (beyond them a client is answered
//! `421` and closed); encrypted sessions move to a thread each. A session is a state machine
//! over the bytes its client sent, doing no I/O of its own, so the loop and the TLS threads
//! run the same one. What one client may do across its sessions (sessions, connections and
//! messages a minute, failed logins, bans) is counted host-wide by [`Clients`].
//!
//! May call: `base`, `observe`, `config`, `protocol` and `intake`; never the control
//! socket, the queue or a provider.

mod auth;
mod clients;
mod command;
mod dsn;
mod message;
mod reactor;
mod session;
mod threaded;
mod tls;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::listener::ListenerConfig;
use crate::intake::Intake;
use crate::protocol::{Failure, Request, Response, Source};
pub use clients::Clients;
use reactor::Reactor;
use session::Session;
use tls::Stream;

/// What every session of one listener shares.
pub struct Shared {
    config: ListenerConfig,
    /// The name in the greeting and in `Received:` fields.
    hostname: String,
    tls: Option<Arc<ServerConfig>>,
    users: Option<auth::Users>,
    intake: Intake,
    /// What its submissions count as: a listener's, or `sendmail -bs`'s.
    source: Source,
    /// The counts of every client of the host's listeners; none for `sendmail -bs`, whose
    /// one client is a user of this machine.
    clients: Option<Arc<Clients>>,
}

/// Opens every configured listener and serves it on threads of its own. Fails, naming the
/// listener, if an address cannot be had or a TLS or users file cannot be read.
pub fn start(
    listeners: &[ListenerConfig],
    intake: &Intake,
    clients: &Arc<Clients>,
) -> Result<(), String> {
    let mut opened = Vec::new();
    for config in listeners {
        let socket = TcpListener::bind(config.address)
            .and_then(|socket| deepen_backlog(&socket).map(|()| socket))
            .map_err(|e| format!("listener {}: cannot listen there: {e}", config.address))?;
        let tls = config
            .tls
            .as_ref()
            .map(|(certificate, key)| crate::config::tls::server_config(certificate, key))
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
                .unwrap_or_else(provider_abi::host::hostname),
            config: config.clone(),
            tls,
            users,
            intake: intake.clone(),
            source: Source::Listener,
            clients: Some(Arc::clone(clients)),
        };
        opened.push((socket, Arc::new(shared)));
    }
    for (socket, shared) in opened {
        log::info!(
            "SMTP listener on {} ({} sessions at most)",
            shared.config.address,
            shared.config.max_sessions
        );
        let address = shared.config.address;
        let reactor = Reactor::new(socket, shared)
            .map_err(|e| format!("listener {address}: cannot watch its socket: {e}"))?;
        std::thread::Builder::new()
            .name("smtp listener".into())
            .spawn(move || reactor.run())
            .map_err(|e| format!("cannot start a thread for a listener: {e}"))?;
    }
    Ok(())
}

/// Lets the kernel hold as many connections waiting for `accept` as it allows
/// (`net.core.somaxconn`) instead of std's 128: under a flood of connections, a full backlog
/// drops a legitimate client's SYN too, and its kernel waits a second or more to retry.
fn deepen_backlog(socket: &TcpListener) -> std::io::Result<()> {
    // SAFETY: listen on a socket this function borrows; Linux takes a second listen() as
    // a change of the backlog, and caps it at somaxconn.
    match unsafe { libc::listen(socket.as_raw_fd(), libc::c_int::MAX) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Serves `sendmail -bs` on a connection to the host's socket: the listener's SMTP session,
/// with no TLS (the connection never leaves the machine) and no users file, answering as
/// to a client on the loopback address.
pub fn serve_local(connection: UnixStream, intake: &Intake) {
    let shared = Shared {
        config: ListenerConfig::local(),
        hostname: provider_abi::host::hostname(),
        tls: None,
        users: None,
        intake: intake.clone(),
        source: Source::Sendmail,
        clients: None,
    };
    let timeout = Some(shared.config.command_timeout);
    if let Err(error) = connection
        .set_read_timeout(timeout)
        .and_then(|()| connection.set_write_timeout(timeout))
    {
        return log::warn!("sendmail -bs: {error}");
    }
    let mut session = Session::new(
        Arc::new(shared),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        false,
        None,
    );
    session.greet();
    threaded::serve(session, Stream::Local(connection));
}

/// Answers the command line's `bans` and `unban`.
pub fn answer_bans(clients: &Clients, request: &Request) -> Response {
    match request {
        Request::Unban { address } => match address.parse::<clients::Client>() {
            Ok(client) if clients.unban(client) => Response::Done,
            Ok(client) => Response::error(Failure::NotFound, format!("{client} is not banned")),
            Err(why) => Response::error(Failure::Refused, why),
        },
        _ => Response::Bans {
            bans: clients.bans(),
        },
    }
}
