//! The inbound manager: it fetches mail that transports bring in, runs the inbound hooks
//! (postprocessing), has the store commit each message, tells watching clients, and only
//! then acknowledges the message to its transport, which may then delete it at the source.
//! A crash between the commit and the acknowledgement delivers a message twice, never zero
//! times.
//!
//! A transport is fetched when it says it has new mail (a notice), at its poll interval,
//! and on `flush`.
//!
//! May call: `base`, `observe`, `config`, `providers` (only through workers) and `store`.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use provider_abi::abi_stable::std_types::RStr;
use provider_abi::headers::mailboxes;
use provider_abi::store::INBOX;
use provider_abi::{
    Address, DeliveryState, Direction, Envelope, HookAction, InboundMessage, MessageRef, Recipient,
    RecipientKind,
};

use crate::observe::metrics::{metrics, ByTransport};
use crate::providers::calls;
use crate::providers::routing_table::RoutingTable;
use crate::store::thread::{Commit, StoreClient};
use crate::store::watchers::{MailEvent, Watchers};

#[cfg(test)]
mod tests;

/// What the inbound manager is asked to do.
#[derive(Clone)]
pub enum InboundCommand {
    /// Fetch now from this transport (every transport, if `None`).
    Fetch(Option<String>),
    /// Use this routing table from now on.
    NewRoutes(Arc<RoutingTable>),
    /// Finish the fetch under way, answer, and stop.
    Shutdown(Sender<()>),
}

/// How many pulls one fetch makes at most (each returns what the transport has ready).
const MAX_PULLS: usize = 100;
/// How long the manager sleeps at most between looks at its poll timers.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The inbound manager thread.
pub struct InboundManager {
    store: StoreClient,
    routes: Arc<RoutingTable>,
    watchers: Watchers,
    commands: Receiver<InboundCommand>,
    next_poll: HashMap<String, Instant>,
}

impl InboundManager {
    /// Starts the thread.
    pub fn start(
        store: StoreClient,
        routes: Arc<RoutingTable>,
        watchers: Watchers,
    ) -> (Sender<InboundCommand>, JoinHandle<()>) {
        let (sender, commands) = bounded(1024);
        let mut manager = InboundManager {
            store,
            routes,
            watchers,
            commands,
            next_poll: HashMap::new(),
        };
        manager.schedule_polls();
        let thread = std::thread::Builder::new()
            .name("inbound".into())
            .spawn(move || manager.run())
            .expect("the system can start a thread");
        (sender, thread)
    }

    /// Every transport with a poll interval is fetched at once, then at its interval.
    fn schedule_polls(&mut self) {
        let now = Instant::now();
        self.next_poll = self
            .routes
            .transports
            .iter()
            .filter(|t| t.poll_interval.is_some())
            .map(|t| (t.name.clone(), now))
            .collect();
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let sleep = self
                .next_poll
                .values()
                .map(|at| at.saturating_duration_since(now))
                .min()
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            match self.commands.recv_timeout(sleep) {
                Ok(InboundCommand::Fetch(Some(name))) => self.fetch(&name),
                Ok(InboundCommand::Fetch(None)) => {
                    let names: Vec<String> = self
                        .routes
                        .transports
                        .iter()
                        .map(|t| t.name.clone())
                        .collect();
                    names.iter().for_each(|name| self.fetch(name));
                }
                Ok(InboundCommand::NewRoutes(routes)) => {
                    self.routes = routes;
                    self.schedule_polls();
                }
                Ok(InboundCommand::Shutdown(done)) => {
                    log::info!("inbound manager stopped");
                    done.send(()).ok();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            let due: Vec<String> = self
                .next_poll
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(name, _)| name.clone())
                .collect();
            for name in due {
                self.fetch(&name);
            }
        }
    }

    /// Fetches everything transport `name` has waiting.
    fn fetch(&mut self, name: &str) {
        let Some(transport) = self
            .routes
            .transports
            .iter()
            .find(|t| t.name == name)
            .cloned()
        else {
            return;
        };
        if let Some(interval) = transport.poll_interval {
            self.next_poll
                .insert(transport.name.clone(), Instant::now() + interval);
        }
        let Some(worker) = transport.worker else {
            return;
        };
        for _ in 0..MAX_PULLS {
            let messages =
                match worker.call(|transport| transport.pull().into_result().map(Vec::from)) {
                    Ok(messages) => messages,
                    Err(error) => {
                        log::warn!("{name}: cannot fetch inbound mail: {error}");
                        return;
                    }
                };
            if messages.is_empty() {
                return;
            }
            let source_ids: Vec<String> =
                messages.iter().map(|m| m.source_id.to_string()).collect();
            if !self.store_messages(name, messages) {
                return;
            }
            for source_id in source_ids {
                let acknowledged = worker.call(move |transport| {
                    transport
                        .acknowledge(RStr::from_str(&source_id))
                        .into_result()
                        .map(|()| source_id)
                });
                if let Err(error) = acknowledged {
                    log::warn!("{name}: a stored message could not be acknowledged, so it may arrive again: {error}");
                }
            }
        }
    }

