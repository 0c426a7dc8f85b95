//! The message store: Outbox, Sent Items, Inbox and user folders, durable on its own.
//!
//! All writes reach the store as a [`StoreBatch`] that it commits in one transaction: the host
//! gathers the updates of many messages into one batch (group commit), so one durable write
//! covers them all.
//!
//! # Several hosts on one store
//!
//! A store that several hosts share (e.g. on a database server) must guarantee, on top of
//! the single-host contract:
//! - **Leases.** [`Store::lock_due`] hands a message to one host at a time, and the lock is a
//!   lease with an expiry that [`Store::check_in`] renews. A host that stops checking in
//!   loses its leases when they expire, and another host takes the messages over.
//! - **Fencing.** An update, replacement, finish or unlock of a message whose lease this
//!   instance no longer holds (expired, or taken by another host) is refused: skipped, like
//!   an update of a deleted message, and reported by the next [`Store::check_in`] as lost.
//!   So a recorded delivery is never made again, and no host overwrites another's answers.
//! - **Operators reach every message.** [`Store::hold`] and [`Store::delete`] work whichever
//!   host holds the message; an update by the holder keeps an operator's hold.
//! - **Wake-ups.** When another host stores a submission, flushes, releases, or delivers
//!   mail into a folder, the store tells this host with
//!   [`Notice::StoreChanged`](crate::Notice::StoreChanged); the host then checks in and looks
//!   at the queue.
//!
//! A store for one host (like the embedded one) keeps its locks until unlocked or reopened,
//! and the defaults of these methods suffice.
//!
//! # Submissions that happen once
//!
//! A client that lost the answer to a submission (the host died after the commit) submits
//! again. The host marks each submission with a [`SubmissionKey`] (from the message's
//! Message-ID, sender and recipients); a store that honours it keeps the key with the new
//! message's id until the key's `remember_until`, and a submission with a key it remembers
//! gets the first message's id in [`CommitReceipt::submitted`] and stores nothing (its
//! envelope is then not in [`CommitReceipt::stored`]). The check and the write are one
//! transaction, and the key outlives the message: a retry after delivery is still
//! recognised. A store that ignores the key stores every submission.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::error::{ErrorKind, ProviderError};
use crate::guard::{guarded, strings, Guarded};
use crate::message::{DeliveryState, Envelope, MessageId, Property, StoredMessage, Timestamp};

/// The folder submitted messages wait in until every recipient is final.
pub const OUTBOX: &str = "Outbox";
/// The folder finished messages move to.
pub const SENT_ITEMS: &str = "Sent Items";
/// The folder inbound mail and reports arrive in.
pub const INBOX: &str = "Inbox";

/// What makes two submissions the same message, carried as an envelope property (see
/// "Submissions that happen once" above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionKey {
    /// A digest of the message's identity.
    pub key: String,
    /// Until when the store remembers it.
    pub remember_until: Timestamp,
}

impl SubmissionKey {
    /// The envelope property's name; its value is `<remember_until in ms> <key>`.
    pub const PROPERTY: &'static str = "spooler.submission-key";

    /// The key a submitted envelope carries, if any.
    pub fn of(envelope: &Envelope) -> Option<SubmissionKey> {
        let property = envelope
            .properties
            .iter()
            .find(|p| p.name.as_str() == Self::PROPERTY)?;
        let (until, key) = property.value.split_once(' ')?;
        Some(SubmissionKey {
            key: key.to_owned(),
            remember_until: Timestamp(until.parse().ok()?),
        })
    }

    /// The property that carries it.
    pub fn property(&self) -> Property {
        Property {
            name: Self::PROPERTY.into(),
            value: format!("{} {}", self.remember_until.0, self.key).into(),
        }
    }
}

/// A message being submitted: the store assigns its id and submission time.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct NewMessage<'a> {
    /// The envelope; its id and `submitted_at` are ignored.
    pub envelope: Envelope,
    /// The RFC 5322 content.
    pub content: RSlice<'a, u8>,
}

/// New content for a message, e.g. after a preprocessor rewrote it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct ContentReplacement<'a> {
    /// The message.
    pub id: MessageId,
    /// Its new RFC 5322 content.
    pub content: RSlice<'a, u8>,
}

/// A message whose recipients are all final leaves the Outbox.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// The message.
    pub id: MessageId,
    /// The folder it moves to (usually [`SENT_ITEMS`]); `None` deletes it.
    pub move_to: ROption<RString>,
}

/// A message delivered into a folder: inbound mail, or a report for a sender's Inbox.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Delivery<'a> {
    /// The folder, e.g. [`INBOX`]; the store creates it if it does not exist.
    pub folder: RStr<'a>,
    /// The envelope; its id and `submitted_at` are ignored.
    pub envelope: Envelope,
    /// The RFC 5322 content.
    pub content: RSlice<'a, u8>,
}

