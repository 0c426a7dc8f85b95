//! The end of a pass: reports for what became final (and delay warnings), then either back
//! to the queue for the recipients still pending or, when every recipient is final, the
//! outbound hooks one after the other and the move to Sent Items (or deletion).

use std::sync::Arc;

use provider_abi::store::{INBOX, SENT_ITEMS};
use provider_abi::{
    DeliveryState, Direction, HookAction, MessageId, ProviderError, StoredMessage, Timestamp,
};

use super::reports;
use super::{Event, PendingLine, QueueManager, Stage};
use crate::observe::events::{EventKind, Happening};
use crate::observe::metrics::{metrics, ByReport, ByTransport, NO_TRANSPORT};
use crate::providers::calls;

impl QueueManager {
    /// The pass over a message is over: report, then finish it or put it back in the queue.
    pub(super) fn conclude(&mut self, id: MessageId) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let envelope = &mut flight.envelope;
        // A sender waiting this long gets one warning per recipient still pending.
        let delayed_long = self
            .policy
            .delay_warning
            .is_some_and(|after| now.since(envelope.submitted_at) >= after);
        for recipient in envelope
            .recipients
            .iter()
            .filter(|r| r.status.is_final() && !r.status.reported)
        {
            // Counted here, once per recipient: `reported` is stored with its final state.
            let by = recipient.status.transport.as_ref().into_option();
            let label = by.map_or(NO_TRANSPORT, |t| t.as_str());
            let metrics = metrics();
            let (family, kind) = if recipient.status.state == DeliveryState::Delivered {
                let waited = now.since(envelope.submitted_at).as_secs_f64();
                metrics.delivery_time.observe(waited);
                metrics.delivered_all.inc();
                (&metrics.delivered, EventKind::Delivered)
            } else {
                (&metrics.failed, EventKind::Failed)
            };
            family
                .get_or_create(&ByTransport {
                    transport: label.to_owned(),
                })
                .inc();
            self.pending_events.push(
                Happening::message(kind, id)
                    .recipient(&recipient.address, by.map(|t| t.as_str()))
                    .detail(&recipient.status.last_answer),
            );
            let text = format!(
                "{id}: to={} kind={:?} via={} state={:?} attempts={}: {}",
                recipient.address,
                recipient.kind,
                recipient
                    .status
                    .transport
                    .as_ref()
                    .into_option()
                    .map_or("-", |t| t.as_str()),
                recipient.status.state,
                recipient.status.attempts,
                recipient.status.last_answer
            );
            self.pending_log
                .push(PendingLine::answer(id, recipient, text));
        }
        if !envelope.is_report {
            let content = flight.message.content.as_slice();
            let reports = reports::owed(envelope, content, delayed_long, &self.hostname, now);
            for (kind, report, content) in reports {
                self.pending_log.push(PendingLine::about(
                    id,
                    format!("{id}: report for {} placed in {INBOX}", envelope.sender),
                ));
                metrics()
                    .reports
                    .get_or_create(&ByReport {
                        kind: kind.as_str().to_owned(),
                    })
                    .inc();
                self.pending_events
                    .push(Happening::message(EventKind::ReportSent, id).detail(kind.as_str()));
                self.pending
                    .deliver
                    .push((INBOX.to_owned(), report, content));
            }
        }
        for recipient in envelope.recipients.iter_mut() {
            if recipient.status.is_final() {
                recipient.status.reported = true;
            } else if delayed_long {
                recipient.status.delay_warned = true;
            }
        }
        if envelope.is_finished() {
            // The reports and their `reported` flags are stored together, before the hooks.
            self.pending.update_envelopes.push(envelope.clone());
            let folder = Some(SENT_ITEMS.to_owned());
            self.run_hook(id, 0, folder);
        } else {
            let envelope = envelope.clone();
            flight.stage = Stage::Done;
            if !self.hold_if_suspected(id) {
                self.pending.update_envelopes.push(envelope);
                self.pending.unlock.push(id);
            }
        }
    }

    pub(super) fn run_hook(&mut self, id: MessageId, position: usize, folder: Option<String>) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let routes = Arc::clone(&flight.routes);
        let Some(hook) = routes.hooks.get(position) else {
            let unkept = folder.as_deref() == Some(SENT_ITEMS) && !self.files_sent;
            let folder = if flight.envelope.delete_after_submission || unkept {
                None
            } else {
                folder
            };
            self.pending_log.push(PendingLine::about(
                id,
                format!(
                    "{id}: finished; {}",
                    folder
                        .as_deref()
                        .map_or("deleted".to_owned(), |f| format!("moved to {f}"))
                ),
            ));
            self.pending.update_envelopes.push(flight.envelope.clone());
            self.pending.finish.push((id, folder));
            flight.stage = Stage::Done;
            self.quarantine.forget(id);
            return;
        };
        let name = hook.name.clone();
        flight.stage = Stage::Hooks {
            position,
            folder: folder.clone(),
        };
        let message = Arc::new(StoredMessage {
            envelope: flight.envelope.clone(),
            folder: folder.clone().unwrap_or_default().into(),
            content: flight.message.content.clone(),
        });
        let events = self.events.0.clone();
        let queued = hook.worker.as_ref().map(|worker| {
            worker.ask_call(
                Some(id),
                move |hook| {
                    let view = message.as_ref().as_ref();
                    calls::run_hook(hook, Direction::Outbound, &message.folder, view)
                },
                move |result| {
                    events.send(Event::Hooked { id, result }).ok();
                },
            )
        });
        if !matches!(queued, Some(Ok(()))) {
            let error = ProviderError::temporary(format!("hook {name} is not running"));
            self.hooked(id, Err(error));
        }
    }

    pub(super) fn hooked(&mut self, id: MessageId, result: Result<HookAction, ProviderError>) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        if !matches!(flight.stage, Stage::Hooks { .. }) {
            return;
        }
        let Stage::Hooks { position, folder } = std::mem::replace(&mut flight.stage, Stage::Done)
        else {
            unreachable!("checked above");
        };
        let name = flight.routes.hooks[position].name.clone();
        let next = match result {
            Ok(HookAction::Leave) => Some(folder),
            Ok(HookAction::MoveTo { folder }) => Some(Some(folder.into_string())),
            Ok(HookAction::Delete) => {
                self.pending_log.push(PendingLine::about(
                    id,
                    format!("{id}: deleted by hook {name}"),
                ));
                self.finish_now(id, None);
                return;
            }
            Ok(HookAction::Stop) => {
                self.finish_now(id, folder);
                return;
            }
            Ok(_) => {
                log::warn!(
                    "{id}: hook {name} answered with an action this host does not know; ignored"
                );
                Some(folder)
            }
            Err(error) => {
                log::warn!("{id}: hook {name} failed, going on without it: {error}");
                Some(folder)
            }
        };
        if let Some(folder) = next {
            self.run_hook(id, position + 1, folder);
        }
    }

    pub(super) fn finish_now(&mut self, id: MessageId, folder: Option<String>) {
        // Past the last hook: finish.
        self.run_hook(id, usize::MAX, folder);
    }
}
