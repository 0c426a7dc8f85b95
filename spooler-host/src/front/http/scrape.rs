//! `GET /metrics`: the queue's gauges set from the store's count queries and the status
//! table at the moment of the scrape, then every metric in the OpenMetrics text format.

use super::reply::Reply;
use super::Parts;
use crate::observe::metrics::{metrics, ByInstanceState, ByQueue};

/// The media type Prometheus asks for first.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics page.
pub fn metrics_page(parts: &Parts) -> Reply {
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
    Reply::new(200, OPENMETRICS, metrics.render())
}