/// Everything the store commits in one transaction. Either all of it is durable when
/// [`Store::commit`] returns, or none of it is. An update or replacement for a message that
/// no longer exists is skipped, not an error: an operator may have deleted it meanwhile.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct StoreBatch<'a> {
    /// New messages for the Outbox.
    pub submit: RSlice<'a, NewMessage<'a>>,
    /// Envelopes to store as given: per-recipient status, hold, preprocessed flag.
    pub update_envelopes: RSlice<'a, Envelope>,
    /// Content to replace.
    pub replace_content: RSlice<'a, ContentReplacement<'a>>,
    /// Messages leaving the Outbox.
    pub finish: RSlice<'a, Finish>,
    /// Messages to deliver into folders.
    pub deliver: RSlice<'a, Delivery<'a>>,
    /// Locks to release (see [`Store::lock_due`]).
    pub unlock: RSlice<'a, MessageId>,
}

impl StoreBatch<'_> {
    /// A batch that does nothing, to fill in with struct update syntax.
    pub const EMPTY: StoreBatch<'static> = StoreBatch {
        submit: RSlice::EMPTY,
        update_envelopes: RSlice::EMPTY,
        replace_content: RSlice::EMPTY,
        finish: RSlice::EMPTY,
        deliver: RSlice::EMPTY,
        unlock: RSlice::EMPTY,
    };
}

/// What a commit created.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitReceipt {
    /// The ids of the submitted messages, in batch order.
    pub submitted: RVec<MessageId>,
    /// The ids of the delivered messages, in batch order.
    pub delivered: RVec<MessageId>,
    /// The submitted and updated envelopes as stored (a tightly coupled store may have
    /// delivered some recipients itself), submissions first, both in batch order.
    pub stored: RVec<Envelope>,
}

/// A folder and how many messages it holds.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// Its name.
    pub name: RString,
    /// How many messages are in it.
    pub messages: u64,
}

/// `folders` with the standard folders (Inbox, Outbox, Sent Items) added where missing, as
/// empty ones, sorted by name: what [`Store::folders`] answers whatever the store holds.
pub fn with_standard_folders(mut folders: Vec<FolderInfo>) -> Vec<FolderInfo> {
    for standard in [INBOX, OUTBOX, SENT_ITEMS] {
        if !folders.iter().any(|f| f.name == standard) {
            folders.push(FolderInfo {
                name: standard.into(),
                messages: 0,
            });
        }
    }
    folders.sort_by(|a, b| a.name.cmp(&b.name));
    folders
}

/// One line of a folder listing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// The envelope with recipient statuses.
    pub envelope: Envelope,
    /// The folder it is in.
    pub folder: RString,
    /// Its Subject header, decoded as far as the store can.
    pub subject: RString,
    /// Its content's size in bytes.
    pub size: u64,
}

/// How many pending recipients last went to one transport, for the status table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct TransportCount {
    /// The transport instance that last answered for them.
    pub transport: RString,
    /// How many pending recipients it has.
    pub recipients: u64,
}

/// The Outbox in numbers, for the status table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueCounts {
    /// Messages in the Outbox.
    pub messages: u64,
    /// Pending recipients per transport that last answered for them (recipients never
    /// tried are not counted).
    pub waiting: RVec<TransportCount>,
}

/// What a host learns when it checks in with a store that other hosts share.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckIn {
    /// Messages this host locked but holds no longer: their lease expired or was taken over,
    /// or an operator deleted them. The host stops working on them; the store refuses its
    /// updates of them.
    pub lost: RVec<MessageId>,
    /// Messages that other hosts delivered into folders since the last check-in (inbound
    /// mail, reports), for the clients watching this host.
    pub arrived: RVec<MessageId>,
    /// When to check in again at the latest to keep the leases; `None` if it never matters.
    pub next: ROption<Timestamp>,
}

/// One host working on a shared store, for the status table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Its name in the store's configuration.
    pub name: RString,
    /// Whether it checked in within its lease time.
    pub alive: bool,
    /// When it last checked in.
    pub last_seen: Timestamp,
    /// How many messages it holds leases on.
    pub leases: u64,
}

/// One cell of the queue's shape (Postfix's `qshape`): how many pending recipients of one
/// domain wait in one age bucket. See [`Store::queue_shape`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ShapeCell {
    /// The recipients' domain ([`shape_domain`]).
    pub domain: RString,
    /// The age bucket: the index of the first bound not below the message's age, or the
    /// number of bounds for messages older than every bound.
    pub bucket: u32,
    /// How many pending recipients fall in this cell.
    pub recipients: u64,
}

impl ShapeCell {
    /// `recipients` of `domain` in age bucket `bucket`.
    pub fn new(domain: &str, bucket: u32, recipients: u64) -> ShapeCell {
        ShapeCell {
            domain: domain.into(),
            bucket,
            recipients,
        }
    }
}

/// The row a pending recipient counts in for [`Store::queue_shape`]: the part of an SMTP
/// address after its last `@` (a quoted local part may hold an `@` too) with ASCII letters in
/// lower case (not Unicode's, which databases fold by their locale), and the address type
/// itself for every other type (`FAX`, `LOCAL`, an SMTP address without a domain), so that
/// no recipient goes uncounted. Stores that count in SQL compute the same.
pub fn shape_domain(address: &crate::Address) -> String {
    match address.address().rsplit_once('@') {
        Some((_, domain)) if address.address_type() == "SMTP" => domain.to_ascii_lowercase(),
        _ => address.address_type().to_owned(),
    }
}

