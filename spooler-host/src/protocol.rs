//! The control protocol between `spooler-host` clients and a running host: one JSON request
//! per line, one JSON response per line; a submission's content follows its request line
//! as exactly `content_length` raw bytes. It is a layer of its own, below everything that
//! speaks it: the daemon's control socket answers in it, the CLI asks in it, and intake
//! takes its description of a submission.
//!
//! May call: `base`, `providers` (status rows, for their views) and `store` (mail events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use provider_abi::store::{FolderInfo, MessageSummary, ShapeCell};
use provider_abi::{DeliveryState, Envelope, Priority, RecipientKind, StoredMessage};

use crate::base::bounce::BounceClass;
use crate::providers::status::StatusRow;

/// A client's request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Submit a message; its content follows the request line.
    Submit(Submission),
    /// One message with its recipient statuses (and content, if asked).
    Show {
        /// Its id.
        id: String,
        /// Include the content.
        #[serde(default)]
        content: bool,
    },
    /// One page of the messages of a folder, oldest first.
    List {
        /// The folder.
        folder: String,
        /// Start after this message id (the `next` of the previous page).
        #[serde(default)]
        after: Option<String>,
        /// At most this many messages (the host caps it).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The folders with their counts.
    Folders,
    /// One page of the Outbox, like mailq.
    Queue {
        /// Start after this message id (the `next` of the previous page).
        #[serde(default)]
        after: Option<String>,
        /// At most this many messages (the host caps it).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// The Outbox's shape, as Postfix's `qshape` shows it: pending recipients by domain and
    /// by the age of their message.
    Shape {
        /// Only the domains with the most recipients, this many (the totals count them all).
        #[serde(default)]
        top: Option<usize>,
    },
    /// Try pending recipients now (of one transport, if named).
    Flush {
        /// The transport instance.
        transport: Option<String>,
    },
    /// The status table, with each transport's queued recipients.
    Status,
    /// Keep a queued message from being sent until released.
    Hold {
        /// Its id.
        id: String,
    },
    /// Let a held message go.
    Release {
        /// Its id.
        id: String,
    },
    /// Try a queued message's pending recipients now (a held message stays held).
    FlushMessage {
        /// Its id.
        id: String,
    },
    /// Delete a message for good.
    Delete {
        /// Its id.
        id: String,
    },
    /// Stream an event for every inbound message and report the store commits.
    Watch,
    /// What these addresses would become and who would deliver them (`sendmail -bv`);
    /// nothing is sent.
    Verify {
        /// The addresses, as `submit` takes them (bare local names too).
        addresses: Vec<String>,
    },
    /// Read the alias file again (`sendmail -bi`, `newaliases`).
    ReloadAliases,
    /// An SMTP session follows on this connection (`sendmail -bs`): the host's next line is
    /// its greeting. The client sends nothing more until it has read the greeting.
    Smtp,
    /// The SMTP listeners' bans in force.
    Bans,
    /// Lift the ban on a client of the SMTP listeners.
    Unban {
        /// Its address (an IPv6 client as its /64, as `Bans` shows it).
        address: String,
    },
}

/// A message to submit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    /// The sender, `TYPE:address` or a bare SMTP address.
    pub sender: String,
    /// The recipients.
    pub recipients: Vec<SubmittedRecipient>,
    /// Ask for a delivery report.
    #[serde(default)]
    pub delivery_report: bool,
    /// Do not send non-delivery reports.
    #[serde(default)]
    pub no_non_delivery_report: bool,
    /// Queue priority.
    #[serde(default)]
    pub priority: PriorityName,
    /// Not before this time (milliseconds since the epoch).
    #[serde(default)]
    pub deferred_until: Option<i64>,
    /// Fail what is still pending at this time (milliseconds since the epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Delete the message when done instead of keeping it in Sent Items.
    #[serde(default)]
    pub delete_after_submission: bool,
    /// A non-delivery report carries the whole message, not only its headers (`-R full`,
    /// SMTP's `RET=FULL`).
    #[serde(default)]
    pub return_full: bool,
    /// Where it comes from, for the host's metrics; a client that does not say is a
    /// program on the control socket.
    #[serde(default)]
    pub source: Source,
    /// The length of the content that follows the request line.
    pub content_length: usize,
}

