//! What the queue manager tells beyond the log: each answer counted in the metrics and
//! published as a delivery event once it is stored, with the transport that gave it.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use provider_abi::RecipientOutcome;

use crate::observe::events::{self, Event, EventKind};
use crate::observe::metrics::{metrics, ByTransport, NO_TRANSPORT};
use crate::testing::{envelope, spooler_with};

/// The count of `family` for `transport`.
fn count(family: &Family<ByTransport, Counter>, transport: &str) -> u64 {
    family
        .get_or_create(&ByTransport {
            transport: transport.to_owned(),
        })
        .get()
}

#[test]
fn delivered_deferred_and_failed_recipients_are_counted_and_published_with_their_transport() {
    let (spooler, smtp) = spooler_with("observed", "SMTP");
    smtp.answer(
        "SMTP:carol@observed.example",
        RecipientOutcome::deferred("451 4.7.1 greylisted", Some(900)),
    );
    let m = metrics();
    let before = (
        count(&m.delivered, "observed"),
        count(&m.deferred, "observed"),
        count(&m.failed, NO_TRANSPORT),
    );
    let subscription = events::subscribe(None);

    let id = spooler.submit(envelope(&[
        "SMTP:bob@observed.example",
        "SMTP:carol@observed.example",
        "X400:c=fr;s=observed",
    ]));

    // The bus is the process's: other tests publish on it too.
    let mut seen: Vec<Event> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let wanted = |seen: &[Event]| {
        let about = |kind, recipient: &str| {
            seen.iter()
                .any(|e| e.kind == kind && e.recipient.as_deref() == Some(recipient))
        };
        about(EventKind::Delivered, "SMTP:bob@observed.example")
            && about(EventKind::Deferred, "SMTP:carol@observed.example")
            && about(EventKind::Failed, "X400:c=fr;s=observed")
            && seen.iter().any(|e| {
                e.kind == EventKind::ReportSent && e.detail.as_deref() == Some("non_delivery")
            })
    };
    while !wanted(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = subscription
            .events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("not every event came: {seen:#?}"));
        if event.message == id.to_string() {
            seen.push(event);
        }
    }
    let event = |kind| seen.iter().find(|e| e.kind == kind).unwrap();
    assert_eq!(
        event(EventKind::Delivered).transport.as_deref(),
        Some("observed")
    );
    let deferred = event(EventKind::Deferred);
    assert_eq!(deferred.transport.as_deref(), Some("observed"));
    assert_eq!(
        deferred.detail.as_deref(),
        Some("deferred by observed: 451 4.7.1 greylisted")
    );
    let failed = event(EventKind::Failed);
    assert_eq!(failed.transport, None);
    assert_eq!(
        failed.detail.as_deref(),
        Some("no transport claims address type X400")
    );
    assert!(count(&m.delivered, "observed") > before.0);
    assert!(count(&m.deferred, "observed") > before.1);
    assert!(count(&m.failed, NO_TRANSPORT) > before.2);
}
