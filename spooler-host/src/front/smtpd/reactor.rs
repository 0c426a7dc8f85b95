//! The listener's event loop: one thread serves every clear-text session of a listener.
//! It accepts connections, reads what clients send as it arrives, runs their sessions, and
//! hands each message to the store without waiting: the store thread reports the commit
//! back through a queue and a wake-up, and the loop sends the 250 then. One thread instead
//! of one per session saves the context switches that cost more than a short session's
//! own work on a busy machine: a wake-up serves every session that has something to do.
//!
//! Sessions that switch to TLS move to a thread of their own (`threaded`), as do all of an
//! `implicit_tls` listener's. The loop also refuses connections beyond `max_sessions`, or
//! beyond what their client may open (`clients`), with `421`; wakes sessions whose answer
//! was delayed (a timer each, in one heap); and closes sessions past their deadline or
//! silent for the command timeout.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::TcpListener;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener as Listener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use super::session::{Session, Step, Submit};
use super::threaded::{self, Start};
use super::Shared;
use crate::intake::Committed;
use crate::observe::metrics::metrics;

/// The listening socket's token.
const LISTENER: Token = Token(usize::MAX);
/// The token of the wake-up that says commits came back.
const COMMITTED: Token = Token(usize::MAX - 1);

/// How many reads one session gets before the others are served.
const READS_PER_TURN: usize = 16;

/// How many connections are accepted before the sessions are served: a flood of
/// connections does not keep the loop from the clients it has.
const ACCEPTS_PER_TURN: usize = 64;

/// How often a refusal for `max_sessions` is logged at most: a flood is one line a minute.
const LOG_REFUSALS_EVERY: Duration = Duration::from_secs(60);

/// How often idle sessions are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// The thread of a session that moved off the loop.
const SESSION_STACK: usize = 1 << 20;

/// Commits that came back from the store thread, by session.
struct CommitsBack {
    results: Mutex<Vec<CommitResult>>,
    waker: Waker,
}

/// A commit's result, with its session's index and serial number.
type CommitResult = (usize, u64, Committed);

/// One connection on the loop.
struct Connection {
    /// Which connection of the loop it is: its index is reused after it, its serial
    /// number is not.
    serial: u64,
    socket: TcpStream,
    session: Session,
    /// When the client last sent something (or connected).
    last_heard: Instant,
    /// Whether a message of the session is being committed: the session waits for it.
    committing: bool,
    /// Whether the socket may have input: readiness is edge-triggered, so this is set by
    /// an event and cleared once a read finds nothing more (a read that does not fill the
    /// room took everything there was, unless the client closed its side: the end of its
    /// input is to be read then, and comes with no further event).
    readable: bool,
    /// Whether the client closed its side.
    client_closed: bool,
    /// Whether the session waits for its timer.
    paused: bool,
}

/// The sessions open on one listener, on the loop and on threads of their own: what
/// `max_sessions` is held to. Each change is made to the `listener_sessions_open` gauge too,
/// which counts the sessions of every listener.
#[derive(Clone, Default)]
struct Sessions(Arc<AtomicUsize>);

