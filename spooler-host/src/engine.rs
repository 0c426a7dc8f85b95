//! The queue manager: it takes due messages from the store, runs preprocessing, routes each
//! recipient to a transport, records every answer, makes reports, runs outbound hooks and
//! finishes messages. One thread; every provider call runs on that provider's own worker,
//! and answers come back as events.
//!
//! At most `max_in_flight` messages are in memory, whatever the size of the queue. Every
//! status change is stored before the message is released: the updates of one pass through
//! the event loop are committed together (group commit), so a recorded delivery is never
//! made again, also after a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use provider_abi::abi_stable::std_types::{RSlice, RStr};
use provider_abi::hook::HookMessage;
use provider_abi::store::{INBOX, OUTBOX, SENT_ITEMS};
use provider_abi::{
    Address, DeliveryState, Direction, HookAction, MessageId, Notice, Preprocessed, ProviderError,
    ProviderState, Recipient, RecipientKind, RecipientOutcome, StoredMessage, Timestamp,
};

use crate::host_services::ProviderNotice;
use crate::inbound::InboundCommand;
use crate::outage::Outage;
use crate::policy::{Jitter, RetryPolicy};
use crate::registry::Registry;
use crate::reports::{self, ReportKind};
use crate::status::StatusTable;
use crate::store_thread::{Commit, StoreClient};
use crate::watchers::{MailEvent, Watchers};
use crate::worker::Health;

/// The answer to an operator's command about one message.
pub type Reply = Sender<Result<(), String>>;

/// What clients and the host ask of the queue manager.
#[derive(Clone)]
pub enum Command {
    /// New mail was submitted: look at the queue now.
    Wake,
    /// Try every pending recipient now (of one transport, if named).
    Flush(Option<String>),
    /// Keep a queued message from being sent until it is released.
    Hold(MessageId, Reply),
    /// Let a held message go, now.
    Release(MessageId, Reply),
    /// Delete a message (from any folder) for good.
    Delete(MessageId, Reply),
    /// Route new work through this table from now on (the profile was reloaded).
    Registry(Arc<Registry>),
    /// Take no new work, let the passes under way finish (or put them back), store
    /// everything, then answer and stop.
    Shutdown(Sender<()>),
}

/// How long a shutdown waits for passes under way before putting them back in the queue.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A transport's answer about one recipient, or why there is none.
type Answer = Result<RecipientOutcome, String>;

/// Answers coming back from provider workers.
enum Event {
    Submitted {
        id: MessageId,
        transport: usize,
        answers: Vec<(usize, Answer)>,
    },
    Preprocessed {
        id: MessageId,
        result: Result<Preprocessed, ProviderError>,
    },
    Hooked {
        id: MessageId,
        result: Result<HookAction, ProviderError>,
    },
}

/// Where a message in memory stands.
enum Stage {
    /// Waiting for the preprocessor at this position of its list.
    Preprocessing { chain: Vec<usize>, position: usize },
    /// Waiting for this many transport jobs.
    Delivering { outstanding: usize },
    /// Waiting for the outbound hook at this position; the message goes to `folder`
    /// (deleted if `None`).
    Hooks {
        position: usize,
        folder: Option<String>,
    },
    /// Its updates are in the pending commit; it leaves memory when that is stored.
    Done,
}

/// A message the queue manager holds: locked in the store, being worked on.
struct Flight {
    /// The routing table it started with; a reload (SIGHUP) affects only later messages.
    registry: Arc<Registry>,
    /// The message as providers see it (content and envelope), shared with their workers.
    message: Arc<StoredMessage>,
    /// The working copy of the envelope, with the statuses of this pass.
    envelope: provider_abi::Envelope,
    stage: Stage,
    /// For recipients a transport answered `NotMine`: where in the claimant list to go on.
    next_claimant: HashMap<usize, usize>,
}

