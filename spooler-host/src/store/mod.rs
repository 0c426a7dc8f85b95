//! The message store, as the host uses it: one thread owns the store provider and batches
//! the commits of everyone who writes (`thread`), and a store that keeps failing is told once
//! (`outage`).

pub mod outage;
pub mod thread;
