//! The integration tests, one module per feature of the spooler: built provider libraries
//! dropped into a folder and the host run as a user runs it, against real servers.
//!
//! The cut is by feature, not by the way a user meets it, so that the tests of one feature
//! sit together whichever client or signal drives them: all the host's crashes and stops are
//! in `crash`, every `submit` guarantee in `submission`, every retry in `retry`, whether
//! they were first written for the queue, a client or a transport. A server a feature needs
//! (smtp-sink, Postfix, Dovecot, PostgreSQL) is started by the test from `spooler_tests`,
//! the library in `tests/support/`.
//!
//! One binary builds the host and the providers once (`spooler_tests::build_folder`), and its
//! tests run on the harness's threads side by side (`RUST_TEST_THREADS`, by default one per
//! core), as the tests of each old binary did. Nothing here changes the process's state
//! (environment, working folder, umask): each test has its own site, its own host and
//! servers on ports `free_port` hands out once per process.

mod common;

mod control;
mod crash;
mod inbound;
mod isolation;
mod loading;
mod outbound;
mod retry;
mod scale_out;
mod sendmail;
mod smtp_listener;
mod smtp_transport;
mod submission;
mod template;
mod tls;
mod upgrade;
