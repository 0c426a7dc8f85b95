//! The host stopped under load, and what it keeps: SIGKILL during a run of 1,000 messages,
//! twenty SIGKILLs while clients submit (the crash harness), SIGTERM mid-run, and a full disk.
//! Nothing acknowledged is lost, nothing stored twice, no recorded delivery repeated.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use spooler_tests::{
    crash, files_per_message, real_server, recorded_deliveries, submit_many, wait_until, Host,
    Site, SmallDisk, PROMPTLY,
};

use crate::common::{FILES, PICKUP, QUICK_RETRY, TWO_TRANSPORTS};

#[test]
fn after_a_kill_9_during_a_run_of_1000_messages_every_message_arrives_and_no_recorded_delivery_is_repeated(
) {
    let site = Site::new();
    let config = site.write_config(&format!("{TWO_TRANSPORTS}\n[limits]\nmax_in_flight = 64\n"));
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "").unwrap();
    let mut host = Host::start(&config, "first-run.log");
    let ids = submit_many(&site.path("data/control.sock"), 1000);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        1000,
        "every submission got its own id"
    );

    // Submitted while the transport is offline, so the kill surely comes mid-run: it goes
    // online now, and the host is killed as soon as 100 messages are written.
    fs::remove_file(site.path("files/.offline")).unwrap();
    let deadline = std::time::Instant::now() + PROMPTLY * 3;
    while site.delivered_files("files").len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    host.kill_hard();
    let recorded_before = recorded_deliveries(&host.log());
    let written_before = site.delivered_files("files").len();
    assert!(
        written_before < 1000,
        "the kill came mid-run ({written_before} written)"
    );
    assert!(!recorded_before.is_empty());

    let host = Host::start(&config, "second-run.log");
    wait_until(PROMPTLY * 6, "every message is finished", || {
        host.list("Outbox").is_empty() && host.list("Sent Items").len() == 1000
    });

    let files_per_message = files_per_message(&site.delivered_files("files"));
    let ids: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(
        files_per_message.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "every message arrived"
    );
    for id in &recorded_before {
        assert_eq!(
            files_per_message[id], 1,
            "message {id} was recorded as delivered before the kill, yet sent again"
        );
    }
    // A delivery in flight at the kill is made again, and the transport finds it already
    // made (same queue id, recipients and bytes): no message is written twice.
    let repeats: usize = files_per_message.values().map(|n| n - 1).sum();
    assert_eq!(repeats, 0, "messages written twice");
    let recorded_after = recorded_deliveries(&host.log());
    assert!(
        recorded_before.is_disjoint(&recorded_after),
        "no recorded delivery was recorded again"
    );
    // A delivery committed just before the kill may have no log line in either run.
    assert!(recorded_before
        .union(&recorded_after)
        .all(|id| ids.contains(id)));
}

#[test]
fn twenty_kills_under_load_lose_no_acknowledged_message_and_store_none_twice() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let report = crash::run(&site, crash::IN_CI);
    eprintln!("{}", report.table());
    assert!(report.acknowledged > 100, "{}", report.table());
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert!(
        report.stored_twice.is_empty(),
        "stored twice: {:?}",
        report.stored_twice
    );
    assert!(
        report.delivered_twice_files.is_empty(),
        "written twice: {:?}",
        report.delivered_twice_files
    );
    // SMTP cannot tell a resent message from a new one (RFC 1047): a message whose delivery
    // was made but not yet recorded when the host died is sent again. At most the messages
    // in flight at each kill can be.
    assert!(
        report.delivered_twice_smtp.len() <= report.kills * 4,
        "{}",
        report.table()
    );
}

#[test]
fn a_full_disk_makes_submit_fail_temporarily_and_the_host_carries_on_when_space_is_freed() {
    let site = Site::new();
    let Some(disk) = SmallDisk::mount(&site.path("data"), "8M") else {
        return;
    };
    std::fs::create_dir_all(site.path("files")).unwrap();
    std::fs::write(site.path("files/.offline"), "").unwrap();
    let config = site.write_config(&format!(
        "{FILES}\n{QUICK_RETRY}\n[submission]\nclient_retry = \"1s\"\n"
    ));
    let host = Host::start(&config, "host.log");
    let queued = host.submit(&["FILE:alice"], "Subject: queued before\r\n\r\nwaits\r\n");

    let filler = disk.fill();
    let big = format!("Subject: too much\r\n\r\n{}\r\n", "x".repeat(1 << 20));
    let refused = host.submit_with_status(&["FILE:bob"], &big);
    assert_eq!(refused.code, Some(75), "EX_TEMPFAIL: {}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("the store could not take the message")
            && refused.stderr.contains("full")
            && refused.stderr.contains("try again"),
        "{}",
        refused.stderr
    );
    // The queue manager's own writes fail too; it says so once, not at every retry.
    let failures = || host.log().matches("the store failed").count();
    wait_until(PROMPTLY, "the queue manager meets the full disk", || {
        failures() > 0
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(failures(), 1, "{}", host.log());
    assert_eq!(host.command(&["status"]).code, Some(0), "the host runs on");

    // Space comes back: everything goes on by itself, the queue as it was.
    std::fs::remove_file(filler).unwrap();
    let recovered = std::time::Instant::now();
    while !host.log().contains("the store works again") {
        assert!(recovered.elapsed() < PROMPTLY, "{}", host.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let later = host.submit(&["FILE:bob"], &big);
    let outbox: Vec<String> = host
        .list("Outbox")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outbox,
        [queued.clone(), later.clone()],
        "nothing half-stored"
    );
    std::fs::remove_file(site.path("files/.offline")).unwrap();
    wait_until(PROMPTLY, "both are delivered", || {
        site.delivered_files("files").len() == 2
    });
}

#[test]
fn sigterm_during_a_busy_run_loses_nothing() {
    let site = Site::new();
    let config = site.write_config(&format!("{PICKUP}\n[limits]\nmax_in_flight = 32\n"));
    // Submitted while the transport is offline, so the stop surely comes mid-run.
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "").unwrap();
    let mut host = Host::start(&config, "first-run.log");
    let ids = submit_many(&site.path("data/control.sock"), 300);
    fs::remove_file(site.path("files/.offline")).unwrap();
    let deadline = std::time::Instant::now() + PROMPTLY;
    while site.delivered_files("files").len() < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    host.signal(libc::SIGTERM);
    assert_eq!(
        host.wait_exit(Duration::from_secs(40)),
        Some(0),
        "a clean exit:\n{}",
        host.log()
    );
    assert!(
        host.log()
            .contains("queue manager stopped; everything is stored"),
        "{}",
        host.log()
    );
    let recorded_before = recorded_deliveries(&host.log());

    let host = Host::start(&config, "second-run.log");
    wait_until(PROMPTLY * 3, "every message is finished", || {
        host.list("Outbox").is_empty() && host.list("Sent Items").len() == 300
    });
    let files = files_per_message(&site.delivered_files("files"));
    assert_eq!(files.len(), 300, "every message arrived");
    assert!(ids.iter().all(|id| files.contains_key(id)));
    assert!(
        files.values().all(|&n| n == 1),
        "a graceful stop repeats nothing: {:?}",
        files.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(recorded_before.is_disjoint(&recorded_deliveries(&host.log())));
}
