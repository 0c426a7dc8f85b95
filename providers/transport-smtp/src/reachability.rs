//! Whether the smart host can be reached at all: the transport's online or offline state in
//! the host's status table, and the probe that brings it back online.
//!
//! The transport goes offline when it cannot connect to the smart host at all: every address
//! refused the connection or did not answer in time. An SMTP reply, even a 421 or a 5xx, is
//! not that: the server is there and says something about this message or this moment, and
//! the message is deferred or failed as usual. Offline, the host parks the transport's mail
//! instead of handing it over message after message, each to be deferred until the retry
//! timer, and `status` says so.
//!
//! One failed connection is enough. A refused connection is strong evidence (nothing listens
//! there); a timed-out one has already waited the whole `timeout_secs`, so a second try would
//! only double the wait of every message behind it. A false "offline" costs little: the probe
//! tries again within seconds and the mail leaves then.
//!
//! While offline, one probe thread tries a plain TCP connection (what the transport could
//! not make) after a pause that doubles from [`FIRST_PROBE`] to [`LAST_PROBE`]. When one
//! succeeds, or the transport itself connects meanwhile, the transport says it is back
//! ([`Notice::BackOnline`]): the host marks it online and sends its waiting mail at once.
//! The probe stops when the transport is dropped, within one probe's connection timeout
//! (at most [`PROBE_TIMEOUT`]).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use provider_abi::{Host, Notice, ProviderState};

/// The pause before the first probe: long enough not to hammer a host that is restarting,
/// short enough that mail leaves within seconds of its coming back.
pub const FIRST_PROBE: Duration = Duration::from_secs(5);

/// The longest pause between probes: a host down for hours is still noticed within a
/// minute of its return.
pub const LAST_PROBE: Duration = Duration::from_secs(60);

/// The longest a probe waits for a connection, which also bounds how long dropping the
/// transport waits for its probe to stop.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The smart host's reachability as the transport last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Online,
    /// No connection could be made; the text says why, as `status` shows it.
    Offline(String),
}

/// What a fact changed, and so what the host must be told.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// Nothing new.
    None,
    /// Online until now: the status row goes offline with this text.
    WentOffline(String),
    /// Still offline, for another reason: the row's text changes.
    NewReason(String),
    /// Offline until now: the host is told the transport is back.
    CameBack,
}

impl State {
    /// A connection could not be made, for `why`.
    fn unreachable(&mut self, why: String) -> Change {
        let change = match self {
            State::Online => Change::WentOffline(why.clone()),
            State::Offline(old) if *old == why => return Change::None,
            State::Offline(_) => Change::NewReason(why.clone()),
        };
        *self = State::Offline(why);
        change
    }

    /// A connection was made.
    fn reachable(&mut self) -> Change {
        match std::mem::replace(self, State::Online) {
            State::Online => Change::None,
            State::Offline(_) => Change::CameBack,
        }
    }
}

/// What the transport and its probe share.
struct Shared {
    state: State,
    /// Set when the transport is dropped: the probe tells the host nothing more.
    stopped: bool,
}

/// The state of one transport instance, with its probe while offline.
pub struct Reachability {
    /// `host:port`, as messages and the status row name it.
    server: String,
    host: Host,
    shared: Arc<Mutex<Shared>>,
    /// The pauses between probes: [`FIRST_PROBE`] to [`LAST_PROBE`] (shorter in tests).
    pauses: (Duration, Duration),
    probe: Option<Probe>,
}

/// The running probe thread; dropping the sender wakes it to stop.
struct Probe {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Reachability {
    /// Online, as every instance starts: the first message finds out.
    pub fn new(server: String, host: Host) -> Self {
        Reachability::with_pauses(server, host, (FIRST_PROBE, LAST_PROBE))
    }

    fn with_pauses(server: String, host: Host, pauses: (Duration, Duration)) -> Self {
        Reachability {
            server,
            host,
            shared: Arc::new(Mutex::new(Shared {
                state: State::Online,
                stopped: false,
            })),
            pauses,
            probe: None,
        }
    }

