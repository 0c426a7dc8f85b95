//! Loopback ports for the servers the tests start, each handed out once per test process.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A free TCP port on the loopback address, never the same twice in one test process.
///
/// The kernel hands a port that was just released to the next `bind(0)`, and the tests in one
/// binary run in parallel. A test that leaves its port closed for a while on purpose (a smart
/// host that is down) would otherwise find another test's server answering on it, and its
/// mail "delivered" there.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}
