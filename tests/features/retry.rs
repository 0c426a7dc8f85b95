//! Store and forward: mail waits in the Outbox while its transport is offline, slow, hung or
//! panicking, is retried with growing pauses, goes out as soon as it can, is delivered no
//! earlier than asked, warns its sender of a delay, and expires at the end of its lifetime.

use std::fs;
use std::time::Duration;

use spooler_tests::{wait_until, Host, Site, PROMPTLY};

use crate::common::{one_at_a_time, recipient, FILES, MESSAGE, QUICK_RETRY, TWO_TRANSPORTS};

#[test]
fn mail_for_an_offline_transport_waits_and_goes_out_as_soon_as_it_is_back() {
    let site = Site::new();
    // A long backoff: only the "back online" notice can explain a prompt delivery.
    let config = site.write_config(&TWO_TRANSPORTS.replace(
        "min_delay = \"200ms\"\nmax_delay = \"1s\"",
        "min_delay = \"1h\"\nmax_delay = \"1h\"",
    ));
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "maintenance").unwrap();
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["FILE:bob"], MESSAGE);

    wait_until(
        PROMPTLY,
        "the recipient waits for the offline transport",
        || {
            let status = recipient(&host.show(&id), "FILE:bob").clone();
            status["last_answer"]
                .as_str()
                .unwrap_or_default()
                .starts_with("waiting: transport files is offline")
        },
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("files") && l.contains("offline")),
        "{status}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        site.delivered_files("files").is_empty(),
        "nothing is written while offline"
    );
    assert_eq!(host.list("Outbox").len(), 1);

    fs::remove_file(site.path("files/.offline")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the waiting message is delivered",
        || site.delivered_files("files").len() == 1,
    );
    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    assert_eq!(recipient(&host.show(&id), "FILE:bob")["state"], "delivered");
}

#[test]
fn a_recipient_still_waiting_at_the_end_of_its_lifetime_fails_as_expired() {
    let site = Site::new();
    let config = site.write_config(&TWO_TRANSPORTS.replace(
        "max_delay = \"1s\"",
        "max_delay = \"1s\"\nmax_lifetime = \"2s\"",
    ));
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "").unwrap();
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["FILE:bob", "FAX:+4930123"], MESSAGE);

    let report = &host.reports(1)[0];
    assert!(
        report.contains("Final-Recipient: x-file; bob\r\nAction: failed\r\nStatus: 4.4.7\r\n"),
        "{report}"
    );
    assert!(
        report.contains("expired: not delivered within 2s"),
        "{report}"
    );
    assert!(
        report.contains("transport files is offline"),
        "the last answer is quoted: {report}"
    );
    let message = host.show(&id);
    assert_eq!(message["folder"], "Sent Items");
    assert_eq!(recipient(&message, "FILE:bob")["state"], "failed");
    assert_eq!(recipient(&message, "FAX:+4930123")["state"], "delivered");
    assert!(site.delivered_files("files").is_empty());
}

#[test]
fn a_deferred_delivery_time_is_honoured() {
    let site = Site::new();
    let host = Host::start(&site.write_config(TWO_TRANSPORTS), "host.log");
    let submitted = std::time::Instant::now();
    let id = host.submit(&["--defer", "2s", "FILE:bob"], MESSAGE);

    std::thread::sleep(Duration::from_millis(1000));
    if submitted.elapsed() < Duration::from_millis(1900) {
        assert!(
            site.delivered_files("files").is_empty(),
            "nothing is sent before the deferred time"
        );
        assert_eq!(recipient(&host.show(&id), "FILE:bob")["state"], "pending");
    }
    wait_until(PROMPTLY, "the message goes out after its time", || {
        site.delivered_files("files").len() == 1
    });
    assert!(
        submitted.elapsed() >= Duration::from_secs(2),
        "it went out early"
    );
}

#[test]
fn a_sender_gets_one_delay_warning_while_delivery_goes_on() {
    let site = Site::new();
    let config = site.write_config(&TWO_TRANSPORTS.replace(
        "max_delay = \"1s\"",
        "max_delay = \"300ms\"\ndelay_warning = \"1s\"",
    ));
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "").unwrap();
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["FILE:bob"], MESSAGE);

    host.reports(1);
    std::thread::sleep(Duration::from_millis(1500));
    let warning = &host.reports(1)[0];
    assert!(
        warning.contains("Subject: Delayed Mail (still being retried)"),
        "{warning}"
    );
    assert!(
        warning.contains("Final-Recipient: x-file; bob\r\nAction: delayed\r\n"),
        "{warning}"
    );
    assert_eq!(
        recipient(&host.show(&id), "FILE:bob")["state"],
        "pending",
        "delivery goes on"
    );
    fs::remove_file(site.path("files/.offline")).unwrap();
    wait_until(PROMPTLY, "the message is delivered in the end", || {
        site.delivered_files("files").len() == 1
    });
}