/// What a store that does not count the queue by domain answers [`Store::queue_shape`]
/// (the default), for the host to show as it is.
pub fn shape_unsupported() -> ProviderError {
    ProviderError::new(
        ErrorKind::Unsupported,
        "this store cannot count the queue by domain; it was built against provider-abi \
         older than 1.3, or does not offer it: update the store provider, or count with \
         `queue --json`",
    )
}

/// What a store built against provider-abi older than 1.3 answers
/// [`Store::held_messages`].
pub fn held_unsupported() -> ProviderError {
    ProviderError::new(
        ErrorKind::Unsupported,
        "this store cannot count held messages; it was built against provider-abi older than \
         1.3: update the store provider",
    )
}

/// What a store built against provider-abi older than 1.4 answers [`Store::prune`] and
/// [`Store::size_on_disk`]: the host then keeps everything, and says so once.
pub fn retention_unsupported() -> ProviderError {
    ProviderError::new(
        ErrorKind::Unsupported,
        "this store cannot remove old messages or tell its size; it was built against          provider-abi older than 1.4: update the store provider",
    )
}

/// The folder a store delivers the mail of a local recipient (one of its
/// [`delivers_itself`](Store::delivers_itself) types) into.
pub fn local_folder(recipient: &crate::Recipient) -> String {
    format!("Local/{}", recipient.address.address())
}

/// Marks recipient `index` of `envelope` delivered by store `store` into its local folder,
/// and returns that folder and the envelope of the copy to store there (the copy has that one
/// recipient). Stores that deliver some address types themselves use it, so that every store
/// does it alike.
pub fn deliver_locally(
    envelope: &mut Envelope,
    index: usize,
    store: &str,
    now: Timestamp,
) -> (String, Envelope) {
    let folder = local_folder(&envelope.recipients[index]);
    let status = &mut envelope.recipients[index].status;
    status.state = DeliveryState::Delivered;
    status.transport = ROption::RSome(RString::from(store));
    status.attempts += 1;
    status.last_answer = format!("delivered to folder {folder}").into();
    status.status_code = "2.0.0".into();
    let mut copy = Envelope::new(
        envelope.sender.clone(),
        vec![envelope.recipients[index].clone()],
    );
    copy.submitted_at = now;
    (folder, copy)
}

