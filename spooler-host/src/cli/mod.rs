//! The command line's client side, which runs in a process of its own: it speaks the
//! control socket's [`protocol`](crate::protocol) to a running host (`client`), shows the
//! answers (`display`), and is the `sendmail` and `mailq` interfaces (`sendmail`).
//!
//! May call: `base`, `config` (to find the socket) and `protocol`. Nothing imports the CLI
//! but `main.rs`.

pub mod client;
pub mod display;
pub mod sendmail;
