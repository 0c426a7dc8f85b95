//! Everything that faces clients: the SMTP listener (`listener`), the sockets and who may
//! use them (`socket`), what the host answers on them (`control`, in the language of
//! `protocol`), the client side (`client`, `display`), the `sendmail` interface with its
//! modes (`sendmail`: its options, the message it reads, what each mode does, `mailq`), the checks a submission passes
//! (`submission`, `mailbox`), what local names and aliases become (`aliases`) and the
//! clients watching for new mail (`watchers`).
//!
//! Clients reach the queue through the queue manager's commands and the store through the
//! store thread; nothing here calls a provider.

pub mod aliases;
pub mod client;
pub mod control;
pub mod display;
pub mod listener;
pub mod mailbox;
pub mod protocol;
pub mod sendmail;
pub mod socket;
pub mod submission;
pub mod watchers;
