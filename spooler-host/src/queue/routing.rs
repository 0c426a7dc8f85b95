//! Routing and delivery: each due recipient goes to the first transport that claims its
//! address type (the next one after a `NotMine`), in one call per transport (one per Bcc
//! recipient), and every answer is recorded: delivered, failed, deferred by the retry policy,
//! or parked while the transport is offline. Expired recipients fail here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use provider_abi::abi_stable::std_types::RSlice;
use provider_abi::{
    Address, DeliveryState, MessageId, ProviderError, ProviderState, RecipientKind,
    RecipientOutcome, StoredMessage, Timestamp,
};

use super::recipient::{defer, describe, finish_recipient, wait_for};
use super::{Answer, Event, QueueManager, Stage};
use crate::providers::worker::Health;

impl QueueManager {
    pub(super) fn after_preprocessing(&mut self, id: MessageId) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        flight.stage = Stage::Delivering { outstanding: 0 };
        let now = Timestamp::now();
        let expiry = self.policy.expiry(&flight.envelope);
        let due: Vec<usize> = (0..flight.envelope.recipients.len())
            .filter(|&i| {
                let status = &flight.envelope.recipients[i].status;
                !status.is_final() && status.next_attempt.into_option().is_none_or(|t| t <= now)
            })
            .collect();
        let mut expired = Vec::new();
        let mut to_route = Vec::new();
        for index in due {
            if now >= expiry {
                expired.push(index);
            } else {
                to_route.push(index);
            }
        }
        for index in expired {
            let recipient = &mut flight.envelope.recipients[index];
            let last = recipient.status.last_answer.to_string();
            let transport = recipient
                .status
                .transport
                .as_ref()
                .into_option()
                .map(|t| t.to_string())
                .unwrap_or_default();
            let text = if last.is_empty() {
                format!(
                    "expired: not delivered within {}",
                    describe(self.policy.max_lifetime)
                )
            } else {
                format!(
                    "expired: not delivered within {} (last answer: {last})",
                    describe(self.policy.max_lifetime)
                )
            };
            let diagnostic = recipient.status.diagnostic.to_string();
            finish_recipient(
                recipient,
                DeliveryState::Failed,
                &transport,
                "4.4.7",
                &diagnostic,
                &text,
            );
        }
        self.route(id, to_route);
    }

    /// Sends recipients `indices` to the transports that claim them.
    pub(super) fn route(&mut self, id: MessageId, indices: Vec<usize>) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let routes = Arc::clone(&flight.routes);
        let expiry = self.policy.expiry(&flight.envelope);
        let mut jobs: HashMap<usize, Vec<usize>> = HashMap::new();
        for index in indices {
            let recipient = &mut flight.envelope.recipients[index];
            let claimants = routes.claimants(recipient.address.address_type());
            let position = flight.next_claimant.get(&index).copied().unwrap_or(0);
            match claimants.get(position) {
                Some(&transport) => {
                    let name = &routes.transports[transport].name;
                    // Only an offline (or missing) transport parks its recipients; a faulted
                    // one still gets the job, so its worker can reopen it.
                    if routes.transports[transport].worker.is_none()
                        || self.status.state(name) == ProviderState::Offline
                    {
                        wait_for(
                            recipient,
                            name,
                            &self.status,
                            now,
                            expiry,
                            self.policy.max_delay,
                        );
                    } else {
                        jobs.entry(transport).or_default().push(index);
                    }
                }
                None if position == 0 && !routes.missing_transports().is_empty() => {
                    let missing = routes.missing_transports().join(", ");
                    let reason = format!(
                        "no running transport claims address type {}; waiting for {missing}, which could not be started",
                        recipient.address.address_type()
                    );
                    recipient.status.next_attempt =
                        Some(now.plus(self.policy.max_delay).min(expiry)).into();
                    recipient.status.last_answer = reason.into();
                }
                None if position == 0 => {
                    let text = format!(
                        "no transport claims address type {}",
                        recipient.address.address_type()
                    );
                    finish_recipient(recipient, DeliveryState::Failed, "", "5.4.4", "", &text);
                }
                None => {
                    let text = format!(
                        "every transport claiming address type {} answered that {} is not theirs",
                        recipient.address.address_type(),
                        recipient.address
                    );
                    finish_recipient(recipient, DeliveryState::Failed, "", "5.4.4", "", &text);
                }
            }
        }
        let Stage::Delivering { outstanding } = &mut flight.stage else {
            return;
        };
        *outstanding += jobs.len();
        let events = self.events.0.clone();
        let mut unqueued = Vec::new();
        for (transport, indices) in jobs {
            let instance = &routes.transports[transport];
            let message = Arc::clone(&flight.message);
            // To and Cc recipients go in one call; each Bcc recipient in a call of its own,
            // so no transport ever puts a Bcc recipient next to the others.
            let (bcc, open): (Vec<usize>, Vec<usize>) = indices
                .into_iter()
                .partition(|&i| flight.envelope.recipients[i].kind == RecipientKind::Bcc);
            let mut calls: Vec<Vec<(usize, Address)>> = bcc
                .into_iter()
                .map(|i| vec![(i, flight.envelope.recipients[i].address.clone())])
                .collect();
            if !open.is_empty() {
                calls.insert(
                    0,
                    open.into_iter()
                        .map(|i| (i, flight.envelope.recipients[i].address.clone()))
                        .collect(),
                );
            }
            let events = events.clone();
            let answers_if_unqueued: Vec<(usize, Answer)> = calls
                .iter()
                .flatten()
                .map(|(index, _)| {
                    (
                        *index,
                        Err(format!("transport {} is not running", instance.name)),
                    )
                })
                .collect();
            let indices: Vec<usize> = calls.iter().flatten().map(|(index, _)| *index).collect();
            let queued = instance.worker.as_ref().map(|worker| {
                worker.ask(
                    Some(id),
                    move |slot| submit_calls(slot, &message, calls),
                    move |answers| {
                        let answers = answers.unwrap_or_else(|abandoned| {
                            let reason = abandoned.to_string();
                            indices.iter().map(|&i| (i, Err(reason.clone()))).collect()
                        });
                        let answered = Event::Submitted {
                            id,
                            transport,
                            answers,
                        };
                        events.send(answered).ok();
                    },
                )
            });
            if !matches!(queued, Some(Ok(()))) {
                unqueued.push((transport, answers_if_unqueued));
            }
        }
        let nothing_outstanding = *outstanding == 0;
        for (transport, answers) in unqueued {
            self.submitted(id, transport, answers);
        }
        if nothing_outstanding {
            self.conclude(id);
        }
    }

    pub(super) fn submitted(
        &mut self,
        id: MessageId,
        transport: usize,
        answers: Vec<(usize, Answer)>,
    ) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let name = flight.routes.transports[transport].name.clone();
        let expiry = self.policy.expiry(&flight.envelope);
        let mut reroute = Vec::new();
        for (index, answer) in answers {
            let recipient = &mut flight.envelope.recipients[index];
            match answer {
                Ok(RecipientOutcome::Delivered { answer }) => {
                    finish_recipient(
                        recipient,
                        DeliveryState::Delivered,
                        &name,
                        "2.0.0",
                        "",
                        &answer,
                    );
                }
                Ok(RecipientOutcome::Failed {
                    status_code,
                    diagnostic,
                    text,
                }) => {
                    finish_recipient(
                        recipient,
                        DeliveryState::Failed,
                        &name,
                        &status_code,
                        &diagnostic,
                        &text,
                    );
                }
                Ok(RecipientOutcome::NotMine) => {
                    *flight.next_claimant.entry(index).or_insert(0) += 1;
                    reroute.push(index);
                }
                Ok(RecipientOutcome::Deferred {
                    retry_after_secs,
                    reason,
                }) => {
                    let retry_after = retry_after_secs
                        .into_option()
                        .map(|s| Duration::from_secs(s.into()));
                    defer(
                        recipient,
                        &name,
                        &reason,
                        retry_after,
                        now,
                        expiry,
                        &self.policy,
                        &mut self.jitter,
                    );
                }
                Ok(_) => {
                    let reason = "it answered with an outcome this host does not know";
                    defer(
                        recipient,
                        &name,
                        reason,
                        None,
                        now,
                        expiry,
                        &self.policy,
                        &mut self.jitter,
                    );
                }
                Err(reason) => {
                    log::warn!(
                        "{id}: transport {name} failed for {}: {reason}",
                        recipient.address
                    );
                    defer(
                        recipient,
                        &name,
                        &reason,
                        None,
                        now,
                        expiry,
                        &self.policy,
                        &mut self.jitter,
                    );
                }
            }
        }
        if let Stage::Delivering { outstanding } = &mut flight.stage {
            *outstanding -= 1;
        }
        // Stored with the next commit, while other transports may still be working on it.
        self.pending.update_envelopes.push(flight.envelope.clone());
        if !reroute.is_empty() {
            self.route(id, reroute);
        } else if matches!(flight.stage, Stage::Delivering { outstanding: 0 }) {
            self.conclude(id);
        }
    }
}

