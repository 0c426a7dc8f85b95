//! Delivery by the store itself: the address types a store is tightly coupled to (e.g.
//! `LOCAL`), and when and where it delivers their recipients, in the transaction that stores
//! the message.

use provider_abi::store::deliver_locally;
use provider_abi::{DeliveryState, Envelope, Recipient, Timestamp};

use crate::backend::Backend;

/// The address types a store delivers itself, and its instance name, which the statuses it
/// writes name as the transport.
#[derive(Debug, Clone)]
pub struct LocalDelivery {
    store: String,
    types: Vec<String>,
}

impl LocalDelivery {
    /// Store instance `store` delivering the address `types` (any case) itself.
    pub fn new(store: &str, types: &[String]) -> LocalDelivery {
        LocalDelivery {
            store: store.to_owned(),
            types: types.iter().map(|t| t.to_ascii_uppercase()).collect(),
        }
    }

    /// The address types, upper case: what `Store::delivers_itself` answers.
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// Whether storing `envelope` delivers some of its recipients here, so that its content
    /// is needed. Only a preprocessed message: a preprocessor may still expand a local
    /// address that is a distribution list.
    pub(crate) fn delivers_some(&self, envelope: &Envelope) -> bool {
        envelope.preprocessed && envelope.recipients.iter().any(|r| self.delivers(r))
    }

    /// Whether `recipient` is one of ours, still pending, and not the host's: a recipient
    /// whose status names a transport is routed by the host (a transport claims the type
    /// ahead of the store).
    fn delivers(&self, recipient: &Recipient) -> bool {
        recipient.status.state == DeliveryState::Pending
            && recipient.status.transport.is_none()
            && self.types.iter().any(|t| recipient.address.has_type(t))
    }

    /// Delivers the recipients of `envelope` that are ours into their local folders through
    /// `backend`, and marks them delivered (see [`deliver_locally`]).
    pub(crate) fn deliver<B: Backend>(
        &self,
        backend: &mut B,
        envelope: &mut Envelope,
        content: &[u8],
        now: Timestamp,
    ) -> Result<(), B::Error> {
        if !envelope.preprocessed {
            return Ok(());
        }
        for index in 0..envelope.recipients.len() {
            if self.delivers(&envelope.recipients[index]) {
                let (folder, copy) = deliver_locally(envelope, index, &self.store, now);
                backend.insert(&folder, &copy, content)?;
            }
        }
        Ok(())
    }
}
