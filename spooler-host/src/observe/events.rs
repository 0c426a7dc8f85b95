//! Delivery events: submitted, delivered, deferred, failed, report sent, held, released,
//! deleted, new inbound mail. Each gets an id that only grows, even across restarts (it
//! starts from the clock), and the last [`KEPT`] are kept in memory, so that a client that
//! lost its connection resumes from the last id it saw (`Last-Event-ID`) without a gap.
//!
//! Publishing never waits: a subscriber that does not keep up is dropped, and resumes from
//! the ring when it comes back. Delivery is never slowed by who is watching.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use serde::Serialize;

/// How many events are kept for clients that resume.
pub const KEPT: usize = 10_000;

/// How many events a subscriber may fall behind before it is dropped.
const SUBSCRIBER_ROOM: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A message was queued.
    Submitted,
    /// A recipient was delivered.
    Delivered,
    /// A recipient was deferred; `answer` says why.
    Deferred,
    /// A recipient failed for good; `answer` says why.
    Failed,
    /// A delivery or non-delivery report went to the sender.
    ReportSent,
    /// An operator (or the quarantine) held a message.
    Held,
    /// A held message was released.
    Released,
    /// A message was deleted.
    Deleted,
    /// Mail arrived in a folder (inbound, or a local delivery).
    Inbound,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its id: larger than every earlier event's.
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
    /// When (milliseconds since the epoch).
    pub at: i64,
    /// The message's queue id.
    pub message: String,
    /// The recipient, `TYPE:address`, for recipient events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The transport instance that answered, for recipient events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The transport's answer (deferred, failed), or the folder (inbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An event about to be published: what [`publish`] fills in is the id and the time.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    /// What happened.
    pub kind: EventKind,
    /// The message's queue id.
    pub message: String,
    /// The recipient, for recipient events.
    pub recipient: Option<String>,
    /// The transport, for recipient events.
    pub transport: Option<String>,
    /// The answer or the folder.
    pub detail: Option<String>,
}

impl Happening {
    /// An event about a whole message.
    pub fn message(kind: EventKind, message: impl ToString) -> Happening {
        Happening {
            kind,
            message: message.to_string(),
            recipient: None,
            transport: None,
            detail: None,
        }
    }

    /// With the recipient and the transport that answered.
    pub fn recipient(mut self, recipient: impl ToString, transport: Option<&str>) -> Happening {
        self.recipient = Some(recipient.to_string());
        self.transport = transport.map(str::to_owned);
        self
    }

    /// With an answer or a folder.
    pub fn detail(mut self, detail: impl ToString) -> Happening {
        self.detail = Some(detail.to_string());
        self
    }
}

/// The events of this process.
struct Bus {
    /// The first id of this run.
    start: u64,
    next: u64,
    kept: VecDeque<Event>,
    subscribers: Vec<Sender<Event>>,
}

fn bus() -> &'static Mutex<Bus> {
    static BUS: OnceLock<Mutex<Bus>> = OnceLock::new();
    BUS.get_or_init(|| {
        // Ids start from the clock (microseconds, below 2^53 until the year 2255, so that
        // JavaScript reads them exactly), so a client resuming across a restart of the host
        // gets every event of the new run rather than nothing.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_micros() as u64);
        Mutex::new(Bus {
            start,
            next: start,
            kept: VecDeque::with_capacity(KEPT),
            subscribers: Vec::new(),
        })
    })
}

/// Tells every subscriber, without waiting for any.
pub fn publish(happening: Happening) {
    let mut bus = bus().lock();
    let event = Event {
        id: bus.next,
        kind: happening.kind,
        at: provider_abi::Timestamp::now().0,
        message: happening.message,
        recipient: happening.recipient,
        transport: happening.transport,
        detail: happening.detail,
    };
    bus.next += 1;
    if bus.kept.len() == KEPT {
        bus.kept.pop_front();
    }
    bus.subscribers
        .retain(|subscriber| subscriber.try_send(event.clone()).is_ok());
    bus.kept.push_back(event);
}

/// What a subscriber gets: the kept events after the one it saw last, then the new ones.
pub struct Subscription {
    /// Kept events after the id asked for, oldest first.
    pub missed: Vec<Event>,
    /// Whether events between that id and the oldest kept one were lost.
    pub gap: bool,
    /// The events from now on; it ends if the subscriber falls too far behind.
    pub events: Receiver<Event>,
}

/// Subscribes; with `after`, the kept events after that id come first, with no gap between
/// them and the live ones.
pub fn subscribe(after: Option<u64>) -> Subscription {
    let (sender, events) = bounded(SUBSCRIBER_ROOM);
    let mut bus = bus().lock();
    let (missed, gap) = match after {
        Some(after) => {
            let missed: Vec<Event> = bus.kept.iter().filter(|e| e.id > after).cloned().collect();
            // Events of this run dropped from the ring that the client had not seen.
            let oldest = bus.kept.front().map_or(bus.next, |e| e.id);
            (missed, oldest > bus.start && after + 1 < oldest)
        }
        None => (Vec::new(), false),
    };
    bus.subscribers.push(sender);
    Subscription {
        missed,
        gap,
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_resumes_after_the_last_id_it_saw() {
        let first = subscribe(None);
        publish(Happening::message(EventKind::Submitted, "a"));
        publish(Happening::message(EventKind::Held, "a"));
        let seen = first.events.recv().unwrap();
        let resumed = subscribe(Some(seen.id));
        let ours: Vec<_> = resumed.missed.iter().filter(|e| e.message == "a").collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].kind, EventKind::Held);
        assert!(ours[0].id > seen.id);
    }
}
