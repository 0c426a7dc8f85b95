//! Per-destination scheduling, Postfix's qmgr per-destination concurrency, rate delay and
//! dead destinations. The recipients one transport gets in one domain are a destination. At
//! most `[destinations] concurrency` jobs per destination are with the transport at once,
//! and with a `rate` one starts at most every interval; the others wait here in order, so a
//! slow or refusing domain holds at most that many of the transport's connections while
//! mail to every other domain flows. Jobs held back only by the rate are started by
//! `Destinations::due` when their time comes (`Destinations::next_start`).
//!
//! A destination the transport could not reach at all (every recipient of a job deferred
//! for a connection failure: refused, timed out, every mail exchanger down) backs off as a
//! whole until the retry time of that deferral. Its waiting jobs and new ones are deferred
//! at once with the reason, without a call to the transport; the first job after that time
//! tries again, and one that reaches it clears the backoff.
//!
//! A destination keeps at most as many jobs waiting as it may run at once. A job past that
//! is not kept in memory (`Admission::Full`): its recipients go back to the queue, without
//! counting an attempt, until about when the destination will have room for it. Otherwise
//! a backlog to one slow domain would fill the host's `max_in_flight` with its messages,
//! and mail to every other domain would wait behind it in the store. The jobs sent back
//! are spaced by the destination's measured pace (the time between two of its jobs
//! finishing), so that they come back in order as it can take them, instead of the whole
//! backlog cycling through memory.
//!
//! Recipients without a domain (`LOCAL:alice`, `FAX:…`) have no destination: their jobs go
//! to the transport at once, as before.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use provider_abi::{Address, MessageId, Timestamp};

use super::board::{DestinationBoard, Trouble};
use super::routing::Calls;
use crate::config::destinations::{DestinationPolicy, Pace};
use crate::providers::routing_table::TransportIndex;

/// A destination: a transport (by name, which outlives a reload) and a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    pub transport: String,
    pub domain: String,
}

/// A job for one destination: one message's calls of one transport.
pub(super) struct Job {
    pub id: MessageId,
    pub transport: TransportIndex,
    pub calls: Calls,
}

/// A destination backing off: until when, and the deferral that made it.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    pub until: Timestamp,
    pub reason: String,
}

/// What becomes of a job offered to its destination.
pub(super) enum Admission {
    /// It goes to the transport now (it is counted in flight).
    Start(Job),
    /// It waits for a job of its destination to finish.
    Wait,
    /// Its destination is backing off: it is deferred without a call.
    BackingOff(Job, Backoff),
    /// Its destination has as many jobs waiting as it may run: it goes back to the queue
    /// until the time given.
    Full(Job, Timestamp),
}

/// How a finished job went, as far as its destination is concerned.
pub(super) enum Reach {
    /// The transport reached the destination (some recipient delivered or failed for good).
    Reached,
    /// It could not reach it at all: back off until `until`.
    Unreached(Backoff),
    /// Neither (deferred for other reasons, or the call failed): nothing changes.
    Unknown,
}

/// The jobs a finished one lets go: those to start, those to defer (backing off).
#[derive(Default)]
pub(super) struct Released {
    pub start: Vec<Job>,
    pub backing_off: Vec<(Job, Backoff)>,
}

#[derive(Default)]
struct Destination {
    in_flight: usize,
    waiting: VecDeque<Job>,
    backoff: Option<Backoff>,
    /// With a rate: the earliest the next job may start.
    next_start: Option<Timestamp>,
    /// Its pace: the time between two of its jobs finishing, on average.
    finish_interval: Option<Duration>,
    last_finish: Option<Timestamp>,
    /// When the last job sent back to the queue is due back.
    last_return: Option<Timestamp>,
}

impl Destination {
    /// Whether another job may start at `now`.
    fn may_start(&self, pace: Pace, now: Timestamp) -> bool {
        self.in_flight < pace.concurrency && self.next_start.is_none_or(|t| t <= now)
    }

