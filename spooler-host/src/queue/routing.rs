//! Routing and delivery, Postfix's qmgr handing recipients to delivery agents: each due
//! recipient goes to the first transport that claims its address type (the next one after a
//! `NotMine`), in one call per transport (one per Bcc recipient), and every answer is
//! recorded: delivered, failed, deferred by the retry policy, or parked while the transport
//! is offline. Expired recipients fail here. Transports are called only through their
//! workers; answers come back as [`Event::TransportAnswered`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use provider_abi::abi_stable::std_types::RSlice;
use provider_abi::{
    Address, DeliveryState, Envelope, MessageId, ProviderError, ProviderState, Recipient,
    RecipientKind, RecipientOutcome, StoredMessage, Timestamp,
};

use super::board::Trouble;
use super::destinations::{destination_of, Admission, Backoff, Job, Key, Reach};
use super::recipient::{defer, describe, finish_recipient, wait_for, FinalAnswer, RecipientIndex};
use super::{Answer, Event, QueueManager, Stage};
use crate::base::bounce::BounceClass;
use crate::base::mail::utc_time;
use crate::config::destinations::DestinationPolicy;
use crate::observe::events::{EventKind, Happening};
use crate::observe::metrics::{metrics, ByTransport};
use crate::providers::routing_table::TransportIndex;
use crate::providers::worker::Health;

/// The recipients one transport gets from one routing pass, in calls: To and Cc recipients
/// together, each Bcc recipient in a call of its own.
pub(super) type Calls = Vec<Call>;

/// The recipients of one call of a transport.
type Call = Vec<(RecipientIndex, Address)>;

