//! The routing table: which transport instances claim which address types, in profile
//! order, and which preprocessors and hooks run, with the workers that call them.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use provider_abi::abi_stable::std_types::{ROption, RString};
use provider_abi::preprocessor::PreprocessorObject;
use provider_abi::transport::TransportObject;
use provider_abi::{DeliveryState, Envelope, HookObject, Recipient};

use crate::config::ProviderConfig;
use crate::providers::worker::Worker;

/// A configured provider instance and its worker; `None` when it could not be started
/// (its provider was not found), which the status table explains.
pub struct Instance<T> {
    /// The instance name.
    pub name: String,
    /// How the profile configures it (to tell, on reload, whether it changed).
    pub config: ProviderConfig,
    /// The address types it claims (transports) or looks at (preprocessors; empty: all).
    pub address_types: Vec<String>,
    /// How often to fetch its inbound mail (transports that have some).
    pub poll_interval: Option<Duration>,
    /// Whether each recipient domain is a destination of its own (transports that deliver
    /// to every domain's servers; see `queue::destinations`).
    pub per_domain: bool,
    /// Its worker.
    pub worker: Option<Worker<T>>,
}

impl<T> Clone for Instance<T> {
    fn clone(&self) -> Self {
        Instance {
            name: self.name.clone(),
            config: self.config.clone(),
            address_types: self.address_types.clone(),
            poll_interval: self.poll_interval,
            per_domain: self.per_domain,
            worker: self.worker.clone(),
        }
    }
}

impl<T> Instance<T> {
    fn claims(&self, address_type: &str) -> bool {
        self.address_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(address_type))
    }
}

/// A transport's place in the routing table's list (profile order): what a message's
/// routing and a transport's answers name it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportIndex(pub usize);

/// Everything the queue manager routes through: the transports, preprocessors and hooks that
/// run, in profile order, and the address types the store delivers itself.
pub struct RoutingTable {
    /// Transports in profile (routing) order.
    pub transports: Vec<Instance<TransportObject>>,
    /// Preprocessors in the order they run.
    pub preprocessors: Vec<Instance<PreprocessorObject>>,
    /// Hooks in the order they run.
    pub hooks: Vec<Instance<HookObject>>,
    /// The address types the store delivers itself.
    pub store_types: Vec<String>,
}

impl RoutingTable {
    /// The transports claiming `address_type`, in routing order.
    pub fn claimants(&self, address_type: &str) -> Vec<TransportIndex> {
        (0..self.transports.len())
            .filter(|&index| self.transports[index].claims(address_type))
            .map(TransportIndex)
            .collect()
    }

    /// Hands the recipients of `envelope` that the store would deliver itself to the
    /// transport that claims their type, if one does: a configured transport goes ahead of
    /// the store's own coupling (the local transport ahead of `Local/NAME` folders). Each
    /// pending recipient no transport has had yet gets its first claimant named in its
    /// status, which tells the store to leave it (see `Store::delivers_itself`). Called on
    /// an envelope about to be stored preprocessed, when the store delivers.
    pub fn claim_ahead_of_store(&self, envelope: &mut Envelope) {
        for recipient in envelope.recipients.iter_mut() {
            let status = &mut recipient.status;
            let kind = recipient.address.address_type();
            if status.state != DeliveryState::Pending
                || status.transport.is_some()
                || !self
                    .store_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(kind))
            {
                continue;
            }
            if let Some(&first) = self.claimants(kind).first() {
                status.transport =
                    ROption::RSome(RString::from(self.transport(first).name.as_str()));
            }
        }
    }

    /// The transport at `index`.
    pub fn transport(&self, index: TransportIndex) -> &Instance<TransportObject> {
        &self.transports[index.0]
    }

    /// Configured transports that are not running; while there are any, a recipient no
    /// running transport claims waits instead of failing (it may be theirs).
    pub fn missing_transports(&self) -> Vec<&str> {
        self.transports
            .iter()
            .filter(|t| t.worker.is_none())
            .map(|t| t.name.as_str())
            .collect()
    }

    /// The preprocessors that want a message with these recipients, in order: those
    /// without address types, and those claiming a type of a pending recipient.
    pub fn preprocessors_for(&self, recipients: &[Recipient]) -> Vec<usize> {
        (0..self.preprocessors.len())
            .filter(|&index| {
                let preprocessor = &self.preprocessors[index];
                preprocessor.address_types.is_empty()
                    || recipients
                        .iter()
                        .filter(|r| !r.status.is_final())
                        .any(|r| preprocessor.claims(r.address.address_type()))
            })
            .collect()
    }
}

/// The routing table in force, shared by those who read it per message (intake, the
/// control socket); a reload puts a new one in force whole. The queue and inbound managers
/// get each new table as a command instead, so that a message keeps the table it started
/// with.
#[derive(Clone)]
pub struct RoutesInForce(Arc<RwLock<Arc<RoutingTable>>>);

impl RoutesInForce {
    /// `table` in force.
    pub fn new(table: Arc<RoutingTable>) -> RoutesInForce {
        RoutesInForce(Arc::new(RwLock::new(table)))
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.0.read())
    }

    /// Puts `table` in force.
    pub fn replace(&self, table: Arc<RoutingTable>) {
        *self.0.write() = table;
    }
}
