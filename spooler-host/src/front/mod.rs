//! The front ends: where requests and mail come in from clients. The control socket
//! (`control`), spoken by the command line and any program, the SMTP listener (`smtpd`),
//! spoken by applications, and the HTTP server (`http`): metrics, the admin API, events
//! and the dashboard. Each turns what a client says into calls on the
//! layers below (intake, queue, inbound, store) and their typed answers into its own
//! language: JSON answers, or SMTP reply codes.
//!
//! May call: every layer below. Nothing imports a front end; the daemon starts them.

pub mod control;
pub mod http;
pub mod smtpd;
