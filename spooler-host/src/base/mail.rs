//! What mail needs wherever the host makes it: an RFC 5322 date (and the same moment as
//! `status` shows it), and a Message-ID no other message has.

use std::sync::atomic::{AtomicU32, Ordering};

use mail_builder::headers::date::Date;
use provider_abi::Timestamp;

/// An RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 18:21:42 +0000`.
pub fn rfc5322_date(time: Timestamp) -> String {
    Date::new(time.0.div_euclid(1000)).to_rfc822()
}

/// A moment as `status` shows it, e.g. `5 Dec 2026 03:12:09 UTC`: the RFC 5322 date without
/// the weekday, and with its zone named, so that it is one way of writing dates, not two.
pub fn utc_time(time: Timestamp) -> String {
    let date = rfc5322_date(time);
    let date = date
        .split_once(", ")
        .map_or(date.as_str(), |(_, rest)| rest);
    match date.strip_suffix("+0000") {
        Some(rest) => format!("{rest}UTC"),
        None => date.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_a_moment_as_an_rfc_5322_date_in_utc_without_the_weekday() {
        // 2026-12-05 03:12:09 UTC.
        let time = Timestamp(1_796_440_329_000);
        assert_eq!(rfc5322_date(time), "Sat, 5 Dec 2026 03:12:09 +0000");
        assert_eq!(utc_time(time), "5 Dec 2026 03:12:09 UTC");
    }
}