impl QueueManager {
    /// Routes the message's due recipients once preprocessing is over; those past the
    /// message's expiry fail first.
    pub(super) fn after_preprocessing(&mut self, id: MessageId) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        flight.stage = Stage::Delivering { outstanding: 0 };
        let now = Timestamp::now();
        let expired = now >= self.policy.expiry(&flight.envelope);
        let mut due = Vec::new();
        for (index, recipient) in flight.envelope.recipients.iter_mut().enumerate() {
            let status = &recipient.status;
            if status.is_final() || status.next_attempt.into_option().is_some_and(|t| t > now) {
                continue;
            }
            if expired {
                expire(recipient, self.policy.max_lifetime);
            } else {
                due.push(RecipientIndex(index));
            }
        }
        self.route(id, due);
    }

    /// Sends recipients `indices` to the transports that claim them: each to the first
    /// claimant in routing order (the next one after a `NotMine`), in one job per transport
    /// and destination; a job whose destination is busy waits for it, one whose destination
    /// is backing off is deferred at once.
    pub(super) fn route(&mut self, id: MessageId, indices: Vec<RecipientIndex>) {
        let jobs = self.assign(id, indices);
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let Stage::Delivering { outstanding } = &mut flight.stage else {
            return;
        };
        let mut split = Vec::new();
        for (transport, indices) in jobs {
            let instance = flight.routes.transport(transport);
            let calls = calls_for(&flight.envelope, indices);
            if instance.per_domain {
                for (destination, calls) in by_destination(&instance.name, calls) {
                    split.push((transport, destination, calls));
                }
            } else {
                split.push((transport, None, calls));
            }
        }
        *outstanding += split.len();
        let mut unqueued = Vec::new();
        for (transport, destination, calls) in split {
            let job = Job {
                id,
                transport,
                calls,
            };
            let admitted = match &destination {
                Some(key) => self.destinations.admit(key, job, now),
                None => Admission::Start(job),
            };
            match admitted {
                Admission::Start(job) => {
                    if let Err(answers) = self.dispatch(job, destination.clone()) {
                        unqueued.push((transport, answers, destination));
                    }
                }
                Admission::Wait => {}
                Admission::BackingOff(job, backoff) => {
                    unqueued.push((transport, backing_off(&job, &backoff, now), None));
                }
                Admission::Full(job, back) => self.return_to_queue(job, destination, back),
            }
        }
        let nothing_outstanding = matches!(
            self.flights.get(&id).map(|f| &f.stage),
            Some(Stage::Delivering { outstanding: 0 })
        );
        for (transport, answers, destination) in unqueued {
            self.job_answered(id, transport, answers, destination);
        }
        if nothing_outstanding {
            self.conclude(id);
        }
    }

    /// A job's answers: recorded, and its destination told how it went, which may let
    /// waiting jobs go (or defer them, when it backs off now).
    pub(super) fn job_answered(
        &mut self,
        id: MessageId,
        transport: TransportIndex,
        answers: Vec<(RecipientIndex, Answer)>,
        destination: Option<Key>,
    ) {
        let verdict = verdict_of(&answers);
        let indices: Vec<RecipientIndex> = answers.iter().map(|(i, _)| *i).collect();
        // Counted per destination only: a transport without them is not shown by domain.
        let troubles: Vec<Trouble> = match destination {
            Some(_) => answers.iter().filter_map(|(_, a)| trouble_of(a)).collect(),
            None => Vec::new(),
        };
        self.transport_answered(id, transport, answers);
        let Some(key) = destination else {
            return;
        };
        let now = Timestamp::now();
        self.destinations.count(&key, troubles, now);
        let reach = match verdict {
            Verdict::Reached => Reach::Reached,
            Verdict::Unknown => Reach::Unknown,
            Verdict::Unreached(reason) => {
                // Until the retry time the deferral just set (the policy's, with jitter).
                let until = self
                    .flights
                    .get(&id)
                    .and_then(|flight| {
                        let statuses = indices
                            .iter()
                            .map(|i| &flight.envelope.recipients[i.0].status);
                        statuses.filter_map(|s| s.next_attempt.into_option()).min()
                    })
                    .unwrap_or_else(|| now.plus(self.policy.min_delay));
                log::info!(
                    "{}: destination {} backs off until {}: {reason}",
                    key.transport,
                    key.domain,
                    utc_time(until)
                );
                Reach::Unreached(Backoff { until, reason })
            }
        };
        let released = self.destinations.finished(&key, reach, now);
        for (job, backoff) in released.backing_off {
            let answers = backing_off(&job, &backoff, now);
            self.job_answered(job.id, job.transport, answers, None);
        }
        let start = released.start.into_iter().map(|job| (key.clone(), job));
        self.start_waiting(start.collect());
    }

    /// Puts back in the queue, until `back`, the recipients of a job whose destination has
    /// enough waiting already: no attempt is counted, and the message's place in memory goes
    /// to mail for other destinations. A recipient keeps its last answer if it has one (a
    /// report then still shows the server's words); the pass's conclusion stores it all.
    fn return_to_queue(&mut self, job: Job, destination: Option<Key>, back: Timestamp) {
        let Some(flight) = self.flights.get_mut(&job.id) else {
            return;
        };
        let expiry = self.policy.expiry(&flight.envelope);
        let name = flight.routes.transport(job.transport).name.clone();
        let domain = destination.map(|key| key.domain).unwrap_or_default();
        let text = format!(
            "waiting: {name} has as many deliveries to {domain} lined up as it may make at once; in the queue until {}",
            utc_time(back)
        );
        for (index, _) in job.calls.iter().flatten() {
            let status = &mut flight.envelope.recipients[index.0].status;
            status.transport = Some(name.as_str().into()).into();
            status.next_attempt = Some(back.min(expiry)).into();
            if status.last_answer.is_empty() {
                status.last_answer = text.as_str().into();
            }
        }
        if let Stage::Delivering { outstanding } = &mut flight.stage {
            *outstanding -= 1;
        }
    }

    /// Starts the jobs their destination's rate held back, now that their time has come.
    pub(super) fn start_due_jobs(&mut self) {
        let due = self.destinations.due(Timestamp::now());
        self.start_waiting(due);
    }

    /// Paces the destinations by a reloaded profile's `[destinations]`, starting the jobs a
    /// higher limit lets go.
    pub(super) fn new_destination_policy(&mut self, policy: DestinationPolicy) {
        let started = self.destinations.set_policy(policy, Timestamp::now());
        self.start_waiting(started);
    }

    /// Sends jobs that waited for their destination to their transports.
    fn start_waiting(&mut self, jobs: Vec<(Key, Job)>) {
        for (key, job) in jobs {
            let (id, transport) = (job.id, job.transport);
            if !self.flights.contains_key(&id) {
                // Deleted while it waited: its place goes to the next one.
                self.job_answered(id, transport, Vec::new(), Some(key));
            } else if let Err(answers) = self.dispatch(job, Some(key.clone())) {
                self.job_answered(id, transport, answers, Some(key));
            }
        }
    }

    /// Which transport gets each recipient. A recipient whose transport is offline (or not
    /// running) waits for it; one no transport claims fails, or waits while a transport
    /// that might claim it could not be started.
    fn assign(
        &mut self,
        id: MessageId,
        indices: Vec<RecipientIndex>,
    ) -> HashMap<TransportIndex, Vec<RecipientIndex>> {
        let mut jobs: HashMap<TransportIndex, Vec<RecipientIndex>> = HashMap::new();
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return jobs;
        };
        let routes = Arc::clone(&flight.routes);
        let expiry = self.policy.expiry(&flight.envelope);
        for index in indices {
            let recipient = &mut flight.envelope.recipients[index.0];
            let address_type = recipient.address.address_type().to_owned();
            let position = flight.next_claimant.get(&index).copied().unwrap_or(0);
            match routes.claimants(&address_type).get(position) {
                Some(&transport) => {
                    let instance = routes.transport(transport);
                    // Only an offline (or missing) transport parks its recipients; a faulted
                    // one still gets the job, so its worker can reopen it.
                    if instance.worker.is_none()
                        || self.status.state(&instance.name) == ProviderState::Offline
                    {
                        let max_delay = self.policy.max_delay;
                        wait_for(
                            recipient,
                            &instance.name,
                            &self.status,
                            now,
                            expiry,
                            max_delay,
                        );
                    } else {
                        jobs.entry(transport).or_default().push(index);
                    }
                }
                None if position == 0 && !routes.missing_transports().is_empty() => {
                    let missing = routes.missing_transports().join(", ");
                    recipient.status.next_attempt =
                        Some(now.plus(self.policy.max_delay).min(expiry)).into();
                    recipient.status.last_answer = format!(
                        "no running transport claims address type {address_type}; waiting for \
                         {missing}, which could not be started"
                    )
                    .into();
                }
                None => {
                    let text = if position == 0 {
                        format!("no transport claims address type {address_type}")
                    } else {
                        format!(
                            "every transport claiming address type {address_type} answered \
                             that {} is not theirs",
                            recipient.address
                        )
                    };
                    finish_recipient(recipient, FinalAnswer::failed(None, "5.4.4", &text));
                }
            }
        }
        jobs
    }

    /// Queues a job on its transport's worker; its answers come back as an event, with the
    /// destination it counts against. If the worker is gone, the answers it would have
    /// given instead.
    fn dispatch(
        &self,
        job: Job,
        destination: Option<Key>,
    ) -> Result<(), Vec<(RecipientIndex, Answer)>> {
        let Job {
            id,
            transport,
            calls,
        } = job;
        let Some(flight) = self.flights.get(&id) else {
            return Ok(());
        };
        let instance = flight.routes.transport(transport);
        let indices: Vec<RecipientIndex> = calls.iter().flatten().map(|(i, _)| *i).collect();
        let not_running = |reason: &str| -> Vec<(RecipientIndex, Answer)> {
            indices
                .iter()
                .map(|&i| (i, Err(reason.to_owned())))
                .collect()
        };
        let unqueued = not_running(&format!("transport {} is not running", instance.name));
        let Some(worker) = &instance.worker else {
            return Err(unqueued);
        };
        let message = Arc::clone(&flight.message);
        let events = self.events.0.clone();
        let abandoned_answers = indices.clone();
        let queued = worker.ask(
            Some(id),
            move |slot| submit_calls(slot, &message, calls),
            move |answers| {
                let answers = answers.unwrap_or_else(|abandoned| {
                    let reason = abandoned.to_string();
                    abandoned_answers
                        .iter()
                        .map(|&i| (i, Err(reason.clone())))
                        .collect()
                });
                let answered = Event::TransportAnswered {
                    id,
                    transport,
                    answers,
                    destination,
                };
                events.send(answered).ok();
            },
        );
        queued.map_err(|_| unqueued)
    }

    /// Records a transport's answers about the recipients it was given; those it answered
    /// `NotMine` go to the next transport claiming their type.
    pub(super) fn transport_answered(
        &mut self,
        id: MessageId,
        transport: TransportIndex,
        answers: Vec<(RecipientIndex, Answer)>,
    ) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let name = flight.routes.transport(transport).name.clone();
        let expiry = self.policy.expiry(&flight.envelope);
        let mut reroute = Vec::new();
        for (index, answer) in answers {
            let recipient = &mut flight.envelope.recipients[index.0];
            let deferred = match record(recipient, &name, answer) {
                Next::Done => false,
                Next::Reroute => {
                    *flight.next_claimant.entry(index).or_insert(0) += 1;
                    reroute.push(index);
                    false
                }
                Next::Defer {
                    reason,
                    retry_after,
                } => {
                    let (policy, jitter) = (&self.policy, &mut self.jitter);
                    defer(
                        recipient,
                        &name,
                        &reason,
                        retry_after,
                        now,
                        expiry,
                        policy,
                        jitter,
                    );
                    true
                }
                Next::CallFailed { reason } => {
                    log::warn!(
                        id:% = id,
                        transport = name.as_str(),
                        recipient:% = recipient.address,
                        outcome = "deferred";
                        "{id}: transport {name} failed for {}: {reason}",
                        recipient.address
                    );
                    let (policy, jitter) = (&self.policy, &mut self.jitter);
                    defer(recipient, &name, &reason, None, now, expiry, policy, jitter);
                    true
                }
            };
            // Final answers are counted when the pass concludes, deferrals here: a
            // recipient may be deferred on every pass.
            if deferred {
                metrics()
                    .deferred
                    .get_or_create(&ByTransport {
                        transport: name.clone(),
                    })
                    .inc();
                self.pending_events.push(
                    Happening::message(EventKind::Deferred, id)
                        .recipient(&recipient.address, Some(&name))
                        .detail(&recipient.status.last_answer),
                );
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

/// What becomes of a recipient after its transport's answer, beyond what [`record`] wrote.
enum Next {
    /// The answer was final and is recorded.
    Done,
    /// Not this transport's: offer it to the next one claiming its type.
    Reroute,
    /// Deferred by the transport (or with an outcome this host does not know).
    Defer {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The call failed (an error, a panic, a timeout): deferred, and worth a warning.
    CallFailed { reason: String },
}

/// Records a final answer on the recipient; says what else to do for the others.
fn record(recipient: &mut Recipient, transport: &str, answer: Answer) -> Next {
    let (state, status_code, diagnostic, text) = match answer {
        Ok(RecipientOutcome::Delivered { answer }) => {
            (DeliveryState::Delivered, "2.0.0".into(), "".into(), answer)
        }
        Ok(RecipientOutcome::Failed {
            status_code,
            diagnostic,
            text,
        }) => (DeliveryState::Failed, status_code, diagnostic, text),
        Ok(RecipientOutcome::NotMine) => return Next::Reroute,
        Ok(RecipientOutcome::Deferred {
            retry_after_secs,
            reason,
        }) => {
            return Next::Defer {
                reason: reason.into_string(),
                retry_after: retry_after_secs
                    .into_option()
                    .map(|s| Duration::from_secs(s.into())),
            }
        }
        Ok(_) => {
            return Next::Defer {
                reason: UNKNOWN_OUTCOME.to_owned(),
                retry_after: None,
            }
        }
        Err(reason) => return Next::CallFailed { reason },
    };
    let answer = FinalAnswer {
        state,
        by: Some(transport),
        status_code: &status_code,
        diagnostic: &diagnostic,
        text: &text,
    };
    finish_recipient(recipient, answer);
    Next::Done
}

/// What a transport is said to have answered when its outcome is of a kind this host does
/// not know (a newer provider's): the recipient is deferred, never taken as delivered.
const UNKNOWN_OUTCOME: &str = "it answered with an outcome this host does not know";

/// Fails a recipient past its message's expiry, keeping its last answer in the text.
fn expire(recipient: &mut Recipient, max_lifetime: Duration) {
    let last = recipient.status.last_answer.to_string();
    let transport = recipient
        .status
        .transport
        .as_ref()
        .into_option()
        .map(|t| t.to_string());
    let within = describe(max_lifetime);
    let text = if last.is_empty() {
        format!("expired: not delivered within {within}")
    } else {
        format!("expired: not delivered within {within} (last answer: {last})")
    };
    let diagnostic = recipient.status.diagnostic.to_string();
    let expired = FinalAnswer {
        state: DeliveryState::Failed,
        by: transport.as_deref(),
        status_code: "4.4.7",
        diagnostic: &diagnostic,
        text: &text,
    };
    finish_recipient(recipient, expired);
}

/// One transport's recipients in calls: To and Cc recipients in one call, first; each Bcc
/// recipient in a call of its own, so no transport ever puts a Bcc recipient next to others.
fn calls_for(envelope: &Envelope, indices: Vec<RecipientIndex>) -> Calls {
    let call = |index: RecipientIndex| (index, envelope.recipients[index.0].address.clone());
    let (bcc, open): (Vec<RecipientIndex>, Vec<RecipientIndex>) = indices
        .into_iter()
        .partition(|&i| envelope.recipients[i.0].kind == RecipientKind::Bcc);
    let open: Vec<_> = open.into_iter().map(call).collect();
    (!open.is_empty())
        .then_some(open)
        .into_iter()
        .chain(bcc.into_iter().map(|index| vec![call(index)]))
        .collect()
}

/// One transport's calls split by destination: each call's recipients grouped by their
/// domain (those without one together, with no destination), in the order they come. One
/// pass with a map, since a fan-out message has thousands of recipients in many domains.
fn by_destination(transport: &str, calls: Calls) -> Vec<(Option<Key>, Calls)> {
    let mut split: Vec<(Option<Key>, Calls)> = Vec::new();
    let mut position: HashMap<Option<Key>, usize> = HashMap::new();
    for call in calls {
        // The destinations this call has a part in so far, by their position in `split`.
        let mut parts = std::collections::HashSet::new();
        for (index, address) in call {
            let key = destination_of(transport, &address);
            let at = *position.entry(key.clone()).or_insert_with(|| {
                split.push((key, Vec::new()));
                split.len() - 1
            });
            let calls = &mut split[at].1;
            if parts.insert(at) {
                calls.push(Vec::new());
            }
            calls
                .last_mut()
                .expect("a part of this call")
                .push((index, address));
        }
    }
    split
}

/// How a job went for its destination, from its answers.
enum Verdict {
    /// Some recipient was delivered or failed for good: the destination answered.
    Reached,
    /// Every recipient was deferred because the destination could not be reached at all;
    /// the first reason.
    Unreached(String),
    Unknown,
}

fn verdict_of(answers: &[(RecipientIndex, Answer)]) -> Verdict {
    let reached = answers.iter().any(|(_, answer)| {
        matches!(
            answer,
            Ok(RecipientOutcome::Delivered { .. } | RecipientOutcome::Failed { .. })
        )
    });
    if reached {
        return Verdict::Reached;
    }
    let unreachable = |answer: &Answer| match answer {
        Ok(RecipientOutcome::Deferred { reason, .. }) => {
            BounceClass::of_text(reason) == BounceClass::ConnectionFailure
        }
        _ => false,
    };
    match answers.first() {
        Some((_, Ok(RecipientOutcome::Deferred { reason, .. })))
            if answers.iter().all(|(_, answer)| unreachable(answer)) =>
        {
            Verdict::Unreached(reason.to_string())
        }
        _ => Verdict::Unknown,
    }
}

/// What `status` counts of an answer: a deferral or a failure, with its class.
fn trouble_of(answer: &Answer) -> Option<Trouble> {
    match answer {
        Ok(RecipientOutcome::Deferred { reason, .. }) => {
            Some(Trouble::Deferred(BounceClass::of_text(reason)))
        }
        Ok(RecipientOutcome::Failed {
            status_code,
            diagnostic,
            text,
        }) => Some(Trouble::Failed(BounceClass::classify(
            Some(status_code.as_str()),
            &format!("{text} {diagnostic}"),
        ))),
        Err(error) => Some(Trouble::Deferred(BounceClass::of_text(error))),
        Ok(_) => None,
    }
}

/// The answers for a job whose destination is backing off: each recipient deferred until
/// the backoff ends, with its reason, and no call made.
fn backing_off(job: &Job, backoff: &Backoff, now: Timestamp) -> Vec<(RecipientIndex, Answer)> {
    let wait = u32::try_from(backoff.until.since(now).as_secs().max(1)).unwrap_or(u32::MAX);
    let reason = format!(
        "not tried: the destination is backing off until {} after: {}",
        utc_time(backoff.until),
        backoff.reason
    );
    job.calls
        .iter()
        .flatten()
        .map(|(index, _)| {
            (
                *index,
                Ok(RecipientOutcome::deferred(reason.clone(), Some(wait))),
            )
        })
        .collect()
}

/// Calls the transport once per recipient group; its answers, per recipient index.
pub(super) fn submit_calls(
    mut slot: Result<&mut provider_abi::transport::TransportObject, &ProviderError>,
    message: &StoredMessage,
    calls: Calls,
) -> (Health, Vec<(RecipientIndex, Answer)>) {
    let mut answers = Vec::new();
    let mut health = Health::Fine;
    // After a panic the transport is not called again; the rest get the panic as answer.
    let mut fault: Option<ProviderError> = None;
    for call in calls {
        let (indices, addresses): (Vec<RecipientIndex>, Vec<Address>) = call.into_iter().unzip();
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
                    let answer = outcome
                        .as_enum()
                        .cloned()
                        .map_err(|_| UNKNOWN_OUTCOME.to_owned());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_split_by_domain_keep_their_order_and_a_bcc_stays_alone() {
        let call = |addresses: &[&str]| -> Call {
            addresses
                .iter()
                .enumerate()
                .map(|(i, a)| (RecipientIndex(i), Address::parse(a).unwrap()))
                .collect()
        };
        let calls = vec![
            call(&[
                "SMTP:a@one.test",
                "SMTP:b@two.test",
                "SMTP:c@ONE.test",
                "LOCAL:d",
            ]),
            call(&["SMTP:e@one.test"]),
        ];
        let split = by_destination("internet", calls);
        let shown: Vec<(Option<String>, Vec<Vec<String>>)> = split
            .into_iter()
            .map(|(key, calls)| {
                let calls = calls
                    .into_iter()
                    .map(|c| c.into_iter().map(|(_, a)| a.to_string()).collect())
                    .collect();
                (key.map(|k| k.domain), calls)
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    Some("one.test".to_owned()),
                    vec![
                        vec!["SMTP:a@one.test".to_owned(), "SMTP:c@ONE.test".to_owned()],
                        vec!["SMTP:e@one.test".to_owned()],
                    ]
                ),
                (
                    Some("two.test".to_owned()),
                    vec![vec!["SMTP:b@two.test".to_owned()]]
                ),
                (None, vec![vec!["LOCAL:d".to_owned()]]),
            ]
        );
    }
}
