//! The store algorithm, once: how a [`StoreBatch`](provider_abi::store::StoreBatch) becomes
//! rows, for every store that keeps its messages in a transactional database.
//!
//! What a commit does with a batch is the same for every such store: recognise a retried
//! submission by its key, deliver the store's own address types (e.g. `LOCAL`) into local
//! folders, insert into the Outbox, replace content, store envelopes, move or delete finished
//! messages, deliver into folders, release locks; and skip, or refuse, what a message that is
//! gone, or fenced off, must not get. This crate holds that order and those rules ([`apply`]),
//! written against the operations a store's SQL provides ([`Backend`]). A store provider
//! keeps its schema, its rows and statements, and, when several hosts share it, its leases and
//! fencing; the bundled stores (SQLite and PostgreSQL) cannot drift apart, and a third-party
//! store gets the rules right by implementing the operations alone.
//!
//! A store's `commit`, then: open a transaction, make the [`Backend`] over it, [`apply`] the
//! batch, commit the transaction; once that is durable, forget the locks the batch
//! [`released`].
//!
//! The stores' count of the queue's shape shares its bucketing SQL too ([`shape`]).

mod backend;
mod engine;
mod local;
pub mod shape;

pub use backend::{Access, Backend};
pub use engine::{apply, released, Applied};
pub use local::LocalDelivery;
