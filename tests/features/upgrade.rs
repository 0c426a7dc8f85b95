//! Upgrades as an operator makes them: a store library built against provider-abi 1.0 (before
//! the store learnt paging, counts and flush) still loads into this host and serves every
//! client command (`queue --shape`, of 1.3, with a clear refusal), and the queue it wrote
//! survives replacing it with today's store.

use std::fs;
use std::time::Duration;

use spooler_tests::{library_at_revision, library_file_name, wait_until, Host, Site, PROMPTLY};

use crate::common::one_at_a_time;

/// The last commit whose provider-abi was 1.0.0, and whose embedded store wrote schema 1.
const ABI_1_0: &str = "f56badcc72d7734d549d84b471eb3e28a328e2f6";

/// A `files` transport whose folder is replaced by a plain file while the test wants its
/// mail to wait; long retries, so only a flush sends it.
const FILES: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }

[retry]
min_delay = "1h"
max_delay = "1h"
"#;

fn break_files(site: &Site) {
    fs::remove_dir_all(site.path("files")).ok();
    fs::write(site.path("files"), "a file where the folder should be").unwrap();
}

fn mend_files(site: &Site) {
    fs::remove_file(site.path("files")).ok();
    fs::create_dir(site.path("files")).unwrap();
}

fn queue_ids(host: &Host) -> Vec<String> {
    host.command(&["queue", "--json"])
        .stdout
        .lines()
        .map(|line| {
            let message: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
            message["id"].as_str().expect("an id").to_owned()
        })
        .collect()
}

fn wait_for_attempts(host: &Host, ids: &[String]) {
    wait_until(PROMPTLY, "every message was tried once", || {
        ids.iter()
            .all(|id| host.show(id)["recipients"][0]["attempts"] == 1)
    });
}

#[test]
fn a_store_built_against_abi_1_0_serves_the_host_and_its_queue_survives_the_upgrade() {
    let _alone = one_at_a_time();
    let old_store = library_at_revision(ABI_1_0, "store-embedded");
    let site = Site::with_providers(&["transport-directory"]);
    let store_file = library_file_name("store-embedded");
    site.providers().add_file(
        &store_file,
        &fs::read(&old_store).expect("the old store library"),
    );
    let listing = spooler_tests::run_host(
        &[
            "providers",
            "--providers",
            &site.providers().path().to_string_lossy(),
        ],
        &[],
        PROMPTLY,
    );
    assert!(
        listing.stdout.contains("(provider-abi 1.0.0)"),
        "{}",
        listing.stdout
    );

    // The old store serves the new host: listing pages, counts and flush fall back on the
    // methods it has.
    let config = site.write_config(FILES);
    let mut host = Host::start(&config, "old.log");
    break_files(&site);
    // With a From and a Date of their own, `submit` adds only a Message-ID.
    let message = "From: ann@example.com\r\nDate: Thu, 1 Oct 2026 09:00:00 +0000\r\n\
                   Subject: before the upgrade\r\n\r\nKept.\r\n";
    let ids: Vec<String> = (0..3)
        .map(|_| host.submit(&["FILE:bob", "LOCAL:carol"], message))
        .collect();
    wait_for_attempts(&host, &ids);
    assert_eq!(queue_ids(&host), ids);
    let status = host.command(&["status"]).stdout;
    assert!(
        status.contains("Outbox: 3 message(s)")
            && status
                .lines()
                .any(|l| l.starts_with("files") && l.contains("3 queued")),
        "{status}"
    );
    // The queue's shape came later (1.3) and has no fallback: the old store says it cannot.
    let shape = host.command(&["queue", "--shape"]);
    assert!(
        shape.code != Some(0)
            && shape
                .stderr
                .contains("this store cannot count the queue by domain"),
        "{:?}: {}",
        shape.code,
        shape.stderr
    );
    mend_files(&site);
    assert_eq!(host.command(&["flush", "files"]).code, Some(0));
    wait_until(PROMPTLY, "the flush delivers the three", || {
        site.delivered_files("files").len() == 3
    });
    wait_until(PROMPTLY, "the queue is empty", || {
        queue_ids(&host).is_empty()
    });

    // Two more wait when the host stops; the old store wrote all of it.
    break_files(&site);
    let waiting_message = "From: ann@example.com\r\nDate: Thu, 1 Oct 2026 09:00:00 +0000\r\n\
                           Subject: waiting\r\n\r\nStill here.\r\n";
    let waiting: Vec<String> = (0..2)
        .map(|_| host.submit(&["FILE:dave"], waiting_message))
        .collect();
    wait_for_attempts(&host, &waiting);
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(PROMPTLY), Some(0));

    // Today's store opens the old database, upgrades it and carries on.
    site.providers().add_library("store-embedded");
    mend_files(&site);
    let host = Host::start(&config, "new.log");
    break_files(&site);
    assert_eq!(queue_ids(&host), waiting);
    let content = host.show(&waiting[0])["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(without_added_message_id(&content), waiting_message);
    assert_eq!(host.list("Sent Items").len(), 3);
    let carol = host.contents("Local/carol");
    let carol: Vec<&str> = carol
        .iter()
        .map(|content| without_added_message_id(content))
        .collect();
    assert_eq!(carol, [message, message, message]);
    mend_files(&site);
    assert_eq!(host.command(&["flush"]).code, Some(0));
    wait_until(
        Duration::from_secs(10),
        "the flush delivers the two",
        || site.delivered_files("files").len() == 2,
    );
    wait_until(PROMPTLY, "the queue is empty", || {
        host.command(&["status"])
            .stdout
            .contains("Outbox: 0 message(s)")
    });
}

/// `content` without the Message-ID line `submit` adds at the top of a message that has none.
fn without_added_message_id(content: &str) -> &str {
    let (first, rest) = content.split_once("\r\n").expect("a header line");
    assert!(first.starts_with("Message-ID: <"), "{content}");
    rest
}
