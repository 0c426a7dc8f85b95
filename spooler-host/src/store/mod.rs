//! The message store, as the host uses it: one thread owns the store provider and batches
//! the commits of everyone who writes (`thread`), a store that keeps failing is told once
//! (`outage`), clients watching for new mail hear of it (`watchers`), and finished mail is
//! removed when its time is over (`retention`).
//!
//! May call: `base`, `observe`, `config` and `providers` (the store's worker and status
//! row).

pub mod outage;
pub mod retention;
pub mod thread;
pub mod watchers;

#[cfg(test)]
mod tests;
