//! Preprocessing: a message's preprocessors run one after the other on their workers; their
//! changes (recipients added, removed or undeliverable, new content) are stored at once, before
//! routing, and a failure defers the whole message.

use std::sync::Arc;

use provider_abi::{Changes, MessageId, Preprocessed, ProviderError, StoredMessage, Timestamp};

use super::recipient::{finish_recipient, FinalAnswer};
use super::{Event, Flight, QueueManager, Stage};
use crate::providers::calls;
use crate::store::thread::Commit;

impl QueueManager {
    pub(super) fn preprocess(&mut self, id: MessageId, chain: Vec<usize>, position: usize) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let preprocessor = &flight.routes.preprocessors[chain[position]];
        let name = preprocessor.name.clone();
        flight.stage = Stage::Preprocessing { chain, position };
        let message = Arc::clone(&flight.message);
        let events = self.events.0.clone();
        let queued = preprocessor.worker.as_ref().map(|worker| {
            worker.ask_call(
                Some(id),
                move |preprocessor| calls::preprocess(preprocessor, message.as_ref().as_ref()),
                move |result| {
                    events.send(Event::Preprocessed { id, result }).ok();
                },
            )
        });
        if !matches!(queued, Some(Ok(()))) {
            let error = ProviderError::temporary(format!("preprocessor {name} is not running"));
            self.preprocessed(id, Err(error));
        }
    }

    pub(super) fn preprocessed(
        &mut self,
        id: MessageId,
        result: Result<Preprocessed, ProviderError>,
    ) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        // An answer for a stage the message is no longer in is stale; ignore it.
        if !matches!(flight.stage, Stage::Preprocessing { .. }) {
            return;
        }
        let Stage::Preprocessing { chain, position } =
            std::mem::replace(&mut flight.stage, Stage::Done)
        else {
            unreachable!("checked above");
        };
        let name = flight.routes.preprocessors[chain[position]].name.clone();
        match result {
            Ok(Preprocessed::Accept(changes)) => {
                if let Some(content) = accept(flight, &name, changes) {
                    self.pending.replace_content.push((id, content));
                }
            }
            Ok(Preprocessed::Reject { reason }) => {
                let text = format!("rejected by {name}: {reason}");
                let pending = flight.envelope.recipients.iter_mut();
                for recipient in pending.filter(|r| !r.status.is_final()) {
                    finish_recipient(recipient, FinalAnswer::failed(Some(&name), "5.7.1", &text));
                }
                log::info!("{id}: rejected by preprocessor {name}: {reason}");
            }
            Ok(_) => {
                self.defer_message(
                    id,
                    &format!("preprocessor {name} answered with a verdict this host does not know"),
                );
                return;
            }
            Err(error) => {
                log::warn!("{id}: preprocessor {name} failed: {error}");
                self.defer_message(id, &format!("preprocessor {name} failed: {error}"));
                return;
            }
        }
        if position + 1 < chain.len() {
            self.preprocess(id, chain, position + 1);
        } else {
            self.store_preprocessed(id);
        }
    }

    /// Stores the preprocessed message at once: the store delivers its own address types
    /// when it stores a preprocessed envelope, and routing must see that.
    pub(super) fn store_preprocessed(&mut self, id: MessageId) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        flight.envelope.preprocessed = true;
        flight.routes.claim_ahead_of_store(&mut flight.envelope);
        let mut commit = Commit {
            update_envelopes: vec![flight.envelope.clone()],
            ..Commit::default()
        };
        commit.replace_content = self
            .pending
            .replace_content
            .iter()
            .filter(|(m, _)| *m == id)
            .cloned()
            .collect();
        self.pending.replace_content.retain(|(m, _)| *m != id);
        match self.store.commit(commit) {
            Ok(receipt) => {
                if let Some(stored) = receipt.stored.into_iter().find(|e| e.id == id) {
                    flight.envelope = stored;
                }
                flight.message = Arc::new(StoredMessage {
                    envelope: flight.envelope.clone(),
                    folder: flight.message.folder.clone(),
                    content: flight.message.content.clone(),
                });
                self.after_preprocessing(id);
            }
            Err(error) => {
                log::error!("{id}: cannot store the preprocessed message: {error}");
                // Its new content was not stored: preprocess it again next time.
                flight.envelope.preprocessed = false;
                self.defer_message(id, &format!("the store failed: {error}"));
            }
        }
    }

    /// Defers every pending recipient of a message that could not be worked on.
    pub(super) fn defer_message(&mut self, id: MessageId, reason: &str) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let expiry = self.policy.expiry(&flight.envelope);
        for recipient in flight
            .envelope
            .recipients
            .iter_mut()
            .filter(|r| !r.status.is_final())
        {
            let status = &mut recipient.status;
            status.attempts += 1;
            let delay = self.policy.delay(status.attempts, None, self.jitter.unit());
            status.next_attempt = Some(now.plus(delay).min(expiry)).into();
            status.last_answer = format!("deferred: {reason}").into();
        }
        self.conclude(id);
    }
}

/// Applies a preprocessor's changes to the message in flight: recipients removed (those
/// not final), added (once), failed as undeliverable, and new content. The new content, if
/// any, to be stored.
fn accept(flight: &mut Flight, preprocessor: &str, changes: Changes) -> Option<Vec<u8>> {
    let envelope = &mut flight.envelope;
    envelope
        .recipients
        .retain(|r| r.status.is_final() || !changes.remove_recipients.contains(&r.address));
    for added in changes.add_recipients {
        if !envelope
            .recipients
            .iter()
            .any(|r| r.address == added.address)
        {
            envelope.recipients.push(added);
        }
    }
    for undeliverable in changes.undeliverable {
        let named = envelope
            .recipients
            .iter_mut()
            .filter(|r| r.address == undeliverable.address && !r.status.is_final());
        for recipient in named {
            let answer = FinalAnswer::failed(Some(preprocessor), "5.1.0", &undeliverable.reason);
            finish_recipient(recipient, answer);
        }
    }
    let content = changes.content.into_option().map(Vec::from);
    let message = &flight.message;
    flight.message = Arc::new(StoredMessage {
        envelope: envelope.clone(),
        folder: message.folder.clone(),
        content: content
            .clone()
            .map_or_else(|| message.content.clone(), Into::into),
    });
    content
}
