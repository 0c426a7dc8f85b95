//! Queue policy: when a deferred recipient is tried again, and when it expires, under the
//! profile's [`RetryPolicy`].

use std::time::Duration;

use provider_abi::{Envelope, Timestamp};

pub use crate::config::retry::RetryPolicy;

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`, after `attempts` attempts: the minimum
    /// doubled per attempt, plus up to a quarter of jitter (so recipients deferred together
    /// do not all come back together), within `[min_delay, max_delay]` and never shorter
    /// than what the transport asked for. `unit` in `[0, 1)` is the jitter's random draw.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        let base = self.min_delay.saturating_mul(1u32 << doublings.min(31));
        let jittered = base.mul_f64(1.0 + 0.25 * unit.clamp(0.0, 1.0));
        let delay = jittered.clamp(self.min_delay, self.max_delay);
        retry_after.map_or(delay, |asked| delay.max(asked))
    }

    /// When the pending recipients of `envelope` expire.
    pub fn expiry(&self, envelope: &Envelope) -> Timestamp {
        envelope
            .expires_at
            .into_option()
            .unwrap_or_else(|| envelope.submitted_at.plus(self.max_lifetime))
    }
}

/// A small xorshift generator for jitter; no cryptographic use.
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock.
    pub fn new() -> Self {
        Jitter((Timestamp::now().0 as u64) | 1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_and_honours_retry_after() {
        let policy = RetryPolicy {
            min_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(100),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(1, None, 0.0), Duration::from_secs(10));
        assert_eq!(policy.delay(3, None, 0.0), Duration::from_secs(40));
        assert_eq!(policy.delay(3, None, 0.99).as_secs(), 49);
        assert_eq!(policy.delay(30, None, 0.5), Duration::from_secs(100));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(70)), 0.0),
            Duration::from_secs(70)
        );
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        let mut jitter = Jitter::new();
        assert!((0..1000)
            .map(|_| jitter.unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