/// The queue manager's inputs, for [`QueueManager::start`].
pub struct Setup {
    /// The store thread.
    pub store: StoreClient,
    /// Transports, preprocessors and hooks.
    pub registry: Arc<Registry>,
    /// The status table.
    pub status: StatusTable,
    /// The retry policy.
    pub policy: RetryPolicy,
    /// How many messages it holds in memory at most.
    pub max_in_flight: usize,
    /// Notices from providers.
    pub notices: Receiver<ProviderNotice>,
    /// The name reports give as the reporting system.
    pub hostname: String,
    /// Where "new mail waiting" notices go.
    pub inbound: Sender<InboundCommand>,
    /// The clients watching for new mail and reports.
    pub watchers: Watchers,
}

/// The queue manager thread.
pub struct QueueManager {
    store: StoreClient,
    registry: Arc<Registry>,
    status: StatusTable,
    policy: RetryPolicy,
    max_in_flight: usize,
    hostname: String,
    events: (Sender<Event>, Receiver<Event>),
    commands: Receiver<Command>,
    notices: Receiver<ProviderNotice>,
    flights: HashMap<MessageId, Flight>,
    pending: Commit,
    /// Log lines that become true once the pending commit is stored.
    pending_log: Vec<String>,
    look_at_queue: bool,
    next_due: Option<Timestamp>,
    /// When to check in with the store next (to keep leases on a shared store).
    next_check_in: Timestamp,
    jitter: Jitter,
    inbound: Sender<InboundCommand>,
    watchers: Watchers,
    /// Set by a shutdown: who to tell when done, and until when to wait for passes.
    draining: Option<(Sender<()>, std::time::Instant)>,
    /// Whether the store is failing, logged once.
    outage: Outage,
}

/// How long the queue manager sleeps at most, so a clock jump cannot stall it.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long it waits before trying a failed store call again.
const STORE_RETRY: Duration = Duration::from_secs(1);

impl QueueManager {
    /// Starts the queue manager thread; commands reach it through the returned sender.
    pub fn start(setup: Setup) -> (Sender<Command>, std::thread::JoinHandle<()>) {
        let (commands_tx, commands) = bounded(1024);
        // Room for an answer from every worker for every message in memory, so a worker
        // never waits on the queue manager while it waits on the worker.
        let workers = setup.registry.transports.len()
            + setup.registry.preprocessors.len()
            + setup.registry.hooks.len();
        let events = bounded(setup.max_in_flight * (workers + 1) + 64);
        let manager = QueueManager {
            store: setup.store,
            registry: setup.registry,
            status: setup.status,
            policy: setup.policy,
            max_in_flight: setup.max_in_flight,
            hostname: setup.hostname,
            events,
            commands,
            notices: setup.notices,
            flights: HashMap::new(),
            pending: Commit::default(),
            pending_log: Vec::new(),
            look_at_queue: true,
            next_due: None,
            next_check_in: Timestamp::now(),
            jitter: Jitter::new(),
            inbound: setup.inbound,
            watchers: setup.watchers,
            draining: None,
            outage: Outage::default(),
        };
        let thread = std::thread::Builder::new()
            .name("queue manager".into())
            .spawn(move || manager.run())
            .expect("the system can start a thread");
        (commands_tx, thread)
    }

    fn run(mut self) {
        loop {
            let sleep = self.sleep_time();
            let events = self.events.1.clone();
            select! {
                recv(events) -> event => if let Ok(event) = event { self.handle(event) },
                recv(self.commands) -> command => match command {
                    Ok(command) => self.command(command),
                    Err(_) => return,
                },
                recv(self.notices) -> notice => if let Ok(notice) = notice { self.notice(notice) },
                default(sleep) => {}
            }
            // Take whatever else is already waiting, so one commit covers it all.
            while let Ok(event) = self.events.1.try_recv() {
                self.handle(event);
            }
            if !self.commit_pending() {
                std::thread::sleep(STORE_RETRY);
                continue;
            }
            if self.next_check_in <= Timestamp::now() {
                self.check_in();
            }
            if let Some((_, deadline)) = &self.draining {
                if self.flights.is_empty() || std::time::Instant::now() >= *deadline {
                    self.stop();
                    return;
                }
                continue;
            }
            let due = self.next_due.is_some_and(|due| due <= Timestamp::now());
            if (self.look_at_queue || due) && self.flights.len() < self.max_in_flight {
                self.fill();
                self.commit_pending();
            }
        }
    }

