//! Inbound mail into the Inbox: files dropped into a directory transport's pickup folder,
//! inbound rules that file, delete or keep them, and the POP3 transport fetching from a real
//! Dovecot on loopback. Mail leaves its source only after the store has committed it, and
//! watchers hear of it.

use std::fs;

use serde_json::Value;
use spooler_tests::{wait_until, Dovecot, Host, Site, PROMPTLY};

use crate::common::{can_run_dovecot, PICKUP};

const INBOUND: &str = "Return-Path: <carol@example.org>\r\nFrom: Carol <carol@example.org>\r\nTo: me@example.com\r\nSubject: minutes of Monday\r\n\r\nSee below.\r\n";

fn pickup_files(site: &Site) -> Vec<String> {
    fs::read_dir(site.path("pickup"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_file_dropped_into_the_pickup_folder_lands_in_the_inbox_and_watchers_are_told() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    let watcher = host.watch();
    site.drop_message("pickup", "0001.eml", INBOUND);

    let event = watcher.next(PROMPTLY);
    assert_eq!(event["event"], "new_mail", "{event}");
    assert_eq!(event["folder"], "Inbox");
    assert_eq!(event["sender"], "SMTP:carol@example.org");
    assert_eq!(event["subject"], "minutes of Monday");
    let stored = host.show(event["id"].as_str().unwrap());
    assert_eq!(stored["folder"], "Inbox");
    assert_eq!(stored["content"], INBOUND);
    wait_until(PROMPTLY, "the pickup file is removed", || {
        pickup_files(&site).is_empty()
    });
}

#[test]
fn inbound_rules_file_delete_or_keep_messages() {
    let site = Site::new();
    let config = site.write_config(&format!(
        "{PICKUP}\n{}",
        r#"
[[hook]]
provider = "rules"
config = { rule = [
    { field = "subject", contains = "WIN A PRIZE", action = "delete" },
    { field = "header:X-Project", contains = "apollo", action = "move", folder = "Projects/Apollo" },
    { field = "sender", contains = "boss@", action = "stop" },
] }
"#
    ));
    let host = Host::start(&config, "host.log");
    let watcher = host.watch();
    site.drop_message(
        "pickup",
        "1.eml",
        "From: spammer@example.net\r\nSubject: you win a prize\r\n\r\n!!!\r\n",
    );
    site.drop_message(
        "pickup",
        "2.eml",
        "From: dev@example.com\r\nX-Project: Apollo\r\nSubject: launch plan\r\n\r\nT-10.\r\n",
    );
    site.drop_message(
        "pickup",
        "3.eml",
        "From: boss@example.com\r\nSubject: lunch\r\n\r\nNoon.\r\n",
    );

    let mut events: Vec<Value> = vec![watcher.next(PROMPTLY), watcher.next(PROMPTLY)];
    events.sort_by_key(|e| e["subject"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        (events[0]["subject"].as_str(), events[0]["folder"].as_str()),
        (Some("launch plan"), Some("Projects/Apollo"))
    );
    assert_eq!(
        (events[1]["subject"].as_str(), events[1]["folder"].as_str()),
        (Some("lunch"), Some("Inbox"))
    );
    wait_until(
        PROMPTLY,
        "every pickup file is gone, the deleted one too",
        || pickup_files(&site).is_empty(),
    );
    let all: Vec<Value> = ["Inbox", "Projects/Apollo"]
        .iter()
        .flat_map(|f| host.list(f))
        .collect();
    assert_eq!(all.len(), 2, "the prize message was deleted, not stored");
    assert!(host.log().contains("deleted by a hook"), "{}", host.log());
}

#[test]
fn a_pickup_file_stays_until_the_store_has_committed_its_message() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    // Another process holds the store's write lock, so no commit can succeed.
    let database = rusqlite::Connection::open(site.path("data/store.sqlite")).unwrap();
    database.execute_batch("BEGIN IMMEDIATE").unwrap();
    site.drop_message("pickup", "0001.eml", INBOUND);

    wait_until(PROMPTLY, "the host tried and failed to store it", || {
        host.log()
            .contains("cannot store inbound mail, it stays at the source")
    });
    assert_eq!(
        pickup_files(&site),
        ["0001.eml"],
        "not removed while not stored"
    );

    database.execute_batch("ROLLBACK").unwrap();
    wait_until(PROMPTLY, "the message is stored at a later fetch", || {
        host.list("Inbox").len() == 1
    });
    wait_until(PROMPTLY, "and only then removed", || {
        pickup_files(&site).is_empty()
    });
}

const FIRST: &str = "From: carol@example.org\r\nTo: test@example.com\r\nSubject: by POP3\r\n\r\nHello from the mail server.\r\n";
const SECOND: &str = "From: dan@example.org\r\nTo: test@example.com\r\nSubject: another one\r\n\r\n..a line that starts with a dot\r\n";

fn pop3_config(port: u16) -> String {
    format!(
        "[[transport]]\nprovider = \"pop3\"\nname = \"mailbox\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\", username = \"test\", password = \"secret\", poll_interval_secs = 1 }}\n"
    )
}

#[test]
fn mail_on_the_server_is_fetched_into_the_inbox_and_watchers_are_told() {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    let dovecot = Dovecot::start(&site);
    let host = Host::start(&site.write_config(&pop3_config(dovecot.port)), "host.log");
    let watcher = host.watch();
    dovecot.deliver("1.mail", FIRST);
    dovecot.deliver("2.mail", SECOND);

    let mut events = [watcher.next(PROMPTLY), watcher.next(PROMPTLY)];
    events.sort_by_key(|e| e["subject"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events[0]["subject"], "another one");
    assert_eq!(events[1]["subject"], "by POP3");
    assert!(events
        .iter()
        .all(|e| e["event"] == "new_mail" && e["folder"] == "Inbox"));
    assert_eq!(events[1]["sender"], "SMTP:carol@example.org");
    let contents = host.contents("Inbox");
    assert!(contents.contains(&FIRST.to_owned()), "{contents:?}");
    assert!(
        contents.contains(&SECOND.to_owned()),
        "dot-stuffing is undone: {contents:?}"
    );
    wait_until(PROMPTLY, "the messages leave the server", || {
        dovecot.messages_on_server() == 0
    });
}

#[test]
fn a_message_leaves_the_server_only_after_the_store_has_it() {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    let dovecot = Dovecot::start(&site);
    let host = Host::start(&site.write_config(&pop3_config(dovecot.port)), "host.log");
    // Another process holds the store's write lock, so no commit can succeed.
    let database = rusqlite::Connection::open(site.path("data/store.sqlite")).unwrap();
    database.execute_batch("BEGIN IMMEDIATE").unwrap();
    dovecot.deliver("1.mail", FIRST);

    wait_until(PROMPTLY, "the host tried and failed to store it", || {
        host.log()
            .contains("cannot store inbound mail, it stays at the source")
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        dovecot.messages_on_server(),
        1,
        "not deleted while not stored"
    );

    database.execute_batch("ROLLBACK").unwrap();
    wait_until(PROMPTLY, "it is stored at a later fetch", || {
        host.list("Inbox").len() == 1
    });
    wait_until(PROMPTLY, "and only then deleted on the server", || {
        dovecot.messages_on_server() == 0
    });
}
