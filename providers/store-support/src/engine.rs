//! The engine: one [`StoreBatch`] applied, step by step and in the order every store keeps,
//! over a [`Backend`].

use provider_abi::abi_stable::std_types::ROption;
use provider_abi::store::{CommitReceipt, StoreBatch, SubmissionKey, OUTBOX};
use provider_abi::{Envelope, MessageId, Timestamp};

use crate::backend::{Access, Backend};
use crate::local::LocalDelivery;

/// What applying a batch made.
#[derive(Debug, Default)]
pub struct Applied {
    /// The receipt for the host.
    pub receipt: CommitReceipt,
    /// The messages whose changes were refused by fencing, each once, in id order: the
    /// store reports them as lost at the next check-in.
    pub refused: Vec<MessageId>,
}

/// Applies `batch` through `backend` (the open transaction) at `now`: submissions (a
/// remembered submission key answers with the first message; the store's own recipients
/// delivered by `local`), content replacements, envelope updates, finished messages moved or
/// deleted, deliveries into folders, and unlocks, in that order. A change of a message that
/// is gone is skipped; one that fencing refuses is skipped and reported.
pub fn apply<B: Backend>(
    backend: &mut B,
    batch: &StoreBatch<'_>,
    local: &LocalDelivery,
    now: Timestamp,
) -> Result<Applied, B::Error> {
    let mut applied = Applied::default();
    for message in batch.submit.iter() {
        submit(
            backend,
            &mut applied,
            local,
            &message.envelope,
            &message.content,
            now,
        )?;
    }
    for replacement in batch.replace_content.iter() {
        if backend.access(replacement.id)? == Access::Granted {
            backend.replace_content(replacement.id, &replacement.content)?;
        }
    }
    update(backend, &mut applied, local, &batch.update_envelopes, now)?;
    for finish in batch.finish.iter() {
        if allowed(backend, &mut applied, finish.id)? {
            match &finish.move_to {
                ROption::RSome(folder) => backend.move_to(finish.id, folder)?,
                ROption::RNone => backend.delete(finish.id)?,
            }
        }
    }
    for delivery in batch.deliver.iter() {
        let mut envelope = delivery.envelope.clone();
        envelope.submitted_at = now;
        let id = backend.insert(&delivery.folder, &envelope, &delivery.content)?;
        applied.receipt.delivered.push(id);
    }
    if !batch.unlock.is_empty() {
        backend.unlock(&batch.unlock)?;
    }
    applied.refused.sort_unstable();
    applied.refused.dedup();
    Ok(applied)
}

/// The messages whose locks `batch` ends, unlocked or finished: a store that keeps its locks
/// in memory forgets these once the batch is durable.
pub fn released<'b>(batch: &'b StoreBatch<'_>) -> impl Iterator<Item = MessageId> + 'b {
    batch
        .unlock
        .iter()
        .copied()
        .chain(batch.finish.iter().map(|finish| finish.id))
}

/// Stores one submission in the Outbox, unless its key is remembered.
fn submit<B: Backend>(
    backend: &mut B,
    applied: &mut Applied,
    local: &LocalDelivery,
    envelope: &Envelope,
    content: &[u8],
    now: Timestamp,
) -> Result<(), B::Error> {
    let key = SubmissionKey::of(envelope);
    if let Some(key) = &key {
        if let Some(first) = backend.claim_submission(key, now)? {
            applied.receipt.submitted.push(first);
            return Ok(());
        }
    }
    let mut envelope = envelope.clone();
    envelope.submitted_at = now;
    local.deliver(backend, &mut envelope, content, now)?;
    envelope.id = backend.insert(OUTBOX, &envelope, content)?;
    if let Some(key) = &key {
        backend.remember_submission(key, envelope.id)?;
    }
    applied.receipt.submitted.push(envelope.id);
    applied.receipt.stored.push(envelope);
    Ok(())
}

/// Stores the updated envelopes, delivering first the store's own recipients of those that
/// now have some (their local copies are written only once the message's fence is open).
fn update<B: Backend>(
    backend: &mut B,
    applied: &mut Applied,
    local: &LocalDelivery,
    envelopes: &[Envelope],
    now: Timestamp,
) -> Result<(), B::Error> {
    let mut ready = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let mut envelope = envelope.clone();
        if local.delivers_some(&envelope) {
            if !allowed(backend, applied, envelope.id)? {
                continue;
            }
            let Some(content) = backend.read_content(envelope.id)? else {
                continue;
            };
            local.deliver(backend, &mut envelope, &content, now)?;
        }
        ready.push(envelope);
    }
    if ready.is_empty() {
        return Ok(());
    }
    let verdicts = backend.update(&ready)?;
    for (envelope, verdict) in ready.into_iter().zip(verdicts) {
        match verdict {
            Access::Granted => applied.receipt.stored.push(envelope),
            Access::Gone => {}
            Access::Refused => applied.refused.push(envelope.id),
        }
    }
    Ok(())
}

