//! What the queue manager is asked from outside: operators' commands (hold, release, delete,
//! flush, a reloaded profile, shutdown) and providers' notices (back online, new mail, the
//! store changed).

use provider_abi::store::OUTBOX;
use provider_abi::{MessageId, Notice, ProviderState, Timestamp};

use super::{QueueCommand, QueueManager, SHUTDOWN_GRACE};
use crate::inbound::InboundCommand;
use crate::observe::events::{self, EventKind, Happening};
use crate::providers::host_services::ProviderNotice;

impl QueueManager {
    pub(super) fn command(&mut self, command: QueueCommand) {
        match command {
            QueueCommand::Wake => self.look_at_queue = true,
            QueueCommand::Flush(transport) => {
                self.flush(transport.as_deref());
                let forgotten = self.destinations.forget_backoffs(transport.as_deref());
                if forgotten > 0 {
                    log::info!("flush: {forgotten} destination(s) backing off are tried again");
                }
            }
            QueueCommand::Retry => self.flush(None),
            QueueCommand::Hold(id, reply) => {
                reply.send(self.hold(id, true)).ok();
            }
            QueueCommand::Release(id, reply) => {
                self.look_at_queue = true;
                let released = self.hold(id, false);
                if released.is_ok() && self.quarantine.forget(id) {
                    log::info!("{id}: its crash marks are forgotten");
                }
                reply.send(released).ok();
            }
            QueueCommand::FlushMessage(id, reply) => {
                reply.send(self.flush_message(id)).ok();
            }
            QueueCommand::Delete(id, reply) => {
                reply.send(self.delete(id)).ok();
            }
            QueueCommand::NewRoutes(routes) => {
                log::info!("routing through the reloaded profile from now on");
                self.routes = routes;
                self.look_at_queue = true;
            }
            QueueCommand::NewDestinations(policy) => {
                if policy != *self.destinations.policy() {
                    log::info!("pacing destinations by the reloaded [destinations] from now on");
                    self.new_destination_policy(policy);
                }
            }
            QueueCommand::Shutdown(done) => {
                log::info!(
                    "shutting down: taking no new work, finishing {} message(s) under way",
                    self.flights.len()
                );
                self.draining = Some((done, std::time::Instant::now() + SHUTDOWN_GRACE));
            }
        }
    }

    /// Holds or releases a queued message that no pass on this host is working on. On a
    /// shared store, the host that works on it keeps the hold when it stores its answers.
    pub(super) fn hold(&mut self, id: MessageId, hold: bool) -> Result<(), String> {
        self.not_in_flight(id)?;
        let folder = self
            .store
            .hold(id, hold, Timestamp::now())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("there is no message {id}"))?;
        if folder != OUTBOX {
            return Err(format!("message {id} is not queued (it is in {folder})"));
        }
        log::info!(
            "{id}: {} by an operator",
            if hold { "held" } else { "released" }
        );
        let kind = if hold {
            EventKind::Held
        } else {
            EventKind::Released
        };
        events::publish(Happening::message(kind, id).detail("by an operator"));
        self.refresh_next_due();
        Ok(())
    }

    /// Makes a queued message due now (the store's release does it), unless it is held: a
    /// hold is an operator's decision that a flush must not undo.
    pub(super) fn flush_message(&mut self, id: MessageId) -> Result<(), String> {
        self.not_in_flight(id)?;
        let message = self
            .store
            .get(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("there is no message {id}"))?;
        if message.folder.as_str() != OUTBOX {
            return Err(format!(
                "message {id} is not queued (it is in {})",
                message.folder
            ));
        }
        if message.envelope.held {
            return Err(format!("message {id} is held; release it to send it"));
        }
        self.store
            .hold(id, false, Timestamp::now())
            .map_err(|e| e.to_string())?;
        log::info!("{id}: due now, flushed by an operator");
        self.look_at_queue = true;
        self.refresh_next_due();
        Ok(())
    }

    /// Deletes a message that no pass on this host is working on. On a shared store, the
    /// host that works on it stops at its next check-in.
    pub(super) fn delete(&mut self, id: MessageId) -> Result<(), String> {
        self.not_in_flight(id)?;
        if !self.store.delete(id).map_err(|e| e.to_string())? {
            return Err(format!("there is no message {id}"));
        }
        self.quarantine.forget(id);
        log::info!("{id}: deleted by an operator");
        events::publish(Happening::message(EventKind::Deleted, id).detail("by an operator"));
        Ok(())
    }

    /// An operator's change waits while a pass on this host works on the message: the pass
    /// would store its own view of the envelope over it.
    pub(super) fn not_in_flight(&self, id: MessageId) -> Result<(), String> {
        if self.flights.contains_key(&id) {
            return Err(format!(
                "message {id} is being delivered right now; try again in a moment"
            ));
        }
        Ok(())
    }

    pub(super) fn notice(&mut self, notice: ProviderNotice) {
        match notice.notice {
            Notice::BackOnline => {
                // The status table logs the change, once.
                self.status.set(&notice.instance, ProviderState::Online, "");
                self.flush(Some(&notice.instance));
            }
            Notice::NewMail => {
                self.inbound
                    .send(InboundCommand::Fetch(Some(notice.instance)))
                    .ok();
            }
            Notice::StatusChanged => {}
            Notice::StoreChanged => {
                self.look_at_queue = true;
                self.next_check_in = Timestamp::now();
            }
            _ => log::debug!("{}: a notice this host does not know", notice.instance),
        }
    }

    /// Makes every pending recipient (routed to `transport`, if given) due now: one statement
    /// in the store, whatever the length of the queue. The updates waiting to be stored go
    /// first, so that they do not undo the flush; a message still being worked on keeps the
    /// answers of its pass. (An operator's flush also ends the destinations' backoffs, as
    /// Postfix's flush forgets its dead destinations: see `QueueCommand::Flush`.)
    pub(super) fn flush(&mut self, transport: Option<&str>) {
        if !self.commit_pending() {
            log::error!("flush: not done, the store is failing; flush again once it is back");
        } else {
            match self
                .store
                .flush(transport.map(str::to_owned), Timestamp::now())
            {
                Ok(count) => log::info!(
                    "flush: {count} waiting recipient(s){} are due now",
                    transport.map_or(String::new(), |t| format!(" of {t}"))
                ),
                Err(error) => log::error!("flush: cannot make the queue due: {error}"),
            }
        }
        let flushed = |name: &str| transport.is_none_or(|t| t == name);
        for instance in self.routes.transports.iter().filter(|i| flushed(&i.name)) {
            self.status.try_again(&instance.name);
        }
        self.look_at_queue = true;
    }
}
