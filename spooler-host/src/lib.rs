//! The spooler host: it loads provider libraries and moves messages between the store and
//! the transports. The binary (`main.rs`) is a thin command line over this library.
//!
//! The folders follow a message's trip:
//! - [`clients`]: where mail and requests come in and answers go out (the control socket,
//!   its protocol and client, `sendmail`, the submission checks, new-mail watchers).
//! - [`queue`]: the queue manager, outbound: routing, retries, reports, hooks, finishing.
//! - [`inbound`]: the inbound manager: mail that transports fetch, into the store.
//! - [`store`]: the store thread (group commit) and how a failing store is told.
//! - [`providers`]: loading provider libraries, their threads, the routing table, their
//!   status and the services the host offers them.
//!
//! `spooler` starts and wires all of them from the profile that `config` reads.

pub mod clients;
pub mod config;
pub mod inbound;
pub mod paths;
pub mod providers;
pub mod queue;
pub mod spooler;
pub mod store;

#[cfg(test)]
mod fuzz;
