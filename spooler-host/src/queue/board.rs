//! What `status` shows of the destinations (a transport's recipients in one domain): those
//! backing off, and the deferrals and failures each had lately, counted by class. The
//! queue manager writes it as answers come; the control socket reads it.
//!
//! A destination's trouble is counted from its first deferral or failure and forgotten an
//! hour after its last one (`TROUBLE_MEMORY`): `status` shows what is going wrong now, not
//! since the host started. At most `TROUBLED_DESTINATIONS` are kept; past that, the one
//! whose last trouble is oldest goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use provider_abi::Timestamp;

use crate::base::bounce::BounceClass;

/// How long a destination's trouble is remembered after its last deferral or failure.
const TROUBLE_MEMORY: Duration = Duration::from_secs(3600);

/// How many troubled destinations are kept (a bound on memory with mail to many domains).
const TROUBLED_DESTINATIONS: usize = 1000;

/// A destination backing off, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationBackoff {
    /// The transport instance.
    pub transport: String,
    /// The recipient domain.
    pub domain: String,
    /// Until when nothing is tried.
    pub until: Timestamp,
    /// The deferral that made it back off.
    pub reason: String,
}

/// A destination's deferrals and failures since its trouble began, by class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationTrouble {
    /// The transport instance.
    pub transport: String,
    /// The recipient domain.
    pub domain: String,
    /// The first answer counted.
    pub since: Timestamp,
    /// The last one.
    pub last: Timestamp,
    /// Deferred recipients, by class.
    pub deferred: BTreeMap<BounceClass, u64>,
    /// Failed recipients, by class.
    pub failed: BTreeMap<BounceClass, u64>,
}

impl DestinationTrouble {
    /// Deferrals and failures together.
    pub fn total(&self) -> u64 {
        self.deferred.values().chain(self.failed.values()).sum()
    }
}

/// A recipient's answer as the board counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    Deferred(BounceClass),
    Failed(BounceClass),
}

type Destination = (String, String);

#[derive(Default)]
struct Board {
    backoffs: HashMap<Destination, DestinationBackoff>,
    troubles: HashMap<Destination, DestinationTrouble>,
}

/// The board, shared by the queue manager and the control socket.
#[derive(Clone, Default)]
pub struct DestinationBoard(Arc<Mutex<Board>>);

impl DestinationBoard {
    /// Those still backing off at `now`, by domain.
    pub fn backoffs(&self, now: Timestamp) -> Vec<DestinationBackoff> {
        let mut current: Vec<DestinationBackoff> = self
            .0
            .lock()
            .backoffs
            .values()
            .filter(|b| b.until > now)
            .cloned()
            .collect();
        current.sort_by(|a, b| (&a.domain, &a.transport).cmp(&(&b.domain, &b.transport)));
        current
    }

    /// The destinations with trouble in the last hour at `now`, the most troubled first.
    pub fn troubles(&self, now: Timestamp) -> Vec<DestinationTrouble> {
        let mut current: Vec<DestinationTrouble> = self
            .0
            .lock()
            .troubles
            .values()
            .filter(|t| remembered(t, now))
            .cloned()
            .collect();
        current.sort_by(|a, b| {
            (b.total(), &a.domain, &a.transport).cmp(&(a.total(), &b.domain, &b.transport))
        });
        current
    }

    /// `transport`'s destination `domain` backs off until the time given, for the reason
    /// given; or, with `None`, no longer.
    pub(super) fn set_backoff(
        &self,
        transport: &str,
        domain: &str,
        backoff: Option<(Timestamp, &str)>,
    ) {
        let mut board = self.0.lock();
        if board.backoffs.len() >= TROUBLED_DESTINATIONS {
            // Those over (a destination that stays down until its mail bounces is never
            // reached again to clear its own).
            let now = Timestamp::now();
            board.backoffs.retain(|_, b| b.until > now);
        }
        let id = (transport.to_owned(), domain.to_owned());
        match backoff {
            Some((until, reason)) => {
                let shown = DestinationBackoff {
                    transport: transport.to_owned(),
                    domain: domain.to_owned(),
                    until,
                    reason: reason.to_owned(),
                };
                board.backoffs.insert(id, shown);
            }
            None => {
                board.backoffs.remove(&id);
            }
        }
    }

    /// Counts the deferrals and failures among one job's answers for `transport`'s
    /// destination `domain`.
    pub(super) fn count(
        &self,
        transport: &str,
        domain: &str,
        troubles: impl IntoIterator<Item = Trouble>,
        now: Timestamp,
    ) {
        let mut troubles = troubles.into_iter().peekable();
        if troubles.peek().is_none() {
            return;
        }
        let mut board = self.0.lock();
        let id = (transport.to_owned(), domain.to_owned());
        if !board.troubles.contains_key(&id) && board.troubles.len() >= TROUBLED_DESTINATIONS {
            board.troubles.retain(|_, t| remembered(t, now));
            if board.troubles.len() >= TROUBLED_DESTINATIONS {
                let oldest = board
                    .troubles
                    .iter()
                    .min_by_key(|(_, t)| t.last)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    board.troubles.remove(&oldest);
                }
            }
        }
        let fresh = || DestinationTrouble {
            transport: transport.to_owned(),
            domain: domain.to_owned(),
            since: now,
            last: now,
            deferred: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        let entry = board.troubles.entry(id).or_insert_with(fresh);
        if !remembered(entry, now) {
            *entry = fresh();
        }
        entry.last = now;
        for trouble in troubles {
            let (counts, class) = match trouble {
                Trouble::Deferred(class) => (&mut entry.deferred, class),
                Trouble::Failed(class) => (&mut entry.failed, class),
            };
            *counts.entry(class).or_default() += 1;
        }
    }
}

/// Whether `trouble` is recent enough at `now` to be shown and added to.
fn remembered(trouble: &DestinationTrouble, now: Timestamp) -> bool {
    now.since(trouble.last) < TROUBLE_MEMORY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn troubles_are_counted_by_class_and_forgotten_an_hour_after_the_last() {
        let board = DestinationBoard::default();
        let now = Timestamp::now();
        let tls = Trouble::Deferred(BounceClass::TlsFailure);
        board.count("internet", "a.test", [tls, tls], now);
        board.count(
            "internet",
            "b.test",
            [Trouble::Failed(BounceClass::BadMailbox)],
            now,
        );
        board.count("internet", "c.test", [], now);
        let shown = board.troubles(now);
        assert_eq!(shown.len(), 2, "an answer without trouble counts nothing");
        assert_eq!(shown[0].domain, "a.test", "the most troubled first");
        assert_eq!(
            shown[0].deferred,
            BTreeMap::from([(BounceClass::TlsFailure, 2)])
        );
        assert_eq!(
            shown[1].failed,
            BTreeMap::from([(BounceClass::BadMailbox, 1)])
        );

        let later = now.plus(Duration::from_secs(3601));
        assert!(board.troubles(later).is_empty(), "an hour later it is gone");
        board.count("internet", "a.test", [tls], later);
        let again = board.troubles(later);
        assert_eq!(
            again[0].deferred[&BounceClass::TlsFailure],
            1,
            "counted afresh"
        );
        assert_eq!(again[0].since, later);
    }
}
