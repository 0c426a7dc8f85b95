//! The message as it crosses the boundary: its envelope, per-recipient status and content.
//!
//! Content is RFC 5322 bytes. It is handed to providers borrowed (`RSlice<u8>`), so offering a
//! message to several transports copies nothing.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::{
    std_types::{ROption, RSlice, RString, RVec},
    StableAbi,
};

use crate::address::Address;

/// A message's id in its store; the store assigns it.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    /// Sixteen hex digits, the form clients see and type (`show 00000000000004d2`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for MessageId {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text, 16).map(MessageId)
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// This time plus `duration`, saturating.
    pub fn plus(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// How a recipient was addressed. Bcc recipients are never shown to anyone but the sender.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientKind {
    /// Primary recipient.
    To,
    /// Carbon copy.
    Cc,
    /// Blind carbon copy.
    Bcc,
}

/// Where a recipient stands. Delivered and Failed are final.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not yet handled: waiting for its first or next attempt.
    Pending,
    /// A transport (or the store itself) took responsibility for it.
    Delivered,
    /// It cannot be delivered; a non-delivery report says why.
    Failed,
}

impl RecipientKind {
    /// Its number in a store's rows (To 0, Cc 1, Bcc 2).
    pub fn as_number(self) -> i64 {
        self as i64
    }

    /// The kind numbered `number` in a store's rows; To for an unknown number.
    pub fn from_number(number: i64) -> Self {
        match number {
            1 => RecipientKind::Cc,
            2 => RecipientKind::Bcc,
            _ => RecipientKind::To,
        }
    }
}

impl DeliveryState {
    /// Its number in a store's rows (Pending 0, Delivered 1, Failed 2).
    pub fn as_number(self) -> i64 {
        self as i64
    }

    /// The state numbered `number` in a store's rows; Pending for an unknown number, so
    /// that nothing is lost.
    pub fn from_number(number: i64) -> Self {
        match number {
            1 => DeliveryState::Delivered,
            2 => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// Per-recipient status, stored durably after every attempt.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// Handled or not, and how.
    pub state: DeliveryState,
    /// The transport that gave the last answer, if any has.
    pub transport: ROption<RString>,
    /// How many delivery attempts were made.
    pub attempts: u32,
    /// When the next attempt is due, for a pending recipient.
    pub next_attempt: ROption<Timestamp>,
    /// The last answer, as a person reads it ("250 2.0.0 Ok", "deferred: connection refused").
    pub last_answer: RString,
    /// The RFC 3463 status code of a final answer (`2.0.0`, `5.1.1`), for reports.
    pub status_code: RString,
    /// The remote system's own words for a final answer (`smtp; 550 5.1.1 no such user`).
    pub diagnostic: RString,
    /// Whether a delay warning about this recipient was already sent.
    pub delay_warned: bool,
    /// Whether its final state was reported to the sender (or needed no report); set in
    /// the same commit as the report, so a report is made once.
    pub reported: bool,
}

impl RecipientStatus {
    /// A recipient not yet handled.
    pub fn pending() -> Self {
        RecipientStatus {
            state: DeliveryState::Pending,
            transport: ROption::RNone,
            attempts: 0,
            next_attempt: ROption::RNone,
            last_answer: RString::new(),
            status_code: RString::new(),
            diagnostic: RString::new(),
            delay_warned: false,
            reported: false,
        }
    }

    /// Whether no more attempts will be made.
    pub fn is_final(&self) -> bool {
        self.state != DeliveryState::Pending
    }
}

/// One recipient of a message with its status.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Where it goes.
    pub address: Address,
    /// To, Cc or Bcc.
    pub kind: RecipientKind,
    /// Where its delivery stands.
    pub status: RecipientStatus,
}

impl Recipient {
    /// A new, pending recipient.
    pub fn new(address: Address, kind: RecipientKind) -> Self {
        Recipient {
            address,
            kind,
            status: RecipientStatus::pending(),
        }
    }
}

/// Which reports the sender asked for.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRequest {
    /// A delivery report for every delivered recipient.
    pub delivery: bool,
    /// A non-delivery report for every failed recipient (on unless the sender opted out).
    pub non_delivery: bool,
}

impl Default for ReportRequest {
    fn default() -> Self {
        ReportRequest {
            delivery: false,
            non_delivery: true,
        }
    }
}

