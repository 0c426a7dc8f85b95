//! How a recipient's status changes: a final answer, a deferral scheduled by the retry policy
//! (never past the message's expiry), or parked while its transport is offline.

use std::time::Duration;

use provider_abi::{DeliveryState, Recipient, Timestamp};

use super::policy::{Jitter, RetryPolicy};
use crate::providers::status::StatusTable;

/// A recipient's place in its envelope's list: what routing and answers name it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct RecipientIndex(pub usize);

/// A final answer about a recipient, as reports show it.
pub(super) struct FinalAnswer<'a> {
    /// Delivered or failed.
    pub state: DeliveryState,
    /// Who answered (a transport, or the preprocessor that refused); `None` when nobody
    /// could (no transport claims the address type), which counts no attempt.
    pub by: Option<&'a str>,
    /// The enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub status_code: &'a str,
    /// The remote system's diagnostic (`smtp; 550 5.1.1 unknown user`), if any.
    pub diagnostic: &'a str,
    /// What a person reads.
    pub text: &'a str,
}

impl<'a> FinalAnswer<'a> {
    /// A failure with `status_code` and `text`, and no remote diagnostic.
    pub fn failed(by: Option<&'a str>, status_code: &'a str, text: &'a str) -> Self {
        FinalAnswer {
            state: DeliveryState::Failed,
            by,
            status_code,
            diagnostic: "",
            text,
        }
    }
}

/// Records a final answer.
pub(super) fn finish_recipient(recipient: &mut Recipient, answer: FinalAnswer<'_>) {
    let status = &mut recipient.status;
    status.state = answer.state;
    if let Some(by) = answer.by {
        status.transport = Some(by.into()).into();
        status.attempts += 1;
    }
    status.next_attempt = None.into();
    status.status_code = answer.status_code.into();
    status.diagnostic = answer.diagnostic.into();
    status.last_answer = answer.text.into();
}

/// Records a deferral, scheduling the next attempt by the policy, never past expiry.
#[allow(clippy::too_many_arguments)]
pub(super) fn defer(
    recipient: &mut Recipient,
    transport: &str,
    reason: &str,
    retry_after: Option<Duration>,
    now: Timestamp,
    expiry: Timestamp,
    policy: &RetryPolicy,
    jitter: &mut Jitter,
) {
    let status = &mut recipient.status;
    status.attempts += 1;
    status.transport = Some(transport.into()).into();
    let delay = policy.delay(status.attempts, retry_after, jitter.unit());
    status.next_attempt = Some(now.plus(delay).min(expiry)).into();
    status.last_answer = format!("deferred by {transport}: {reason}").into();
}

/// Parks a recipient whose transport is offline: it waits for the transport's "back online"
/// notice (which flushes it), or at the latest the maximum delay.
pub(super) fn wait_for(
    recipient: &mut Recipient,
    transport: &str,
    status: &StatusTable,
    now: Timestamp,
    expiry: Timestamp,
    max_delay: Duration,
) {
    let why = status
        .rows()
        .into_iter()
        .find(|row| row.name == transport)
        .map(|row| row.text)
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "not running".into());
    recipient.status.transport = Some(transport.into()).into();
    recipient.status.next_attempt = Some(now.plus(max_delay).min(expiry)).into();
    recipient.status.last_answer =
        format!("waiting: transport {transport} is offline ({why})").into();
}

/// `5d`, `3h`, `10m` or `30s`.
pub(super) fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s >= 86400 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if duration.subsec_millis() == 0 => format!("{s}s"),
        _ => format!("{}ms", duration.as_millis()),
    }
}