    /// The transport connected (whatever the server then said): back online if it was not.
    pub fn connected(&mut self) {
        let change = lock(&self.shared).state.reachable();
        if change == Change::CameBack {
            self.stop_probe();
            log::debug!("{}: connected again before the probe did", self.server);
            self.host.notify(Notice::BackOnline);
        }
    }

    /// The transport could not connect at all, for `cause`: offline, and a probe starts.
    pub fn unreachable(&mut self, cause: &io::Error) {
        let why = cannot_connect(&self.server, cause);
        let change = lock(&self.shared).state.unreachable(why.clone());
        match change {
            Change::WentOffline(why) => {
                self.host.set_status(ProviderState::Offline, why);
                self.start_probe();
            }
            // The host calls an offline transport only when an operator's flush had it try
            // anyway (it set the row online for that): the row goes offline again.
            Change::NewReason(_) | Change::None => {
                self.host.set_status(ProviderState::Offline, why)
            }
            Change::CameBack => {}
        }
    }

    fn start_probe(&mut self) {
        // A probe that found the host meanwhile has ended, or is about to.
        self.stop_probe();
        let (stop, stopping) = mpsc::channel();
        let server = self.server.clone();
        let host = self.host.clone();
        let shared = Arc::clone(&self.shared);
        let (first, last) = self.pauses;
        let spawned = thread::Builder::new()
            .name("smtp probe".into())
            .spawn(move || {
                let mut pause = first;
                // A message or the sender's drop ends the wait early: stop.
                while let Err(RecvTimeoutError::Timeout) = stopping.recv_timeout(pause) {
                    let reached = probe(&server);
                    let mut shared = lock(&shared);
                    // Dropped, or the transport connected itself and told the host.
                    if shared.stopped || shared.state == State::Online {
                        return;
                    }
                    match reached {
                        Ok(()) => {
                            shared.state.reachable();
                            host.notify(Notice::BackOnline);
                            return;
                        }
                        Err(cause) => {
                            let why = cannot_connect(&server, &cause);
                            if let Change::NewReason(why) = shared.state.unreachable(why) {
                                host.set_status(ProviderState::Offline, why);
                            }
                        }
                    }
                    pause = (pause * 2).min(last);
                }
            });
        match spawned {
            Ok(thread) => self.probe = Some(Probe { stop, thread }),
            // Without a probe the host's retry timer still brings the mail out, later.
            Err(error) => log::error!(
                "{}: cannot start a thread to probe for its return ({error}); its mail waits \
                 for the retry timer or a flush",
                self.server
            ),
        }
    }

