//! The host's metrics, in Prometheus' conventions (`spooler_` prefix, `_total` counters,
//! seconds and bytes), written by the OpenMetrics project's client library. Counters and
//! histograms are recorded where the work happens; gauges that describe the queue are set
//! from the store's count queries when Prometheus scrapes (`render`'s caller does), so they
//! are right even with several hosts on one queue.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Where a submission came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BySource {
    /// `control` (the control socket: `submit`, programs), `listener` (SMTP), `sendmail`.
    pub source: String,
}

/// Which transport instance answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByTransport {
    /// The instance's name, or [`NO_TRANSPORT`].
    pub transport: String,
}

/// The `transport` label of a recipient that failed with no transport answering for it: no
/// transport claims its address type, or every one that does said it was not theirs.
pub const NO_TRANSPORT: &str = "none";

/// Which provider instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByInstance {
    /// The instance's name.
    pub instance: String,
}

/// A provider instance in one of its states (1 for the state it is in, 0 for the others).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByInstanceState {
    /// The instance's name.
    pub instance: String,
    /// `online`, `offline` or `error`.
    pub state: String,
}

/// Which kind of report.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByReport {
    /// `delivery`, `non_delivery` or `delay`.
    pub kind: String,
}

/// Which per-client limit of the SMTP listeners refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByLimit {
    /// `banned`, `sessions`, `connection_rate` or `message_rate`.
    pub limit: String,
}

/// Queued recipients of one transport in one state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByQueue {
    /// The transport that last answered for them (empty: never tried yet).
    pub transport: String,
    /// `deferred` (tried, waiting for the next attempt).
    pub state: String,
}

/// Every metric the host exposes.
pub struct Metrics {
    registry: Registry,
    /// Messages queued, by where they came from.
    pub submitted: Family<BySource, Counter>,
    /// Recipients delivered, by transport.
    pub delivered: Family<ByTransport, Counter>,
    /// Recipients delivered, every transport together: not served (it is the sum of
    /// `delivered`), read by the dashboard's plot, since a family cannot be summed short of
    /// encoding it.
    pub delivered_all: Counter,
    /// Recipient attempts deferred, by transport.
    pub deferred: Family<ByTransport, Counter>,
    /// Recipients failed for good, by transport.
    pub failed: Family<ByTransport, Counter>,
    /// Reports sent to senders, by kind.
    pub reports: Family<ByReport, Counter>,
    /// Seconds from submission to delivery, per delivered recipient.
    pub delivery_time: Histogram,
    /// Seconds one group commit of the store took.
    pub commit_time: Histogram,
    /// Commits (callers' writes) merged into one group commit.
    pub commit_batch: Histogram,
    /// SMTP sessions open now.
    pub sessions_open: Gauge,
    /// SMTP connections refused (over `max_sessions`).
    pub sessions_refused: Counter,
    /// SMTP connections and messages refused by a per-client limit, by limit.
    pub client_refusals: Family<ByLimit, Counter>,
    /// SMTP clients banned after failed authentications.
    pub clients_banned: Counter,
    /// Messages taken in from inbound transports, by transport.
    pub inbound: Family<ByTransport, Counter>,
    /// Each provider instance's state.
    pub provider_state: Family<ByInstanceState, Gauge>,
    /// Restarts of a provider instance (reopened after a fault, or a child replaced).
    pub provider_restarts: Family<ByInstance, Counter>,
    /// Calls of a provider instance that panicked or crashed its child.
    pub provider_panics: Family<ByInstance, Counter>,
    /// Messages in the Outbox (set at each scrape).
    pub queue_messages: Gauge,
    /// Queued recipients by transport and state (set at each scrape).
    pub queue_recipients: Family<ByQueue, Gauge>,
    /// Held messages (set at each scrape).
    pub queue_held: Gauge,
    /// Seconds since the oldest message waiting in the Outbox was submitted (set at each
    /// scrape; 0 with an empty queue).
    pub queue_oldest_age: Gauge,
    /// Bytes the store takes on disk (set at each scrape; 0 if the store cannot tell).
    pub store_size: Gauge,
}

