//! The outbound engine as a user meets it: a real `spooler-host run` on the bundled
//! providers (embedded store, directory transports, distribution lists), messages submitted
//! with `spooler-host submit`, results read from the transports' folders and the store.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use serde_json::Value;
use spooler_tests::{
    files_per_message, recorded_deliveries, submit_many, wait_until, Host, Site, PROMPTLY,
};

/// Two directory transports: `fax` claims FAX, `files` claims FILE. Retries are quick.
const TWO_TRANSPORTS: &str = r#"
[[transport]]
provider = "directory"
name = "fax"
config = { path = "{site}/fax", address_type = "FAX" }

[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }

[retry]
min_delay = "200ms"
max_delay = "1s"
"#;

const MESSAGE: &str = "Message-ID: <figures-q3@example.com>\r\nFrom: alice@example.com\r\nTo: bob\r\nSubject: quarterly figures\r\n\r\nThe figures are attached.\r\n";

fn recipient<'a>(message: &'a Value, address: &str) -> &'a Value {
    message["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no recipient {address} in {message:#}"))
}

#[test]
fn recipients_of_several_types_go_to_the_transports_that_claim_them() {
    let site = Site::new();
    let host = Host::start(&site.write_config(TWO_TRANSPORTS), "host.log");
    let id = host.submit(&["FAX:+4930123456", "FILE:bob", "LOCAL:carol"], MESSAGE);

    wait_until(PROMPTLY, "the message is in Sent Items", || {
        host.list("Sent Items").len() == 1
    });
    let fax = site.delivered_files("fax");
    let files = site.delivered_files("files");
    assert_eq!(
        (fax.len(), files.len()),
        (1, 1),
        "one delivery per transport"
    );
    let fax_copy = fs::read_to_string(&fax[0]).unwrap();
    assert!(
        fax_copy.contains("X-Envelope-To: FAX:+4930123456\r\n"),
        "{fax_copy}"
    );
    assert!(
        !fax_copy.contains("FILE:bob") && !fax_copy.contains("carol"),
        "the fax transport sees only its recipient"
    );
    assert!(fax_copy.ends_with(MESSAGE));
    let file_copy = fs::read_to_string(&files[0]).unwrap();
    assert!(
        file_copy.contains("X-Envelope-To: FILE:bob\r\n") && !file_copy.contains("FAX:"),
        "{file_copy}"
    );

    // LOCAL is the store's own: it delivered that recipient itself.
    assert_eq!(host.contents("Local/carol"), [MESSAGE]);
    let sent = host.show(&id);
    assert_eq!(sent["folder"], "Sent Items");
    for (address, transport) in [
        ("FAX:+4930123456", "fax"),
        ("FILE:bob", "files"),
        ("LOCAL:carol", "embedded"),
    ] {
        let status = recipient(&sent, address);
        assert_eq!(status["state"], "delivered", "{status}");
        assert_eq!(status["transport"], transport, "{status}");
        assert_eq!(status["attempts"], 1, "{status}");
    }
    assert!(
        host.list("Inbox").is_empty(),
        "no report was asked for and nothing failed"
    );
}