    /// Counts a job in flight, and with a rate, when the next may start.
    fn start(&mut self, pace: Pace, now: Timestamp) {
        self.in_flight += 1;
        self.next_start = pace.interval.map(|interval| now.plus(interval));
    }

    /// The waiting jobs that may start at `now`, counted in flight.
    fn release(&mut self, pace: Pace, now: Timestamp) -> Vec<Job> {
        let mut started = Vec::new();
        while self.may_start(pace, now) {
            let Some(job) = self.waiting.pop_front() else {
                break;
            };
            self.start(pace, now);
            started.push(job);
        }
        started
    }

    /// Whether it has nothing to remember.
    fn is_idle(&self, now: Timestamp) -> bool {
        self.in_flight == 0
            && self.waiting.is_empty()
            && self.backoff.as_ref().is_none_or(|b| b.until <= now)
            && self.next_start.is_none_or(|t| t <= now)
            && self.last_return.is_none_or(|t| t <= now)
    }

    /// When a job that finds the waiting line full should come back: after the jobs waiting
    /// and those already sent back, at the destination's pace, and within `RETURN_LIMIT`.
    fn return_time(&mut self, now: Timestamp) -> Timestamp {
        let interval = self
            .finish_interval
            .unwrap_or(FIRST_PACE)
            .clamp(Duration::from_millis(1), Duration::from_secs(600));
        let after_waiting = now.plus(interval * self.waiting.len() as u32);
        let back = self
            .last_return
            .map(|last| last.plus(interval))
            .filter(|&after_returned| after_returned > after_waiting)
            .unwrap_or(after_waiting)
            .min(now.plus(RETURN_LIMIT));
        self.last_return = Some(back);
        back
    }

    /// Counts a job finished at `now` into its pace (after `in_flight` counts it out). Only
    /// the gaps while jobs ran count: once none runs, the next gap starts afresh, so a pause
    /// or a backoff does not make the destination look slow.
    fn count_finish(&mut self, now: Timestamp) {
        if let Some(last) = self.last_finish {
            let gap = now.since(last);
            self.finish_interval = Some(match self.finish_interval {
                Some(interval) => (interval * 7 + gap) / 8,
                None => gap,
            });
        }
        self.last_finish = (self.in_flight > 0).then_some(now);
    }
}

/// A destination's pace before any of its jobs has finished.
const FIRST_PACE: Duration = Duration::from_millis(100);

/// The longest a job is sent back for at once; past that it comes back and, if the line is
/// still full, goes back again (a backlog longer than this cycles through memory once per
/// this time). The retry policy's default `max_delay`.
const RETURN_LIMIT: Duration = Duration::from_secs(3600);

/// Past this many destinations, idle ones are dropped when a new one comes (those whose
/// jobs went back to the queue and were never admitted again, those whose backoff is over).
const DESTINATIONS_KEPT: usize = 1024;

/// Every destination with a job in flight, waiting, or a backoff.
pub(super) struct Destinations {
    policy: DestinationPolicy,
    table: HashMap<Key, Destination>,
    board: DestinationBoard,
}

impl Destinations {
    pub fn new(policy: DestinationPolicy, board: DestinationBoard) -> Destinations {
        Destinations {
            policy,
            table: HashMap::new(),
            board,
        }
    }

    /// Offers `job` to its destination `key`.
    pub fn admit(&mut self, key: &Key, job: Job, now: Timestamp) -> Admission {
        let pace = self.policy.pace(&key.domain);
        if self.table.len() >= DESTINATIONS_KEPT && !self.table.contains_key(key) {
            self.table
                .retain(|_, destination| !destination.is_idle(now));
        }
        let destination = self.table.entry(key.clone()).or_default();
        if let Some(backoff) = destination.backoff.as_ref().filter(|b| b.until > now) {
            return Admission::BackingOff(job, backoff.clone());
        }
        // Behind others already waiting, whatever the room: first come, first served.
        if destination.waiting.is_empty() && destination.may_start(pace, now) {
            destination.start(pace, now);
            Admission::Start(job)
        } else if destination.waiting.len() >= pace.concurrency {
            let back = destination.return_time(now);
            Admission::Full(job, back)
        } else {
            destination.waiting.push_back(job);
            Admission::Wait
        }
    }

