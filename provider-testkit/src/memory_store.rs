//! [`MemoryStore`]: a complete store in memory, for tests of code that drives a store (the
//! host's threads, a client) without a database.
//!
//! It keeps the whole [`Store`] contract but durability beyond the process: batches applied
//! all-or-nothing, due messages locked once until unlocked or finished, the queue in due,
//! priority and age order, submission keys remembered, folders paged by cursor, and the
//! address types it is made to deliver itself delivered into local folders. Its handles
//! share one set of contents, so a test keeps one to look inside and to make the store fail
//! while the code under test works on another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use provider_abi::abi_stable::std_types::ROption;
use provider_abi::headers::header;
use provider_abi::store::{
    self, with_standard_folders, CommitReceipt, FolderInfo, MessageSummary, StoreBatch,
    SubmissionKey, OUTBOX,
};
use provider_abi::{
    DeliveryState, Envelope, ErrorKind, MessageId, ProviderError, Store, StoredMessage, Timestamp,
};

/// The name the store gives itself in the statuses of recipients it delivered.
const NAME: &str = "memory";

/// A store in memory, complete but not durable beyond the process.
///
/// Clones are handles on the same contents. [`open`](MemoryStore::open) is what a reopen is
/// to a real store (the locks are released); [`store_object`](crate::store_object) puts an
/// instance behind the panic barrier as the host holds it. [`messages`](MemoryStore::messages)
/// and the other inspections never fail; [`fail_commits`](MemoryStore::fail_commits) and
/// [`set_outage`](MemoryStore::set_outage) make the store's own methods fail.
///
/// ```
/// use provider_abi::abi_stable::std_types::RSlice;
/// use provider_abi::store::{NewMessage, StoreBatch, OUTBOX};
/// use provider_abi::{ErrorKind, Store, Timestamp};
/// use provider_testkit::{message, MemoryStore};
///
/// let memory = MemoryStore::delivering(&["LOCAL"]);
/// let mut envelope = message(&["SMTP:bob@example.net", "LOCAL:carol"], "").envelope;
/// envelope.preprocessed = true;
/// let submit = [NewMessage { envelope, content: RSlice::from_slice(b"Subject: hi\r\n\r\nHi.\r\n") }];
/// let batch = StoreBatch { submit: RSlice::from_slice(&submit), ..StoreBatch::EMPTY };
///
/// let mut store = memory.open();
/// store.fail_commits(1, ErrorKind::Temporary);
/// assert_eq!(store.commit(&batch).unwrap_err().kind(), ErrorKind::Temporary);
/// assert!(memory.messages().is_empty(), "a failed commit changes nothing");
///
/// let id = store.commit(&batch).unwrap().submitted[0];
/// assert_eq!(memory.folder("Local/carol").len(), 1, "delivered locally");
/// let due = store.lock_due(Timestamp::now(), 10).unwrap();
/// assert_eq!(due[0].envelope.id, id);
/// assert_eq!(memory.locked(), [id]);
/// assert!(memory.open().lock_due(Timestamp::now(), 10).unwrap().len() == 1, "a reopen unlocks");
/// assert_eq!(memory.folder(OUTBOX)[0].envelope.recipients[1].status.last_answer, "delivered to folder Local/carol");
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    contents: Arc<Mutex<Contents>>,
    delivers_itself: Vec<String>,
}

/// What every handle shares.
#[derive(Default)]
struct Contents {
    messages: BTreeMap<MessageId, StoredMessage>,
    last_id: u64,
    locked: BTreeSet<MessageId>,
    /// Submission keys with the first message's id and until when they are kept.
    submissions: HashMap<String, (MessageId, Timestamp)>,
    /// How the next commits fail, one error kind each.
    failing_commits: Vec<ErrorKind>,
    /// Every call fails so while set.
    outage: Option<ErrorKind>,
}

impl MemoryStore {
    /// An empty store that delivers nothing itself.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store that delivers the recipients of `address_types` itself (e.g. `LOCAL`),
    /// as a tightly coupled store does: each into its [`local_folder`](store::local_folder),
    /// when a preprocessed message is submitted or updated.
    pub fn delivering(address_types: &[&str]) -> MemoryStore {
        MemoryStore {
            delivers_itself: address_types.iter().map(|t| t.to_string()).collect(),
            ..MemoryStore::default()
        }
    }

