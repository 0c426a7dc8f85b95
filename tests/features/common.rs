//! What the tests of several features share: the profiles they run the host on, and reading
//! one recipient's status out of `show --json`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use spooler_tests::real_server;

/// A directory transport `files` for FILE mail with a pickup folder for inbound mail.
pub const PICKUP: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files", pickup = "{site}/pickup", poll_interval_secs = 1 }

[retry]
min_delay = "200ms"
max_delay = "1s"
"#;

/// Two directory transports: `fax` claims FAX, `files` claims FILE. Retries are quick.
pub const TWO_TRANSPORTS: &str = r#"
[[transport]]
provider = "directory"
name = "fax"
config = { path = "{site}/fax", address_type = "FAX" }

[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }

[retry]
min_delay = "200ms"
max_delay = "1s"
"#;

/// A listener's users file (`users_file`): `openssl passwd -6 -salt saltsalt secret`, user
/// `app`, password `secret`.
pub const USERS: &str = "app:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n";

/// A whole message (Message-ID, From and Date of its own, so `submit` adds nothing), for the
/// outbound tests.
pub const MESSAGE: &str = "Message-ID: <figures-q3@example.com>\r\nDate: Thu, 1 Oct 2026 09:00:00 +0000\r\nFrom: alice@example.com\r\nTo: bob\r\nSubject: quarterly figures\r\n\r\nThe figures are attached.\r\n";

/// The recipient `address` of a message as `show --json` prints it; a failure if it has none.
pub fn recipient<'a>(message: &'a Value, address: &str) -> &'a Value {
    message["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no recipient {address} in {message:#}"))
}

/// A directory transport for FILE mail that delivers at once.
pub const FILES: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }
"#;

/// Retries every 200 ms.
pub const QUICK_RETRY: &str = "[retry]\nmin_delay = \"200ms\"\nmax_delay = \"200ms\"\n";

/// Whether a private server needs root and we are not; says so (a failure under
/// `SPOOLER_REQUIRE_SERVERS=1`).
fn lacking_root(server: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "a private {server} needs root to start here"
        );
        eprintln!("SKIPPED: a private {server} needs root to start (CI runs as root)");
    }
    !root
}

/// Whether Postfix (and its smtp-sink) can run a private instance here; says why not.
pub fn can_run_postfix() -> bool {
    real_server("smtp-sink").is_some()
        && real_server("postfix").is_some()
        && !lacking_root("Postfix")
}

/// Whether Dovecot can run a private instance here; says why not.
pub fn can_run_dovecot() -> bool {
    real_server("dovecot").is_some() && !lacking_root("Dovecot")
}

/// Held for the whole of a test that must not overlap the others that hold it: the two that
/// run cargo on a whole workspace (the provider template, a store from an older commit),
/// which takes both cores for minutes, and those whose checks count what happens within a
/// few seconds, which such a build would starve. In the former one binary per file, each
/// build ran alone.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}
