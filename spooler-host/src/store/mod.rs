//! The message store, as the host uses it: one thread owns the store provider and batches
//! the commits of everyone who writes (`thread`), a store that keeps failing is told once
//! (`outage`), and clients watching for new mail hear of it (`watchers`).
//!
//! May call: `base`, `observe`, `config` and `providers` (the store's worker and status
//! row).

pub mod outage;
pub mod thread;
pub mod watchers;

#[cfg(test)]
mod tests;
