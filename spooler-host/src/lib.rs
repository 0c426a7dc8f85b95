//! The spooler host: it loads provider libraries and moves messages between the store and
//! the transports. The binary (`main.rs`) is a thin command line over this library.
//!
//! One module, one job: `loader` finds and checks provider libraries; `config` reads the
//! profile; `spooler` starts everything; `store_thread` owns the store (group commit);
//! `worker` runs each other provider on its own thread; `registry` is the routing table;
//! `engine` is the queue manager (`outage` tells of a failing store once); `policy` says when
//! to retry; `reports` writes RFC 3464 reports; `control` and `protocol` serve clients,
//! `client` is their side; `submission` and `mailbox` check what clients submit; `listener`
//! takes mail over SMTP.

pub mod client;
pub mod config;
pub mod control;
pub mod engine;
pub mod host_services;
pub mod inbound;
pub mod listener;
pub mod loader;
pub mod mailbox;
pub mod outage;
pub mod paths;
pub mod policy;
pub mod protocol;
pub mod registry;
pub mod reports;
pub mod sendmail;
pub mod spooler;
pub mod status;
pub mod store_thread;
pub mod submission;
pub mod watchers;
pub mod worker;

#[cfg(test)]
mod fuzz;
