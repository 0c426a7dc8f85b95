//! `GET /metrics`: the queue's gauges set from the store's count queries and the status
//! table at the moment of the scrape, then every metric, in OpenMetrics or the classic
//! text format.
//!
//! The oldest message's age comes from the first message of the Outbox in id order: stores
//! number messages in the order they are stored (an autoincrement, a sequence), so it is the
//! oldest, and the store finds it on its (folder, id) index whatever the queue's length.

use provider_abi::store::OUTBOX;
use provider_abi::Timestamp;

use super::reply::Reply;
use super::request::Request;
use super::Parts;
use crate::observe::metrics::{metrics, ByInstanceState, ByQueue};

/// The media type Prometheus asks for first.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic text format, for a scraper that does not ask for OpenMetrics.
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics page, in OpenMetrics if the scraper accepts it (Prometheus does), else in
/// the classic text format (`promtool check metrics` reads only that one).
pub fn metrics_page(parts: &Parts, request: &Request) -> Reply {
    let metrics = metrics();
    match parts.store.queue_counts() {
        Ok(counts) => {
            metrics.queue_messages.set(counts.messages as i64);
            metrics.queue_recipients.clear();
            for waiting in counts.waiting.iter() {
                metrics
                    .queue_recipients
                    .get_or_create(&ByQueue {
                        transport: waiting.transport.to_string(),
                        state: "deferred".into(),
                    })
                    .set(waiting.recipients as i64);
            }
        }
        Err(error) => log::warn!("metrics: the store cannot count the queue: {error}"),
    }
    match parts.store.held_messages() {
        Ok(held) => {
            metrics.queue_held.set(held as i64);
        }
        // A store older than provider-abi 1.3 cannot count them: the gauge stays at 0, and
        // the log is not filled with the same warning at every scrape.
        Err(error) if error.kind() == provider_abi::ErrorKind::Unsupported => {}
        Err(error) => log::warn!("metrics: the store cannot count held messages: {error}"),
    }
    match parts.store.size_on_disk() {
        Ok(bytes) => {
            metrics.store_size.set(bytes as i64);
        }
        // A store older than provider-abi 1.4 cannot tell: the gauge stays at 0.
        Err(error) if error.kind() == provider_abi::ErrorKind::Unsupported => {}
        Err(error) => log::warn!("metrics: the store cannot tell its size: {error}"),
    }
    match parts.store.list_page(OUTBOX, None, 1) {
        Ok(first) => {
            let age = first.first().map_or(0, |oldest| {
                Timestamp::now()
                    .since(oldest.envelope.submitted_at)
                    .as_secs()
            });
            metrics.queue_oldest_age.set(age as i64);
        }
        Err(error) => log::warn!("metrics: the store cannot list the queue: {error}"),
    }
    metrics.provider_state.clear();
    for row in parts.status.rows() {
        for state in ["online", "offline", "error"] {
            metrics
                .provider_state
                .get_or_create(&ByInstanceState {
                    instance: row.name.clone(),
                    state: state.into(),
                })
                .set(i64::from(row.state.to_string() == state));
        }
    }
    let openmetrics = request
        .header("accept")
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    if openmetrics {
        Reply::new(200, OPENMETRICS, metrics.render())
    } else {
        Reply::new(200, CLASSIC, metrics.render_classic())
    }
}