    /// A new instance on these contents, as a reopen makes one: every lock is released.
    pub fn open(&self) -> MemoryStore {
        self.contents.lock().locked.clear();
        self.clone()
    }

    /// Every message, from every folder, in id order.
    pub fn messages(&self) -> Vec<StoredMessage> {
        self.contents.lock().messages.values().cloned().collect()
    }

    /// The messages in `folder`, in id order.
    pub fn folder(&self, folder: &str) -> Vec<StoredMessage> {
        self.contents.lock().in_folder(folder).cloned().collect()
    }

    /// The folders with their message counts, as [`Store::folders`] answers.
    pub fn folder_counts(&self) -> Vec<FolderInfo> {
        self.contents.lock().folder_counts()
    }

    /// The locked messages, in id order.
    pub fn locked(&self) -> Vec<MessageId> {
        self.contents.lock().locked.iter().copied().collect()
    }

    /// Makes the next `count` commits (the writes of `flush`, `hold` and `delete` too) fail
    /// with an error of `kind`, changing nothing.
    pub fn fail_commits(&self, count: u32, kind: ErrorKind) {
        self.contents.lock().failing_commits = vec![kind; count as usize];
    }

    /// Makes every call of the store fail with an error of `kind` until called with `None`:
    /// the store is down.
    pub fn set_outage(&self, kind: Option<ErrorKind>) {
        self.contents.lock().outage = kind;
    }

    /// Whether this store delivers `recipient` of a preprocessed message itself, now.
    fn delivers(&self, envelope: &Envelope, index: usize) -> bool {
        let recipient = &envelope.recipients[index];
        envelope.preprocessed
            && recipient.status.state == DeliveryState::Pending
            && self
                .delivers_itself
                .iter()
                .any(|t| recipient.address.has_type(t))
    }

    /// Delivers the recipients of `envelope` that this store delivers itself, with `content`.
    fn deliver_locally(
        &self,
        contents: &mut Contents,
        envelope: &mut Envelope,
        content: &[u8],
        now: Timestamp,
    ) {
        for index in 0..envelope.recipients.len() {
            if self.delivers(envelope, index) {
                let (folder, copy) = store::deliver_locally(envelope, index, NAME, now);
                contents.add(&folder, copy, content);
            }
        }
    }

    /// The contents to work on, unless the store is down (or, for a commit, fails now).
    fn contents(
        &self,
        operation: &str,
    ) -> Result<parking_lot::MutexGuard<'_, Contents>, ProviderError> {
        let mut contents = self.contents.lock();
        let failing = match contents.outage {
            Some(kind) => Some(kind),
            None if operation == "commit" => contents.failing_commits.pop(),
            None => None,
        };
        match failing {
            Some(kind) => Err(ProviderError::new(
                kind,
                format!("memory store: {operation} fails, as the test asked"),
            )),
            None => Ok(contents),
        }
    }
}

impl Contents {
    /// Stores a new message in `folder`; returns its id.
    fn add(&mut self, folder: &str, mut envelope: Envelope, content: &[u8]) -> MessageId {
        self.last_id += 1;
        envelope.id = MessageId(self.last_id);
        let message = StoredMessage {
            envelope,
            folder: folder.into(),
            content: content.to_vec().into(),
        };
        self.messages.insert(message.envelope.id, message);
        MessageId(self.last_id)
    }

    fn in_folder<'a>(&'a self, folder: &'a str) -> impl Iterator<Item = &'a StoredMessage> + 'a {
        self.messages.values().filter(move |m| m.folder == folder)
    }

    /// The unlocked Outbox messages that are due at all, with when.
    fn waiting(&self) -> impl Iterator<Item = (Timestamp, &StoredMessage)> + '_ {
        self.in_folder(OUTBOX)
            .filter(|m| !self.locked.contains(&m.envelope.id))
            .filter_map(|m| Some((m.envelope.due()?, m)))
    }

    fn folder_counts(&self) -> Vec<FolderInfo> {
        let mut counts = BTreeMap::<&str, u64>::new();
        for message in self.messages.values() {
            *counts.entry(message.folder.as_str()).or_default() += 1;
        }
        let folders = counts.into_iter().map(|(name, messages)| FolderInfo {
            name: name.into(),
            messages,
        });
        with_standard_folders(folders.collect())
    }

    /// The first message's id of a submission with `key`, if the key is remembered at `now`.
    fn submitted_before(&self, key: &SubmissionKey, now: Timestamp) -> Option<MessageId> {
        self.submissions
            .get(&key.key)
            .filter(|(_, until)| *until >= now)
            .map(|(id, _)| *id)
    }
}

