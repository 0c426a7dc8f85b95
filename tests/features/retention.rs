//! Retention: finished mail leaves the store when its time is over (`[store] keep_sent`,
//! `keep_reports`), while local folders and the reports still wanted stay; `status` shows
//! the store's size.

use std::time::Duration;

use spooler_tests::{wait_until, Host, Site, PROMPTLY};

use crate::common::{MESSAGE, TWO_TRANSPORTS};

/// Long enough for the retention thread's first pass (5 s after start) and a slow machine.
const FIRST_PASS: Duration = Duration::from_secs(40);

/// A message to a transport's recipient, the store's own (`LOCAL`) and a type nobody claims
/// (a non-delivery report for the sender, in the Inbox).
const RECIPIENTS: [&str; 3] = ["FILE:bob", "LOCAL:carol", "X400:c=de;o=example;s=bob"];

#[test]
fn with_keep_sent_zero_a_finished_message_is_deleted_and_local_mail_and_reports_stay() {
    let site = Site::new();
    let profile = format!("{TWO_TRANSPORTS}\n[store]\nkeep_sent = \"0s\"\n");
    let host = Host::start(&site.write_config(&profile), "host.log");
    let id = host.submit(&RECIPIENTS, MESSAGE);

    wait_until(PROMPTLY, "the message is finished", || {
        host.log().contains(&format!("{id}: finished; deleted"))
    });
    assert_eq!(site.delivered_files("files").len(), 1, "delivered first");
    assert!(host.list("Sent Items").is_empty(), "nothing is filed");
    assert_eq!(host.contents("Local/carol"), [MESSAGE], "local mail stays");
    assert_eq!(host.reports(1).len(), 1, "the report stays in the Inbox");
}

#[test]
fn sent_items_older_than_keep_sent_are_removed_and_local_mail_and_reports_stay() {
    let site = Site::new();
    let profile = format!("{TWO_TRANSPORTS}\n[store]\nkeep_sent = \"1s\"\nkeep_reports = \"1h\"\n");
    let host = Host::start(&site.write_config(&profile), "host.log");
    let ids: Vec<String> = (0..3)
        .map(|n| {
            let message = MESSAGE.replace("figures-q3", &format!("figures-{n}"));
            host.submit(&RECIPIENTS, &message)
        })
        .collect();
    wait_until(PROMPTLY, "the three messages are in Sent Items", || {
        host.list("Sent Items").len() == 3
    });

    wait_until(FIRST_PASS, "Sent Items is emptied", || {
        host.list("Sent Items").is_empty()
    });
    assert!(
        host.log()
            .contains("retention: removed 3 message(s) from Sent Items kept longer than 1s"),
        "{}",
        host.log()
    );
    for id in &ids {
        let shown = host.command(&["show", id]);
        assert_ne!(shown.code, Some(0), "{id} is gone: {}", shown.stdout);
    }
    assert_eq!(host.contents("Local/carol").len(), 3, "local mail stays");
    assert_eq!(
        host.reports(3).len(),
        3,
        "reports younger than an hour stay"
    );
    let status = host.command(&["status"]);
    assert!(
        status.stdout.contains("Store: ") && status.stdout.contains("MB on disk"),
        "{}",
        status.stdout
    );
}
