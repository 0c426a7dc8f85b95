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
