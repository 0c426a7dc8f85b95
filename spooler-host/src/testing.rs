//! What the core's in-process tests start from: a spooler wired as `daemon` wires one, with
//! a [`MemoryStore`] behind the store thread and [`ScriptedTransport`]s (and hooks, if a test
//! brings some) behind provider workers, a status table, a quarantine in a temporary folder,
//! watchers, the queue manager and the inbound manager; and bounded waits for what they do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use provider_abi::transport::TransportObject;
use provider_abi::{Envelope, HookObject, MessageId, ProviderKind, StoredMessage, Transport};
use provider_testkit::{MemoryStore, ScriptedTransport};
use tempfile::TempDir;

use crate::config::ProviderConfig;
use crate::inbound::{InboundCommand, InboundManager};
use crate::providers::host_services::ProviderNotice;
use crate::providers::quarantine::Quarantine;
use crate::providers::routing_table::{Instance, RoutingTable};
use crate::providers::status::StatusTable;
use crate::providers::worker::{Opener, Worker};
use crate::queue::policy::RetryPolicy;
use crate::queue::{QueueCommand, QueueManager, QueueReply, Setup};
use crate::store::thread::{Commit, StoreClient};
use crate::store::watchers::Watchers;

/// The content of every message the tests submit.
pub(crate) const CONTENT: &[u8] =
    b"From: ann@example.com\r\nTo: bob@example.net\r\nSubject: core test\r\nMessage-ID: <core@example.com>\r\n\r\nHello.\r\n";

/// How long a test waits at most for the threads to do what it expects.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits until `check` gives something, and returns it; fails the test after [`PATIENCE`]
/// with `what` it waited for.
pub(crate) fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "waited {PATIENCE:?} in vain for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An envelope from `ann@example.com` to `recipients` (`TYPE:address`, all To).
pub(crate) fn envelope(recipients: &[&str]) -> Envelope {
    provider_testkit::message(recipients, "").envelope
}

/// A spooler over an empty memory store with one transport, `name`, claiming `address_type`;
/// it and the transport's script.
pub(crate) fn spooler_with(name: &'static str, address_type: &str) -> (Spooler, ScriptedTransport) {
    let script = ScriptedTransport::new(&[address_type]);
    let spooler = Parts::new(&MemoryStore::new())
        .transport(name, &script)
        .start();
    (spooler, script)
}

