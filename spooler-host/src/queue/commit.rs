//! The queue manager's side of the store: the group commit of a pass's updates, when the next
//! message is due, and the check-ins that keep leases on a shared store.

use provider_abi::Timestamp;

use super::{QueueManager, Stage, MAX_SLEEP, STORE_RETRY};
use crate::observe::events;
use crate::store::watchers::MailEvent;

impl QueueManager {
    /// Stores the pending commit. False if the store failed; the commit stays pending.
    pub(super) fn commit_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut commit = std::mem::take(&mut self.pending);
        keep_last_update_per_message(&mut commit.update_envelopes);
        match self.store.commit(commit.clone()) {
            Ok(receipt) => {
                self.outage.over();
                for line in self.pending_log.drain(..) {
                    match &line.answer {
                        Some(answer) => log::info!(
                            id:% = line.id,
                            transport = answer.transport.as_deref(),
                            recipient = answer.recipient.as_str(),
                            outcome = answer.outcome;
                            "{}", line.text
                        ),
                        None => log::info!(id:% = line.id; "{}", line.text),
                    }
                }
                for happening in self.pending_events.drain(..) {
                    events::publish(happening);
                }
                for (id, (folder, envelope, content)) in
                    receipt.delivered.iter().zip(&commit.deliver)
                {
                    self.watchers
                        .publish(&MailEvent::stored(*id, folder, envelope, content));
                }
                self.flights
                    .retain(|_, flight| !matches!(flight.stage, Stage::Done));
                // When the queue is to be looked at anyway, `fill` learns what is due.
                if !self.look_at_queue {
                    self.refresh_next_due();
                }
                true
            }
            Err(error) => {
                self.outage.failed("storing the queue's updates", &error);
                self.pending = commit;
                false
            }
        }
    }

    pub(super) fn refresh_next_due(&mut self) {
        match self.store.next_due() {
            Ok(due) => self.next_due = due,
            Err(error) => {
                self.outage.failed("reading the queue", &error);
                self.next_due = Some(Timestamp::now().plus(STORE_RETRY));
            }
        }
    }

    /// Checks in with the store: on a store shared by several hosts this renews the leases,
    /// stops work on messages this host no longer holds, and tells watching clients about
    /// mail other hosts delivered.
    pub(super) fn check_in(&mut self) {
        let now = Timestamp::now();
        let news = match self.store.check_in(now) {
            Ok(news) => news,
            Err(error) => {
                self.outage.failed("checking in", &error);
                self.next_check_in = now.plus(STORE_RETRY);
                return;
            }
        };
        self.next_check_in = news.next.into_option().unwrap_or(now.plus(MAX_SLEEP));
        // Called right after the pending commit was stored: nothing of a lost message waits.
        for id in news.lost {
            if self.flights.remove(&id).is_some() {
                log::warn!(
                    "{id}: this host no longer holds it (its lease was taken over, or an \
                     operator deleted it); work on it stops here"
                );
            }
        }
        for id in news.arrived {
            match self.store.get(id) {
                Ok(Some(message)) => self.watchers.publish(&MailEvent::stored(
                    id,
                    &message.folder,
                    &message.envelope,
                    &message.content,
                )),
                Ok(None) => {}
                Err(error) => log::warn!("{id}: delivered by another host, unreadable: {error}"),
            }
        }
    }
}

/// Drops all but the newest envelope of each message: one pass may update a message several
/// times before its commit, and only the last state needs storing.
pub(super) fn keep_last_update_per_message(updates: &mut Vec<provider_abi::Envelope>) {
    let mut seen = std::collections::HashSet::new();
    let mut newest_first: Vec<_> = updates
        .drain(..)
        .rev()
        .filter(|e| seen.insert(e.id))
        .collect();
    newest_first.reverse();
    *updates = newest_first;
}
