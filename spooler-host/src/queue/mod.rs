//! The queue manager, Postfix's qmgr with its bounce daemon: it owns the Outbox in flight.
//! It takes due messages from the store, runs preprocessing, routes each recipient to a
//! transport, records every answer, makes reports, runs outbound hooks and finishes
//! messages. One thread; every provider call runs on that provider's own worker. Jobs for
//! one destination (a transport and a recipient domain) are limited in number and back off
//! together (`destinations`).
//!
//! At most `max_in_flight` messages are in memory, whatever the size of the queue. Every
//! status change is stored before the message is released: the updates of one pass through
//! the event loop are committed together (group commit), so a recorded delivery is never
//! made again, also after a crash.
//!
//! # The loop and its state
//!
//! The thread waits on three inputs: [`QueueCommand`]s (from the front ends and the daemon),
//! `Event`s (provider workers' answers) and provider notices (back online, new mail). Each
//! turn it drains what is waiting, then commits the pending writes (`pending`, with the log
//! lines that become true with them), checks in with a shared store when due, and, if it
//! has room and the queue may hold due mail (`look_at_queue`, or `next_due` passed), takes
//! more. Each message in memory is a `Flight` whose `Stage` says what it waits for:
//! a preprocessor, transport jobs, an outbound hook, or the commit that releases it. A
//! shutdown (`draining`) stops taking mail, lets passes finish until a grace period, then
//! puts the rest back.
//!
//! Metrics are counted where an answer is recorded; delivery events, like the log lines,
//! are published once the commit that stores what they tell is done.
//!
//! May call: `base`, `observe`, `config`, `providers` (only through workers), `store` (only
//! through the store thread) and `inbound` (to have mail fetched). Nothing here knows a
//! front end.

pub mod board;
mod commands;
mod commit;
mod destinations;
mod finishing;
pub mod policy;
mod preprocessing;
mod recipient;
pub mod reports;
mod routing;
mod taking;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use provider_abi::{
    DeliveryState, HookAction, MessageId, Preprocessed, ProviderError, RecipientOutcome,
    StoredMessage, Timestamp,
};

use crate::config::destinations::DestinationPolicy;
use crate::inbound::InboundCommand;
use crate::observe::events::Happening;
use crate::providers::host_services::ProviderNotice;
use crate::providers::quarantine::Quarantine;
use crate::providers::routing_table::{RoutingTable, TransportIndex};
use crate::providers::status::StatusTable;
use crate::queue::policy::{Jitter, RetryPolicy};
use crate::store::outage::Outage;
use crate::store::thread::{Commit, StoreClient};
use crate::store::watchers::Watchers;
use board::DestinationBoard;
use destinations::Destinations;
use recipient::RecipientIndex;

/// The answer to an operator's command about one message.
pub type QueueReply = Sender<Result<(), String>>;

/// What clients and the host ask of the queue manager.
#[derive(Clone)]
pub enum QueueCommand {
    /// New mail was submitted: look at the queue now.
    Wake,
    /// Try every pending recipient now (of one transport, if named), and the destinations
    /// backing off too: an operator's flush.
    Flush(Option<String>),
    /// Try every pending recipient now, leaving the destinations backing off alone: after a
    /// reload, which must not retry every dead destination at once.
    Retry,
    /// Keep a queued message from being sent until it is released.
    Hold(MessageId, QueueReply),
    /// Let a held message go, now.
    Release(MessageId, QueueReply),
    /// Make a queued message's pending recipients due now; a held message stays held.
    FlushMessage(MessageId, QueueReply),
    /// Delete a message (from any folder) for good.
    Delete(MessageId, QueueReply),
    /// Route new work through this table from now on (the profile was reloaded).
    NewRoutes(Arc<RoutingTable>),
    /// Pace the destinations by this from now on (the profile was reloaded).
    NewDestinations(DestinationPolicy),
    /// Take no new work, let the passes under way finish (or put them back), store
    /// everything, then answer and stop.
    Shutdown(Sender<()>),
}

/// How long a shutdown waits for passes under way before putting them back in the queue.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A transport's answer about one recipient, or why there is none.
type Answer = Result<RecipientOutcome, String>;

/// Answers coming back from provider workers, each about a message in memory. An answer
/// for a stage the message is no longer in is stale and ignored.
enum Event {
    /// A transport answered about the recipients of one job (one per recipient).
    TransportAnswered {
        id: MessageId,
        transport: TransportIndex,
        answers: Vec<(RecipientIndex, Answer)>,
        /// The destination the job was counted against, if its recipients have one.
        destination: Option<destinations::Key>,
    },
    /// A preprocessor gave its verdict on the message.
    Preprocessed {
        id: MessageId,
        result: Result<Preprocessed, ProviderError>,
    },
    /// An outbound hook said what to do with the finished message.
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
    routes: Arc<RoutingTable>,
    /// The message as providers see it (content and envelope), shared with their workers.
    message: Arc<StoredMessage>,
    /// The working copy of the envelope, with the statuses of this pass.
    envelope: provider_abi::Envelope,
    stage: Stage,
    /// For recipients a transport answered `NotMine`: where in the claimant list to go on.
    next_claimant: HashMap<RecipientIndex, usize>,
}