/// Message priority; higher goes first among messages due at the same time.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Non-urgent.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Urgent.
    High,
}

impl Priority {
    /// Its number in a store's rows, in queue order (Low 0, Normal 1, High 2).
    pub fn as_number(self) -> i64 {
        self as i64
    }

    /// The priority numbered `number` in a store's rows; Normal for an unknown number.
    pub fn from_number(number: i64) -> Self {
        match number {
            0 => Priority::Low,
            2 => Priority::High,
            _ => Priority::Normal,
        }
    }
}

/// A named extra property a provider or client attaches to a message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Its name, e.g. `x-origin`.
    pub name: RString,
    /// Its value.
    pub value: RString,
}

/// Everything about a message but its content.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The store's id; ignored on submission, where the store assigns one.
    pub id: MessageId,
    /// Who sent it; reports go to this address's Inbox.
    pub sender: Address,
    /// The recipients with their statuses.
    pub recipients: RVec<Recipient>,
    /// Which reports the sender asked for.
    pub reports: ReportRequest,
    /// Queue priority.
    pub priority: Priority,
    /// When it was submitted; set by the store.
    pub submitted_at: Timestamp,
    /// Not to be sent before this time.
    pub deferred_until: ROption<Timestamp>,
    /// Recipients still pending at this time fail as expired.
    pub expires_at: ROption<Timestamp>,
    /// Delete it once every recipient is final, instead of moving it to Sent Items.
    pub delete_after_submission: bool,
    /// It is itself a report; no report is ever made about it.
    pub is_report: bool,
    /// Held by an operator: stays in the queue untouched until released.
    pub held: bool,
    /// Preprocessing already ran and its result is stored; it does not run again.
    pub preprocessed: bool,
    /// Extra properties.
    pub properties: RVec<Property>,
}

impl Envelope {
    /// A new envelope from `sender` to `recipients`, with defaults for the rest.
    pub fn new(sender: Address, recipients: Vec<Recipient>) -> Self {
        Envelope {
            id: MessageId(0),
            sender,
            recipients: recipients.into(),
            reports: ReportRequest::default(),
            priority: Priority::Normal,
            submitted_at: Timestamp(0),
            deferred_until: ROption::RNone,
            expires_at: ROption::RNone,
            delete_after_submission: false,
            is_report: false,
            held: false,
            preprocessed: false,
            properties: RVec::new(),
        }
    }

    /// Whether every recipient is final.
    pub fn is_finished(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }

    /// When this message, queued in the Outbox, is next due: the latest of its deferral and
    /// the earliest next attempt of its pending recipients (its submission, for one never
    /// tried); its submission when nothing is pending and it only waits to be finished.
    /// `None` when it is held. The order stores hand out due messages in.
    pub fn due(&self) -> Option<Timestamp> {
        if self.held {
            return None;
        }
        let earliest = self
            .recipients
            .iter()
            .filter(|r| r.status.state == DeliveryState::Pending)
            .map(|r| r.status.next_attempt.unwrap_or(self.submitted_at))
            .min();
        match earliest {
            Some(earliest) => Some(match self.deferred_until {
                ROption::RSome(deferred) => earliest.max(deferred),
                ROption::RNone => earliest,
            }),
            None => Some(self.submitted_at),
        }
    }
}

/// A message being handed to a provider: its envelope and its content, both borrowed.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// The envelope.
    pub envelope: &'a Envelope,
    /// The RFC 5322 content.
    pub content: RSlice<'a, u8>,
}

/// A message with its own content, as the store hands it out.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The envelope, with current recipient statuses.
    pub envelope: Envelope,
    /// The folder it is in.
    pub folder: RString,
    /// The RFC 5322 content.
    pub content: RVec<u8>,
}

impl StoredMessage {
    /// Borrows it for a provider call.
    pub fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            envelope: &self.envelope,
            content: self.content.as_rslice(),
        }
    }
}

/// A message that arrived from a messaging system, as a transport hands it to the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The transport's own name for it, given back to [`acknowledge`](crate::Transport::acknowledge)
    /// once the store has committed it.
    pub source_id: RString,
    /// The envelope sender, if the messaging system knows it.
    pub sender: ROption<Address>,
    /// The envelope recipients, if the messaging system knows them.
    pub recipients: RVec<Address>,
    /// The RFC 5322 content.
    pub content: RVec<u8>,
}
