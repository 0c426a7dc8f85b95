//! The POP3 transport against a real Dovecot on loopback: inbound mail is fetched into the
//! Inbox, watchers hear of it, and it leaves the server only after the store has it.

use spooler_tests::{real_server, wait_until, Dovecot, Host, Site, PROMPTLY};

const FIRST: &str = "From: carol@example.org\r\nTo: test@example.com\r\nSubject: by POP3\r\n\r\nHello from the mail server.\r\n";
const SECOND: &str = "From: dan@example.org\r\nTo: test@example.com\r\nSubject: another one\r\n\r\n..a line that starts with a dot\r\n";

fn pop3_config(port: u16) -> String {
    format!(
        "[[transport]]\nprovider = \"pop3\"\nname = \"mailbox\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\", username = \"test\", password = \"secret\", poll_interval_secs = 1 }}\n"
    )
}

fn can_run_dovecot() -> bool {
    if real_server("dovecot").is_none() {
        return false;
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "Dovecot needs root to start here"
        );
        eprintln!("SKIPPED: a private Dovecot needs root to start (CI runs as root)");
    }
    root
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