/// Where a submission comes from: what `spooler_messages_submitted_total` counts by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A program on the control socket, `spooler-host submit` among them.
    #[default]
    Control,
    /// An SMTP listener's session.
    Listener,
    /// The binary invoked as `sendmail`, and its SMTP sessions (`sendmail -bs`).
    Sendmail,
}

impl Source {
    /// Its name, as the protocol and the metric's label write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Control => "control",
            Source::Listener => "listener",
            Source::Sendmail => "sendmail",
        }
    }
}

impl Submission {
    /// A submission from `sender` to `recipients` (all To) of `content_length` bytes, with
    /// every option at its default.
    pub fn new(
        sender: &str,
        recipients: impl IntoIterator<Item = String>,
        content_length: usize,
    ) -> Submission {
        Submission {
            sender: sender.to_owned(),
            recipients: recipients
                .into_iter()
                .map(|address| SubmittedRecipient {
                    address,
                    kind: KindName::To,
                })
                .collect(),
            delivery_report: false,
            no_non_delivery_report: false,
            priority: PriorityName::Normal,
            deferred_until: None,
            expires_at: None,
            delete_after_submission: false,
            return_full: false,
            source: Source::Control,
            content_length,
        }
    }
}

/// A recipient of a submission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubmittedRecipient {
    /// `TYPE:address` or a bare SMTP address.
    pub address: String,
    /// to, cc or bcc.
    #[serde(default)]
    pub kind: KindName,
}

/// Recipient kinds as the protocol writes them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KindName {
    /// To.
    #[default]
    To,
    /// Cc.
    Cc,
    /// Bcc.
    Bcc,
}

impl From<KindName> for RecipientKind {
    fn from(kind: KindName) -> Self {
        match kind {
            KindName::To => RecipientKind::To,
            KindName::Cc => RecipientKind::Cc,
            KindName::Bcc => RecipientKind::Bcc,
        }
    }
}

impl From<RecipientKind> for KindName {
    fn from(kind: RecipientKind) -> Self {
        match kind {
            RecipientKind::To => KindName::To,
            RecipientKind::Cc => KindName::Cc,
            RecipientKind::Bcc => KindName::Bcc,
        }
    }
}

/// Priorities as the protocol writes them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PriorityName {
    /// Low.
    Low,
    /// Normal.
    #[default]
    Normal,
    /// High.
    High,
}

impl From<PriorityName> for Priority {
    fn from(priority: PriorityName) -> Self {
        match priority {
            PriorityName::Low => Priority::Low,
            PriorityName::Normal => Priority::Normal,
            PriorityName::High => Priority::High,
        }
    }
}

/// The host's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The message is durably queued.
    Submitted {
        /// Its queue id.
        id: String,
    },
    /// One message.
    Message(MessageView),
    /// One page of messages.
    Messages {
        /// The messages.
        messages: Vec<MessageView>,
        /// The cursor for the next page (`after`), if there may be more.
        #[serde(default)]
        next: Option<String>,
    },
    /// The folders.
    Folders {
        /// The folders.
        folders: Vec<FolderView>,
    },
    /// The Outbox's shape.
    Shape(ShapeView),
    /// The status table.
    Status {
        /// Its rows.
        providers: Vec<StatusView>,
        /// How many messages are in the Outbox.
        #[serde(default)]
        outbox: u64,
        /// How many messages are held as suspected of crashing a provider.
        #[serde(default)]
        quarantined: u64,
        /// The hosts sharing the store (empty when the store serves this host alone).
        #[serde(default)]
        hosts: Vec<HostView>,
        /// The bytes the store takes, if it can tell.
        #[serde(default)]
        store_bytes: Option<u64>,
        /// The destinations backing off (absent from older hosts).
        #[serde(default)]
        backing_off: Vec<BackoffView>,
        /// The destinations with deferrals or failures in the last hour, the most first
        /// (absent from older hosts).
        #[serde(default)]
        troubles: Vec<TroubleView>,
    },
    /// What each verified address becomes, one line per address it expands to.
    Verified {
        /// The verdicts.
        verdicts: Vec<Verdict>,
    },
    /// The alias file was read again.
    AliasesRead {
        /// How many aliases it has.
        aliases: usize,
        /// The lines it ignored, each naming the file and line.
        problems: Vec<String>,
    },
    /// The SMTP listeners' bans in force.
    Bans {
        /// The bans, by address.
        bans: Vec<BanView>,
    },
    /// Done, nothing to say.
    Done,
    /// Watching: events follow, one per line.
    Watching,
    /// New mail or a report was stored.
    Event(crate::store::watchers::MailEvent),
    /// The request failed.
    Error {
        /// Why.
        message: String,
        /// What kind of failure: what the client tells its caller.
        #[serde(default)]
        failure: Failure,
    },
}