    /// The waiting jobs whose rate lets them start at `now`, counted in flight.
    pub fn due(&mut self, now: Timestamp) -> Vec<(Key, Job)> {
        // Without a rate, jobs wait only for a job to finish, which releases them itself:
        // nothing to look at on every turn of the queue manager's loop.
        if !self.policy.has_rate() {
            return Vec::new();
        }
        self.release_all(now)
    }

    /// Ends the backoffs of `transport`'s destinations (of every transport's, with `None`);
    /// how many there were.
    pub fn forget_backoffs(&mut self, transport: Option<&str>) -> usize {
        let mut forgotten = 0;
        for (key, destination) in &mut self.table {
            if transport.is_none_or(|t| t == key.transport) && destination.backoff.take().is_some()
            {
                self.board.set_backoff(&key.transport, &key.domain, None);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// How the destinations are paced.
    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// Paces the destinations by `policy` from now on (the profile was reloaded): the
    /// waiting jobs a higher limit lets go now, counted in flight.
    pub fn set_policy(&mut self, policy: DestinationPolicy, now: Timestamp) -> Vec<(Key, Job)> {
        self.policy = policy;
        self.release_all(now)
    }

    /// The waiting jobs of every destination not backing off that may start at `now`.
    fn release_all(&mut self, now: Timestamp) -> Vec<(Key, Job)> {
        let mut started = Vec::new();
        for (key, destination) in &mut self.table {
            if destination.backoff.as_ref().is_some_and(|b| b.until > now) {
                continue;
            }
            let pace = self.policy.pace(&key.domain);
            started.extend(
                destination
                    .release(pace, now)
                    .into_iter()
                    .map(|job| (key.clone(), job)),
            );
        }
        self.table
            .retain(|_, destination| !destination.is_idle(now));
        started
    }

    /// When a job held back by its destination's rate may start next, if one is.
    pub fn next_start(&self) -> Option<Timestamp> {
        self.table
            .values()
            .filter(|d| !d.waiting.is_empty())
            .filter_map(|d| d.next_start)
            .min()
    }

    /// Counts the deferrals and failures among a job's answers for `key`, for `status`.
    pub fn count(&self, key: &Key, troubles: impl IntoIterator<Item = Trouble>, now: Timestamp) {
        self.board.count(&key.transport, &key.domain, troubles, now);
    }

    /// A job of `key` that was started is over, as `reach` says: the jobs that may go now.
    pub fn finished(&mut self, key: &Key, reach: Reach, now: Timestamp) -> Released {
        let pace = self.policy.pace(&key.domain);
        let mut released = Released::default();
        let Some(destination) = self.table.get_mut(key) else {
            return released;
        };
        destination.in_flight = destination.in_flight.saturating_sub(1);
        destination.count_finish(now);
        match reach {
            Reach::Reached => {
                destination.backoff = None;
                self.board.set_backoff(&key.transport, &key.domain, None);
            }
            Reach::Unreached(backoff) => {
                self.board.set_backoff(
                    &key.transport,
                    &key.domain,
                    Some((backoff.until, &backoff.reason)),
                );
                destination.backoff = Some(backoff);
            }
            Reach::Unknown => {}
        }
        match destination.backoff.as_ref().filter(|b| b.until > now) {
            Some(backoff) => {
                released.backing_off = destination
                    .waiting
                    .drain(..)
                    .map(|job| (job, backoff.clone()))
                    .collect();
            }
            None => released.start = destination.release(pace, now),
        }
        if destination.is_idle(now) {
            self.table.remove(key);
        }
        released
    }
}

/// The destination of a recipient of `transport`: its address's domain, lowercased; none for
/// an address without one.
pub(super) fn destination_of(transport: &str, address: &Address) -> Option<Key> {
    let (_, domain) = address.address().rsplit_once('@')?;
    (!domain.is_empty()).then(|| Key {
        transport: transport.to_owned(),
        domain: domain.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn destinations(concurrency: usize) -> Destinations {
        let pace = |concurrency| Pace {
            concurrency,
            interval: None,
        };
        let policy = DestinationPolicy {
            default: pace(concurrency),
            domains: BTreeMap::from([("slow.test".to_owned(), pace(1))]),
        };
        Destinations::new(policy, DestinationBoard::default())
    }

    fn key(domain: &str) -> Key {
        Key {
            transport: "internet".into(),
            domain: domain.into(),
        }
    }

    fn job(id: u64) -> Job {
        Job {
            id: MessageId(id),
            transport: TransportIndex(0),
            calls: Vec::new(),
        }
    }

    fn started(admission: Admission) -> Option<u64> {
        match admission {
            Admission::Start(job) => Some(job.id.0),
            _ => None,
        }
    }

    #[test]
    fn a_destination_gets_its_concurrency_and_the_rest_wait_in_order() {
        let mut table = destinations(2);
        let now = Timestamp::now();
        let a = key("a.test");
        assert_eq!(started(table.admit(&a, job(1), now)), Some(1));
        assert_eq!(started(table.admit(&a, job(2), now)), Some(2));
        assert!(matches!(table.admit(&a, job(3), now), Admission::Wait));
        assert!(matches!(table.admit(&a, job(4), now), Admission::Wait));
        assert_eq!(
            started(table.admit(&key("b.test"), job(5), now)),
            Some(5),
            "another domain is not held back"
        );
        assert!(matches!(
            table.admit(&key("slow.test"), job(6), now),
            Admission::Start(_)
        ));
        assert!(
            matches!(table.admit(&key("slow.test"), job(7), now), Admission::Wait),
            "the override"
        );
        let released = table.finished(&a, Reach::Reached, now);
        let ids: Vec<u64> = released.start.iter().map(|j| j.id.0).collect();
        assert_eq!(ids, [3]);
        let released = table.finished(&a, Reach::Unknown, now);
        assert_eq!(
            released.start.iter().map(|j| j.id.0).collect::<Vec<_>>(),
            [4]
        );
    }

    #[test]
    fn an_unreached_destination_backs_off_as_a_whole_until_its_retry_time() {
        let mut table = destinations(1);
        let now = Timestamp::now();
        let a = key("a.test");
        assert!(matches!(table.admit(&a, job(1), now), Admission::Start(_)));
        assert!(matches!(table.admit(&a, job(2), now), Admission::Wait));
        let backoff = Backoff {
            until: now.plus(Duration::from_secs(60)),
            reason: "connection refused".into(),
        };
        let released = table.finished(&a, Reach::Unreached(backoff), now);
        assert!(released.start.is_empty());
        assert_eq!(table.board.backoffs(now).len(), 1, "status shows it");
        assert_eq!(released.backing_off.len(), 1, "the waiting job is deferred");
        assert!(matches!(
            table.admit(&a, job(3), now),
            Admission::BackingOff(_, Backoff { ref reason, .. }) if reason == "connection refused"
        ));
        let later = now.plus(Duration::from_secs(61));
        assert!(
            matches!(table.admit(&a, job(4), later), Admission::Start(_)),
            "after the retry time one job tries again"
        );
        table.finished(&a, Reach::Reached, later);
        assert!(table.table.is_empty(), "a success clears it");
        assert!(table.board.backoffs(now).is_empty());
    }

    #[test]
    fn jobs_past_a_full_line_go_back_spaced_by_the_destinations_pace() {
        let mut table = destinations(2);
        let t0 = Timestamp::now();
        let a = key("a.test");
        let second = Duration::from_secs(1);
        // Jobs finish a second apart, one always in flight: its pace is a second.
        assert!(matches!(table.admit(&a, job(1), t0), Admission::Start(_)));
        assert!(matches!(table.admit(&a, job(2), t0), Admission::Start(_)));
        table.finished(&a, Reach::Reached, t0);
        assert!(matches!(table.admit(&a, job(3), t0), Admission::Start(_)));
        table.finished(&a, Reach::Reached, t0.plus(second));
        let now = t0.plus(second * 2);
        assert!(matches!(table.admit(&a, job(4), now), Admission::Start(_)));
        assert!(matches!(table.admit(&a, job(5), now), Admission::Wait));
        assert!(matches!(table.admit(&a, job(6), now), Admission::Wait));
        let backs: Vec<Timestamp> = (7..10)
            .map(|n| match table.admit(&a, job(n), now) {
                Admission::Full(_, back) => back,
                _ => panic!("the line is full"),
            })
            .collect();
        assert_eq!(
            backs,
            [
                now.plus(second * 2),
                now.plus(second * 3),
                now.plus(second * 4)
            ],
            "after the two waiting, one a second, in order"
        );
    }

    #[test]
    fn a_flush_ends_the_backoffs_of_its_transport() {
        let mut table = destinations(1);
        let now = Timestamp::now();
        let a = key("a.test");
        assert!(matches!(table.admit(&a, job(1), now), Admission::Start(_)));
        let backoff = Backoff {
            until: now.plus(Duration::from_secs(60)),
            reason: "connection refused".into(),
        };
        table.finished(&a, Reach::Unreached(backoff), now);
        assert_eq!(table.forget_backoffs(Some("another")), 0);
        assert_eq!(table.forget_backoffs(Some("internet")), 1);
        assert!(table.board.backoffs(now).is_empty());
        assert!(matches!(table.admit(&a, job(2), now), Admission::Start(_)));
    }

    #[test]
    fn a_reloaded_policy_with_more_room_lets_the_waiting_jobs_go() {
        let mut table = destinations(1);
        let now = Timestamp::now();
        let a = key("a.test");
        assert!(matches!(table.admit(&a, job(1), now), Admission::Start(_)));
        assert!(matches!(table.admit(&a, job(2), now), Admission::Wait));
        assert!(
            matches!(table.admit(&a, job(3), now), Admission::Full(..)),
            "no more waiting than may run: the third goes back to the queue"
        );
        let mut wider = table.policy().clone();
        wider.default.concurrency = 2;
        let started = table.set_policy(wider, now);
        let ids: Vec<u64> = started.iter().map(|(_, job)| job.id.0).collect();
        assert_eq!(ids, [2], "one more may run now");
        assert!(matches!(table.admit(&a, job(4), now), Admission::Wait));
        assert!(matches!(table.admit(&a, job(5), now), Admission::Wait));
        assert!(matches!(table.admit(&a, job(6), now), Admission::Full(..)));
    }

    #[test]
    fn a_rate_spaces_the_starts_and_due_releases_them_in_time() {
        let policy = DestinationPolicy {
            default: Pace {
                concurrency: 10,
                interval: Some(Duration::from_secs(1)),
            },
            domains: BTreeMap::new(),
        };
        let mut table = Destinations::new(policy, DestinationBoard::default());
        let now = Timestamp::now();
        let a = key("a.test");
        assert!(matches!(table.admit(&a, job(1), now), Admission::Start(_)));
        assert!(matches!(table.admit(&a, job(2), now), Admission::Wait));
        assert_eq!(table.next_start(), Some(now.plus(Duration::from_secs(1))));
        assert!(table.due(now.plus(Duration::from_millis(500))).is_empty());
        let due = table.due(now.plus(Duration::from_secs(1)));
        assert_eq!(due.iter().map(|(_, j)| j.id.0).collect::<Vec<_>>(), [2]);
        assert_eq!(table.next_start(), None, "nothing waits");
    }
}
