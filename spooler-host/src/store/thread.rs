//! The store thread: it owns the store provider, and every store call goes through it.
//!
//! Commits are batched (group commit): callers leave their commits in a queue, and the store
//! thread takes every commit waiting there, merges them into one `StoreBatch`, so one durable
//! write covers them all, and hands each caller its part of the receipt. If the merged commit
//! fails, each is committed on its own, so one bad request does not fail the others. The
//! store thread itself collects the commits (no thread in between): under load a commit
//! crosses two threads, the caller's and the store's, and most find a collection already
//! scheduled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use provider_abi::abi_stable::std_types::{ROption, RSlice, RStr, RString};
use provider_abi::store::{
    CheckIn, CommitReceipt, ContentReplacement, Delivery, Finish, FolderInfo, HostInfo,
    MessageSummary, NewMessage, QueueCounts, ShapeCell, StoreBatch, StoreObject,
};
use provider_abi::{Envelope, MessageId, ProviderError, StoredMessage, Timestamp};

use crate::observe::metrics::metrics;
use crate::providers::status::StatusTable;
use crate::providers::worker::{Health, Opener, Worker};

/// A batch of store writes with owned data, built by the queue manager and by clients.
#[derive(Debug, Default, Clone)]
pub struct Commit {
    /// New Outbox messages with their content.
    pub submit: Vec<(Envelope, Vec<u8>)>,
    /// Envelopes to store.
    pub update_envelopes: Vec<Envelope>,
    /// Content to replace.
    pub replace_content: Vec<(MessageId, Vec<u8>)>,
    /// Messages leaving the Outbox: to this folder, or deleted (`None`).
    pub finish: Vec<(MessageId, Option<String>)>,
    /// Messages for folders.
    pub deliver: Vec<(String, Envelope, Vec<u8>)>,
    /// Locks to release.
    pub unlock: Vec<MessageId>,
}

impl Commit {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.submit.is_empty()
            && self.update_envelopes.is_empty()
            && self.replace_content.is_empty()
            && self.finish.is_empty()
            && self.deliver.is_empty()
            && self.unlock.is_empty()
    }
}

/// Commits `commits` in one transaction, borrowing their data; the store's commit call is
/// timed, failed or not (a failing store's slowness is worth seeing too).
fn commit_together(
    store: &mut StoreObject,
    commits: &[&Commit],
) -> Result<CommitReceipt, ProviderError> {
    let submit: Vec<NewMessage<'_>> = commits
        .iter()
        .flat_map(|c| &c.submit)
        .map(|(envelope, content)| NewMessage {
            envelope: envelope.clone(),
            content: RSlice::from_slice(content),
        })
        .collect();
    let update_envelopes: Vec<Envelope> = commits
        .iter()
        .flat_map(|c| c.update_envelopes.iter().cloned())
        .collect();
    let replace_content: Vec<ContentReplacement<'_>> = commits
        .iter()
        .flat_map(|c| &c.replace_content)
        .map(|(id, content)| ContentReplacement {
            id: *id,
            content: RSlice::from_slice(content),
        })
        .collect();
    let finish: Vec<Finish> = commits
        .iter()
        .flat_map(|c| &c.finish)
        .map(|(id, folder)| Finish {
            id: *id,
            move_to: folder.as_deref().map(RString::from).into(),
        })
        .collect();
    let deliver: Vec<Delivery<'_>> = commits
        .iter()
        .flat_map(|c| &c.deliver)
        .map(|(folder, envelope, content)| Delivery {
            folder: RStr::from_str(folder),
            envelope: envelope.clone(),
            content: RSlice::from_slice(content),
        })
        .collect();
    let unlock: Vec<MessageId> = commits
        .iter()
        .flat_map(|c| c.unlock.iter().copied())
        .collect();
    let began = Instant::now();
    let receipt = store
        .commit(StoreBatch {
            submit: RSlice::from_slice(&submit),
            update_envelopes: RSlice::from_slice(&update_envelopes),
            replace_content: RSlice::from_slice(&replace_content),
            finish: RSlice::from_slice(&finish),
            deliver: RSlice::from_slice(&deliver),
            unlock: RSlice::from_slice(&unlock),
        })
        .into_result();
    metrics().commit_time.observe(began.elapsed().as_secs_f64());
    let receipt = receipt?;
    if receipt.submitted.len() != submit.len() || receipt.delivered.len() != deliver.len() {
        return Err(ProviderError::permanent(format!(
            "the store's receipt lists {} submitted and {} delivered ids for {} and {} messages; \
             the store provider is broken",
            receipt.submitted.len(),
            receipt.delivered.len(),
            submit.len(),
            deliver.len()
        )));
    }
    Ok(receipt)
}