impl Response {
    /// An error answer.
    pub fn error(failure: Failure, message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            failure,
        }
    }
}

/// What kind of failure an error answer reports, so that a client gives its caller the exit
/// code it expects (sendmail's, for `submit`) and knows whether trying again can help.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Refused as asked (a wrong id, an unknown transport, not now for that message).
    #[default]
    Refused,
    /// There is no such message.
    NotFound,
    /// The message is malformed, empty or too large.
    BadMessage,
    /// The sender or a recipient is not a valid address.
    BadAddress,
    /// Not now (the store is unavailable, the disk is full, the host is stopping): the same
    /// request can succeed later.
    Temporary,
}

/// A client of the SMTP listeners banned after failed authentications. It is also a line of
/// the data folder's `smtp-bans`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BanView {
    /// The address (an IPv6 client as its /64).
    pub address: String,
    /// When the ban ends (milliseconds since the epoch).
    pub until: i64,
    /// How many failed authentications led to it.
    pub failures: u32,
    /// The user names tried (the first ten).
    pub users: Vec<String>,
}

/// A message as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageView {
    /// Its id.
    pub id: String,
    /// Its folder.
    pub folder: String,
    /// Its sender.
    pub sender: String,
    /// Its subject.
    pub subject: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was submitted or stored (milliseconds since the epoch).
    pub submitted_at: i64,
    /// Held (by an operator, or by the quarantine).
    pub held: bool,
    /// Why the quarantine holds it: `suspected of crashing provider NAME (3 times)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_because: Option<String>,
    /// It is a report.
    pub is_report: bool,
    /// Its recipients.
    pub recipients: Vec<RecipientView>,
    /// Its content, when asked for (as text; invalid UTF-8 replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// What one address given to `sendmail -bv` becomes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// The address as given.
    pub given: String,
    /// Whether mail to it would be taken and has somewhere to go.
    pub deliverable: bool,
    /// `TYPE:address` and who delivers it, or why not.
    pub detail: String,
}

/// A recipient with its status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecipientView {
    /// `TYPE:address`.
    pub address: String,
    /// to, cc or bcc.
    pub kind: KindName,
    /// pending, delivered or failed.
    pub state: String,
    /// The transport that answered last.
    pub transport: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// The next attempt (milliseconds since the epoch).
    pub next_attempt: Option<i64>,
    /// The last answer.
    pub last_answer: String,
    /// The RFC 3463 status code of a final answer.
    pub status_code: String,
    /// Why it failed or waits (`bad-mailbox`, `connection-failure`, …; see
    /// `base::bounce`); none when delivered or not yet tried, or from an older host.
    #[serde(default)]
    pub class: Option<String>,
}

/// A folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FolderView {
    /// Its name.
    pub name: String,
    /// How many messages it holds.
    pub messages: u64,
}

/// The Outbox's shape, as Postfix's `qshape` shows it: the pending recipients of every
/// Outbox message (held ones too) counted by domain (the part of an SMTP address after its
/// last `@`; the address type for other types) and by the age of their message. A plain
/// view, for the command line and any other client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShapeView {
    /// The upper bounds of the age buckets, in minutes; a last bucket holds older messages.
    pub bucket_minutes: Vec<u64>,
    /// Every domain together (`TOTAL`).
    pub total: ShapeRow,
    /// The domains, most recipients first, then by name.
    pub domains: Vec<ShapeRow>,
}

