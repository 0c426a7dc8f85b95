//! Outbound delivery and its reports, through a real `spooler-host run` on the bundled
//! providers (embedded store, directory transports, distribution lists): routing by address
//! type, non-delivery and delivery reports, Bcc, distribution lists, outbound hooks, the
//! store's own recipients, a transport that declines, and the memory a large message costs.

use std::collections::BTreeSet;
use std::fs;

use spooler_tests::{wait_until, Host, Site, PROMPTLY};

use crate::common::{recipient, FILES, MESSAGE, TWO_TRANSPORTS};

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

/// The most memory the process `pid` has held so far (its VmHWM), in bytes.
fn peak_memory(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/<pid>/status has VmHWM");
    kib * 1024
}

#[test]
fn a_message_of_40_mib_costs_the_host_about_twice_its_size_in_memory_from_submission_to_delivery() {
    let site = Site::new();
    let host = Host::start(&site.write_config(FILES), "host.log");
    let before = peak_memory(host.pid());
    let line = "The quick brown fox jumps over the lazy dog, and the message grows and grows.\r\n";
    let size = 40 << 20;
    let mut message = String::with_capacity(size + line.len());
    message.push_str("Subject: big\r\n\r\n");
    while message.len() < size {
        message.push_str(line);
    }
    host.submit(&["-i", "FILE:alice"], &message);
    wait_until(PROMPTLY, "the message is delivered", || {
        host.list("Sent Items").len() == 1
    });
    let cost = peak_memory(host.pid()) - before;
    // The content once, plus SQLite's page cache (32 MiB at most): no copy per step.
    assert!(
        cost as f64 <= 2.2 * message.len() as f64,
        "the host's peak grew by {} MiB for a {} MiB message",
        cost >> 20,
        message.len() >> 20
    );
}
