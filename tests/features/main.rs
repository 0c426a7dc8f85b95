//! The integration tests, one module per feature of the spooler: built provider libraries
//! dropped into a folder and the host run as a user runs it, against real servers.
//!
//! The cut is by feature, not by the client or signal a user meets it through, so that
//! everything one feature promises is checked in one place and a change to a feature names
//! the module to run (`cargo test -p spooler-tests -- crash::`):
//!
//! - `loading`: the providers folder, good and bad libraries, SIGHUP;
//! - `log_format`: the log as JSON lines, the host's and its providers' alike;
//! - `outbound`: routing by address type, reports, Bcc, distribution lists, hooks;
//! - `retention`: finished mail removed when `keep_sent`/`keep_reports` are over;
//! - `retry`: store and forward, mail waiting on an offline, hung or panicking transport;
//! - `crash`: the host killed or stopped under load, and a full disk: nothing lost;
//! - `isolation`: providers that die natively, isolated in child processes or taking the host
//!   down with them (those host crashes stay here, each beside its isolated twin: they share
//!   the faulty fixture's profiles and checks);
//! - `submission`: `submit` and what it guarantees when an answer or connection is lost;
//! - `control`: the control socket and its clients (queue, show, hold, watch, …);
//! - `sendmail`: the binary as sendmail, mailq and newaliases, for their real callers;
//! - `inbound`: the pickup folder, inbound rules, POP3 from Dovecot;
//! - `smtp_transport`, `smtp_listener`, `tls`: SMTP out, SMTP in, and both over TLS;
//! - `internet`: SMTP out to each domain's mail exchangers, found in a DNS of the test's own;
//! - `listener_abuse`: the SMTP listener against password guessing, floods and slow clients;
//! - `http_api`: the HTTP front end: the admin API, the event stream, the webhook;
//! - `dashboard`: the HTTP front end's page in a headless Chromium, clicked and photographed;
//! - `scale_out`: several hosts on one PostgreSQL store;
//! - `shared_store`: that store over TLS, through a database restart, an outage and a start
//!   while the database is down;
//! - `metrics`: `/metrics` as `promtool` and a private Prometheus read it;
//! - `upgrade`, `template`: a provider built against an older ABI, and the provider template.
//!
//! `common` holds the profiles and checks that several features share; the servers, the host
//! and the crash, disk and TLS helpers are the `spooler_tests` library in `tests/support/`.
//!
//! One binary builds the host and the providers once (`spooler_tests::build_folder`), and
//! its tests run side by side on the harness's threads (`RUST_TEST_THREADS`, by default one
//! per core), as each of the former per-client binaries ran its own. No test changes the
//! process's state (environment, working folder, umask): each has its own site, host and
//! servers, on ports that `free_port` hands out once per process. The few that must not
//! overlap one another (a whole-workspace build, checks that count within seconds) hold
//! `common::one_at_a_time`.

mod common;

mod control;
mod crash;
mod dashboard;
mod http_api;
mod inbound;
mod internet;
mod isolation;
mod listener_abuse;
mod loading;
mod log_format;
mod metrics;
mod outbound;
mod retention;
mod retry;
mod scale_out;
mod sendmail;
mod shared_store;
mod smtp_listener;
mod smtp_transport;
mod submission;
mod template;
mod tls;
mod upgrade;
