//! Taking due messages from the store into memory, up to `max_in_flight`, and starting each
//! one's pass: preprocessing first when it has not been preprocessed, else routing. A message
//! suspected of crashing a provider (the quarantine) is held instead.

use std::collections::HashMap;
use std::sync::Arc;

use provider_abi::{StoredMessage, Timestamp};

use provider_abi::MessageId;

use super::{Flight, QueueManager, Stage, STORE_RETRY};
use crate::observe::events::{EventKind, Happening};

impl QueueManager {
    /// Takes due messages from the store, up to the in-memory limit.
    pub(super) fn fill(&mut self) {
        self.look_at_queue = false;
        let room = (self.max_in_flight - self.flights.len()) as u32;
        match self.store.lock_due(Timestamp::now(), room) {
            Ok(messages) => {
                // A full batch: there may be more due now, so look again rather than ask
                // when the next one is due.
                let full = messages.len() as u32 == room;
                for message in messages {
                    self.take_off(message);
                }
                if full {
                    self.look_at_queue = true;
                } else {
                    self.refresh_next_due();
                }
            }
            Err(error) => {
                self.outage.failed("taking messages from the queue", &error);
                self.next_due = Some(Timestamp::now().plus(STORE_RETRY));
            }
        }
    }

    pub(super) fn take_off(&mut self, message: StoredMessage) {
        let id = message.envelope.id;
        if self.flights.contains_key(&id) {
            // The store lost its locks (it was reopened); this one is being worked on.
            log::warn!("{id}: handed out again while in progress; left to the pass under way");
            return;
        }
        let envelope = message.envelope.clone();
        let expired = Timestamp::now() >= self.policy.expiry(&envelope);
        let chain = if envelope.preprocessed || expired {
            Vec::new()
        } else {
            self.routes.preprocessors_for(&envelope.recipients)
        };
        let flight = Flight {
            routes: Arc::clone(&self.routes),
            message: Arc::new(message),
            envelope,
            stage: Stage::Delivering { outstanding: 0 },
            next_claimant: HashMap::new(),
        };
        self.flights.insert(id, flight);
        if self.hold_if_suspected(id) {
            return;
        }
        if chain.is_empty() {
            self.after_preprocessing(id);
        } else {
            self.preprocess(id, chain, 0);
        }
    }

    /// Holds a message in memory that the quarantine suspects of crashing a provider: it goes
    /// back to the queue held, untouched otherwise, until an operator releases it. True if
    /// it was held.
    pub(super) fn hold_if_suspected(&mut self, id: MessageId) -> bool {
        let Some(suspicion) = self.quarantine.suspicion(id) else {
            return false;
        };
        let Some(flight) = self.flights.get_mut(&id) else {
            return false;
        };
        log::error!(
            "{id}: held: {suspicion}; the rest of the mail goes on (`release {id}` lets it go again)"
        );
        flight.envelope.held = true;
        flight.stage = Stage::Done;
        self.pending.update_envelopes.push(flight.envelope.clone());
        self.pending.unlock.push(id);
        self.pending_events
            .push(Happening::message(EventKind::Held, id).detail(suspicion));
        true
    }
}