    /// Stops the probe, if one runs, and waits for it (at most one probe's timeout).
    fn stop_probe(&mut self) {
        if let Some(Probe { stop, thread }) = self.probe.take() {
            drop(stop);
            if thread.join().is_err() {
                log::error!("{}: the probe thread panicked", self.server);
            }
        }
    }
}

impl Drop for Reachability {
    fn drop(&mut self) {
        lock(&self.shared).stopped = true;
        self.stop_probe();
    }
}

/// The row's text and the log's words for a connection that could not be made.
fn cannot_connect(server: &str, cause: &io::Error) -> String {
    format!("cannot connect to {server}: {cause}")
}

/// The shared state; a panic elsewhere while it was held left nothing half changed.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One probe: a TCP connection to any of the server's addresses, closed at once.
fn probe(server: &str) -> io::Result<()> {
    let mut last = None;
    for address in server.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Why `error`, from opening an SMTP connection, means the server could not be reached at
/// all: the TCP connection to every address was refused, timed out or had no route. A
/// connection that was made and then failed (a reset greeting, TLS, a reply) is not.
pub fn connect_failure(error: &lettre::transport::smtp::Error) -> Option<&io::Error> {
    if error.status().is_some() || error.is_tls() {
        return None;
    }
    let cause = std::error::Error::source(error)?.downcast_ref::<io::Error>()?;
    // Only a connect(2) gives these; a read timeout on an open connection is `WouldBlock`.
    let connecting = matches!(
        cause.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::AddrNotAvailable
    );
    connecting.then_some(cause)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Instant;

    use provider_abi::abi_stable::sabi_trait::TD_Opaque;
    use provider_abi::abi_stable::std_types::RArc;
    use provider_abi::host::HostServices_TO;
    use provider_testkit::TestHost;
    use spooler_tests::free_port;

    use super::*;

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    #[test]
    fn one_failure_takes_it_offline_a_connection_brings_it_back() {
        let mut state = State::Online;
        assert_eq!(
            state.unreachable("refused".into()),
            Change::WentOffline("refused".into())
        );
        assert_eq!(state.unreachable("refused".into()), Change::None);
        assert_eq!(
            state.unreachable("timed out".into()),
            Change::NewReason("timed out".into())
        );
        assert_eq!(state.reachable(), Change::CameBack);
        assert_eq!(state.reachable(), Change::None);
        assert_eq!(state, State::Online);
    }

    /// A reachability for `port` on loopback that probes every 50 ms, and what it told the
    /// host.
    fn watching(port: u16) -> (Reachability, TestHost) {
        let test_host = TestHost::default();
        let host = Host::from_object(HostServices_TO::from_ptr(
            RArc::new(test_host.clone()),
            TD_Opaque,
        ));
        let pause = Duration::from_millis(50);
        let reachability =
            Reachability::with_pauses(format!("127.0.0.1:{port}"), host, (pause, pause));
        (reachability, test_host)
    }

    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "not within 5 s: {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_probe_says_it_is_back_once_something_listens() {
        let port = free_port();
        let (mut reachability, host) = watching(port);
        reachability.unreachable(&refused());
        reachability.unreachable(&refused());
        let offline = (
            ProviderState::Offline,
            format!("cannot connect to 127.0.0.1:{port}: connection refused"),
        );
        // Each failed attempt says offline (a flush may have had the host set the row online);
        // the host logs only the change.
        assert_eq!(host.statuses(), vec![offline.clone(), offline]);
        thread::sleep(Duration::from_millis(200));
        assert!(host.notices().is_empty(), "nothing listens yet");

        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        eventually("the probe finds it back", || {
            host.notices() == vec![Notice::BackOnline]
        });
        reachability.connected();
        assert_eq!(host.notices(), vec![Notice::BackOnline], "told once");
    }

    #[test]
    fn a_connection_of_its_own_brings_it_back_and_stops_the_probe() {
        let (mut reachability, host) = watching(free_port());
        reachability.unreachable(&refused());
        reachability.connected();
        assert!(reachability.probe.is_none());
        assert_eq!(host.notices(), vec![Notice::BackOnline]);
    }

    #[test]
    fn dropping_it_stops_the_probe_without_a_word_to_the_host() {
        let port = free_port();
        let (mut reachability, host) = watching(port);
        reachability.unreachable(&refused());
        let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        drop(reachability);
        thread::sleep(Duration::from_millis(200));
        assert!(host.notices().is_empty(), "{:?}", host.notices());
    }

    #[test]
    fn only_a_connection_never_made_is_a_connect_failure() {
        let port = free_port();
        let client = lettre::transport::smtp::extension::ClientId::Domain("test".into());
        let connect = || {
            lettre::transport::smtp::client::SmtpConnection::connect(
                ("127.0.0.1", port),
                Some(Duration::from_secs(2)),
                &client,
                None,
                None,
            )
            .err()
            .expect("no SMTP server there")
        };
        let error = connect();
        let cause = connect_failure(&error).expect("refused is a connect failure");
        assert_eq!(cause.kind(), io::ErrorKind::ConnectionRefused);

        // Something that takes the connection and closes it at once, without a greeting.
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let closer = thread::spawn(move || drop(listener.accept()));
        let error = connect();
        closer.join().unwrap();
        assert!(connect_failure(&error).is_none(), "{error}");
    }
}