/// Whether message `id` may be changed; notes it among the refused if fencing says no.
fn allowed<B: Backend>(
    backend: &mut B,
    applied: &mut Applied,
    id: MessageId,
) -> Result<bool, B::Error> {
    match backend.access(id)? {
        Access::Granted => Ok(true),
        Access::Gone => Ok(false),
        Access::Refused => {
            applied.refused.push(id);
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use provider_abi::abi_stable::std_types::{ROption, RSlice};
    use provider_abi::store::{Finish, NewMessage};
    use provider_abi::{Address, Recipient, RecipientKind};

    use super::*;

    /// A backend that answers fences from a table and writes down what it was asked to do.
    #[derive(Default)]
    struct Log {
        fences: HashMap<MessageId, Access>,
        keys: HashMap<String, MessageId>,
        done: Vec<String>,
    }

    impl Backend for Log {
        type Error = ();

        fn access(&mut self, id: MessageId) -> Result<Access, ()> {
            Ok(self.fences.get(&id).copied().unwrap_or(Access::Granted))
        }
        fn claim_submission(
            &mut self,
            key: &SubmissionKey,
            _: Timestamp,
        ) -> Result<Option<MessageId>, ()> {
            Ok(self.keys.get(&key.key).copied())
        }
        fn remember_submission(&mut self, key: &SubmissionKey, id: MessageId) -> Result<(), ()> {
            self.done.push(format!("remember {} {}", key.key, id.0));
            Ok(())
        }
        fn insert(&mut self, folder: &str, _: &Envelope, _: &[u8]) -> Result<MessageId, ()> {
            self.done.push(format!("insert {folder}"));
            Ok(MessageId(100 + self.done.len() as u64))
        }
        fn read_content(&mut self, _: MessageId) -> Result<Option<Vec<u8>>, ()> {
            Ok(Some(b"Subject: x\r\n\r\n".to_vec()))
        }
        fn replace_content(&mut self, id: MessageId, _: &[u8]) -> Result<(), ()> {
            self.done.push(format!("replace {}", id.0));
            Ok(())
        }
        fn update(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, ()> {
            let ids: Vec<String> = envelopes.iter().map(|e| e.id.0.to_string()).collect();
            self.done.push(format!("update {}", ids.join(" ")));
            Ok(envelopes
                .iter()
                .map(|e| self.access(e.id).unwrap())
                .collect())
        }
        fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), ()> {
            self.done.push(format!("move {} {folder}", id.0));
            Ok(())
        }
        fn delete(&mut self, id: MessageId) -> Result<(), ()> {
            self.done.push(format!("delete {}", id.0));
            Ok(())
        }
    }

    fn envelope(id: u64, recipient: &str) -> Envelope {
        let to = Recipient::new(Address::parse(recipient).unwrap(), RecipientKind::To);
        let mut envelope = Envelope::new(Address::parse("alice@example.com").unwrap(), vec![to]);
        envelope.id = MessageId(id);
        envelope.preprocessed = true;
        envelope
    }

    fn local() -> LocalDelivery {
        LocalDelivery::new("test", &["local".to_owned()])
    }

    #[test]
    fn fenced_changes_are_refused_once_and_gone_ones_skipped_quietly() {
        let mut log = Log::default();
        log.fences.insert(MessageId(2), Access::Refused);
        log.fences.insert(MessageId(3), Access::Gone);
        let updates = [
            envelope(3, "bob@example.net"),
            envelope(2, "bob@example.net"),
            envelope(1, "bob@example.net"),
        ];
        let finish = [2, 1].map(|id| Finish {
            id: MessageId(id),
            move_to: ROption::RNone,
        });
        let batch = StoreBatch {
            update_envelopes: RSlice::from_slice(&updates),
            finish: RSlice::from_slice(&finish),
            ..StoreBatch::EMPTY
        };
        let applied = apply(&mut log, &batch, &local(), Timestamp(1)).unwrap();
        assert_eq!(applied.refused, [MessageId(2)]);
        assert_eq!(applied.receipt.stored.len(), 1);
        assert_eq!(applied.receipt.stored[0].id, MessageId(1));
        assert_eq!(log.done, ["update 3 2 1", "delete 1"]);
    }

    #[test]
    fn a_local_copy_is_written_only_where_the_fence_is_open() {
        let mut log = Log::default();
        log.fences.insert(MessageId(2), Access::Refused);
        let updates = [envelope(2, "LOCAL:bob"), envelope(1, "LOCAL:carol")];
        let batch = StoreBatch {
            update_envelopes: RSlice::from_slice(&updates),
            ..StoreBatch::EMPTY
        };
        let applied = apply(&mut log, &batch, &local(), Timestamp(1)).unwrap();
        assert_eq!(applied.refused, [MessageId(2)]);
        assert_eq!(log.done, ["insert Local/carol", "update 1"]);
        let status = &applied.receipt.stored[0].recipients[0].status;
        assert_eq!(status.transport, ROption::RSome("test".into()));
    }

    #[test]
    fn a_remembered_submission_answers_with_the_first_message_and_stores_nothing() {
        let mut log = Log::default();
        log.keys.insert("seen".into(), MessageId(7));
        let keyed = |key: &str| {
            let mut envelope = envelope(0, "bob@example.net");
            let key = SubmissionKey {
                key: key.into(),
                remember_until: Timestamp(9),
            };
            envelope.properties.push(key.property());
            NewMessage {
                envelope,
                content: RSlice::from_slice(b""),
            }
        };
        let submit = [keyed("seen"), keyed("new")];
        let batch = StoreBatch {
            submit: RSlice::from_slice(&submit),
            ..StoreBatch::EMPTY
        };
        let applied = apply(&mut log, &batch, &local(), Timestamp(1)).unwrap();
        assert_eq!(
            applied.receipt.submitted.as_slice(),
            [MessageId(7), MessageId(101)]
        );
        assert_eq!(applied.receipt.stored.len(), 1);
        assert_eq!(applied.receipt.stored[0].submitted_at, Timestamp(1));
        assert_eq!(log.done, ["insert Outbox", "remember new 101"]);
    }
}