impl Store for MemoryStore {
    fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError> {
        let mut contents = self.contents("commit")?;
        let now = Timestamp::now();
        let mut receipt = CommitReceipt::default();
        for new in batch.submit.iter() {
            let key = SubmissionKey::of(&new.envelope);
            if let Some(first) = key.as_ref().and_then(|k| contents.submitted_before(k, now)) {
                receipt.submitted.push(first);
                continue;
            }
            let mut envelope = new.envelope.clone();
            envelope.submitted_at = now;
            self.deliver_locally(&mut contents, &mut envelope, &new.content, now);
            let id = contents.add(OUTBOX, envelope, &new.content);
            if let Some(key) = key {
                contents
                    .submissions
                    .insert(key.key, (id, key.remember_until));
            }
            receipt.submitted.push(id);
            receipt.stored.push(contents.messages[&id].envelope.clone());
        }
        for replacement in batch.replace_content.iter() {
            if let Some(message) = contents.messages.get_mut(&replacement.id) {
                message.content = replacement.content.to_vec().into();
            }
        }
        for update in batch.update_envelopes.iter() {
            let Some(stored) = contents.messages.get(&update.id) else {
                continue;
            };
            let mut envelope = Envelope {
                sender: stored.envelope.sender.clone(),
                submitted_at: stored.envelope.submitted_at,
                ..update.clone()
            };
            let content = stored.content.clone();
            self.deliver_locally(&mut contents, &mut envelope, &content, now);
            receipt.stored.push(envelope.clone());
            if let Some(message) = contents.messages.get_mut(&update.id) {
                message.envelope = envelope;
            }
        }
        for finish in batch.finish.iter() {
            match &finish.move_to {
                ROption::RSome(folder) => {
                    if let Some(message) = contents.messages.get_mut(&finish.id) {
                        message.folder = folder.clone();
                    }
                }
                ROption::RNone => {
                    contents.messages.remove(&finish.id);
                }
            }
            contents.locked.remove(&finish.id);
        }
        for delivery in batch.deliver.iter() {
            let mut envelope = delivery.envelope.clone();
            envelope.submitted_at = now;
            let id = contents.add(&delivery.folder, envelope, &delivery.content);
            receipt.delivered.push(id);
        }
        for id in batch.unlock.iter() {
            contents.locked.remove(id);
        }
        contents.submissions.retain(|_, (_, until)| *until >= now);
        Ok(receipt)
    }

    fn lock_due(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProviderError> {
        let mut contents = self.contents("lock_due")?;
        let mut due: Vec<(Timestamp, &StoredMessage)> =
            contents.waiting().filter(|(due, _)| *due <= now).collect();
        due.sort_by_key(|(due, m)| {
            let envelope = &m.envelope;
            (*due, -envelope.priority.as_number(), envelope.submitted_at, envelope.id)
        });
        let due: Vec<StoredMessage> = due
            .into_iter()
            .take(limit as usize)
            .map(|(_, m)| m.clone())
            .collect();
        contents.locked.extend(due.iter().map(|m| m.envelope.id));
        Ok(due)
    }

    fn next_due(&mut self) -> Result<Option<Timestamp>, ProviderError> {
        Ok(self.contents("next_due")?.waiting().map(|(due, _)| due).min())
    }

    fn get(&mut self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError> {
        Ok(self.contents("get")?.messages.get(&id).cloned())
    }

    fn folders(&mut self) -> Result<Vec<FolderInfo>, ProviderError> {
        Ok(self.contents("folders")?.folder_counts())
    }

    fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, ProviderError> {
        let contents = self.contents("list")?;
        let summaries = contents.in_folder(folder).map(|m| MessageSummary {
            envelope: m.envelope.clone(),
            folder: m.folder.clone(),
            subject: header(&m.content, "Subject").unwrap_or_default().into(),
            size: m.content.len() as u64,
        });
        Ok(summaries.collect())
    }

    fn delivers_itself(&self) -> Vec<String> {
        self.delivers_itself.clone()
    }
}
