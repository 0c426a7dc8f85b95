//! In-process tests of a provider's worker: a call that panics or outlives its timeout comes
//! back as an error, and the provider is opened afresh for the calls after it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provider_abi::abi_stable::std_types::RSlice;
use provider_abi::transport::TransportObject;
use provider_abi::{Address, ErrorKind, ProviderError, ProviderKind, ProviderState};
use provider_testkit::{Call, ScriptedTransport};

use crate::providers::status::StatusTable;
use crate::providers::worker::{Opener, Worker};
use crate::testing::eventually;

/// A worker for `script` with `timeout`, its status table, and how many times it was opened.
fn worker(
    script: &ScriptedTransport,
    timeout: Option<Duration>,
) -> (Worker<TransportObject>, StatusTable, Arc<AtomicUsize>) {
    let status = StatusTable::default();
    status.register("smtp", ProviderKind::Transport, "scripted");
    let opened = Arc::new(AtomicUsize::new(0));
    let open: Opener<TransportObject> = Arc::new({
        let (script, opened) = (script.clone(), Arc::clone(&opened));
        move || {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok(provider_testkit::transport_object(script.clone()))
        }
    });
    let (worker, _) = Worker::start("smtp", 8, 1, timeout, open, status.clone(), None);
    (worker, status, opened)
}

/// Has the worker's transport deliver a message to bob.
fn send(worker: &Worker<TransportObject>) -> Result<usize, ProviderError> {
    worker.call(|transport| {
        let message = provider_testkit::message(&["SMTP:bob@example.net"], "Subject: x\r\n\r\n");
        let bob = [Address::parse("SMTP:bob@example.net").unwrap()];
        let outcomes = transport.submit(message.as_ref(), RSlice::from_slice(&bob));
        outcomes.into_result().map(|outcomes| outcomes.len())
    })
}

#[test]
fn a_call_that_panics_comes_back_as_an_error_and_the_provider_is_reopened_for_later_calls() {
    let script = ScriptedTransport::new(&["SMTP"]);
    script.then(Call::Panic("out of sockets".into()));
    let (worker, status, opened) = worker(&script, None);

    let panicked = send(&worker).unwrap_err();
    assert_eq!(panicked.kind(), ErrorKind::Panicked);
    assert!(panicked.message().contains("out of sockets"), "{panicked}");
    // The worker marks it after the caller has its answer.
    eventually("the status row in error", || {
        (status.state("smtp") == ProviderState::Error).then_some(())
    });

    // Until its backoff (a second) is over, calls get the fault without reaching it.
    let answered = eventually("a call answered by the reopened transport", || {
        send(&worker).ok()
    });
    assert_eq!(answered, 1);
    assert_eq!(opened.load(Ordering::SeqCst), 2);
    assert_eq!(
        script.submissions().len(),
        2,
        "the panic's call and the answered one"
    );
}

#[test]
fn a_call_outliving_the_timeout_is_abandoned_and_a_fresh_copy_takes_the_next_call() {
    let script = ScriptedTransport::new(&["SMTP"]);
    script.then(Call::Delay(Duration::from_secs(5)));
    let (worker, status, opened) = worker(&script, Some(Duration::from_millis(200)));

    let started = Instant::now();
    let abandoned = send(&worker).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at the timeout"
    );
    assert_eq!(abandoned.kind(), ErrorKind::Temporary);
    assert!(
        abandoned.message().contains("did not return within"),
        "{abandoned}"
    );
    // The abandonment sets the row to error; the fresh copy, opened at once on a thread of
    // its own, may already have set it back to online.
    let state = status.state("smtp");
    assert!(
        state == ProviderState::Error
            || (state == ProviderState::Online && opened.load(Ordering::SeqCst) == 2),
        "{state:?}"
    );

    assert_eq!(send(&worker), Ok(1));
    assert_eq!(opened.load(Ordering::SeqCst), 2);
}
