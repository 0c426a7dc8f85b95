//! Retention: removes finished mail whose time in the store is over (`[store] keep_sent`,
//! `keep_reports`), from Sent Items and the reports in the Inbox, on a thread of its own.
//!
//! It prunes in batches of `BATCH` messages, each one store call, so the store thread is
//! never held for long: commits and reads queued meanwhile run between two batches. A pass
//! runs every `EVERY` (more often for a keep time under two minutes), and the first soon
//! after start, so a store that grew while the host was down shrinks at once. A store that cannot prune (built against provider-abi
//! before 1.4) keeps everything, and the log says so once.

use std::thread::JoinHandle;
use std::time::Duration;

use provider_abi::store::{INBOX, SENT_ITEMS};
use provider_abi::{ErrorKind, Timestamp};

use crate::config::retention::Retention;
use crate::store::thread::StoreClient;

/// How many messages one prune call removes at most: about 5 ms of the embedded store's time.
const BATCH: u32 = 200;
/// How long the store thread is left to others between two batches.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);
/// How often a pass looks for mail whose time is over, at most: a shorter keep time is
/// looked at every half of it (at least every [`SHORTEST_EVERY`]), so the store never holds
/// much more than one and a half times what the keep time lets in.
const EVERY: Duration = Duration::from_secs(60);
/// The shortest time between two passes.
const SHORTEST_EVERY: Duration = Duration::from_secs(1);
/// How long after start the first pass runs.
const FIRST_PASS: Duration = Duration::from_secs(5);

/// What a pass removes: `folder`'s messages (only reports, if `reports_only`) kept longer
/// than `keep`.
struct Rule {
    folder: &'static str,
    reports_only: bool,
    keep: Duration,
}

/// Starts the retention thread.
pub fn start(store: StoreClient, retention: Retention) -> std::io::Result<JoinHandle<()>> {
    let rules = [
        Rule {
            folder: SENT_ITEMS,
            reports_only: false,
            keep: retention.keep_sent,
        },
        Rule {
            folder: INBOX,
            reports_only: true,
            keep: retention.keep_reports,
        },
    ];
    let every = rules
        .iter()
        .map(|rule| rule.keep / 2)
        .filter(|half| !half.is_zero())
        .fold(EVERY, Duration::min)
        .max(SHORTEST_EVERY);
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || {
            std::thread::sleep(FIRST_PASS);
            while pass(&store, &rules, every) {
                std::thread::sleep(every);
            }
        })
}

/// Applies each rule once, batch after batch; false when the store cannot prune at all.
fn pass(store: &StoreClient, rules: &[Rule], every: Duration) -> bool {
    for rule in rules {
        let before = Timestamp(Timestamp::now().0 - rule.keep.as_millis() as i64);
        let mut removed = 0;
        loop {
            match store.prune(rule.folder, rule.reports_only, before, BATCH) {
                Ok(count) => {
                    removed += count;
                    if count < u64::from(BATCH) {
                        break;
                    }
                    std::thread::sleep(BETWEEN_BATCHES);
                }
                Err(error) if error.kind() == ErrorKind::Unsupported => {
                    log::warn!(
                        "retention: store `{}`: {error}; nothing is removed",
                        store.name()
                    );
                    return false;
                }
                Err(error) => {
                    log::warn!(
                        "retention: cannot remove old messages from {}: {error}; trying again \
                         in {}s",
                        rule.folder,
                        every.as_secs()
                    );
                    break;
                }
            }
        }
        if removed > 0 {
            let what = if rule.reports_only {
                "report(s)"
            } else {
                "message(s)"
            };
            log::info!(
                "retention: removed {removed} {what} from {} kept longer than {}s",
                rule.folder,
                rule.keep.as_secs()
            );
        }
    }
    true
}
