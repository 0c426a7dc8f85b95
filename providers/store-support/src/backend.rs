//! The operations a store's SQL provides to the engine ([`Backend`]), and the answer of its
//! fencing ([`Access`]).

use provider_abi::store::SubmissionKey;
use provider_abi::{Envelope, MessageId, Timestamp};

/// Whether a commit may change a message, and how a change went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Go ahead (asked before a change), or it is written (answered after one).
    Granted,
    /// No such message: an operator deleted it meanwhile. Skipped quietly.
    Gone,
    /// Fenced off: another host holds the message, or this instance's lease on it expired.
    /// Skipped, and reported in [`Applied::refused`](crate::Applied::refused).
    Refused,
}

/// One open transaction of a store, as [`apply`](crate::apply) uses it: every call runs inside
/// that transaction, which the store commits once `apply` returned `Ok` and rolls back
/// otherwise, so a batch is durable whole or not at all.
///
/// A store for one host implements the row operations and keeps the defaults of
/// [`access`](Backend::access) and [`unlock`](Backend::unlock). A store that several hosts
/// share answers `access` from its leases (fencing, see [`provider_abi::store`]) and keeps
/// the answer to the end of the transaction, so no host takes the message over meanwhile.
///
/// A backend over a map, enough to apply a batch (a real one runs statements in its
/// transaction):
///
/// ```
/// use std::collections::BTreeMap;
///
/// use provider_abi::abi_stable::std_types::RSlice;
/// use provider_abi::store::{NewMessage, StoreBatch, SubmissionKey};
/// use provider_abi::{Address, Envelope, MessageId, Timestamp};
/// use store_support::{apply, Access, Backend, LocalDelivery};
///
/// #[derive(Default)]
/// struct Memory {
///     messages: BTreeMap<MessageId, (String, Envelope, Vec<u8>)>,
///     keys: BTreeMap<String, MessageId>,
/// }
///
/// impl Backend for Memory {
///     type Error = std::convert::Infallible;
///
///     fn claim_submission(&mut self, key: &SubmissionKey, _now: Timestamp)
///         -> Result<Option<MessageId>, Self::Error> {
///         Ok(self.keys.get(&key.key).copied())
///     }
///     fn remember_submission(&mut self, key: &SubmissionKey, id: MessageId)
///         -> Result<(), Self::Error> {
///         self.keys.insert(key.key.clone(), id);
///         Ok(())
///     }
///     fn insert(&mut self, folder: &str, envelope: &Envelope, content: &[u8])
///         -> Result<MessageId, Self::Error> {
///         let id = MessageId(self.messages.len() as u64 + 1);
///         let mut envelope = envelope.clone();
///         envelope.id = id;
///         self.messages.insert(id, (folder.into(), envelope, content.to_vec()));
///         Ok(id)
///     }
///     fn read_content(&mut self, id: MessageId) -> Result<Option<Vec<u8>>, Self::Error> {
///         Ok(self.messages.get(&id).map(|m| m.2.clone()))
///     }
///     fn replace_content(&mut self, id: MessageId, content: &[u8]) -> Result<(), Self::Error> {
///         self.messages.entry(id).and_modify(|m| m.2 = content.to_vec());
///         Ok(())
///     }
///     fn update(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, Self::Error> {
///         Ok(envelopes.iter().map(|e| match self.messages.get_mut(&e.id) {
///             Some(message) => { message.1 = e.clone(); Access::Granted }
///             None => Access::Gone,
///         }).collect())
///     }
///     fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), Self::Error> {
///         self.messages.entry(id).and_modify(|m| m.0 = folder.into());
///         Ok(())
///     }
///     fn delete(&mut self, id: MessageId) -> Result<(), Self::Error> {
///         self.messages.remove(&id);
///         Ok(())
///     }
/// }
///
/// let mut envelope = Envelope::new(
///     Address::parse("alice@example.com").unwrap(),
///     vec![provider_abi::Recipient::new(
///         Address::parse("LOCAL:bob").unwrap(),
///         provider_abi::RecipientKind::To,
///     )],
/// );
/// envelope.preprocessed = true;
/// let submit = [NewMessage { envelope, content: RSlice::from_slice(b"Subject: hi\r\n\r\n") }];
/// let batch = StoreBatch { submit: RSlice::from_slice(&submit), ..StoreBatch::EMPTY };
/// let mut memory = Memory::default();
/// let local = LocalDelivery::new("memory", &["LOCAL".to_owned()]);
/// let applied = apply(&mut memory, &batch, &local, Timestamp::now()).unwrap();
/// // The LOCAL recipient got its copy in `Local/bob`, and the message went to the Outbox.
/// assert_eq!(memory.messages[&MessageId(1)].0, "Local/bob");
/// assert_eq!(applied.receipt.submitted.as_slice(), [MessageId(2)]);
/// ```
pub trait Backend {
    /// The store's own error (its database driver's), passed through as it is.
    type Error;

    /// Whether this transaction may change message `id`: its fencing. The default grants
    /// every change, for a store that one host uses; a change of a message that is gone then
    /// changes nothing.
    fn access(&mut self, _id: MessageId) -> Result<Access, Self::Error> {
        Ok(Access::Granted)
    }

    /// Claims submission `key` for a submission about to be stored: `Some(id)` if the key is
    /// remembered at `now` (message `id` was that submission, and nothing is stored), `None`
    /// if it is new, and [`remember_submission`](Backend::remember_submission) follows.
    fn claim_submission(
        &mut self,
        key: &SubmissionKey,
        now: Timestamp,
    ) -> Result<Option<MessageId>, Self::Error>;

    /// Remembers that the claimed `key` made message `id`.
    fn remember_submission(
        &mut self,
        key: &SubmissionKey,
        id: MessageId,
    ) -> Result<(), Self::Error>;

    /// Inserts a message into `folder` (the envelope's id is ignored) and returns its id.
    fn insert(
        &mut self,
        folder: &str,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<MessageId, Self::Error>;

    /// A message's content; `None` if there is no such message.
    fn read_content(&mut self, id: MessageId) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Replaces a message's content (nothing, if there is no such message).
    fn replace_content(&mut self, id: MessageId, content: &[u8]) -> Result<(), Self::Error>;

    /// Stores `envelopes` over the stored ones (same ids) and answers for each, in order:
    /// written ([`Access::Granted`]), gone, or refused. All at once, so that a store may write
    /// them in few statements; a store that fences checks each one itself.
    fn update(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, Self::Error>;

    /// Moves a finished message out of the Outbox into `folder`, releasing its lock.
    fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), Self::Error>;

    /// Deletes a message with everything stored about it.
    fn delete(&mut self, id: MessageId) -> Result<(), Self::Error>;

    /// Releases the locks this instance holds on `ids`, if it keeps them in the database.
    /// The default does nothing: a store that keeps its locks in memory releases them once
    /// the transaction is durable (see [`released`](crate::released)).
    fn unlock(&mut self, _ids: &[MessageId]) -> Result<(), Self::Error> {
        Ok(())
    }
}
