//! Knowing when the host has finished a message, without asking it: a thread follows the
//! host's log and notes the moment each `<id>: finished; …` line appears. The host writes
//! that line only once the message's final statuses are committed, so it marks "delivered
//! and on disk" at no cost to the host being measured.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Finished messages seen in a host's log so far.
pub struct Finished {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Finished {
    /// Follows the log at `path` from its start.
    pub fn follow(path: &Path) -> Finished {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let file = File::open(path).expect("the host's log exists once the host runs");
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || read_lines(BufReader::new(file), &seen, &stop))
        };
        Finished {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// How many messages have finished.
    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// When message `id` finished, if it has.
    pub fn when(&self, id: &str) -> Option<Instant> {
        self.seen.lock().get(id).copied()
    }

    /// Waits until `count` messages have finished; the moment the last one did. Panics after
    /// `limit`, naming how far it got.
    pub fn wait_for(&self, count: usize, limit: Duration) -> Instant {
        wait_for_all(&[self], count, limit)
    }
}

/// Waits until `count` messages have finished on the hosts `followers` follow, together; the
/// moment the last one did. Panics after `limit`, naming how far it got.
pub fn wait_for_all(followers: &[&Finished], count: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let total: usize = followers.iter().map(|f| f.count()).sum();
        if total >= count {
            return followers
                .iter()
                .filter_map(|f| f.seen.lock().values().max().copied())
                .max()
                .unwrap_or_else(Instant::now);
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {count} messages finished within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

fn read_lines(mut log: BufReader<File>, seen: &Mutex<HashMap<String, Instant>>, stop: &AtomicBool) {
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        match log.read_line(&mut line) {
            Ok(_) if line.ends_with('\n') => {
                if let Some(id) = finished_id(&line) {
                    seen.lock().insert(id.to_owned(), Instant::now());
                }
                line.clear();
            }
            // At the end for now (or in the middle of a line being written): wait for more.
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return,
        }
    }
}

/// The id in a log line `[… INFO  spooler_host::queue::commit] 00000000000004d2: finished; moved
/// to Sent Items`.
fn finished_id(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("] ")?;
    let (id, what) = rest.split_once(": ")?;
    what.starts_with("finished;").then_some(id)
}
