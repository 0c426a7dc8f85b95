//! [`MemoryStore`]: a complete store in memory, for tests of code that drives a store (the
//! host's threads, a client) without a database.
//!
//! It keeps the whole [`Store`] contract but durability beyond the process: batches applied
//! all-or-nothing, due messages locked once until unlocked or finished, the queue in due,
//! priority and age order, submission keys remembered, folders paged by cursor, and the
//! address types it is made to deliver itself delivered into local folders. Its handles
//! share one set of contents, so a test keeps one to look inside and to make the store fail
//! while the code under test works on another.
//!
//! Its `commit` is built on store-support's engine ([`store_support::apply`]), as the bundled
//! stores are: what a batch does (submission keys, local delivery, the order of the steps,
//! skipping messages that are gone) is written once, there, and this store provides only the
//! storage operations ([`Backend`]) over its map. So it behaves as the real stores do, and it
//! shows that a third-party store needs to write no more than those operations. Its backend
//! cannot fail (a failure the test asks for comes before anything is applied), so a batch is
//! applied whole or, failing, not at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use parking_lot::Mutex;
use provider_abi::headers::header;
use provider_abi::store::{
    shape_domain, with_standard_folders, CommitReceipt, FolderInfo, MessageSummary, ShapeCell,
    StoreBatch, SubmissionKey, OUTBOX,
};
use provider_abi::{
    Envelope, ErrorKind, MessageId, ProviderError, Store, StoredMessage, Timestamp,
};
use store_support::{apply, released, Access, Applied, Backend, LocalDelivery};

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
/// let content = RSlice::from_slice(b"Subject: hi\r\n\r\nHi.\r\n");
/// let submit = [NewMessage { envelope, content }];
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
/// let again = memory.open().lock_due(Timestamp::now(), 10).unwrap();
/// assert_eq!(again.len(), 1, "a reopen releases the locks");
/// let carol = &memory.folder(OUTBOX)[0].envelope.recipients[1];
/// assert_eq!(carol.status.last_answer, "delivered to folder Local/carol");
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
    /// as a tightly coupled store does: each into its
    /// [`local_folder`](provider_abi::store::local_folder), when a preprocessed message is
    /// submitted or updated.
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
}

/// The storage operations the engine applies a batch with: the contents are the open
/// transaction, and nothing in it fails.
impl Backend for Contents {
    type Error = Infallible;

    fn claim_submission(
        &mut self,
        key: &SubmissionKey,
        now: Timestamp,
    ) -> Result<Option<MessageId>, Infallible> {
        let remembered = self.submissions.get(&key.key);
        Ok(remembered
            .filter(|(_, until)| *until >= now)
            .map(|(id, _)| *id))
    }

    fn remember_submission(
        &mut self,
        key: &SubmissionKey,
        id: MessageId,
    ) -> Result<(), Infallible> {
        self.submissions
            .insert(key.key.clone(), (id, key.remember_until));
        Ok(())
    }