/// One row of the queue's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShapeRow {
    /// The domain, or the address type of addresses that have none.
    pub domain: String,
    /// Its pending recipients.
    pub total: u64,
    /// Its pending recipients per age bucket, one more than there are bounds.
    pub buckets: Vec<u64>,
    /// Until when it backs off as a destination (milliseconds since the epoch), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_off_until: Option<i64>,
}

impl ShapeView {
    /// qshape's buckets: a message falls in the first whose bound is not below its age.
    pub const QSHAPE_MINUTES: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

    /// The view of a store's cells (bucket `i` of `bucket_minutes`), with the `top` domains
    /// if given.
    pub fn new(bucket_minutes: &[u64], cells: &[ShapeCell], top: Option<usize>) -> ShapeView {
        let width = bucket_minutes.len() + 1;
        let mut total = ShapeRow::empty("TOTAL", width);
        let mut rows = std::collections::BTreeMap::<&str, ShapeRow>::new();
        for cell in cells {
            rows.entry(cell.domain.as_str())
                .or_insert_with(|| ShapeRow::empty(&cell.domain, width))
                .add(cell);
            total.add(cell);
        }
        let mut domains: Vec<ShapeRow> = rows.into_values().collect();
        domains.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.domain.cmp(&b.domain)));
        domains.truncate(top.unwrap_or(usize::MAX));
        ShapeView {
            bucket_minutes: bucket_minutes.to_vec(),
            total,
            domains,
        }
    }
}

impl ShapeRow {
    fn empty(domain: &str, buckets: usize) -> ShapeRow {
        ShapeRow {
            domain: domain.to_owned(),
            total: 0,
            buckets: vec![0; buckets],
            backing_off_until: None,
        }
    }

    /// Counts a cell in; a bucket past the last (from a store that got the bounds wrong)
    /// counts in the last, so the row still adds up to its total.
    fn add(&mut self, cell: &ShapeCell) {
        let last = self.buckets.len() - 1;
        self.buckets[(cell.bucket as usize).min(last)] += cell.recipients;
        self.total += cell.recipients;
    }
}

/// A host working on a shared store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostView {
    /// Its name in its store configuration.
    pub name: String,
    /// Whether it checked in within its lease time.
    pub alive: bool,
    /// How many seconds ago it last checked in.
    pub seen_seconds_ago: u64,
    /// How many messages it holds leases on.
    pub leases: u64,
}

impl From<&provider_abi::store::HostInfo> for HostView {
    fn from(host: &provider_abi::store::HostInfo) -> Self {
        HostView {
            name: host.name.to_string(),
            alive: host.alive,
            seen_seconds_ago: provider_abi::Timestamp::now()
                .since(host.last_seen)
                .as_secs(),
            leases: host.leases,
        }
    }
}

/// A status table row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusView {
    /// The instance.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Its provider.
    pub provider: String,
    /// online, offline or error.
    pub state: String,
    /// Why.
    pub text: String,
    /// Since when it is in this state (milliseconds since the epoch); absent from hosts
    /// older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// For transports: recipients in the queue waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// For an isolated instance: its processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated: Option<ProcessesView>,
}

/// A destination backing off: a transport's recipient domain that could not be reached,
/// whose mail waits until `until` without a connection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackoffView {
    /// The transport instance.
    pub transport: String,
    /// The recipient domain.
    pub domain: String,
    /// Until when (milliseconds since the epoch).
    pub until: i64,
    /// The deferral that made it back off.
    pub reason: String,
}

/// A destination's deferrals and failures since its trouble began (forgotten an hour after
/// the last), counted by class (`tls-failure`, `bad-mailbox`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TroubleView {
    /// The transport instance.
    pub transport: String,
    /// The recipient domain.
    pub domain: String,
    /// When the first was counted (milliseconds since the epoch).
    pub since: i64,
    /// Deferred recipients by class.
    pub deferred: BTreeMap<String, u64>,
    /// Failed recipients by class.
    pub failed: BTreeMap<String, u64>,
}