/// What a test spooler is made of, in profile order.
pub(crate) struct Parts {
    memory: MemoryStore,
    transports: Vec<(&'static str, ScriptedTransport)>,
    hooks: Vec<(&'static str, Opener<HookObject>)>,
    policy: RetryPolicy,
}

impl Parts {
    /// A spooler over `memory` with no providers yet and the default retry policy.
    pub(crate) fn new(memory: &MemoryStore) -> Parts {
        Parts {
            memory: memory.clone(),
            transports: Vec::new(),
            hooks: Vec::new(),
            policy: RetryPolicy::default(),
        }
    }

    /// Adds transport instance `name`, claiming the address types `script` claims.
    pub(crate) fn transport(mut self, name: &'static str, script: &ScriptedTransport) -> Parts {
        self.transports.push((name, script.clone()));
        self
    }

    /// Adds hook instance `name`, opened by `open`.
    pub(crate) fn hook(mut self, name: &'static str, open: Opener<HookObject>) -> Parts {
        self.hooks.push((name, open));
        self
    }

    /// Uses `policy` for retries.
    pub(crate) fn policy(mut self, policy: RetryPolicy) -> Parts {
        self.policy = policy;
        self
    }

    /// Starts the store thread, the providers' workers and the two managers.
    pub(crate) fn start(self) -> Spooler {
        let data = tempfile::tempdir().expect("a temporary folder");
        let quarantine = Quarantine::open(data.path(), 3).expect("a quarantine");
        let status = StatusTable::default();
        let (notices, notices_rx) = bounded(1024);
        status.register("store", ProviderKind::Store, "memory");
        let open_store: Opener<provider_abi::store::StoreObject> = Arc::new({
            let memory = self.memory.clone();
            move || Ok(provider_testkit::store_object(memory.open()))
        });
        let (store, _) = StoreClient::start("store", open_store, status.clone());
        let store_types = store.delivers_itself().expect("the memory store answers");
        let transports = self
            .transports
            .into_iter()
            .map(|(name, script)| {
                let types = script.address_types();
                let open: Opener<TransportObject> =
                    Arc::new(move || Ok(provider_testkit::transport_object(script.clone())));
                let kind = ProviderKind::Transport;
                instance(&status, &quarantine, (name, kind), types, open)
            })
            .collect();
        let hooks = self
            .hooks
            .into_iter()
            .map(|(name, open)| {
                let kind = ProviderKind::Hook;
                instance(&status, &quarantine, (name, kind), Vec::new(), open)
            })
            .collect();
        let routes = Arc::new(RoutingTable {
            transports,
            preprocessors: Vec::new(),
            hooks,
            store_types,
        });
        let watchers = Watchers::default();
        let (inbound, _) =
            InboundManager::start(store.clone(), Arc::clone(&routes), watchers.clone());
        let (queue, _) = QueueManager::start(Setup {
            store: store.clone(),
            routes,
            status: status.clone(),
            policy: self.policy,
            destinations: crate::config::destinations::DestinationPolicy::default(),
            board: crate::queue::board::DestinationBoard::default(),
            max_in_flight: 16,
            notices: notices_rx,
            hostname: "spooler.test".into(),
            inbound: inbound.clone(),
            watchers: watchers.clone(),
            quarantine,
            files_sent: true,
        });
        Spooler {
            memory: self.memory,
            store,
            status,
            watchers,
            queue,
            inbound,
            notices,
            _data: data,
        }
    }
}

/// Instance `name` of `kind` on a worker of its own, registered in the status table, with a
/// journal in the quarantine, as `daemon::start_instance` starts an in-process one.
fn instance<T: 'static>(
    status: &StatusTable,
    quarantine: &Quarantine,
    (name, kind): (&str, ProviderKind),
    address_types: Vec<String>,
    open: Opener<T>,
) -> Instance<T> {
    status.register(name, kind, "testkit");
    let journal = Some(quarantine.clone());
    let (worker, _) = Worker::start(name, 64, 1, None, open, status.clone(), journal);
    Instance {
        name: name.to_owned(),
        config: ProviderConfig {
            provider: "testkit".into(),
            name: name.to_owned(),
            config: String::new(),
            parallel: 1,
            timeout: None,
            isolate: Some(false),
            memory_limit: None,
            origin: None,
        },
        address_types,
        poll_interval: None,
        per_domain: false,
        worker: Some(worker),
    }
}

/// A running test spooler; its threads wind down when it is dropped.
pub(crate) struct Spooler {
    /// A handle on the store's contents, to look inside and make it fail.
    pub(crate) memory: MemoryStore,
    pub(crate) store: StoreClient,
    pub(crate) status: StatusTable,
    pub(crate) watchers: Watchers,
    pub(crate) queue: Sender<QueueCommand>,
    pub(crate) inbound: Sender<InboundCommand>,
    /// Where providers' notices go, as a provider's `notify` sends them.
    pub(crate) notices: Sender<ProviderNotice>,
    _data: TempDir,
}

impl Spooler {
    /// Commits `envelope` with [`CONTENT`] into the Outbox and wakes the queue manager, as
    /// intake does; the message's id.
    pub(crate) fn submit(&self, envelope: Envelope) -> MessageId {
        let commit = Commit {
            submit: vec![(envelope, CONTENT.to_vec())],
            ..Commit::default()
        };
        let receipt = self.store.commit(commit).expect("the store takes it");
        self.queue
            .send(QueueCommand::Wake)
            .expect("the queue manager runs");
        receipt.submitted[0]
    }

    /// Message `id` as stored now, from any folder.
    pub(crate) fn message(&self, id: MessageId) -> Option<StoredMessage> {
        self.memory
            .messages()
            .into_iter()
            .find(|m| m.envelope.id == id)
    }

    /// Message `id` once it is in `folder`.
    pub(crate) fn in_folder(&self, id: MessageId, folder: &str) -> StoredMessage {
        eventually(&format!("message {id} in {folder}"), || {
            self.message(id).filter(|m| m.folder == folder)
        })
    }

    /// Sends the queue manager the command `ask` makes with a reply channel; its answer.
    pub(crate) fn ask(&self, ask: impl FnOnce(QueueReply) -> QueueCommand) -> Result<(), String> {
        let (reply, answer) = bounded(1);
        self.queue.send(ask(reply)).expect("the queue manager runs");
        answer
            .recv_timeout(PATIENCE)
            .expect("the queue manager answers")
    }
}