/// One caller's part of a merged commit's receipt: its ids in order, and the stored
/// envelopes of the messages it submitted or updated.
fn part_of(receipt: &mut CommitReceipt, commit: &Commit) -> CommitReceipt {
    let submitted: Vec<MessageId> = receipt.submitted.drain(..commit.submit.len()).collect();
    let delivered: Vec<MessageId> = receipt.delivered.drain(..commit.deliver.len()).collect();
    let mine = |id: &MessageId| {
        submitted.contains(id) || commit.update_envelopes.iter().any(|e| e.id == *id)
    };
    let stored = receipt
        .stored
        .iter()
        .filter(|e| mine(&e.id))
        .cloned()
        .collect();
    CommitReceipt {
        submitted: submitted.into(),
        delivered: delivered.into(),
        stored,
    }
}

/// What is done with a commit's result, on the store thread (see
/// [`StoreClient::commit_then`]).
type CommitCallback = Box<dyn FnOnce(Result<CommitReceipt, ProviderError>) + Send>;

/// A handle to the store thread, cheap to clone.
#[derive(Clone)]
pub struct StoreClient {
    /// The store instance's name.
    name: Arc<str>,
    store: Worker<StoreObject>,
    /// Commits waiting for the next group commit.
    commits: Sender<(Commit, CommitCallback)>,
    waiting: Receiver<(Commit, CommitCallback)>,
    /// Whether a job that collects the waiting commits is queued on the store thread and has
    /// not started yet: a commit arriving meanwhile is taken by it.
    collection_queued: Arc<AtomicBool>,
}

/// How many commits one group commit merges at most.
const MAX_GROUP: usize = 512;

impl StoreClient {
    /// Starts the store thread; `open` opens the store provider on it.
    pub fn start(
        name: &str,
        open: Opener<StoreObject>,
        status: StatusTable,
    ) -> (StoreClient, Vec<JoinHandle<()>>) {
        let (store, threads) = Worker::start(name, 1, 1, None, open, status, None);
        let (commits, waiting) = bounded(1024);
        let client = StoreClient {
            name: name.into(),
            store,
            commits,
            waiting,
            collection_queued: Arc::new(AtomicBool::new(false)),
        };
        (client, threads)
    }

    /// The store instance's name, as the status table shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Commits `commit` durably (possibly together with other callers' commits).
    pub fn commit(&self, commit: Commit) -> Result<CommitReceipt, ProviderError> {
        let (reply, answer) = bounded(1);
        self.commit_then(commit, move |result| {
            reply.send(result).ok();
        });
        answer.recv().unwrap_or_else(|_| Err(gone()))
    }