/// An isolated instance's processes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessesView {
    /// The child processes running now.
    pub pids: Vec<u32>,
    /// How many died and were replaced.
    pub restarts: u32,
    /// The last death, as the host logged it.
    pub last_fault: Option<String>,
    /// When (milliseconds since the epoch).
    pub last_fault_at: Option<i64>,
}

impl MessageView {
    /// From a stored envelope.
    pub fn new(
        envelope: &Envelope,
        folder: &str,
        subject: String,
        size: u64,
        content: Option<&[u8]>,
    ) -> Self {
        MessageView {
            id: envelope.id.to_string(),
            folder: folder.to_owned(),
            sender: envelope.sender.to_string(),
            subject,
            size,
            submitted_at: envelope.submitted_at.0,
            held: envelope.held,
            held_because: None,
            is_report: envelope.is_report,
            recipients: envelope
                .recipients
                .iter()
                .map(|r| RecipientView {
                    address: r.address.to_string(),
                    kind: r.kind.into(),
                    state: match r.status.state {
                        DeliveryState::Pending => "pending",
                        DeliveryState::Delivered => "delivered",
                        DeliveryState::Failed => "failed",
                    }
                    .into(),
                    transport: r
                        .status
                        .transport
                        .as_ref()
                        .into_option()
                        .map(|t| t.to_string()),
                    attempts: r.status.attempts,
                    next_attempt: r.status.next_attempt.into_option().map(|t| t.0),
                    last_answer: r.status.last_answer.to_string(),
                    status_code: r.status.status_code.to_string(),
                    class: BounceClass::of(&r.status).map(|c| c.name().to_owned()),
                })
                .collect(),
            content: content.map(|c| String::from_utf8_lossy(c).into_owned()),
        }
    }

    /// From a folder listing.
    pub fn of_summary(summary: &MessageSummary) -> Self {
        MessageView::new(
            &summary.envelope,
            &summary.folder,
            summary.subject.to_string(),
            summary.size,
            None,
        )
    }

    /// From a whole stored message.
    pub fn of_message(message: &StoredMessage, with_content: bool) -> Self {
        let content = message.content.as_slice();
        let subject = provider_abi::headers::header(content, "Subject").unwrap_or_default();
        MessageView::new(
            &message.envelope,
            &message.folder,
            subject,
            content.len() as u64,
            with_content.then_some(content),
        )
    }
}

impl From<&FolderInfo> for FolderView {
    fn from(folder: &FolderInfo) -> Self {
        FolderView {
            name: folder.name.to_string(),
            messages: folder.messages,
        }
    }
}

impl From<&StatusRow> for StatusView {
    fn from(row: &StatusRow) -> Self {
        StatusView {
            name: row.name.clone(),
            kind: row.kind.to_string(),
            provider: row.provider.clone(),
            state: row.state.to_string(),
            text: row.text.clone(),
            since: Some(row.since.0),
            queued: None,
            isolated: row.processes.as_ref().map(|processes| ProcessesView {
                pids: processes.pids.clone(),
                restarts: processes.restarts,
                last_fault: processes.last_fault.as_ref().map(|(_, text)| text.clone()),
                last_fault_at: processes.last_fault.as_ref().map(|(at, _)| at.0),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Most recipients first, ties by name; `top` cuts the domains, not the totals.
    #[test]
    fn a_shape_lists_the_biggest_domains_and_totals_them_all() {
        let cells = [
            ShapeCell::new("b.example", 0, 1),
            ShapeCell::new("c.example", 1, 3),
            ShapeCell::new("a.example", 2, 1),
            ShapeCell::new("FAX", 0, 2),
        ];
        let shape = ShapeView::new(&[5, 10], &cells, Some(3));
        let rows: Vec<(&str, u64)> = shape
            .domains
            .iter()
            .map(|row| (row.domain.as_str(), row.total))
            .collect();
        assert_eq!(rows, [("c.example", 3), ("FAX", 2), ("a.example", 1)]);
        assert_eq!(shape.total.total, 7);
        assert_eq!(shape.total.buckets, [3, 3, 1]);
        assert_eq!(shape.domains[2].buckets, [0, 0, 1]);
    }
}