    /// Runs the hooks on each message and commits the ones they keep. False if the store
    /// failed (nothing is acknowledged then; the messages are fetched again later).
    fn store_messages(&self, transport: &str, messages: Vec<InboundMessage>) -> bool {
        let taken = messages.len() as u64;
        let mut commit = Commit::default();
        for message in messages {
            let envelope = inbound_envelope(transport, &message);
            let content = Vec::from(message.content);
            match self.run_hooks(envelope, content) {
                (Some(folder), envelope, content) => {
                    log::info!(
                        "{transport}: message {} from {} for {folder}",
                        message.source_id,
                        envelope.sender
                    );
                    commit.deliver.push((folder, envelope, content));
                }
                (None, envelope, _) => {
                    log::info!(
                        "{transport}: message {} from {} deleted by a hook",
                        message.source_id,
                        envelope.sender
                    );
                }
            }
        }
        // Counted once stored (or deleted by a hook): what the store refuses is fetched again.
        let count_taken = || {
            metrics()
                .inbound
                .get_or_create(&ByTransport {
                    transport: transport.to_owned(),
                })
                .inc_by(taken);
        };
        if commit.deliver.is_empty() {
            count_taken();
            return true;
        }
        match self.store.commit(commit.clone()) {
            Ok(receipt) => {
                count_taken();
                for (id, (folder, envelope, content)) in
                    receipt.delivered.iter().zip(&commit.deliver)
                {
                    self.watchers
                        .publish(&MailEvent::stored(*id, folder, envelope, content));
                }
                true
            }
            Err(error) => {
                log::error!(
                    "{transport}: cannot store inbound mail, it stays at the source: {error}"
                );
                false
            }
        }
    }

    /// The inbound hooks in order; the folder the message goes to, or `None` to delete it.
    fn run_hooks(
        &self,
        envelope: Envelope,
        content: Vec<u8>,
    ) -> (Option<String>, Envelope, Vec<u8>) {
        let message = Arc::new((envelope, content));
        let mut folder = INBOX.to_owned();
        for hook in &self.routes.hooks {
            let Some(worker) = &hook.worker else { continue };
            let (shared, current) = (Arc::clone(&message), folder.clone());
            let action = worker.call(move |hook| {
                let (envelope, content) = &*shared;
                let message = MessageRef {
                    envelope,
                    content: content.as_slice().into(),
                };
                calls::run_hook(hook, Direction::Inbound, &current, message)
            });
            match action {
                Ok(HookAction::Leave) => {}
                Ok(HookAction::MoveTo { folder: to }) => folder = to.into_string(),
                Ok(HookAction::Delete) => return (None, unwrap(message).0, Vec::new()),
                Ok(HookAction::Stop) => break,
                Ok(_) => {}
                Err(error) => log::warn!(
                    "hook {} failed on inbound mail, going on without it: {error}",
                    hook.name
                ),
            }
        }
        let (envelope, content) = unwrap(message);
        (Some(folder), envelope, content)
    }
}

fn unwrap(message: Arc<(Envelope, Vec<u8>)>) -> (Envelope, Vec<u8>) {
    Arc::try_unwrap(message).unwrap_or_else(|shared| (*shared).clone())
}

/// The envelope of an inbound message: the transport's sender and recipients, or else the
/// From and To headers; every recipient marked as received.
fn inbound_envelope(transport: &str, message: &InboundMessage) -> Envelope {
    let content = message.content.as_slice();
    let from_header = || {
        mailboxes(content, "From")
            .into_iter()
            .find_map(|from| Address::new("SMTP", &from.address).ok())
    };
    let sender = message
        .sender
        .clone()
        .into_option()
        .or_else(from_header)
        .unwrap_or_else(|| Address::new("LOCAL", "unknown-sender").expect("a valid address"));
    let mut addresses: Vec<Address> = message.recipients.iter().cloned().collect();
    if addresses.is_empty() {
        addresses = ["To", "Cc"]
            .into_iter()
            .flat_map(|name| mailboxes(content, name))
            .filter_map(|mailbox| Address::new("SMTP", &mailbox.address).ok())
            .collect();
    }
    let recipients = addresses
        .into_iter()
        .map(|address| {
            let mut recipient = Recipient::new(address, RecipientKind::To);
            recipient.status.state = DeliveryState::Delivered;
            recipient.status.transport = Some(transport.into()).into();
            recipient.status.last_answer = format!("received by {transport}").into();
            recipient.status.reported = true;
            recipient
        })
        .collect();
    Envelope::new(sender, recipients)
}