impl Sessions {
    fn open(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn opened(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        metrics().sessions_open.inc();
    }

    fn closed(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics().sessions_open.dec();
    }
}

/// One listener's event loop.
pub struct Reactor {
    poll: Poll,
    listener: Listener,
    shared: Arc<Shared>,
    connections: Vec<Option<Connection>>,
    free: Vec<usize>,
    committed: Arc<CommitsBack>,
    sessions: Sessions,
    /// Sessions that have more to do after their turn.
    again: Vec<usize>,
    /// The serial number of the last connection opened.
    last_serial: u64,
    /// Whether accepting failed (out of descriptors, most likely) and is to be tried again.
    accept_later: bool,
    /// Whether connections may be waiting that were left for the next turn.
    accept_again: bool,
    /// When paused sessions go on, by index and serial number, soonest first.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// When a refusal for `max_sessions` was last logged.
    full_logged: Option<Instant>,
}

impl Reactor {
    /// A loop over `socket`.
    pub fn new(socket: TcpListener, shared: Arc<Shared>) -> io::Result<Reactor> {
        socket.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut listener = Listener::from_std(socket);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), COMMITTED)?;
        Ok(Reactor {
            poll,
            listener,
            shared,
            connections: Vec::new(),
            free: Vec::new(),
            committed: Arc::new(CommitsBack {
                results: Mutex::new(Vec::new()),
                waker,
            }),
            sessions: Sessions::default(),
            again: Vec::new(),
            last_serial: 0,
            accept_later: false,
            accept_again: false,
            timers: BinaryHeap::new(),
            full_logged: None,
        })
    }

    /// Serves for as long as the host runs.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let timeout = if !self.again.is_empty() || self.accept_again {
                Duration::ZERO
            } else if self.accept_later {
                Duration::from_millis(100)
            } else {
                let next_timer = self.timers.peek().map(|Reverse((at, ..))| *at);
                next_timer.map_or(SWEEP, |at| {
                    at.saturating_duration_since(Instant::now()).min(SWEEP)
                })
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() != io::ErrorKind::Interrupted {
                    log::error!("listener {}: {error}", self.shared.config.address);
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for token in std::mem::take(&mut self.again) {
                self.serve(token);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    COMMITTED => self.answer_committed(),
                    Token(index) => {
                        if event.is_readable() || event.is_read_closed() {
                            self.readable(index, event.is_read_closed());
                        }
                        self.serve(index);
                    }
                }
            }
            if self.accept_again || (self.accept_later && events.is_empty()) {
                self.accept_later = false;
                self.accept();
            }
            self.wake_due();
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.close_overdue();
            }
        }
    }

    fn accept(&mut self) {
        self.accept_again = false;
        for _ in 0..ACCEPTS_PER_TURN {
            let (socket, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("listener {}: {error}", self.shared.config.address);
                    self.accept_later = true;
                    return;
                }
            };
            let peer = peer.ip();
            let max_sessions = self.shared.config.max_sessions;
            if self.sessions.open() >= max_sessions {
                let now = Instant::now();
                if self
                    .full_logged
                    .is_none_or(|logged| now >= logged + LOG_REFUSALS_EVERY)
                {
                    self.full_logged = Some(now);
                    log::warn!(
                        "listener {}: refused {peer}: {max_sessions} sessions already; further \
                         refusals this minute are not logged",
                        self.shared.config.address,
                    );
                }
                metrics().sessions_refused.inc();
                let text = format!(
                    "421 4.7.0 {} too many sessions, try again later\r\n",
                    self.shared.hostname
                );
                refuse(socket, &text);
                continue;
            }
            let lease = match &self.shared.clients {
                Some(clients) => {
                    let listener = self.shared.config.address;
                    match clients.admit(peer, &self.shared.config.clients, listener) {
                        Ok(lease) => lease,
                        Err(refused) => {
                            let client = super::clients::Client::of(peer);
                            refuse(socket, &refused.reply(&self.shared.hostname, client));
                            continue;
                        }
                    }
                }
                None => None,
            };
            socket.set_nodelay(true).ok();
            self.sessions.opened();
            let session = Session::new(Arc::clone(&self.shared), peer, false, lease);
            match (&self.shared.tls, self.shared.config.implicit_tls) {
                (Some(_), true) => self.move_to_thread(socket, session, Start::ImplicitTls),
                _ => self.open(socket, session),
            }
        }
        self.accept_again = true;
    }

    /// Puts a new session on the loop and greets the client.
    fn open(&mut self, mut socket: TcpStream, mut session: Session) {
        let index = self.free.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.connections.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut socket, Token(index), interest)
        {
            log::warn!("listener: {}: {error}", session.peer());
            self.free.push(index);
            self.sessions.closed();
            return;
        }
        session.greet();
        self.last_serial += 1;
        self.connections[index] = Some(Connection {
            serial: self.last_serial,
            socket,
            session,
            last_heard: Instant::now(),
            committing: false,
            // A client speaks after the greeting; if it spoke before, registering the
            // socket brings an event.
            readable: false,
            client_closed: false,
            paused: false,
        });
        self.serve(index);
    }

    /// Runs session `index` as far as it goes without waiting. A panic there (a bug of
    /// the host's, on some input) closes that session only: the loop serves all the others.
    fn serve(&mut self, index: usize) {
        let served = panic::catch_unwind(AssertUnwindSafe(|| self.run_session(index)));
        if served.is_err() {
            log::error!(
                "listener {}: a session failed on a bug in the host (the panic is above); \
                 closed it, nothing of its current message was stored",
                self.shared.config.address
            );
            self.close(index);
        }
    }

    fn run_session(&mut self, index: usize) {
        let mut reads = 0;
        loop {
            let Some(Some(connection)) = self.connections.get_mut(index) else {
                return;
            };
            if connection.committing || connection.paused {
                return;
            }
            match connection.session.advance() {
                Step::NeedInput => {
                    match send(connection) {
                        Ok(true) => {}
                        Ok(false) => return, // The rest goes when the client reads.
                        Err(error) => {
                            connection.session.client_left(Some(&error));
                            return self.close(index);
                        }
                    }
                    if !connection.readable {
                        return;
                    }
                    if reads == READS_PER_TURN {
                        return self.again.push(index);
                    }
                    reads += 1;
                    match connection.session.input.read_some(&mut connection.socket) {
                        Ok((0, _)) => {
                            connection.session.client_left(None);
                            return self.close(index);
                        }
                        Ok((_, filled)) => {
                            connection.last_heard = Instant::now();
                            connection.readable = filled || connection.client_closed;
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            connection.readable = false;
                            return;
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            connection.session.client_left(Some(&error));
                            return self.close(index);
                        }
                    }
                }
                Step::Submit(submit) => self.submit(index, submit),
                Step::Flush => match send(connection) {
                    Ok(true) => {}
                    Ok(false) => return, // It goes on when the client reads.
                    Err(error) => {
                        connection.session.client_left(Some(&error));
                        return self.close(index);
                    }
                },
                Step::Pause(until) => {
                    connection.paused = true;
                    let serial = connection.serial;
                    return self.timers.push(Reverse((until, index, serial)));
                }
                Step::StartTls => {
                    if let Some(connection) = self.take(index) {
                        self.move_to_thread(connection.socket, connection.session, Start::StartTls);
                    }
                    return;
                }
                Step::Close => {
                    send(connection).ok();
                    return self.close(index);
                }
            }
        }
    }

    /// Hands session `index`'s message to the store: the session waits for the commit, or
    /// has its answer already if the host refused the message at once.
    fn submit(&mut self, index: usize, submit: Submit) {
        let committed = Arc::clone(&self.committed);
        let Some(Some(connection)) = self.connections.get_mut(index) else {
            return;
        };
        let serial = connection.serial;
        let intake = &connection.session.shared().intake;
        let handed = intake.submit_then(
            &submit.submission,
            submit.content,
            submit.properties,
            move |result| {
                let mut results = committed.results.lock();
                results.push((index, serial, result));
                if results.len() == 1 {
                    committed.waker.wake().ok();
                }
            },
        );
        match handed {
            Ok(()) => connection.committing = true,
            Err(refusal) => connection.session.submitted(Err(refusal)),
        }
    }

    /// Answers the sessions whose commits came back, and serves them on.
    fn answer_committed(&mut self) {
        let results = std::mem::take(&mut *self.committed.results.lock());
        for (index, serial, result) in results {
            let Some(Some(connection)) = self.connections.get_mut(index) else {
                continue;
            };
            if connection.serial != serial {
                continue;
            }
            let answer = connection.session.shared().intake.outcome(result);
            connection.session.submitted(answer);
            connection.committing = false;
            connection.last_heard = Instant::now();
            self.serve(index);
        }
    }

    /// Session `index`'s socket has input (or its end, if `closed`).
    fn readable(&mut self, index: usize, closed: bool) {
        if let Some(Some(connection)) = self.connections.get_mut(index) {
            connection.readable = true;
            connection.client_closed |= closed;
        }
    }

    /// Serves on the paused sessions whose time has come.
    fn wake_due(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, index, serial))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(Some(connection)) = self.connections.get_mut(index) else {
                continue;
            };
            if connection.serial == serial && connection.paused {
                connection.paused = false;
                connection.last_heard = now;
                self.serve(index);
            }
        }
    }

    /// Closes the sessions past their deadline (a command or message that takes too long
    /// in all, however slowly it trickles in), or silent for the command timeout. Sessions
    /// waiting for the host (a commit, a delayed answer) are not the client's fault.
    fn close_overdue(&mut self) {
        let timeout = self.shared.config.command_timeout;
        let now = Instant::now();
        for index in 0..self.connections.len() {
            let Some(connection) = &mut self.connections[index] else {
                continue;
            };
            let overdue =
                now >= connection.session.deadline() || now >= connection.last_heard + timeout;
            if connection.committing || connection.paused || !overdue {
                continue;
            }
            connection.session.timed_out();
            send(connection).ok();
            self.close(index);
        }
    }

    /// Takes session `index` off the loop.
    fn take(&mut self, index: usize) -> Option<Connection> {
        let mut connection = self.remove(index)?;
        self.poll.registry().deregister(&mut connection.socket).ok();
        Some(connection)
    }

    /// Closes session `index`'s connection. Closing the socket takes it out of the epoll
    /// set too: it was never duplicated.
    fn close(&mut self, index: usize) {
        if self.remove(index).is_some() {
            self.sessions.closed();
        }
    }

    fn remove(&mut self, index: usize) -> Option<Connection> {
        let connection = self.connections.get_mut(index)?.take()?;
        self.free.push(index);
        Some(connection)
    }

    /// Serves a session on a thread of its own from `start`.
    fn move_to_thread(&mut self, socket: TcpStream, session: Session, start: Start) {
        let sessions = self.sessions.clone();
        let peer = session.peer();
        let Some(tls) = self.shared.tls.clone() else {
            self.sessions.closed();
            return;
        };
        let socket = std::net::TcpStream::from(std::os::fd::OwnedFd::from(socket));
        let spawned = std::thread::Builder::new()
            .name("smtp tls session".into())
            .stack_size(SESSION_STACK)
            .spawn(move || {
                threaded::serve_tcp(socket, session, &tls, start);
                sessions.closed();
            });
        if let Err(error) = spawned {
            self.sessions.closed();
            log::error!("listener: {peer}: cannot start a thread for a TLS session: {error}");
        }
    }
}

/// Sends what the session has to say; false if the client is not reading and the rest
/// waits for room.
fn send(connection: &mut Connection) -> io::Result<bool> {
    let replies = &mut connection.session.replies;
    while !replies.is_empty() {
        match connection.socket.write(replies) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                replies.drain(..written);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

/// Tells a client it is refused (`text`, a `421` line), without waiting on it.
fn refuse(mut connection: TcpStream, text: &str) {
    connection.write_all(text.as_bytes()).ok();
}
