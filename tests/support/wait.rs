//! Waiting for what the host does on its own time: how long is "promptly", and polling a
//! condition until it holds.

use std::time::{Duration, Instant};

/// How long the tests wait for anything the host should do promptly.
pub const PROMPTLY: Duration = Duration::from_secs(20);

/// Waits until `condition` holds, checking every 50 ms, for at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
