//! The real servers the tests talk to, each a private instance on loopback ports started by
//! the test itself: Postfix's `smtp-sink`, Postfix, Dovecot, PostgreSQL, Prometheus,
//! dnsmasq, and OpenSSL's `s_server` as an MTA-STS policy server.

mod dnsmasq;
mod dovecot;
mod policy_server;
mod postfix;
mod postgres;
mod prometheus;
mod smtp_sink;

pub use dnsmasq::{Dnsmasq, Zone};
pub use dovecot::Dovecot;
pub use policy_server::PolicyServer;
pub use postfix::Postfix;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use smtp_sink::SmtpSink;

use std::path::{Path, PathBuf};

/// Where a real server program is, if it is here to test against. Without it a test is
/// skipped, loudly; under `.ci/run` (`SPOOLER_REQUIRE_SERVERS=1`) its absence is a failure.
pub fn real_server(program: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|folder| Path::new(folder).join(program))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "{program} is missing, and SPOOLER_REQUIRE_SERVERS=1 says the real servers must be here (.ci/run installs them)"
        );
        eprintln!("SKIPPED: {program} is not installed; `bash .ci/run` installs it (apt-get install postfix dovecot-pop3d)");
    }
    found
}