#[test]
fn a_panicking_transport_defers_only_its_own_mail_and_is_reopened() {
    let site = Site::new();
    site.providers().add_library("fixture-flaky-transport");
    let config = site.write_config(&format!(
        "{TWO_TRANSPORTS}\n[[transport]]\nprovider = \"flaky\"\nisolate = false\nconfig = {{ count_file = \"{{site}}/flaky-count\" }}\n"
    ));
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["FLAKY:one", "FILE:bob"], MESSAGE);

    wait_until(PROMPTLY, "the other transport delivers", || {
        site.delivered_files("files").len() == 1
    });
    wait_until(
        PROMPTLY,
        "the panicking transport's recipient is deferred",
        || {
            recipient(&host.show(&id), "FLAKY:one")["last_answer"]
                .as_str()
                .is_some_and(|answer| {
                    answer.contains("panicked: the flaky transport trips over its first message")
                })
        },
    );
    wait_until(PROMPTLY, "the reopened transport delivers", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let flaky = recipient(&host.show(&id), "FLAKY:one").clone();
    assert_eq!(flaky["state"], "delivered", "{flaky}");
    // Attempts in the second before it is reopened are answered with the panic; then the
    // reopened transport delivers, once.
    assert!(flaky["attempts"].as_u64().unwrap() >= 2, "{flaky}");
    assert_eq!(fs::read_to_string(site.path("flaky-count")).unwrap(), "x");
    assert!(host.log().contains("flaky: opened"), "{}", host.log());
    assert!(
        host.list("Inbox").is_empty(),
        "a deferral is not a failure: no report"
    );
}

#[test]
fn a_transport_call_that_hangs_is_abandoned_its_mail_deferred_and_a_fresh_copy_delivers_it() {
    let _alone = one_at_a_time();
    let site = Site::new();
    site.providers()
        .add_library("fixture-misbehaving-transport");
    let config = site.write_config(&format!(
        "{FILES}\n[[transport]]\nprovider = \"hanging\"\ntimeout = \"2s\"\nisolate = false\n{QUICK_RETRY}"
    ));
    let host = Host::start(&config, "host.log");
    let stuck = host.submit(&["HANG:alice"], "Subject: to a hung server\r\n\r\nx\r\n");
    std::thread::sleep(Duration::from_millis(300));
    let other = host.submit(&["FILE:bob"], "Subject: meanwhile\r\n\r\nx\r\n");

    // The rest keeps delivering while the call hangs.
    wait_until(
        Duration::from_secs(2),
        "the other message is delivered",
        || {
            site.delivered_files("files")
                .iter()
                .any(|f| f.to_string_lossy().contains(&other))
        },
    );
    // At its timeout the call is abandoned: the recipient deferred with the reason, and a
    // fresh copy of the transport, opened on a new thread, delivers it on the next attempt.
    wait_until(PROMPTLY, "the message is delivered by a fresh copy", || {
        recipient(&host.show(&stuck), "HANG:alice")["state"] == "delivered"
    });
    let alice = recipient(&host.show(&stuck), "HANG:alice").clone();
    assert_eq!(alice["attempts"], 2, "{alice}");
    assert_eq!(alice["last_answer"], "delivered by a fresh copy", "{alice}");
    let log = host.log();
    assert!(
        log.contains("hanging: a call did not return within 2s (the instance's timeout); it was abandoned and the provider is reopened on a fresh thread"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{stuck}: transport hanging failed for HANG:alice: temporary failure: hanging: a \
             call did not return within 2s"
        )),
        "{log}"
    );
}

#[test]
fn a_transport_that_panics_on_every_call_is_reopened_after_growing_pauses_while_the_rest_delivers()
{
    let _alone = one_at_a_time();
    let site = Site::new();
    site.providers()
        .add_library("fixture-misbehaving-transport");
    let config = site.write_config(&format!(
        "{FILES}\n[[transport]]\nprovider = \"broken\"\nconfig = {{ opens_file = \"{{site}}/opens\" }}\n{QUICK_RETRY}"
    ));
    let host = Host::start(&config, "host.log");
    let broken = host.submit(&["BROKEN:alice"], "Subject: into the void\r\n\r\nx\r\n");
    let started = std::time::Instant::now();
    let mut delivered = Vec::new();
    while started.elapsed() < Duration::from_secs(6) {
        let id = host.submit(&["FILE:bob"], "Subject: meanwhile\r\n\r\nx\r\n");
        delivered.push(id);
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_until(PROMPTLY, "the other messages are delivered", || {
        site.delivered_files("files").len() == delivered.len()
    });

    // Retried every 200 ms for 6 s, it was reopened after 1, 2 and 4 s of rest: not once per
    // attempt.
    let opens = std::fs::read_to_string(site.path("opens"))
        .unwrap()
        .lines()
        .count();
    assert!(
        (2..=4).contains(&opens),
        "opened {opens} times in 6 s: {}",
        host.log()
    );
    let alice = recipient(&host.show(&broken), "BROKEN:alice").clone();
    assert_eq!(alice["state"], "pending", "{alice}");
    assert!(
        alice["attempts"].as_u64().unwrap() >= 6,
        "attempts go on meanwhile, answered with the fault: {alice}"
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status.contains("broken panicked; it is reopened in"),
        "{status}"
    );
}