    fn insert(
        &mut self,
        folder: &str,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<MessageId, Infallible> {
        Ok(self.add(folder, envelope.clone(), content))
    }

    fn read_content(&mut self, id: MessageId) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.messages.get(&id).map(|m| m.content.to_vec()))
    }

    fn replace_content(&mut self, id: MessageId, content: &[u8]) -> Result<(), Infallible> {
        if let Some(message) = self.messages.get_mut(&id) {
            message.content = content.to_vec().into();
        }
        Ok(())
    }

    /// Stores each envelope over the stored one, keeping its sender and submission time.
    fn update(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, Infallible> {
        let verdicts = envelopes.iter().map(|update| {
            let Some(message) = self.messages.get_mut(&update.id) else {
                return Access::Gone;
            };
            message.envelope = Envelope {
                sender: message.envelope.sender.clone(),
                submitted_at: message.envelope.submitted_at,
                ..update.clone()
            };
            Access::Granted
        });
        Ok(verdicts.collect())
    }

    fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), Infallible> {
        if let Some(message) = self.messages.get_mut(&id) {
            message.folder = folder.into();
        }
        Ok(())
    }

    fn delete(&mut self, id: MessageId) -> Result<(), Infallible> {
        self.messages.remove(&id);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError> {
        let mut contents = self.contents("commit")?;
        let now = Timestamp::now();
        let local = LocalDelivery::new(NAME, &self.delivers_itself);
        let Ok(Applied { receipt, .. }) = apply(&mut *contents, batch, &local, now);
        for id in released(batch) {
            contents.locked.remove(&id);
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
            (
                *due,
                -envelope.priority.as_number(),
                envelope.submitted_at,
                envelope.id,
            )
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
        Ok(self
            .contents("next_due")?
            .waiting()
            .map(|(due, _)| due)
            .min())
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

    fn queue_shape(
        &mut self,
        now: Timestamp,
        bounds: &[u64],
    ) -> Result<Vec<ShapeCell>, ProviderError> {
        let contents = self.contents("queue_shape")?;
        let bounds = store_support::shape::bounds_in_ms(bounds);
        let mut cells = BTreeMap::<(String, u32), u64>::new();
        for message in contents.in_folder(OUTBOX) {
            let age_ms = now.0.saturating_sub(message.envelope.submitted_at.0);
            let bucket = bounds
                .iter()
                .position(|&bound| age_ms <= bound)
                .unwrap_or(bounds.len()) as u32;
            let pending = message.envelope.recipients.iter();
            for recipient in pending.filter(|r| !r.status.is_final()) {
                *cells
                    .entry((shape_domain(&recipient.address), bucket))
                    .or_default() += 1;
            }
        }
        Ok(cells
            .into_iter()
            .map(|((domain, bucket), recipients)| ShapeCell {
                domain: domain.into(),
                bucket,
                recipients,
            })
            .collect())
    }

    fn held_messages(&mut self) -> Result<u64, ProviderError> {
        let contents = self.contents("held_messages")?;
        Ok(contents
            .in_folder(OUTBOX)
            .filter(|message| message.envelope.held)
            .count() as u64)
    }

    fn prune(
        &mut self,
        folder: &str,
        reports_only: bool,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, ProviderError> {
        let mut contents = self.contents("prune")?;
        let doomed: Vec<MessageId> = contents
            .in_folder(folder)
            .filter(|m| m.envelope.submitted_at < before)
            .filter(|m| !reports_only || m.envelope.is_report)
            .map(|m| m.envelope.id)
            .take(limit as usize)
            .collect();
        for id in &doomed {
            contents.messages.remove(id);
        }
        Ok(doomed.len() as u64)
    }

    fn size_on_disk(&mut self) -> Result<u64, ProviderError> {
        let contents = self.contents("size_on_disk")?;
        Ok(contents
            .messages
            .values()
            .map(|m| m.content.len() as u64)
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use provider_abi::abi_stable::std_types::{ROption, RSlice, RStr};
    use provider_abi::store::{Delivery, Finish, NewMessage, INBOX, SENT_ITEMS};
    use provider_abi::{DeliveryState, Library, Priority};

    use super::*;
    use crate::{check_store, message, store_object};

    static CHECKED: LazyLock<MemoryStore> = LazyLock::new(MemoryStore::new);

    fn checked() -> Library {
        Library::new("memory", "0.1.0").store("memory", &[], |_| Ok(CHECKED.open()))
    }

    #[test]
    fn it_keeps_the_store_contract() {
        assert_eq!(check_store(checked, "memory", ""), Ok(()));
    }

    /// An envelope to `recipients`, preprocessed.
    fn envelope(recipients: &[&str]) -> Envelope {
        let mut envelope = message(recipients, "").envelope;
        envelope.preprocessed = true;
        envelope
    }

    fn submit(store: &mut MemoryStore, envelope: Envelope) -> Result<CommitReceipt, ProviderError> {
        let new = [NewMessage {
            envelope,
            content: RSlice::from_slice(b"Subject: test\r\n\r\nBody.\r\n"),
        }];
        store.commit(&StoreBatch {
            submit: RSlice::from_slice(&new),
            ..StoreBatch::EMPTY
        })
    }

    fn ids(messages: &[StoredMessage]) -> Vec<MessageId> {
        messages.iter().map(|m| m.envelope.id).collect()
    }

    #[test]
    fn a_failing_commit_changes_nothing_and_an_outage_fails_every_call_until_it_ends() {
        let mut store = MemoryStore::new();
        let first = submit(&mut store, envelope(&["SMTP:a@b.c"]))
            .unwrap()
            .submitted[0];
        store.fail_commits(2, ErrorKind::Permanent);
        let mut update = store.messages()[0].envelope.clone();
        update.held = true;
        let batch = |update: &Envelope| {
            let error = store.clone().commit(&StoreBatch {
                update_envelopes: RSlice::from_slice(std::slice::from_ref(update)),
                ..StoreBatch::EMPTY
            });
            error.map(|_| ())
        };
        for _ in 0..2 {
            assert_eq!(batch(&update).unwrap_err().kind(), ErrorKind::Permanent);
            assert!(!store.messages()[0].envelope.held);
        }
        assert_eq!(batch(&update), Ok(()));
        assert!(store.messages()[0].envelope.held);

        store.set_outage(Some(ErrorKind::Temporary));
        let down = store.get(first).unwrap_err();
        assert_eq!(down.kind(), ErrorKind::Temporary);
        assert!(down.message().contains("get fails"), "{down}");
        assert!(store.lock_due(Timestamp::now(), 1).is_err());
        assert!(store.folders().is_err());
        assert!(submit(&mut store, envelope(&["SMTP:a@b.c"])).is_err());
        store.set_outage(None);
        assert!(store.get(first).unwrap().is_some());
        assert_eq!(store.messages().len(), 1);
    }

    #[test]
    fn due_messages_come_by_next_attempt_then_priority_then_age_and_held_ones_not_at_all() {
        let mut store = MemoryStore::new();
        let now = Timestamp::now();
        let mut later = envelope(&["SMTP:later@b.c"]);
        later.recipients[0].status.next_attempt = ROption::RSome(Timestamp(now.0 + 60_000));
        let later = submit(&mut store, later).unwrap().submitted[0];
        let normal = submit(&mut store, envelope(&["SMTP:normal@b.c"]))
            .unwrap()
            .submitted[0];
        let mut urgent = envelope(&["SMTP:urgent@b.c"]);
        urgent.priority = Priority::High;
        let urgent = submit(&mut store, urgent).unwrap().submitted[0];
        let mut held = envelope(&["SMTP:held@b.c"]);
        held.held = true;
        submit(&mut store, held).unwrap();

        let soon = Timestamp(now.0 + 1_000);
        assert_eq!(ids(&store.lock_due(soon, 10).unwrap()), [urgent, normal]);
        assert_eq!(store.next_due().unwrap(), Some(Timestamp(now.0 + 60_000)));
        let end = Timestamp(now.0 + 120_000);
        assert_eq!(ids(&store.lock_due(end, 10).unwrap()), [later]);
        assert_eq!(store.next_due().unwrap(), None);
        assert_eq!(store.locked(), [later, normal, urgent]);
    }

    #[test]
    fn a_submission_with_a_key_it_remembers_gets_the_first_id_and_stores_nothing() {
        let mut store = MemoryStore::new();
        let key = |key: &str, until: i64| SubmissionKey {
            key: key.into(),
            remember_until: Timestamp(until),
        };
        let mut keyed = envelope(&["SMTP:a@b.c"]);
        keyed.properties.push(key("same", i64::MAX).property());
        let first = submit(&mut store, keyed.clone()).unwrap();
        let finish = [Finish {
            id: first.submitted[0],
            move_to: ROption::RNone,
        }];
        store
            .commit(&StoreBatch {
                finish: RSlice::from_slice(&finish),
                ..StoreBatch::EMPTY
            })
            .unwrap();
        let again = submit(&mut store, keyed).unwrap();
        assert_eq!(
            again.submitted, first.submitted,
            "remembered after delivery"
        );
        assert!(again.stored.is_empty());
        assert!(store.messages().is_empty());

        let mut forgotten = envelope(&["SMTP:a@b.c"]);
        forgotten.properties.push(key("old", 0).property());
        let other = submit(&mut store, forgotten.clone()).unwrap();
        assert_ne!(other.submitted, first.submitted);
        let third = submit(&mut store, forgotten).unwrap();
        assert_ne!(
            third.submitted, other.submitted,
            "a key past its time is forgotten"
        );
    }

    #[test]
    fn it_delivers_its_own_types_of_preprocessed_messages_into_local_folders() {
        let mut store = MemoryStore::delivering(&["LOCAL"]);
        let mut fresh = envelope(&["LOCAL:carol", "SMTP:bob@example.net"]);
        fresh.preprocessed = false;
        let receipt = submit(&mut store, fresh).unwrap();
        assert_eq!(
            store.messages().len(),
            1,
            "not preprocessed: a preprocessor may expand it"
        );

        let mut update = receipt.stored[0].clone();
        update.preprocessed = true;
        let updated = store
            .commit(&StoreBatch {
                update_envelopes: RSlice::from_slice(std::slice::from_ref(&update)),
                ..StoreBatch::EMPTY
            })
            .unwrap();
        let carol = &updated.stored[0].recipients[0];
        assert_eq!(carol.status.state, DeliveryState::Delivered);
        assert_eq!(carol.status.transport, ROption::RSome(NAME.into()));
        let local = store.folder("Local/carol");
        assert_eq!(local.len(), 1);
        assert_eq!(
            local[0].content.as_slice(),
            b"Subject: test\r\n\r\nBody.\r\n"
        );
        assert_eq!(store.delivers_itself(), ["LOCAL"]);
    }

    #[test]
    fn held_as_the_host_holds_it_it_delivers_into_folders_finishes_and_skips_the_deleted() {
        let memory = MemoryStore::new();
        let mut store = store_object(memory.open());
        let gone = Envelope {
            id: MessageId(99),
            ..envelope(&["SMTP:a@b.c"])
        };
        let deliveries = [Delivery {
            folder: RStr::from_str(INBOX),
            envelope: envelope(&["LOCAL:me"]),
            content: RSlice::from_slice(b"Subject: report\r\n\r\n"),
        }];
        let receipt = store
            .commit(StoreBatch {
                update_envelopes: RSlice::from_slice(std::slice::from_ref(&gone)),
                deliver: RSlice::from_slice(&deliveries),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        assert!(
            receipt.stored.is_empty(),
            "an update of a deleted message is skipped"
        );
        let inbox = store.list(RStr::from_str(INBOX)).into_result().unwrap();
        assert_eq!(inbox[0].envelope.id, receipt.delivered[0]);
        assert_eq!(inbox[0].subject, "report");

        let finish = [Finish {
            id: receipt.delivered[0],
            move_to: ROption::RSome("Archive".into()),
        }];
        store
            .commit(StoreBatch {
                finish: RSlice::from_slice(&finish),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        let counts: Vec<(String, u64)> = memory
            .folder_counts()
            .into_iter()
            .map(|f| (f.name.into_string(), f.messages))
            .collect();
        let expected = [("Archive", 1), (INBOX, 0), (OUTBOX, 0), (SENT_ITEMS, 0)];
        assert_eq!(counts, expected.map(|(name, n)| (name.to_owned(), n)));
        assert_eq!(
            store.folders().into_result().unwrap(),
            memory.folder_counts()
        );
    }
}