#[test]
fn an_address_type_no_transport_claims_gets_a_non_delivery_report_at_once() {
    let site = Site::new();
    let host = Host::start(&site.write_config(TWO_TRANSPORTS), "host.log");
    let id = host.submit(&["X400:c=de;o=example;s=bob", "FILE:bob"], MESSAGE);

    let report = &host.reports(1)[0];
    assert!(
        report.contains("Content-Type: multipart/report; report-type=delivery-status"),
        "{report}"
    );
    assert!(
        report.contains("Subject: Undelivered Mail Returned to Sender"),
        "{report}"
    );
    assert!(
        report.contains(
            "Final-Recipient: x-x400; c=de;o=example;s=bob\r\nAction: failed\r\nStatus: 5.4.4\r\n"
        ),
        "{report}"
    );
    assert!(
        report.contains("no transport claims address type X400"),
        "{report}"
    );
    assert!(
        !report.contains("Final-Recipient: x-file; bob"),
        "only the failed recipient is reported"
    );
    assert!(
        report.contains("Subject: quarterly figures"),
        "the original headers are quoted"
    );
    let message = host.show(&id);
    assert_eq!(
        recipient(&message, "X400:c=de;o=example;s=bob")["state"],
        "failed"
    );
    assert_eq!(
        recipient(&message, "X400:c=de;o=example;s=bob")["attempts"],
        0
    );
    assert_eq!(recipient(&message, "FILE:bob")["state"], "delivered");
}

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
fn a_delivery_report_comes_when_the_sender_asks_for_one() {
    let site = Site::new();
    let host = Host::start(&site.write_config(TWO_TRANSPORTS), "host.log");
    host.submit(
        &[
            "-N",
            "success,failure",
            "-f",
            "alice@example.com",
            "FILE:bob",
            "FAX:+4930123",
        ],
        MESSAGE,
    );

    let report = &host.reports(1)[0];
    assert!(
        report.contains("Subject: Delivery Status Notification (Success)"),
        "{report}"
    );
    assert!(report.contains("To: alice@example.com\r\n"), "{report}");
    assert!(
        report.contains("Final-Recipient: x-file; bob\r\nAction: delivered\r\nStatus: 2.0.0\r\n"),
        "{report}"
    );
    assert!(
        report.contains("Final-Recipient: x-fax; +4930123\r\nAction: delivered\r\n"),
        "{report}"
    );
    let inbox = host.list("Inbox");
    assert_eq!(inbox[0]["is_report"], true);
    assert_eq!(inbox[0]["sender"], "LOCAL:mailer-daemon");
}

#[test]
fn no_one_but_the_sender_ever_sees_a_bcc_recipient() {
    let site = Site::new();
    let host = Host::start(&site.write_config(TWO_TRANSPORTS), "host.log");
    let message = "From: alice@example.com\r\nTo: bob\r\nBcc: carol@example.com\r\nSubject: surprise party\r\n\r\nSaturday.\r\n";
    // carol is Bcc; dora (FAX, Bcc) and erin (an unknown type, Bcc) fail, so reports name them.
    host.submit(
        &[
            "-N",
            "success,failure",
            "-f",
            "alice@example.com",
            "FILE:bob",
            "--bcc",
            "FILE:carol",
            "--bcc",
            "X400:erin",
        ],
        message,
    );

    let reports = host.reports(2);
    let files = site.delivered_files("files");
    assert_eq!(
        files.len(),
        2,
        "bob's copy and carol's copy are separate deliveries"
    );
    let copies: Vec<String> = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    let bobs = copies
        .iter()
        .find(|c| c.contains("X-Envelope-To: FILE:bob"))
        .expect("bob's copy");
    assert!(
        !bobs.to_lowercase().contains("carol") && !bobs.contains("erin"),
        "bob's copy shows no Bcc recipient:\n{bobs}"
    );
    assert!(
        !bobs.contains("Bcc:"),
        "the Bcc header was removed at submission"
    );
    let carols = copies
        .iter()
        .find(|c| c.contains("X-Envelope-To: FILE:carol"))
        .expect("carol's copy");
    assert!(
        !carols.contains("FILE:bob\r\n") && !carols.contains("erin"),
        "carol's copy names only her:\n{carols}"
    );

    // The reports go to the sender alone, who may see her Bcc recipients.
    for report in &reports {
        assert!(report.contains("To: alice@example.com\r\n"), "{report}");
        assert!(
            !report.contains("Bcc: carol"),
            "the quoted headers carry no Bcc field"
        );
    }
    let reports = reports.join("\n");
    assert!(
        reports.contains("X400:erin (Bcc)"),
        "the sender's own report may name a Bcc recipient"
    );
}