fn seconds_buckets() -> Histogram {
    // 1 ms to about 9 hours: a commit takes milliseconds, a deferred delivery hours.
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

impl Metrics {
    /// Counts a refusal by the per-client `limit`.
    pub fn client_refused(&self, limit: &str) {
        self.client_refusals
            .get_or_create(&ByLimit {
                limit: limit.to_owned(),
            })
            .inc();
    }

    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spooler");
        let metrics = Metrics {
            submitted: Family::default(),
            delivered: Family::default(),
            delivered_all: Counter::default(),
            deferred: Family::default(),
            failed: Family::default(),
            reports: Family::default(),
            delivery_time: seconds_buckets(),
            commit_time: seconds_buckets(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            sessions_open: Gauge::default(),
            sessions_refused: Counter::default(),
            client_refusals: Family::default(),
            clients_banned: Counter::default(),
            inbound: Family::default(),
            provider_state: Family::default(),
            provider_restarts: Family::default(),
            provider_panics: Family::default(),
            queue_messages: Gauge::default(),
            queue_recipients: Family::default(),
            queue_held: Gauge::default(),
            queue_oldest_age: Gauge::default(),
            store_size: Gauge::default(),
            registry: Registry::default(),
        };
        let seconds = Unit::Seconds;
        registry.register(
            "messages_submitted",
            "Messages queued, by where they came from",
            metrics.submitted.clone(),
        );
        registry.register(
            "recipients_delivered",
            "Recipients delivered, by transport (the store's name for those it delivers itself)",
            metrics.delivered.clone(),
        );
        registry.register(
            "recipients_deferred",
            "Recipient attempts deferred, by transport",
            metrics.deferred.clone(),
        );
        registry.register(
            "recipients_failed",
            "Recipients failed for good, by the transport that answered last (for an expired \
             one, the transport that kept deferring it; a preprocessor's name if it refused \
             it; none when no transport claims it)",
            metrics.failed.clone(),
        );
        registry.register(
            "reports_sent",
            "Delivery and non-delivery reports sent to senders",
            metrics.reports.clone(),
        );
        registry.register_with_unit(
            "delivery_duration",
            "Time from submission to delivery, per delivered recipient",
            seconds.clone(),
            metrics.delivery_time.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Time one group commit of the store took",
            seconds.clone(),
            metrics.commit_time.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Commits (callers' writes) merged into one group commit of the store",
            metrics.commit_batch.clone(),
        );
        registry.register(
            "listener_sessions_open",
            "SMTP sessions open now",
            metrics.sessions_open.clone(),
        );
        registry.register(
            "listener_sessions_refused",
            "SMTP connections refused because max_sessions were open",
            metrics.sessions_refused.clone(),
        );
        registry.register(
            "listener_client_refusals",
            "SMTP connections and messages refused by a per-client limit",
            metrics.client_refusals.clone(),
        );
        registry.register(
            "listener_clients_banned",
            "SMTP clients banned after failed authentications",
            metrics.clients_banned.clone(),
        );
        registry.register(
            "inbound_messages",
            "Messages taken in from inbound transports",
            metrics.inbound.clone(),
        );
        registry.register(
            "provider_state",
            "Each provider instance's state: 1 for the state it is in",
            metrics.provider_state.clone(),
        );
        registry.register(
            "provider_restarts",
            "Provider instances reopened after a fault, or isolated children replaced",
            metrics.provider_restarts.clone(),
        );
        registry.register(
            "provider_panics",
            "Provider calls that panicked, or crashed an isolated child",
            metrics.provider_panics.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in the Outbox",
            metrics.queue_messages.clone(),
        );
        registry.register(
            "queue_recipients",
            "Queued recipients by the transport that last answered and their state",
            metrics.queue_recipients.clone(),
        );
        registry.register(
            "queue_held_messages",
            "Messages held in the Outbox",
            metrics.queue_held.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_message_age",
            "Age of the oldest message waiting in the Outbox",
            seconds,
            metrics.queue_oldest_age.clone(),
        );
        registry.register_with_unit(
            "store_size",
            "Bytes the store takes on disk (its files, or its tables on a database server)",
            Unit::Bytes,
            metrics.store_size.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Everything, in the OpenMetrics text format (what Prometheus asks for first).
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Everything, in Prometheus' classic text format (0.0.4), for scrapers that do not ask
    /// for OpenMetrics (`promtool check metrics`, older tools). The client library writes
    /// only OpenMetrics; the two differ, for what this registry holds, in the names that
    /// `HELP` and `TYPE` give a counter (`x` there, `x_total` here, as its samples are
    /// named), in `UNIT` (not a classic line) and in the closing `# EOF`.
    pub fn render_classic(&self) -> String {
        classic(&self.render())
    }
}

/// An OpenMetrics page of counters, gauges and histograms in the classic text format.
fn classic(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|tag| Some((tag, line.strip_prefix(tag)?)));
        match described {
            Some((tag, rest)) => {
                let (name, more) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(&name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{tag}{name}{total} {more}\n"));
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classic_format_names_counters_as_their_samples_and_has_no_openmetrics_lines() {
        metrics().sessions_refused.inc();
        let text = metrics().render_classic();
        assert!(text.contains(
            "# TYPE spooler_listener_sessions_refused_total counter\n\
             spooler_listener_sessions_refused_total "
        ));
        assert!(text.contains("# HELP spooler_listener_sessions_refused_total SMTP"));
        assert!(text.contains("# TYPE spooler_store_commit_duration_seconds histogram\n"));
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }
}
