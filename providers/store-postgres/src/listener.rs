//! Wake-ups between hosts: a thread with its own connection `LISTEN`s on the `spooler`
//! channel, where every host's store `NOTIFY`s what it committed (a submission, a flush, a
//! release, a message unlocked while due, mail delivered into a folder). On news from another
//! host it tells this host [`Notice::StoreChanged`], so an idle host starts at once instead of
//! at its next poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Notification;
use provider_abi::{Host, MessageId, Notice};

use crate::config::Server;

/// The payload announcing that the queue changed: `queue <session>`.
pub fn queue_changed(session: i64) -> String {
    format!("queue {session}")
}

/// The payload announcing mail delivered into a folder: `mail <session> <id>`.
pub fn mail_arrived(session: i64, id: MessageId) -> String {
    format!("mail {session} {id}")
}

/// The listening thread; it stops when dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
    arrived: Arc<Mutex<Vec<MessageId>>>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Starts listening on behalf of host run `session`.
    pub fn start(name: &str, server: Server, session: i64, host: Host) -> Listener {
        let stop = Arc::new(AtomicBool::new(false));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, arrived, owned) = (stop.clone(), arrived.clone(), name.to_owned());
            std::thread::Builder::new()
                .name(format!("{name} listener"))
                .spawn(move || listen(&owned, &server, session, &host, &stop, &arrived))
                .map_err(|error| log::error!("store `{name}`: cannot start its listener: {error}"))
                .ok()
        };
        Listener {
            stop,
            arrived,
            thread,
        }
    }

    /// The messages other hosts delivered into folders since the last call.
    pub fn take_arrived(&self) -> Vec<MessageId> {
        std::mem::take(&mut *self.arrived.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// How often the thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(250);

fn listen(
    name: &str,
    server: &Server,
    session: i64,
    host: &Host,
    stop: &AtomicBool,
    arrived: &Mutex<Vec<MessageId>>,
) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let listening = server.connect().and_then(|mut client| {
            client
                .batch_execute("LISTEN spooler")
                .map(|()| client)
                .map_err(|error| format!("LISTEN: {}", crate::db::explain(&error)))
        });
        let mut client = match listening {
            Ok(client) => client,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    log::warn!(
                        "store `{name}`: cannot listen for other hosts' changes ({error}); \
                         retrying, and looking at the queue on a timer meanwhile"
                    );
                }
                let wait = Duration::from_secs(1 << failures.min(5));
                sleep_unless_stopped(wait, stop);
                continue;
            }
        };
        if failures > 0 {
            log::info!("store `{name}`: listening for other hosts' changes again");
        }
        failures = 0;
        // Something may have happened while no one listened.
        host.notify(Notice::StoreChanged);
        while !stop.load(Ordering::Relaxed) {
            let mut news = false;
            let mut failed = None;
            let mut notifications = client.notifications();
            // Wait a tick for the first, then take all that are already there.
            let first = notifications.timeout_iter(TICK).next();
            let mut take_one = |next: Result<Option<Notification>, postgres::Error>| match next {
                Ok(Some(notification)) => {
                    news |= take(notification.payload(), session, arrived);
                    true
                }
                Ok(None) => false,
                Err(error) => {
                    failed = Some(error.to_string());
                    false
                }
            };
            if take_one(first) {
                let mut rest = notifications.iter();
                while take_one(rest.next()) {}
            }
            drop(notifications);
            if news {
                host.notify(Notice::StoreChanged);
            }
            let closed = || {
                client
                    .is_closed()
                    .then(|| "the server closed it".to_owned())
            };
            if let Some(error) = failed.or_else(closed) {
                log::warn!("store `{name}`: the listening connection failed: {error}");
                break;
            }
        }
    }
}

/// Reads one payload; true if it is news from another host.
fn take(payload: &str, session: i64, arrived: &Mutex<Vec<MessageId>>) -> bool {
    let mut words = payload.split(' ');
    let (kind, from) = (
        words.next(),
        words.next().and_then(|s| s.parse::<i64>().ok()),
    );
    if from == Some(session) || from.is_none() {
        return false;
    }
    if kind == Some("mail") {
        if let Some(id) = words.next().and_then(|id| id.parse().ok()) {
            arrived.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        }
    }
    true
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(TICK);
    }
}
