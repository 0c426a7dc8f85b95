//! Tests of the retry policy on its own: the delays it gives and when recipients expire.

use std::time::Duration;

use provider_abi::abi_stable::std_types::ROption;
use provider_abi::Timestamp;

use crate::queue::policy::RetryPolicy;
use crate::testing::envelope;

const POLICY: RetryPolicy = RetryPolicy {
    min_delay: Duration::from_secs(60),
    max_delay: Duration::from_secs(3600),
    max_lifetime: Duration::from_secs(86400),
    delay_warning: None,
};

#[test]
fn the_delay_doubles_from_the_minimum_up_to_the_maximum_with_at_most_a_quarter_of_jitter() {
    for attempts in 1..=40u32 {
        let doubled = POLICY.min_delay.saturating_mul(1 << (attempts - 1).min(31));
        let lowest = doubled.min(POLICY.max_delay);
        let highest = doubled.mul_f64(1.25).min(POLICY.max_delay);
        for unit in [0.0, 0.3, 0.999_999] {
            let delay = POLICY.delay(attempts, None, unit);
            assert!(
                (lowest..=highest).contains(&delay),
                "attempt {attempts}, jitter {unit}: {delay:?} not within {lowest:?}..={highest:?}"
            );
        }
    }
    assert_eq!(
        POLICY.delay(0, None, 0.0),
        POLICY.min_delay,
        "never below the minimum"
    );
}

#[test]
fn a_transport_s_retry_after_lengthens_the_delay_and_never_shortens_it() {
    let asked = |secs| Some(Duration::from_secs(secs));
    assert_eq!(POLICY.delay(1, asked(900), 0.0), Duration::from_secs(900));
    assert_eq!(
        POLICY.delay(1, asked(7200), 0.0),
        Duration::from_secs(7200),
        "past the maximum too"
    );
    assert_eq!(POLICY.delay(4, asked(10), 0.0), Duration::from_secs(480));
}

#[test]
fn pending_recipients_expire_at_the_envelope_s_own_expiry_or_the_lifetime_after_submission() {
    let mut mail = envelope(&["SMTP:bob@example.net"]);
    mail.submitted_at = Timestamp(1_000_000);
    assert_eq!(
        POLICY.expiry(&mail),
        Timestamp(1_000_000).plus(POLICY.max_lifetime)
    );
    mail.expires_at = ROption::RSome(Timestamp(2_000_000));
    assert_eq!(POLICY.expiry(&mail), Timestamp(2_000_000));
}