/// Calls the transport once per recipient group; its answers, per recipient index.
pub(super) fn submit_calls(
    mut slot: Result<&mut provider_abi::transport::TransportObject, &ProviderError>,
    message: &StoredMessage,
    calls: Vec<Vec<(usize, Address)>>,
) -> (Health, Vec<(usize, Answer)>) {
    let mut answers = Vec::new();
    let mut health = Health::Fine;
    // After a panic the transport is not called again; the rest get the panic as answer.
    let mut fault: Option<ProviderError> = None;
    for call in calls {
        let (indices, addresses): (Vec<usize>, Vec<Address>) = call.into_iter().unzip();
        let result = match (&mut slot, &fault) {
            (_, Some(fault)) => Err(fault.clone()),
            (Err(fault), None) => Err((*fault).clone()),
            (Ok(transport), None) => transport
                .submit(message.as_ref(), RSlice::from_slice(&addresses))
                .into_result()
                .map(Vec::from),
        };
        if Health::of(&result) == Health::Faulted {
            health = Health::Faulted;
            fault = result.as_ref().err().cloned();
        }
        match result {
            Ok(outcomes) if outcomes.len() == indices.len() => {
                for (index, outcome) in indices.into_iter().zip(outcomes) {
                    let answer = outcome.as_enum().cloned().map_err(|_| {
                        "it answered with an outcome this host does not know".to_owned()
                    });
                    answers.push((index, answer));
                }
            }
            Ok(outcomes) => {
                let reason = format!(
                    "it gave {} answers for {} recipients",
                    outcomes.len(),
                    indices.len()
                );
                answers.extend(
                    indices
                        .into_iter()
                        .map(|index| (index, Err(reason.clone()))),
                );
            }
            Err(error) => {
                answers.extend(
                    indices
                        .into_iter()
                        .map(|index| (index, Err(error.to_string()))),
                );
            }
        }
    }
    (health, answers)
}
