//! The spooler host: it loads provider libraries and moves messages between the store and
//! the transports. The binary (`main.rs`) is a thin command line over this library.
//!
//! The modules are layers, listed bottom up. A layer may use the layers below it and never
//! one above (`spooler-host/tests/layers.rs` fails on an upward arrow), in the way Postfix's programs
//! each do one job and talk down to the queue:
//! - [`base`]: facts everyone needs: paths, units, mail dates and ids, property names.
//! - [`observe`]: metrics and delivery events, recorded by every layer above.
//! - [`config`]: the profile, read and checked.
//! - [`providers`]: loading provider libraries, their threads, the routing table, status.
//! - [`store`]: the store thread (group commit), a failing store's notice, new-mail watchers.
//! - [`protocol`]: the control socket's language, shared by the daemon and the CLI.
//! - [`intake`]: Postfix's cleanup, the one way into the Outbox.
//! - [`inbound`]: the inbound manager: fetched mail into the store.
//! - [`queue`]: the queue manager (Postfix's qmgr, with its bounce): outbound mail.
//! - [`front`]: the front ends: the control socket and the SMTP listener (smtpd).
//! - [`daemon`]: starts and wires everything from the profile; reload and stop.
//! - [`cli`]: the command line's client side, `sendmail` and `mailq`.

pub mod base;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod front;
pub mod inbound;
pub mod intake;
pub mod observe;
pub mod protocol;
pub mod providers;
pub mod queue;
pub mod store;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testing;