    /// Commits `commit` durably like [`StoreClient::commit`], without waiting: `then` gets
    /// the result on the store thread (so it must be quick: hand the result on, do not
    /// work on it there), or at once on this thread if the store thread is gone. For
    /// callers that serve many clients on one thread, such as the SMTP listener's event
    /// loop.
    pub fn commit_then(
        &self,
        commit: Commit,
        then: impl FnOnce(Result<CommitReceipt, ProviderError>) + Send + 'static,
    ) {
        if let Err(refused) = self.commits.send((commit, Box::new(then))) {
            let (_, then) = refused.into_inner();
            return then(Err(gone()));
        }
        // The flag is cleared when a collection starts, before it looks at the queue: a
        // commit queued before it is cleared is seen by that collection, one queued after
        // schedules the next.
        if !self.collection_queued.swap(true, Ordering::SeqCst) {
            let mut collection = Collection {
                waiting: self.waiting.clone(),
                queued: Arc::clone(&self.collection_queued),
                done: false,
            };
            let collect = move |store: Result<&mut StoreObject, &ProviderError>| {
                collection.queued.store(false, Ordering::SeqCst);
                let health = commit_waiting(store, &collection.waiting);
                collection.done = true;
                health
            };
            // If the store thread is gone, the collection is dropped, and answers what
            // waits, this commit included.
            self.store.run(collect).ok();
        }
    }