    /// The end of a shutdown: passes still under way go back to the queue as they stand.
    fn stop(&mut self) {
        for (id, flight) in self.flights.drain() {
            log::warn!("{id}: still being worked on at shutdown; put back in the queue");
            self.pending.update_envelopes.push(flight.envelope);
            self.pending.unlock.push(id);
        }
        while !self.commit_pending() {
            std::thread::sleep(STORE_RETRY);
        }
        if let Some((done, _)) = self.draining.take() {
            done.send(()).ok();
        }
        log::info!("queue manager stopped; everything is stored");
    }

    fn sleep_time(&self) -> Duration {
        if self.draining.is_some() {
            return Duration::from_millis(100);
        }
        // A commit the store refused waits only until the next try.
        if !self.pending.is_empty() {
            return STORE_RETRY;
        }
        if self.look_at_queue && self.flights.len() < self.max_in_flight {
            return Duration::ZERO;
        }
        let now = Timestamp::now();
        let until_check_in = self.next_check_in.since(now);
        match self.next_due {
            Some(due) if self.flights.len() < self.max_in_flight => due.since(now),
            _ => MAX_SLEEP,
        }
        .min(MAX_SLEEP)
        .min(until_check_in)
    }

    /// Checks in with the store: on a store shared by several hosts this renews the leases,
    /// stops work on messages this host no longer holds, and tells watching clients about
    /// mail other hosts delivered.
    fn check_in(&mut self) {
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

    fn command(&mut self, command: Command) {
        match command {
            Command::Wake => self.look_at_queue = true,
            Command::Flush(transport) => self.flush(transport.as_deref()),
            Command::Hold(id, reply) => {
                reply.send(self.hold(id, true)).ok();
            }
            Command::Release(id, reply) => {
                self.look_at_queue = true;
                reply.send(self.hold(id, false)).ok();
            }
            Command::Delete(id, reply) => {
                reply.send(self.delete(id)).ok();
            }
            Command::Registry(registry) => {
                log::info!("routing through the reloaded profile from now on");
                self.registry = registry;
                self.look_at_queue = true;
            }
            Command::Shutdown(done) => {
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
    fn hold(&mut self, id: MessageId, hold: bool) -> Result<(), String> {
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
        self.refresh_next_due();
        Ok(())
    }

    /// Deletes a message that no pass on this host is working on. On a shared store, the
    /// host that works on it stops at its next check-in.
    fn delete(&mut self, id: MessageId) -> Result<(), String> {
        self.not_in_flight(id)?;
        if !self.store.delete(id).map_err(|e| e.to_string())? {
            return Err(format!("there is no message {id}"));
        }
        log::info!("{id}: deleted by an operator");
        Ok(())
    }

    /// An operator's change waits while a pass on this host works on the message: the pass
    /// would store its own view of the envelope over it.
    fn not_in_flight(&self, id: MessageId) -> Result<(), String> {
        if self.flights.contains_key(&id) {
            return Err(format!(
                "message {id} is being delivered right now; try again in a moment"
            ));
        }
        Ok(())
    }

    fn notice(&mut self, notice: ProviderNotice) {
        match notice.notice {
            Notice::BackOnline => {
                log::info!(
                    "{}: back online; sending its waiting mail now",
                    notice.instance
                );
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
    /// answers of its pass.
    fn flush(&mut self, transport: Option<&str>) {
        if !self.commit_pending() {
            log::error!("flush: not done, the store is failing; flush again once it is back");
        } else {
            match self
                .store
                .flush(transport.map(str::to_owned), Timestamp::now())
            {
                Ok(count) => log::info!("flush: {count} waiting recipient(s) are due now"),
                Err(error) => log::error!("flush: cannot make the queue due: {error}"),
            }
        }
        self.look_at_queue = true;
    }

    /// Stores the pending commit. False if the store failed; the commit stays pending.
    fn commit_pending(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let mut commit = std::mem::take(&mut self.pending);
        keep_last_update_per_message(&mut commit.update_envelopes);
        match self.store.commit(commit.clone()) {
            Ok(receipt) => {
                self.outage.over();
                for line in self.pending_log.drain(..) {
                    log::info!("{line}");
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

    fn refresh_next_due(&mut self) {
        match self.store.next_due() {
            Ok(due) => self.next_due = due,
            Err(error) => {
                self.outage.failed("reading the queue", &error);
                self.next_due = Some(Timestamp::now().plus(STORE_RETRY));
            }
        }
    }

    /// Takes due messages from the store, up to the in-memory limit.
    fn fill(&mut self) {
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

    fn take_off(&mut self, message: StoredMessage) {
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
            self.registry.preprocessors_for(&envelope.recipients)
        };
        let flight = Flight {
            registry: Arc::clone(&self.registry),
            message: Arc::new(message),
            envelope,
            stage: Stage::Delivering { outstanding: 0 },
            next_claimant: HashMap::new(),
        };
        self.flights.insert(id, flight);
        if chain.is_empty() {
            self.after_preprocessing(id);
        } else {
            self.preprocess(id, chain, 0);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submitted {
                id,
                transport,
                answers,
            } => self.submitted(id, transport, answers),
            Event::Preprocessed { id, result } => self.preprocessed(id, result),
            Event::Hooked { id, result } => self.hooked(id, result),
        }
    }

    // Preprocessing.

    fn preprocess(&mut self, id: MessageId, chain: Vec<usize>, position: usize) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let preprocessor = &flight.registry.preprocessors[chain[position]];
        let name = preprocessor.name.clone();
        flight.stage = Stage::Preprocessing { chain, position };
        let message = Arc::clone(&flight.message);
        let events = self.events.0.clone();
        let queued = preprocessor.worker.as_ref().map(|worker| {
            worker.ask(
                move |slot| {
                    let result = slot.map_err(Clone::clone).and_then(|preprocessor| {
                        preprocessor
                            .process(message.as_ref().as_ref())
                            .into_result()
                            .and_then(|verdict| {
                                verdict.as_enum().cloned().map_err(|_| {
                                    ProviderError::temporary(
                                        "it answered with a verdict this host does not know",
                                    )
                                })
                            })
                    });
                    (Health::of(&result), result)
                },
                move |result| {
                    let result = result.and_then(|result| result);
                    events.send(Event::Preprocessed { id, result }).ok();
                },
            )
        });
        if !matches!(queued, Some(Ok(()))) {
            let error = ProviderError::temporary(format!("preprocessor {name} is not running"));
            self.preprocessed(id, Err(error));
        }
    }

    fn preprocessed(&mut self, id: MessageId, result: Result<Preprocessed, ProviderError>) {
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
        let name = flight.registry.preprocessors[chain[position]].name.clone();
        match result {
            Ok(Preprocessed::Accept(changes)) => {
                let envelope = &mut flight.envelope;
                envelope.recipients.retain(|r| {
                    r.status.is_final() || !changes.remove_recipients.contains(&r.address)
                });
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
                    for recipient in envelope
                        .recipients
                        .iter_mut()
                        .filter(|r| r.address == undeliverable.address && !r.status.is_final())
                    {
                        finish_recipient(
                            recipient,
                            DeliveryState::Failed,
                            &name,
                            "5.1.0",
                            "",
                            &undeliverable.reason,
                        );
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
                if let Some(content) = content {
                    self.pending.replace_content.push((id, content));
                }
            }
            Ok(Preprocessed::Reject { reason }) => {
                for recipient in flight
                    .envelope
                    .recipients
                    .iter_mut()
                    .filter(|r| !r.status.is_final())
                {
                    finish_recipient(
                        recipient,
                        DeliveryState::Failed,
                        &name,
                        "5.7.1",
                        "",
                        &format!("rejected by {name}: {reason}"),
                    );
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
    fn store_preprocessed(&mut self, id: MessageId) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        flight.envelope.preprocessed = true;
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
    fn defer_message(&mut self, id: MessageId, reason: &str) {
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

    // Routing and delivery.

    fn after_preprocessing(&mut self, id: MessageId) {
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
    fn route(&mut self, id: MessageId, indices: Vec<usize>) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let registry = Arc::clone(&flight.registry);
        let expiry = self.policy.expiry(&flight.envelope);
        let mut jobs: HashMap<usize, Vec<usize>> = HashMap::new();
        for index in indices {
            let recipient = &mut flight.envelope.recipients[index];
            let claimants = registry.claimants(recipient.address.address_type());
            let position = flight.next_claimant.get(&index).copied().unwrap_or(0);
            match claimants.get(position) {
                Some(&transport) => {
                    let name = &registry.transports[transport].name;
                    // Only an offline (or missing) transport parks its recipients; a faulted
                    // one still gets the job, so its worker can reopen it.
                    if registry.transports[transport].worker.is_none()
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
                None if position == 0 && !registry.missing_transports().is_empty() => {
                    let missing = registry.missing_transports().join(", ");
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
            let instance = &registry.transports[transport];
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

    fn submitted(&mut self, id: MessageId, transport: usize, answers: Vec<(usize, Answer)>) {
        let now = Timestamp::now();
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let name = flight.registry.transports[transport].name.clone();
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

    // Reports, hooks and the end of a pass.

    /// The pass over a message is over: report, then finish it or put it back in the queue.
    fn conclude(&mut self, id: MessageId) {
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
            self.pending_log.push(format!(
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
            ));
        }
        if !envelope.is_report {
            let content = flight.message.content.as_slice();
            let mut reports = Vec::new();
            for (kind, wanted, state) in [
                (
                    ReportKind::Failed,
                    envelope.reports.non_delivery,
                    DeliveryState::Failed,
                ),
                (
                    ReportKind::Delivered,
                    envelope.reports.delivery,
                    DeliveryState::Delivered,
                ),
            ] {
                let about: Vec<&Recipient> = envelope
                    .recipients
                    .iter()
                    .filter(|r| r.status.state == state && !r.status.reported)
                    .collect();
                if wanted && !about.is_empty() {
                    reports.push(reports::build(
                        kind,
                        envelope,
                        content,
                        &about,
                        &self.hostname,
                        now,
                    ));
                }
            }
            let warn: Vec<&Recipient> = envelope
                .recipients
                .iter()
                .filter(|r| delayed_long && !r.status.is_final() && !r.status.delay_warned)
                .collect();
            if !warn.is_empty() {
                reports.push(reports::build(
                    ReportKind::Delayed,
                    envelope,
                    content,
                    &warn,
                    &self.hostname,
                    now,
                ));
            }
            for (report, content) in reports {
                self.pending_log.push(format!(
                    "{id}: report for {} placed in {INBOX}",
                    envelope.sender
                ));
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
            self.pending.update_envelopes.push(envelope.clone());
            self.pending.unlock.push(id);
            flight.stage = Stage::Done;
        }
    }

    fn run_hook(&mut self, id: MessageId, position: usize, folder: Option<String>) {
        let Some(flight) = self.flights.get_mut(&id) else {
            return;
        };
        let registry = Arc::clone(&flight.registry);
        let Some(hook) = registry.hooks.get(position) else {
            let folder = if flight.envelope.delete_after_submission {
                None
            } else {
                folder
            };
            self.pending_log.push(format!(
                "{id}: finished; {}",
                folder
                    .as_deref()
                    .map_or("deleted".to_owned(), |f| format!("moved to {f}"))
            ));
            self.pending.update_envelopes.push(flight.envelope.clone());
            self.pending.finish.push((id, folder));
            flight.stage = Stage::Done;
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
            worker.ask(
                move |slot| {
                    let result = slot.map_err(Clone::clone).and_then(|hook| {
                        let view = HookMessage {
                            direction: Direction::Outbound,
                            folder: RStr::from_str(&message.folder),
                            message: message.as_ref().as_ref(),
                        };
                        hook.run(view).into_result().and_then(|action| {
                            action.as_enum().cloned().map_err(|_| {
                                ProviderError::temporary(
                                    "it answered with an action this host does not know",
                                )
                            })
                        })
                    });
                    (Health::of(&result), result)
                },
                move |result| {
                    let result = result.and_then(|result| result);
                    events.send(Event::Hooked { id, result }).ok();
                },
            )
        });
        if !matches!(queued, Some(Ok(()))) {
            self.hooked(
                id,
                Err(ProviderError::temporary(format!(
                    "hook {name} is not running"
                ))),
            );
        }
    }

    fn hooked(&mut self, id: MessageId, result: Result<HookAction, ProviderError>) {
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
        let name = flight.registry.hooks[position].name.clone();
        let next = match result {
            Ok(HookAction::Leave) => Some(folder),
            Ok(HookAction::MoveTo { folder }) => Some(Some(folder.into_string())),
            Ok(HookAction::Delete) => {
                self.pending_log
                    .push(format!("{id}: deleted by hook {name}"));
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

    fn finish_now(&mut self, id: MessageId, folder: Option<String>) {
        // Past the last hook: finish.
        self.run_hook(id, usize::MAX, folder);
    }
}

/// Drops all but the newest envelope of each message: one pass may update a message several
/// times before its commit, and only the last state needs storing.
fn keep_last_update_per_message(updates: &mut Vec<provider_abi::Envelope>) {
    let mut seen = std::collections::HashSet::new();
    let mut newest_first: Vec<_> = updates
        .drain(..)
        .rev()
        .filter(|e| seen.insert(e.id))
        .collect();
    newest_first.reverse();
    *updates = newest_first;
}

/// Calls the transport once per recipient group; its answers, per recipient index.
fn submit_calls(
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

/// Records a final answer.
fn finish_recipient(
    recipient: &mut Recipient,
    state: DeliveryState,
    transport: &str,
    status_code: &str,
    diagnostic: &str,
    text: &str,
) {
    let status = &mut recipient.status;
    status.state = state;
    if !transport.is_empty() {
        status.transport = Some(transport.into()).into();
        status.attempts += 1;
    }
    status.next_attempt = None.into();
    status.status_code = status_code.into();
    status.diagnostic = diagnostic.into();
    status.last_answer = text.into();
}

/// Records a deferral, scheduling the next attempt by the policy, never past expiry.
#[allow(clippy::too_many_arguments)]
fn defer(
    recipient: &mut Recipient,
    transport: &str,
    reason: &str,
    retry_after: Option<Duration>,
    now: Timestamp,
    expiry: Timestamp,
    policy: &RetryPolicy,
    jitter: &mut Jitter,
) {
    let status = &mut recipient.status;
    status.attempts += 1;
    status.transport = Some(transport.into()).into();
    let delay = policy.delay(status.attempts, retry_after, jitter.unit());
    status.next_attempt = Some(now.plus(delay).min(expiry)).into();
    status.last_answer = format!("deferred by {transport}: {reason}").into();
}

/// Parks a recipient whose transport is offline: it waits for the transport's "back online"
/// notice (which flushes it), or at the latest the maximum delay.
fn wait_for(
    recipient: &mut Recipient,
    transport: &str,
    status: &StatusTable,
    now: Timestamp,
    expiry: Timestamp,
    max_delay: Duration,
) {
    let why = status
        .rows()
        .into_iter()
        .find(|row| row.name == transport)
        .map(|row| row.text)
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "not running".into());
    recipient.status.transport = Some(transport.into()).into();
    recipient.status.next_attempt = Some(now.plus(max_delay).min(expiry)).into();
    recipient.status.last_answer =
        format!("waiting: transport {transport} is offline ({why})").into();
}

/// `5d`, `3h`, `10m` or `30s`.
fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if duration.subsec_millis() == 0 => format!("{s}s"),
        _ => format!("{}ms", duration.as_millis()),
    }
}
