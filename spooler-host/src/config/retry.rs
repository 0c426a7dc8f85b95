//! The profile's `[retry]` table as the queue manager applies it (`queue::policy` says how).

use std::time::Duration;

/// Exponential backoff with jitter between a minimum and a maximum delay, and a maximum
/// time in the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first deferral.
    pub min_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// How long a message may wait in the queue before its pending recipients fail.
    pub max_lifetime: Duration,
    /// After this long in the queue the sender gets one delay warning, if set.
    pub delay_warning: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Postfix's defaults, near enough: 5 minutes, doubling up to 1 hour, 5 days.
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(300),
            max_delay: Duration::from_secs(3600),
            max_lifetime: Duration::from_secs(5 * 86400),
            delay_warning: None,
        }
    }
}