    fn call<R: Send + 'static>(
        &self,
        call: impl FnOnce(&mut StoreObject) -> Result<R, ProviderError> + Send + 'static,
    ) -> Result<R, ProviderError> {
        self.store.call(call)
    }

    /// Locks and returns up to `limit` due Outbox messages.
    pub fn lock_due(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProviderError> {
        self.call(move |store| store.lock_due(now, limit).into_result().map(Vec::from))
    }

    /// When the next unlocked Outbox message is due.
    pub fn next_due(&self) -> Result<Option<Timestamp>, ProviderError> {
        self.call(|store| store.next_due().into_result().map(ROption::into_option))
    }

    /// One message.
    pub fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError> {
        self.call(move |store| store.get(id).into_result().map(ROption::into_option))
    }

    /// The folders.
    pub fn folders(&self) -> Result<Vec<FolderInfo>, ProviderError> {
        self.call(|store| store.folders().into_result().map(Vec::from))
    }

    /// Up to `limit` messages of a folder with ids above `after`, in id order.
    pub fn list_page(
        &self,
        folder: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageSummary>, ProviderError> {
        let folder = folder.to_owned();
        self.call(move |store| {
            store
                .list_page(RStr::from_str(&folder), after.into(), limit)
                .into_result()
                .map(Vec::from)
        })
    }

    /// The Outbox in numbers.
    pub fn queue_counts(&self) -> Result<QueueCounts, ProviderError> {
        self.call(|store| store.queue_counts().into_result())
    }

    /// The queue's shape at `now`: pending recipients counted by domain and by age bucket
    /// (`bounds` in seconds), by one count query in the store.
    pub fn queue_shape(
        &self,
        now: Timestamp,
        bounds: Vec<u64>,
    ) -> Result<Vec<ShapeCell>, ProviderError> {
        self.call(move |store| {
            store
                .queue_shape(now, RSlice::from_slice(&bounds))
                .into_result()
                .map(Vec::from)
        })
    }

    /// How many Outbox messages are held (a count query).
    pub fn held_messages(&self) -> Result<u64, ProviderError> {
        self.call(|store| store.held_messages().into_result())
    }

    /// Removes up to `limit` messages of `folder` submitted before `before` (reports only, if
    /// `reports_only`); how many it removed.
    pub fn prune(
        &self,
        folder: &str,
        reports_only: bool,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, ProviderError> {
        let folder = folder.to_owned();
        self.call(move |store| {
            store
                .prune(RStr::from_str(&folder), reports_only, before, limit)
                .into_result()
        })
    }

    /// The bytes the store takes.
    pub fn size_on_disk(&self) -> Result<u64, ProviderError> {
        self.call(|store| store.size_on_disk().into_result())
    }

    /// Makes the pending recipients (that last went to `transport`, if given) due at `now`;
    /// how many it made due.
    pub fn flush(&self, transport: Option<String>, now: Timestamp) -> Result<u64, ProviderError> {
        self.call(move |store| {
            let transport = transport.as_deref().map(RStr::from_str);
            store.flush(transport.into(), now).into_result()
        })
    }

    /// Holds or releases an Outbox message; the folder it is in, if there is one.
    pub fn hold(
        &self,
        id: MessageId,
        hold: bool,
        now: Timestamp,
    ) -> Result<Option<String>, ProviderError> {
        self.call(move |store| {
            store
                .hold(id, hold, now)
                .into_result()
                .map(|folder| folder.into_option().map(RString::into_string))
        })
    }

    /// Deletes a message from any folder; false if there is none.
    pub fn delete(&self, id: MessageId) -> Result<bool, ProviderError> {
        self.call(move |store| store.delete(id).into_result())
    }

    /// Renews this host's leases and learns what other hosts changed.
    pub fn check_in(&self, now: Timestamp) -> Result<CheckIn, ProviderError> {
        self.call(move |store| store.check_in(now).into_result())
    }

    /// The hosts working on the store.
    pub fn hosts(&self) -> Result<Vec<HostInfo>, ProviderError> {
        self.call(|store| store.hosts().into_result().map(Vec::from))
    }

    /// The address types the store delivers itself.
    pub fn delivers_itself(&self) -> Result<Vec<String>, ProviderError> {
        self.call(|store| {
            store
                .delivers_itself()
                .into_result()
                .map(|types| types.into_iter().map(RString::into_string).collect())
        })
    }
}

fn gone() -> ProviderError {
    ProviderError::temporary("the store thread has stopped (the host is shutting down)")
}

/// A job that collects the waiting commits on the store thread.
struct Collection {
    waiting: Receiver<(Commit, CommitCallback)>,
    queued: Arc<AtomicBool>,
    /// Whether it ran to its end.
    done: bool,
}

impl Drop for Collection {
    /// A collection dropped before its end (the store thread ended, or the host's own code
    /// panicked on it) answers what waits, so that no caller waits for ever.
    fn drop(&mut self) {
        if !self.done {
            for (_, reply) in self.waiting.try_iter() {
                reply(Err(gone()));
            }
            self.queued.store(false, Ordering::SeqCst);
        }
    }
}

/// On the store thread: commits every waiting commit, in groups of at most [`MAX_GROUP`], or
/// answers each with the fault that keeps the store closed.
fn commit_waiting(
    store: Result<&mut StoreObject, &ProviderError>,
    waiting: &Receiver<(Commit, CommitCallback)>,
) -> Health {
    let store = match store {
        Ok(store) => store,
        Err(fault) => {
            for (_, reply) in waiting.try_iter() {
                reply(Err(fault.clone()));
            }
            return Health::Fine;
        }
    };
    loop {
        let group: Vec<(Commit, CommitCallback)> = waiting.try_iter().take(MAX_GROUP).collect();
        if group.is_empty() {
            return Health::Fine;
        }
        if let Err(error) = commit_group(store, group) {
            log::error!("store: {error}");
            return Health::Faulted;
        }
    }
}

/// Commits the group and answers every caller; returns the store's panic, if it panicked,
/// so that its worker reopens it.
fn commit_group(
    store: &mut StoreObject,
    commits: Vec<(Commit, CommitCallback)>,
) -> Result<(), ProviderError> {
    let all: Vec<&Commit> = commits.iter().map(|(commit, _)| commit).collect();
    metrics().commit_batch.observe(all.len() as f64);
    let results: Vec<Result<CommitReceipt, ProviderError>> = match commit_together(store, &all) {
        Ok(mut receipt) => all
            .iter()
            .map(|commit| Ok(part_of(&mut receipt, commit)))
            .collect(),
        Err(error) if all.len() > 1 && Health::of(&Err::<(), _>(error.clone())) == Health::Fine => {
            log::warn!(
                "store: a group commit of {} failed ({error}); committing each alone",
                all.len()
            );
            all.iter()
                .map(|commit| commit_together(store, &[commit]))
                .collect()
        }
        Err(error) => all.iter().map(|_| Err(error.clone())).collect(),
    };
    let mut panicked = None;
    for ((_, reply), result) in commits.into_iter().zip(results) {
        if let Err(error) = &result {
            if Health::of(&result) == Health::Faulted {
                panicked = Some(error.clone());
            }
        }
        reply(result);
    }
    panicked.map_or(Ok(()), Err)
}