#[test]
fn distribution_lists_are_expanded_before_routing_with_nesting_and_loops() {
    let site = Site::new();
    let config = site.write_config(&format!(
        "{TWO_TRANSPORTS}\n{}",
        r#"
[[preprocessor]]
provider = "distribution-lists"
config = { lists = { "LOCAL:team" = ["FILE:ann", "LOCAL:ops", "FILE:bob"], "LOCAL:ops" = ["FAX:+4930123", "LOCAL:team", "FILE:ann"] } }
"#
    ));
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["LOCAL:team", "LOCAL:carol"], MESSAGE);

    wait_until(PROMPTLY, "the message is finished", || {
        host.list("Sent Items").len() == 1
    });
    let message = host.show(&id);
    let addresses: BTreeSet<String> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = ["FILE:ann", "FILE:bob", "FAX:+4930123", "LOCAL:carol"]
        .map(String::from)
        .into();
    assert_eq!(
        addresses, expected,
        "lists replaced by their members, each once"
    );
    for address in &expected {
        assert_eq!(recipient(&message, address)["state"], "delivered");
    }
    assert_eq!(site.delivered_files("files").len(), 1);
    assert_eq!(site.delivered_files("fax").len(), 1);
    assert_eq!(host.list("Local/carol").len(), 1);
    assert!(
        host.list("Local/team").is_empty(),
        "a list is not a mailbox"
    );
    assert!(
        host.log().contains("distribution list loop"),
        "the loop is reported"
    );
}

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
fn outbound_hooks_file_finished_messages_and_deletion_is_honoured() {
    let site = Site::new();
    let config = site.write_config(&format!(
        "{TWO_TRANSPORTS}\n{}",
        r#"
[[hook]]
provider = "rules"
config = { rule = [{ field = "subject", contains = "invoice", action = "move", folder = "Archive/Invoices", direction = "outbound" }] }
"#
    ));
    let host = Host::start(&config, "host.log");
    let invoice = host.submit(&["FILE:bob"], "Subject: Invoice 42\r\n\r\nPay.\r\n");
    let note = host.submit(&["FILE:bob"], "Subject: lunch\r\n\r\nNoon?\r\n");
    let gone = host.submit(
        &["--delete-after", "FILE:bob"],
        "Subject: ephemeral\r\n\r\nBye.\r\n",
    );

    wait_until(PROMPTLY, "all three are finished", || {
        host.list("Outbox").is_empty() && site.delivered_files("files").len() == 3
    });
    assert_eq!(host.show(&invoice)["folder"], "Archive/Invoices");
    assert_eq!(host.show(&note)["folder"], "Sent Items");
    let missing = host.command(&["show", &gone]);
    assert_ne!(missing.code, Some(0));
    assert!(
        missing
            .stderr
            .contains(&format!("there is no message {gone}")),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_message_only_for_the_stores_own_recipients_is_delivered_by_the_store_and_finished() {
    let site = Site::new();
    let host = Host::start(&site.write_config(""), "host.log");
    let id = host.submit(&["-N", "success", "LOCAL:alice", "local:Bob"], MESSAGE);

    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    assert_eq!(host.contents("Local/alice"), [MESSAGE]);
    assert_eq!(host.contents("Local/Bob"), [MESSAGE]);
    let copy = &host.list("Local/alice")[0];
    assert_eq!(recipient(copy, "LOCAL:alice")["state"], "delivered");
    let report = &host.reports(1)[0];
    assert!(
        report.contains("Final-Recipient: x-local; alice\r\nAction: delivered\r\n"),
        "{report}"
    );
    assert!(report.contains("X-Spooler-Transport: embedded"), "{report}");
}

#[test]
fn a_recipient_a_transport_declines_goes_to_the_next_one_claiming_its_type() {
    let site = Site::new();
    let config = site.write_config(
        r#"
[[transport]]
provider = "directory"
name = "german-fax"
config = { path = "{site}/de", address_type = "FAX", only = ["+49*"] }

[[transport]]
provider = "directory"
name = "world-fax"
config = { path = "{site}/world", address_type = "FAX" }
"#,
    );
    let host = Host::start(&config, "host.log");
    let id = host.submit(&["FAX:+4930123", "FAX:+33142"], MESSAGE);

    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let german = fs::read_to_string(&site.delivered_files("de")[0]).unwrap();
    let world = fs::read_to_string(&site.delivered_files("world")[0]).unwrap();
    assert!(
        german.contains("X-Envelope-To: FAX:+4930123\r\n") && !german.contains("+33"),
        "{german}"
    );
    assert!(
        world.contains("X-Envelope-To: FAX:+33142\r\n") && !world.contains("+49"),
        "{world}"
    );
    let message = host.show(&id);
    assert_eq!(
        recipient(&message, "FAX:+4930123")["transport"],
        "german-fax"
    );
    assert_eq!(recipient(&message, "FAX:+33142")["transport"], "world-fax");
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