/// The queue manager's inputs, for [`QueueManager::start`].
pub struct Setup {
    /// The store thread.
    pub store: StoreClient,
    /// Transports, preprocessors and hooks.
    pub routes: Arc<RoutingTable>,
    /// The status table.
    pub status: StatusTable,
    /// The retry policy.
    pub policy: RetryPolicy,
    /// How many deliveries to one destination run at once.
    pub destinations: DestinationPolicy,
    /// Where the destinations backing off and their trouble are shown.
    pub board: DestinationBoard,
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
    /// The messages suspected of crashing a provider, which are held instead of worked on.
    pub quarantine: Quarantine,
    /// Whether finished messages are filed in Sent Items; if not (`keep_sent = "0s"`), they
    /// are deleted.
    pub files_sent: bool,
}

/// The queue manager thread.
pub struct QueueManager {
    store: StoreClient,
    routes: Arc<RoutingTable>,
    status: StatusTable,
    policy: RetryPolicy,
    destinations: Destinations,
    max_in_flight: usize,
    hostname: String,
    events: (Sender<Event>, Receiver<Event>),
    commands: Receiver<QueueCommand>,
    notices: Receiver<ProviderNotice>,
    flights: HashMap<MessageId, Flight>,
    pending: Commit,
    /// Log lines that become true once the pending commit is stored.
    pending_log: Vec<PendingLine>,
    /// Delivery events that become true with it, published as the log lines are written.
    pending_events: Vec<Happening>,
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
    quarantine: Quarantine,
    files_sent: bool,
}

/// A log line that becomes true once the pending commit is stored: its text, the message it
/// is about, and for a recipient's final answer the fields a JSON log shows apart.
pub(super) struct PendingLine {
    id: MessageId,
    text: String,
    answer: Option<AnswerFields>,
}

/// A recipient's final answer, as a JSON log's `recipient`, `transport` and `outcome`.
struct AnswerFields {
    recipient: String,
    transport: Option<String>,
    outcome: &'static str,
}

impl PendingLine {
    /// A line about message `id`.
    fn about(id: MessageId, text: String) -> PendingLine {
        PendingLine {
            id,
            text,
            answer: None,
        }
    }

    /// A line about `recipient`'s final answer, of message `id`.
    fn answer(id: MessageId, recipient: &provider_abi::Recipient, text: String) -> PendingLine {
        let status = &recipient.status;
        let outcome = match status.state {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Pending => "pending",
        };
        let answer = AnswerFields {
            recipient: recipient.address.to_string(),
            transport: status
                .transport
                .as_ref()
                .into_option()
                .map(|t| t.to_string()),
            outcome,
        };
        PendingLine {
            id,
            text,
            answer: Some(answer),
        }
    }
}

/// How long the queue manager sleeps at most, so a clock jump cannot stall it.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long it waits before trying a failed store call again.
const STORE_RETRY: Duration = Duration::from_secs(1);

impl QueueManager {
    /// Starts the queue manager thread; commands reach it through the returned sender.
    pub fn start(setup: Setup) -> (Sender<QueueCommand>, std::thread::JoinHandle<()>) {
        let (commands_tx, commands) = bounded(1024);
        // Room for an answer from every worker for every message in memory, so a worker
        // never waits on the queue manager while it waits on the worker.
        let workers = setup.routes.transports.len()
            + setup.routes.preprocessors.len()
            + setup.routes.hooks.len();
        let events = bounded(setup.max_in_flight * (workers + 1) + 64);
        let outage = Outage::new(setup.store.name(), setup.status.clone());
        let manager = QueueManager {
            store: setup.store,
            routes: setup.routes,
            status: setup.status,
            policy: setup.policy,
            destinations: Destinations::new(setup.destinations, setup.board),
            max_in_flight: setup.max_in_flight,
            hostname: setup.hostname,
            events,
            commands,
            notices: setup.notices,
            flights: HashMap::new(),
            pending: Commit::default(),
            pending_log: Vec::new(),
            pending_events: Vec::new(),
            look_at_queue: true,
            next_due: None,
            next_check_in: Timestamp::now(),
            jitter: Jitter::new(),
            inbound: setup.inbound,
            watchers: setup.watchers,
            draining: None,
            outage,
            quarantine: setup.quarantine,
            files_sent: setup.files_sent,
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
            // Take whatever else is already waiting, so one commit covers it all and one
            // look at the queue answers every wake-up (each submission sends one).
            while let Ok(event) = self.events.1.try_recv() {
                self.handle(event);
            }
            while let Ok(command) = self.commands.try_recv() {
                self.command(command);
            }
            self.start_due_jobs();
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
        let until_rate = self
            .destinations
            .next_start()
            .map_or(MAX_SLEEP, |start| start.since(now));
        match self.next_due {
            Some(due) if self.flights.len() < self.max_in_flight => due.since(now),
            _ => MAX_SLEEP,
        }
        .min(MAX_SLEEP)
        .min(until_check_in)
        .min(until_rate)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::TransportAnswered {
                id,
                transport,
                answers,
                destination,
            } => self.job_answered(id, transport, answers, destination),
            Event::Preprocessed { id, result } => self.preprocessed(id, result),
            Event::Hooked { id, result } => self.hooked(id, result),
        }
    }
}
