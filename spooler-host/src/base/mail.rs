//! What mail needs wherever the host makes it: an RFC 5322 date, and a Message-ID no other
//! message has.

use std::sync::atomic::{AtomicU32, Ordering};

use mail_builder::headers::date::Date;
use provider_abi::Timestamp;

/// An RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 18:21:42 +0000`.
pub fn rfc5322_date(time: Timestamp) -> String {
    Date::new(time.0.div_euclid(1000)).to_rfc822()
}

/// A new Message-ID, `<unique@hostname>`: unique by the time in nanoseconds, the process id
/// and a counter, so two calls never give the same, even in one nanosecond.
pub fn message_id(hostname: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "<{nanos:x}.{:x}.{}@{hostname}>",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