/// A message store, as a provider author writes it.
///
/// The host opens one instance, on its store thread, and calls it only from there (see the
/// crate documentation for what the host guarantees). [`commit`](Store::commit) is the only
/// write, and what it commits must be durable when it returns `Ok`.
///
/// A store keeping everything in memory: the six required methods, the rest left to their
/// defaults. It is not durable, so it is fit for tests only; a real store writes each batch
/// in one transaction. The example writes `commit` out to show the contract; a real store
/// need not: the `store-support` crate applies a batch (submission keys, LOCAL delivery,
/// fencing, finishing) over a small `Backend` trait that its transaction implements, as
/// `store-embedded` (SQLite), `store-postgres` and provider-testkit's `MemoryStore` do.
///
/// ```
/// use std::collections::{BTreeMap, HashSet};
///
/// use provider_abi::abi_stable::std_types::ROption;
/// use provider_abi::headers::header;
/// use provider_abi::store::{
///     with_standard_folders, CommitReceipt, FolderInfo, MessageSummary, NewMessage,
///     StoreBatch, OUTBOX,
/// };
/// use provider_abi::{
///     Address, Envelope, MessageId, ProviderError, Recipient, RecipientKind, Store,
///     StoredMessage, Timestamp,
/// };
///
/// #[derive(Default)]
/// struct MemoryStore {
///     messages: BTreeMap<MessageId, StoredMessage>,
///     last_id: u64,
///     locked: HashSet<MessageId>,
/// }
///
/// impl MemoryStore {
///     fn add(&mut self, folder: &str, mut envelope: Envelope, content: &[u8]) -> MessageId {
///         self.last_id += 1;
///         envelope.id = MessageId(self.last_id);
///         envelope.submitted_at = Timestamp::now();
///         let id = envelope.id;
///         let content = content.to_vec().into();
///         self.messages.insert(id, StoredMessage { envelope, folder: folder.into(), content });
///         id
///     }
///
///     fn unlocked_outbox(&self) -> impl Iterator<Item = &StoredMessage> + '_ {
///         self.messages
///             .values()
///             .filter(|m| m.folder == OUTBOX && !self.locked.contains(&m.envelope.id))
///     }
/// }
///
/// impl Store for MemoryStore {
///     fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError> {
///         let mut receipt = CommitReceipt::default();
///         for new in batch.submit.iter() {
///             let id = self.add(OUTBOX, new.envelope.clone(), &new.content);
///             receipt.submitted.push(id);
///             receipt.stored.push(self.messages[&id].envelope.clone());
///         }
///         for envelope in batch.update_envelopes.iter() {
///             // A message deleted meanwhile is skipped, not an error.
///             if let Some(message) = self.messages.get_mut(&envelope.id) {
///                 message.envelope = envelope.clone();
///                 receipt.stored.push(envelope.clone());
///             }
///         }
///         for new in batch.replace_content.iter() {
///             if let Some(message) = self.messages.get_mut(&new.id) {
///                 message.content = new.content.to_vec().into();
///             }
///         }
///         for finish in batch.finish.iter() {
///             self.locked.remove(&finish.id);
///             match &finish.move_to {
///                 ROption::RSome(folder) => {
///                     if let Some(message) = self.messages.get_mut(&finish.id) {
///                         message.folder = folder.clone();
///                     }
///                 }
///                 ROption::RNone => {
///                     self.messages.remove(&finish.id);
///                 }
///             }
///         }
///         for delivery in batch.deliver.iter() {
///             let id = self.add(&delivery.folder, delivery.envelope.clone(), &delivery.content);
///             receipt.delivered.push(id);
///         }
///         for id in batch.unlock.iter() {
///             self.locked.remove(id);
///         }
///         Ok(receipt)
///     }
///
///     fn lock_due(&mut self, now: Timestamp, limit: u32) -> Result<Vec<StoredMessage>, ProviderError> {
///         let mut due: Vec<&StoredMessage> = self
///             .unlocked_outbox()
///             .filter(|m| m.envelope.due().is_some_and(|due| due <= now))
///             .collect();
///         // By next attempt, then priority (high first), then submission.
///         due.sort_by_key(|m| {
///             let envelope = &m.envelope;
///             (envelope.due(), -envelope.priority.as_number(), envelope.submitted_at, envelope.id)
///         });
///         let due: Vec<StoredMessage> = due.into_iter().take(limit as usize).cloned().collect();
///         self.locked.extend(due.iter().map(|m| m.envelope.id));
///         Ok(due)
///     }
///
///     fn next_due(&mut self) -> Result<Option<Timestamp>, ProviderError> {
///         Ok(self.unlocked_outbox().filter_map(|m| m.envelope.due()).min())
///     }
///
///     fn get(&mut self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError> {
///         Ok(self.messages.get(&id).cloned())
///     }
///
///     fn folders(&mut self) -> Result<Vec<FolderInfo>, ProviderError> {
///         let mut counts = BTreeMap::<String, u64>::new();
///         for message in self.messages.values() {
///             *counts.entry(message.folder.to_string()).or_default() += 1;
///         }
///         let folders = counts.into_iter().map(|(name, messages)| FolderInfo {
///             name: name.into(),
///             messages,
///         });
///         Ok(with_standard_folders(folders.collect()))
///     }
///
///     fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, ProviderError> {
///         let summaries = self.messages.values().filter(|m| m.folder == folder).map(|m| {
///             MessageSummary {
///                 envelope: m.envelope.clone(),
///                 folder: m.folder.clone(),
///                 subject: header(&m.content, "Subject").unwrap_or_default().into(),
///                 size: m.content.len() as u64,
///             }
///         });
///         Ok(summaries.collect())
///     }
/// }
///
/// let mut store = MemoryStore::default();
/// let bob = Recipient::new(Address::parse("bob@example.net").unwrap(), RecipientKind::To);
/// let envelope = Envelope::new(Address::parse("ann@example.com").unwrap(), vec![bob]);
/// let submission = [NewMessage { envelope, content: b"Subject: hi\r\n\r\nHello.\r\n"[..].into() }];
/// let receipt = store
///     .commit(&StoreBatch { submit: submission[..].into(), ..StoreBatch::EMPTY })
///     .unwrap();
/// let soon = Timestamp::now().plus(std::time::Duration::from_secs(1));
/// let due = store.lock_due(soon, 10).unwrap();
/// assert_eq!(due[0].envelope.id, receipt.submitted[0]);
/// assert!(store.lock_due(soon, 10).unwrap().is_empty(), "locked until unlocked");
/// assert_eq!(store.list(OUTBOX).unwrap()[0].subject, "hi");
/// ```
///
/// [`list_page`](Store::list_page), [`queue_counts`](Store::queue_counts) and
/// [`flush`](Store::flush) came with provider-abi 1.1. Their defaults work through
/// [`list`](Store::list) and [`commit`](Store::commit) and so cost as much as the whole folder;
/// a store that answers them with its own queries keeps the host's cost per message flat
/// however long the queue.
///
/// [`hold`](Store::hold), [`delete`](Store::delete), [`check_in`](Store::check_in) and
/// [`hosts`](Store::hosts) came with provider-abi 1.2, for stores that several hosts share
/// (see the [module documentation](self)); their defaults suit a store for one host.
///
/// [`queue_shape`](Store::queue_shape) and [`held_messages`](Store::held_messages) came with
/// provider-abi 1.3. `queue_shape`'s default does not read
/// the whole Outbox (the shape is wanted most on a long queue, where that is slowest): a store
/// that does not answer it with a count query of its own says it cannot.
///
/// [`prune`](Store::prune) and [`size_on_disk`](Store::size_on_disk) came with provider-abi
/// 1.4, for the host's retention (`keep_sent`, `keep_reports`); a store without them keeps
/// everything.
pub trait Store: Send + 'static {
    /// Commits `batch` in one durable transaction.
    fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError>;

    /// Locks and returns up to `limit` Outbox messages due at `now`, oldest due first (by
    /// next attempt, then priority, then submission time), skipping held and locked ones.
    /// A message is due when a pending recipient's next attempt (or, never tried, its
    /// submission) has come and its deferral has passed, or when nothing is pending any more
    /// and it only waits to be finished.
    /// Locks live until unlocked or until the store is reopened.
    fn lock_due(&mut self, now: Timestamp, limit: u32)
        -> Result<Vec<StoredMessage>, ProviderError>;

    /// When the next unlocked Outbox message is due, if any is waiting.
    fn next_due(&mut self) -> Result<Option<Timestamp>, ProviderError>;

    /// One message, from any folder.
    fn get(&mut self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError>;

    /// The folders with their message counts.
    fn folders(&mut self) -> Result<Vec<FolderInfo>, ProviderError>;

    /// The messages in `folder`, oldest first.
    fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, ProviderError>;

    /// The address types this store delivers itself (tightly coupled, e.g. `LOCAL`): it
    /// delivers those recipients within [`commit`](Store::commit) of a submission and marks
    /// them handled, so the host never routes them. A recipient whose status already names
    /// a transport is left to the host: it names one when a configured transport claims the
    /// type, which then goes ahead of the store.
    fn delivers_itself(&self) -> Vec<String> {
        Vec::new()
    }

    /// Up to `limit` messages of `folder` with ids above `after` (from the start if `None`),
    /// in id order: one page of a listing, so that no client makes the host hold a whole
    /// folder.
    fn list_page(
        &mut self,
        folder: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageSummary>, ProviderError> {
        Ok(page_of(self.list(folder)?, after, limit))
    }

    /// The Outbox in numbers.
    fn queue_counts(&mut self) -> Result<QueueCounts, ProviderError> {
        Ok(counts_of(&self.list(OUTBOX)?))
    }

    /// Makes every pending recipient in the Outbox (only those that last went to
    /// `transport`, if given) due at `now`, and returns how many it made due. Held messages
    /// stay held.
    fn flush(&mut self, transport: Option<&str>, now: Timestamp) -> Result<u64, ProviderError> {
        let (envelopes, recipients) = flushed(self.list(OUTBOX)?, transport, now);
        self.commit(&StoreBatch {
            update_envelopes: RSlice::from_slice(&envelopes),
            ..StoreBatch::EMPTY
        })?;
        Ok(recipients)
    }

    /// Holds (`hold`) or releases an Outbox message, whichever host works on it; a release
    /// also makes its pending recipients due at `now`. Returns the folder the message is in
    /// (it changes only if that is the Outbox), or `None` if there is no such message.
    fn hold(
        &mut self,
        id: MessageId,
        hold: bool,
        now: Timestamp,
    ) -> Result<Option<String>, ProviderError> {
        let Some(message) = self.get(id)? else {
            return Ok(None);
        };
        if message.folder == OUTBOX {
            let envelope = held(message.envelope, hold, now);
            self.commit(&StoreBatch {
                update_envelopes: RSlice::from_slice(std::slice::from_ref(&envelope)),
                ..StoreBatch::EMPTY
            })?;
        }
        Ok(Some(message.folder.into_string()))
    }

    /// Deletes a message from any folder for good, whichever host works on it; false if there
    /// is no such message.
    fn delete(&mut self, id: MessageId) -> Result<bool, ProviderError> {
        if self.get(id)?.is_none() {
            return Ok(false);
        }
        self.commit(&StoreBatch {
            finish: RSlice::from_slice(&[Finish {
                id,
                move_to: ROption::RNone,
            }]),
            ..StoreBatch::EMPTY
        })?;
        Ok(true)
    }

    /// Renews this host's leases and tells it what other hosts changed; see [`CheckIn`]. The
    /// host calls it by [`CheckIn::next`], and when the store sends
    /// [`Notice::StoreChanged`](crate::Notice::StoreChanged).
    fn check_in(&mut self, _now: Timestamp) -> Result<CheckIn, ProviderError> {
        Ok(CheckIn::default())
    }

    /// The hosts working on this store, for the status table; empty for a store that only
    /// one host uses.
    fn hosts(&mut self) -> Result<Vec<HostInfo>, ProviderError> {
        Ok(Vec::new())
    }

    /// The queue's shape, as Postfix's `qshape` shows it: the pending recipients of every
    /// Outbox message (held ones too) counted by [`shape_domain`] and by their message's age
    /// at `now` (time since submission). Bucket `i` holds ages up to `bounds[i]` seconds
    /// (`bounds` ascending; the first bound not below the age), bucket `bounds.len()` older
    /// ones. Only non-empty cells are returned, in any order.
    ///
    /// It must be one count query (grouped by domain and bucket), never a listing: the host
    /// asks it of queues of a hundred thousand messages. The default says the store cannot.
    fn queue_shape(
        &mut self,
        _now: Timestamp,
        _bounds: &[u64],
    ) -> Result<Vec<ShapeCell>, ProviderError> {
        Err(shape_unsupported())
    }

    /// How many Outbox messages are held (by an operator or the quarantine): one count
    /// query, for the host's metrics. The default says the store cannot.
    fn held_messages(&mut self) -> Result<u64, ProviderError> {
        Err(held_unsupported())
    }

    /// Removes for good up to `limit` messages of `folder` submitted before `before` (only
    /// reports, [`Envelope::is_report`], if `reports_only`), oldest first, in one short
    /// transaction, and gives their space back where the store can; returns how many it
    /// removed. The host calls it again while it removes `limit`, so each call must stay
    /// small: other store calls wait behind it. The Outbox is never pruned: the host's side
    /// of the library refuses it before the store is called. The default says the store
    /// cannot.
    fn prune(
        &mut self,
        _folder: &str,
        _reports_only: bool,
        _before: Timestamp,
        _limit: u32,
    ) -> Result<u64, ProviderError> {
        Err(retention_unsupported())
    }

    /// The bytes the store takes: its files, or its tables on a database server. For
    /// `status`, so an operator sees it grow or stay flat. The default says the store cannot.
    fn size_on_disk(&mut self) -> Result<u64, ProviderError> {
        Err(retention_unsupported())
    }
}

/// `envelope` held or released at `now`.
fn held(mut envelope: Envelope, hold: bool, now: Timestamp) -> Envelope {
    envelope.held = hold;
    if !hold {
        for recipient in envelope
            .recipients
            .iter_mut()
            .filter(|r| !r.status.is_final())
        {
            recipient.status.next_attempt = ROption::RSome(now);
        }
    }
    envelope
}

/// The page of `messages` (in id order) after `after`, at most `limit` long.
fn page_of(
    messages: Vec<MessageSummary>,
    after: Option<MessageId>,
    limit: u32,
) -> Vec<MessageSummary> {
    messages
        .into_iter()
        .filter(|m| after.is_none_or(|after| m.envelope.id > after))
        .take(limit as usize)
        .collect()
}

/// The counts of an Outbox listing.
fn counts_of(outbox: &[MessageSummary]) -> QueueCounts {
    let mut waiting: Vec<TransportCount> = Vec::new();
    for recipient in outbox.iter().flat_map(|m| m.envelope.recipients.iter()) {
        let ROption::RSome(transport) = &recipient.status.transport else {
            continue;
        };
        if recipient.status.is_final() {
            continue;
        }
        match waiting.iter_mut().find(|w| &w.transport == transport) {
            Some(count) => count.recipients += 1,
            None => waiting.push(TransportCount {
                transport: transport.clone(),
                recipients: 1,
            }),
        }
    }
    QueueCounts {
        messages: outbox.len() as u64,
        waiting: waiting.into(),
    }
}

/// The envelopes of an Outbox listing that a flush changes, changed, and how many recipients
/// it made due.
fn flushed(
    outbox: Vec<MessageSummary>,
    transport: Option<&str>,
    now: Timestamp,
) -> (Vec<Envelope>, u64) {
    let mut made_due = 0;
    let mut changed = Vec::new();
    for summary in outbox {
        let mut envelope = summary.envelope;
        let before = made_due;
        for recipient in envelope.recipients.iter_mut() {
            let routed_there = recipient.status.transport.as_ref().map(|t| t.as_str());
            let wanted = transport.is_none() || routed_there.into_option() == transport;
            if !recipient.status.is_final() && wanted {
                recipient.status.next_attempt = ROption::RSome(now);
                made_due += 1;
            }
        }
        if made_due > before {
            changed.push(envelope);
        }
    }
    (changed, made_due)
}

/// The FFI form of [`Store`]; the host calls this.
#[sabi_trait]
pub trait StoreFfi: Send {
    /// See [`Store::commit`].
    fn commit(&mut self, batch: StoreBatch<'_>) -> RResult<CommitReceipt, ProviderError>;
    /// See [`Store::lock_due`].
    fn lock_due(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> RResult<RVec<StoredMessage>, ProviderError>;
    /// See [`Store::next_due`].
    fn next_due(&mut self) -> RResult<ROption<Timestamp>, ProviderError>;
    /// See [`Store::get`].
    fn get(&mut self, id: MessageId) -> RResult<ROption<StoredMessage>, ProviderError>;
    /// See [`Store::folders`].
    fn folders(&mut self) -> RResult<RVec<FolderInfo>, ProviderError>;
    /// See [`Store::list`].
    fn list(&mut self, folder: RStr<'_>) -> RResult<RVec<MessageSummary>, ProviderError>;
    /// See [`Store::delivers_itself`].
    #[sabi(last_prefix_field)]
    fn delivers_itself(&self) -> RResult<RVec<RString>, ProviderError>;

    /// See [`Store::list_page`]. Since 1.1; a store built against 1.0 gets this default.
    fn list_page(
        &mut self,
        folder: RStr<'_>,
        after: ROption<MessageId>,
        limit: u32,
    ) -> RResult<RVec<MessageSummary>, ProviderError> {
        self.list(folder)
            .map(|all| page_of(all.into_vec(), after.into_option(), limit).into())
    }

    /// See [`Store::queue_counts`]. Since 1.1; a store built against 1.0 gets this default.
    fn queue_counts(&mut self) -> RResult<QueueCounts, ProviderError> {
        self.list(RStr::from_str(OUTBOX)).map(|all| counts_of(&all))
    }

    /// See [`Store::flush`]. Since 1.1; a store built against 1.0 gets this default.
    fn flush(
        &mut self,
        transport: ROption<RStr<'_>>,
        now: Timestamp,
    ) -> RResult<u64, ProviderError> {
        let outbox = match self.list(RStr::from_str(OUTBOX)) {
            RResult::ROk(outbox) => outbox.into_vec(),
            RResult::RErr(error) => return RResult::RErr(error),
        };
        let (envelopes, recipients) =
            flushed(outbox, transport.map(|t| t.as_str()).into_option(), now);
        self.commit(StoreBatch {
            update_envelopes: RSlice::from_slice(&envelopes),
            ..StoreBatch::EMPTY
        })
        .map(|_| recipients)
    }

    /// See [`Store::hold`]. Since 1.2; a store built against an older version gets this
    /// default.
    fn hold(
        &mut self,
        id: MessageId,
        hold: bool,
        now: Timestamp,
    ) -> RResult<ROption<RString>, ProviderError> {
        let message = match self.get(id) {
            RResult::ROk(ROption::RSome(message)) => message,
            RResult::ROk(ROption::RNone) => return RResult::ROk(ROption::RNone),
            RResult::RErr(error) => return RResult::RErr(error),
        };
        if message.folder == OUTBOX {
            let envelope = held(message.envelope, hold, now);
            if let RResult::RErr(error) = self.commit(StoreBatch {
                update_envelopes: RSlice::from_slice(std::slice::from_ref(&envelope)),
                ..StoreBatch::EMPTY
            }) {
                return RResult::RErr(error);
            }
        }
        RResult::ROk(ROption::RSome(message.folder))
    }

    /// See [`Store::delete`]. Since 1.2; a store built against an older version gets this
    /// default.
    fn delete(&mut self, id: MessageId) -> RResult<bool, ProviderError> {
        match self.get(id) {
            RResult::ROk(ROption::RSome(_)) => {}
            RResult::ROk(ROption::RNone) => return RResult::ROk(false),
            RResult::RErr(error) => return RResult::RErr(error),
        }
        self.commit(StoreBatch {
            finish: RSlice::from_slice(&[Finish {
                id,
                move_to: ROption::RNone,
            }]),
            ..StoreBatch::EMPTY
        })
        .map(|_| true)
    }

    /// See [`Store::check_in`]. Since 1.2; a store built against an older version keeps its
    /// locks until unlocked, and has nothing to tell.
    fn check_in(&mut self, _now: Timestamp) -> RResult<CheckIn, ProviderError> {
        RResult::ROk(CheckIn::default())
    }

    /// See [`Store::hosts`]. Since 1.2; a store built against an older version serves one
    /// host.
    fn hosts(&mut self) -> RResult<RVec<HostInfo>, ProviderError> {
        RResult::ROk(RVec::new())
    }

    /// See [`Store::queue_shape`]. Since 1.3; a store built against an older version cannot
    /// count the queue by domain, and says so.
    fn queue_shape(
        &mut self,
        _now: Timestamp,
        _bounds: RSlice<'_, u64>,
    ) -> RResult<RVec<ShapeCell>, ProviderError> {
        RResult::RErr(shape_unsupported())
    }

    /// See [`Store::held_messages`]. Since 1.3; a store built against an older version
    /// cannot count them, and says so.
    fn held_messages(&mut self) -> RResult<u64, ProviderError> {
        RResult::RErr(held_unsupported())
    }

    /// See [`Store::prune`]. Since 1.4; a store built against an older version keeps
    /// everything, and says so.
    fn prune(
        &mut self,
        _folder: RStr<'_>,
        _reports_only: bool,
        _before: Timestamp,
        _limit: u32,
    ) -> RResult<u64, ProviderError> {
        RResult::RErr(retention_unsupported())
    }

    /// See [`Store::size_on_disk`]. Since 1.4; a store built against an older version cannot
    /// tell, and says so.
    fn size_on_disk(&mut self) -> RResult<u64, ProviderError> {
        RResult::RErr(retention_unsupported())
    }
}

/// An open store as the host holds it.
pub type StoreObject = StoreFfi_TO<'static, RBox<()>>;

impl<T: Store> StoreFfi for Guarded<T> {
    fn commit(&mut self, batch: StoreBatch<'_>) -> RResult<CommitReceipt, ProviderError> {
        guarded("commit", || self.0.commit(&batch))
    }

    fn lock_due(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> RResult<RVec<StoredMessage>, ProviderError> {
        guarded("lock_due", || self.0.lock_due(now, limit).map(RVec::from))
    }

    fn next_due(&mut self) -> RResult<ROption<Timestamp>, ProviderError> {
        guarded("next_due", || self.0.next_due().map(ROption::from))
    }

    fn get(&mut self, id: MessageId) -> RResult<ROption<StoredMessage>, ProviderError> {
        guarded("get", || self.0.get(id).map(ROption::from))
    }

    fn folders(&mut self) -> RResult<RVec<FolderInfo>, ProviderError> {
        guarded("folders", || self.0.folders().map(RVec::from))
    }

    fn list(&mut self, folder: RStr<'_>) -> RResult<RVec<MessageSummary>, ProviderError> {
        guarded("list", || self.0.list(folder.as_str()).map(RVec::from))
    }

    fn delivers_itself(&self) -> RResult<RVec<RString>, ProviderError> {
        guarded("delivers_itself", || Ok(strings(self.0.delivers_itself())))
    }

    fn list_page(
        &mut self,
        folder: RStr<'_>,
        after: ROption<MessageId>,
        limit: u32,
    ) -> RResult<RVec<MessageSummary>, ProviderError> {
        guarded("list_page", || {
            self.0
                .list_page(folder.as_str(), after.into_option(), limit)
                .map(RVec::from)
        })
    }

    fn queue_counts(&mut self) -> RResult<QueueCounts, ProviderError> {
        guarded("queue_counts", || self.0.queue_counts())
    }

    fn flush(
        &mut self,
        transport: ROption<RStr<'_>>,
        now: Timestamp,
    ) -> RResult<u64, ProviderError> {
        guarded("flush", || {
            self.0
                .flush(transport.map(|t| t.as_str()).into_option(), now)
        })
    }

    fn hold(
        &mut self,
        id: MessageId,
        hold: bool,
        now: Timestamp,
    ) -> RResult<ROption<RString>, ProviderError> {
        guarded("hold", || {
            self.0
                .hold(id, hold, now)
                .map(|folder| folder.map(RString::from).into())
        })
    }

    fn delete(&mut self, id: MessageId) -> RResult<bool, ProviderError> {
        guarded("delete", || self.0.delete(id))
    }

    fn check_in(&mut self, now: Timestamp) -> RResult<CheckIn, ProviderError> {
        guarded("check_in", || self.0.check_in(now))
    }

    fn hosts(&mut self) -> RResult<RVec<HostInfo>, ProviderError> {
        guarded("hosts", || self.0.hosts().map(RVec::from))
    }

    fn queue_shape(
        &mut self,
        now: Timestamp,
        bounds: RSlice<'_, u64>,
    ) -> RResult<RVec<ShapeCell>, ProviderError> {
        guarded("queue_shape", || {
            self.0.queue_shape(now, bounds.as_slice()).map(RVec::from)
        })
    }

    fn held_messages(&mut self) -> RResult<u64, ProviderError> {
        guarded("held_messages", || self.0.held_messages())
    }

    fn prune(
        &mut self,
        folder: RStr<'_>,
        reports_only: bool,
        before: Timestamp,
        limit: u32,
    ) -> RResult<u64, ProviderError> {
        // Refused here, for every store: the Outbox's messages are still to be sent.
        if folder.as_str() == OUTBOX {
            return RResult::RErr(ProviderError::permanent(
                "the Outbox is never pruned: its messages are still to be sent",
            ));
        }
        guarded("prune", || {
            self.0.prune(folder.as_str(), reports_only, before, limit)
        })
    }

    fn size_on_disk(&mut self) -> RResult<u64, ProviderError> {
        guarded("size_on_disk", || self.0.size_on_disk())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Address;

    #[test]
    fn a_submission_key_travels_as_a_property() {
        let key = SubmissionKey {
            key: "f00d".into(),
            remember_until: Timestamp(1_700_000_000_000),
        };
        let mut envelope = Envelope::new(Address::parse("a@example.com").unwrap(), Vec::new());
        assert_eq!(SubmissionKey::of(&envelope), None);
        envelope.properties.push(key.property());
        assert_eq!(SubmissionKey::of(&envelope), Some(key));
    }

    #[test]
    fn a_recipient_counts_under_its_domain_or_its_type() {
        let domain = |address: &str| shape_domain(&Address::parse(address).unwrap());
        assert_eq!(domain("SMTP:Bob@Example.NET"), "example.net");
        assert_eq!(domain("SMTP:\"a@b\"@example.org"), "example.org");
        assert_eq!(domain("SMTP:postmaster"), "SMTP");
        assert_eq!(domain("FAX:+1 555 0100"), "FAX");
        assert_eq!(domain("LOCAL:alice@home"), "LOCAL");
    }
}
