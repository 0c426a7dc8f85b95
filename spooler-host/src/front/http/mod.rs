//! The HTTP front end: one server, in the `[http]` table, for what operators and programs
//! watch and steer the spooler with: `/metrics` for Prometheus, the admin API under `/api/`
//! (JSON, mirroring the command line), the event stream (`/api/events`), and the dashboard
//! at `/`. A thread accepts; each connection gets a thread of its own, up to
//! [`MAX_CONNECTIONS`]; every request is bounded in size and time (`request`). The API
//! needs the bearer token of `token_file`; `/metrics` and the page itself do not (the page
//! asks for the token).
//!
//! The API answers through the function the daemon gives it, the same answers the control
//! socket gives, so the two never differ; the HTTP front end imports no other front end.

mod api;
mod dashboard;
mod events;
mod reply;
mod request;
mod samples;
mod scrape;
pub mod webhook;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::config::http::HttpConfig;
use crate::protocol;
use crate::providers::status::StatusTable;
use crate::store::thread::StoreClient;
use reply::Reply;
use request::ReadError;

/// The most connections served at once; beyond, `503` and close.
pub const MAX_CONNECTIONS: usize = 64;

/// How long the host waits for a client to take an answer (or an event) before it closes.
const WRITE_TIME: Duration = Duration::from_secs(30);

/// How the API asks the running spooler: a control-socket request in, its answer out.
pub type Answer = Arc<dyn Fn(protocol::Request) -> protocol::Response + Send + Sync>;

/// The running spooler's parts the HTTP front end reaches.
pub struct Parts {
    /// Answers the admin API's requests (the control socket's answers).
    pub answer: Answer,
    /// The store thread, for the queue's gauges and the dashboard's samples.
    pub store: StoreClient,
    /// The providers' states, for their gauges.
    pub status: StatusTable,
}

/// What each connection's thread needs.
struct Server {
    token: Option<String>,
    tls: Option<Arc<ServerConfig>>,
    parts: Parts,
    samples: samples::Samples,
    open: AtomicUsize,
}

/// A connection, plain or TLS.
trait Connection: Read + Write + Send {}
impl<T: Read + Write + Send> Connection for T {}

/// Starts the server of the `[http]` table, and its webhook if it has one. Fails, saying
/// why, when the address cannot be had or the token or certificate files cannot be read.
pub fn start(config: &HttpConfig, parts: Parts) -> Result<(), String> {
    let token = config.token_file.as_deref().map(read_token).transpose()?;
    let tls = config
        .tls
        .as_ref()
        .map(|(certificate, key)| crate::config::tls::server_config(certificate, key))
        .transpose()?;
    let listener = TcpListener::bind(config.address)
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", config.address))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if token.is_none() {
        log::warn!(
            "http: no token_file: every user of this machine may use the admin API on {}",
            config.address
        );
    }
    log::info!(
        "http: dashboard, admin API and metrics on {scheme}://{}/",
        config.address
    );
    if let Some(hook) = &config.webhook {
        webhook::start(hook.clone());
    }
    let samples = samples::Samples::start(parts.store.clone());
    let server = Arc::new(Server {
        token,
        tls,
        parts,
        samples,
        open: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || accept(&listener, &server))
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(())
}

/// The token in `file`: its first line, which must not be empty.
fn read_token(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("http.token_file: cannot read {}: {e}", file.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(format!(
            "http.token_file: {} must hold a token of at least 16 characters on its first \
             line (e.g. `openssl rand -hex 32 > {}`)",
            file.display(),
            file.display()
        ));
    }
    Ok(token)
}

fn accept(listener: &TcpListener, server: &Arc<Server>) {
    for socket in listener.incoming() {
        let socket = match socket {
            Ok(socket) => socket,
            Err(error) => {
                log::warn!("http: cannot accept a connection: {error}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if server.open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            server.open.fetch_sub(1, Ordering::SeqCst);
            refuse_busy(socket);
            continue;
        }
        let server = Arc::clone(server);
        let started = std::thread::Builder::new()
            .name("http client".into())
            .spawn(move || {
                serve(&server, socket);
                server.open.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(error) = started {
            log::warn!("http: cannot start a thread for a connection: {error}");
        }
    }
}

/// `503` to a connection over [`MAX_CONNECTIONS`], without waiting on a client that reads
/// nothing.
fn refuse_busy(mut socket: TcpStream) {
    socket.set_write_timeout(Some(Duration::from_secs(1))).ok();
    let reply = Reply::error(
        503,
        format!("{MAX_CONNECTIONS} connections are open; try again in a moment"),
    );
    reply.write_to(&mut socket).ok();
}

/// One connection: one request, its answer, close.
fn serve(server: &Server, socket: TcpStream) {
    let prepared = socket
        .set_read_timeout(Some(request::REQUEST_TIME))
        .and_then(|()| socket.set_write_timeout(Some(WRITE_TIME)))
        .and_then(|()| socket.set_nodelay(true));
    if let Err(error) = prepared {
        log::debug!("http: {error}");
        return;
    }
    let mut connection: Box<dyn Connection> = match &server.tls {
        None => Box::new(socket),
        Some(config) => match ServerConnection::new(Arc::clone(config)) {
            Ok(tls) => Box::new(StreamOwned::new(tls, socket)),
            Err(error) => {
                log::warn!("http: TLS: {error}");
                return;
            }
        },
    };
    let request = match request::read(&mut connection) {
        Ok(request) => request,
        Err(ReadError::Closed) => return,
        Err(ReadError::Refused(status, why)) => {
            Reply::error(status, why).write_to(&mut connection).ok();
            return;
        }
        Err(ReadError::Io(error)) => {
            log::debug!("http: a client went away: {error}");
            return;
        }
    };
    if request.path.starts_with("/api/") && !server.authorized(&request) {
        let reply = Reply::error(
            401,
            "this needs the token of http.token_file: `Authorization: Bearer TOKEN`",
        )
        .with_header("WWW-Authenticate", "Bearer");
        reply.write_to(&mut connection).ok();
        return;
    }
    let reply = match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/") => dashboard::page(),
        ("GET", "/metrics") => scrape::metrics_page(&server.parts, &request),
        ("GET", "/api/events") => return events::stream(&request, &mut connection),
        ("GET", "/api/samples") => Reply::json(200, &server.samples.recent()),
        (_, path) if path.starts_with("/api/") => api::answer(&server.parts, &request),
        ("GET", _) => Reply::error(404, format!("there is nothing at {}", request.path)),
        _ => Reply::error(
            405,
            format!("{} {} is not served", request.method, request.path),
        ),
    };
    if let Err(error) = reply.write_to(&mut connection) {
        log::debug!("http: a client went away: {error}");
    }
}

impl Server {
    /// Whether the request carries the token, compared in constant time; without a token
    /// file, every request is.
    fn authorized(&self, request: &request::Request) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = request
            .header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim();
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}
