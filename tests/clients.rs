//! Inbound mail, hooks, new-mail notification and the client interface, as users meet them:
//! files dropped into a pickup folder, `spooler-host watch`, `submit -t` from a shell, the
//! queue commands, and the host's signals.

use std::fs;
use std::time::Duration;

use serde_json::Value;
use spooler_tests::{
    files_per_message, host_binary, recorded_deliveries, submit_many, wait_until, Host, Site,
    PROMPTLY,
};

/// A directory transport `files` for FILE mail with a pickup folder for inbound mail.
const PICKUP: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files", pickup = "{site}/pickup", poll_interval_secs = 1 }

[retry]
min_delay = "200ms"
max_delay = "1s"
"#;

/// PICKUP and a directory transport `mail` that claims SMTP, for messages whose recipients
/// come from their headers (`submit -t`), which are always SMTP mailboxes.
const PICKUP_AND_MAIL: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files", pickup = "{site}/pickup", poll_interval_secs = 1 }

[[transport]]
provider = "directory"
name = "mail"
config = { path = "{site}/mail", address_type = "SMTP" }

[retry]
min_delay = "200ms"
max_delay = "1s"
"#;

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

#[test]
fn submit_t_from_a_shell_queues_a_real_message_and_delivers_it() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP_AND_MAIL), "host.log");
    let message = site.path("message.eml");
    fs::write(
        &message,
        // As mail programs write them: a quoted name with a comma, an encoded word and a
        // comment, a group, an empty group (written when there are only Bcc recipients).
        "From: Alice <alice@example.com>\n\
         To: \"Doe, John\" <john@example.net>, =?utf-8?q?J=C3=BCrgen?= <j@example.net> (work),\n\
         \tfriends: ann@example.net, bob@example.net;\n\
         Cc: undisclosed-recipients:;\n\
         Bcc: secret@example.net\n\
         Subject: Re: the plan\nMessage-ID: <plan.1@example.com>\n\nAgreed.\n.\nThis line comes after a lone dot.\n",
    )
    .unwrap();
    let script = format!(
        "{} submit --config {} -t -f alice@example.com < {}",
        host_binary().display(),
        host.config().display(),
        message.display()
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(id.len(), 16, "submit prints the queue id");

    wait_until(PROMPTLY, "it is delivered", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let message = host.show(&id);
    let recipients: Vec<(String, String)> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("SMTP:john@example.net", "to"),
        ("SMTP:j@example.net", "to"),
        ("SMTP:ann@example.net", "to"),
        ("SMTP:bob@example.net", "to"),
        ("SMTP:secret@example.net", "bcc"),
    ]
    .map(|(a, k)| (a.to_owned(), k.to_owned()))
    .into();
    assert_eq!(recipients, expected);
    assert_eq!(message["sender"], "SMTP:alice@example.com");
    let content = message["content"].as_str().unwrap();
    assert!(
        !content.contains("Bcc") && !content.contains("secret"),
        "the Bcc header is gone: {content}"
    );
    assert!(
        !content.contains("after a lone dot"),
        "without -i a lone dot ends the message"
    );
    assert_eq!(
        site.delivered_files("mail").len(),
        2,
        "one delivery for To and Cc, one for the Bcc"
    );
    assert!(
        host.list("Inbox").is_empty(),
        "no report: every recipient was delivered"
    );
}

#[test]
fn undisclosed_recipients_name_no_one_and_the_queue_shows_decoded_subjects() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP_AND_MAIL), "host.log");
    let id = host.submit(
        &["-t", "--defer", "1h"],
        "From: =?utf-8?q?J=C3=BCrgen?= <j@example.net>\r\n\
         To: undisclosed-recipients:;\r\n\
         Bcc: hidden@example.net\r\n\
         Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_?=\r\n =?iso-8859-1?q?K=F6ln?=\r\n\
         \r\n\
         Hallo.\r\n",
    );
    let message = host.show(&id);
    let recipients: Vec<&str> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(recipients, ["SMTP:hidden@example.net"]);
    assert_eq!(message["subject"], "Grüße aus Köln");
    let queue = host.command(&["queue"]).stdout;
    assert!(queue.contains("Grüße aus Köln"), "{queue}");
    assert_eq!(host.list("Outbox")[0]["subject"], "Grüße aus Köln");
}

#[test]
fn the_binary_invoked_as_sendmail_submits_with_sendmails_exit_codes() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    let sendmail = site.path("sendmail");
    std::os::unix::fs::symlink(host_binary(), &sendmail).unwrap();
    let config = host.config().to_owned();
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(&sendmail)
            .args(args)
            .env("SPOOLER_CONFIG", &config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let sent = run(&["-oi", "FILE:bob"], "Subject: from cron\n\nDone.\n");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(
        run(&["-Q"], "").status.code(),
        Some(64),
        "EX_USAGE for a bad option"
    );
    assert_eq!(
        run(&["not an address"], "Subject: x\n\ny\n").status.code(),
        Some(67),
        "EX_NOUSER for a bad recipient"
    );
    wait_until(PROMPTLY, "it is delivered", || {
        site.delivered_files("files").len() == 1
    });
    drop(host);
    assert_eq!(
        run(&["FILE:bob"], "Subject: x\n\ny\n").status.code(),
        Some(69),
        "EX_UNAVAILABLE when the spooler is down"
    );
}

#[test]
fn queue_and_show_reflect_statuses_and_flush_sends_deferred_mail_at_once() {
    let site = Site::new();
    // A long backoff: only the flush can explain a prompt second attempt.
    let host = Host::start(
        &site.write_config(&PICKUP.replace(
            "min_delay = \"200ms\"\nmax_delay = \"1s\"",
            "min_delay = \"1h\"\nmax_delay = \"1h\"",
        )),
        "host.log",
    );
    fs::remove_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files"), "a file where the folder should be").unwrap();
    let id = host.submit(
        &["FILE:bob", "LOCAL:carol"],
        "Subject: status check\r\n\r\nHi.\r\n",
    );

    wait_until(PROMPTLY, "the attempt is deferred", || {
        host.show(&id)["recipients"][0]["attempts"] == 1
    });
    let shown = host.show(&id);
    let bob = &shown["recipients"][0];
    assert_eq!(
        (bob["state"].as_str(), bob["transport"].as_str()),
        (Some("pending"), Some("files"))
    );
    assert!(
        bob["last_answer"]
            .as_str()
            .unwrap()
            .starts_with("deferred by files: cannot write into"),
        "{bob}"
    );
    assert!(bob["next_attempt"].as_i64().is_some());
    assert_eq!(
        shown["recipients"][1]["state"], "delivered",
        "the store's own recipient went at once"
    );
    let queue = host.command(&["queue"]).stdout;
    assert!(
        queue.contains(&id)
            && queue.contains("FILE:bob")
            && queue.contains("pending")
            && queue.contains("deferred by files"),
        "{queue}"
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status
            .lines()
            .any(|line| line.starts_with("files") && line.contains("1 queued")),
        "{status}"
    );

    fs::remove_file(site.path("files")).unwrap();
    fs::create_dir(site.path("files")).unwrap();
    assert_eq!(host.command(&["flush", "files"]).code, Some(0));
    wait_until(Duration::from_secs(10), "the flush delivers it", || {
        site.delivered_files("files").len() == 1
    });
    wait_until(PROMPTLY, "the queue is empty", || {
        host.command(&["queue"]).stdout.contains("(no messages)")
    });
    let unknown = host.command(&["flush", "fax"]);
    assert!(
        unknown.stderr.contains("there is no transport named `fax`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn hold_release_and_delete_act_on_queued_messages() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    let id = host.submit(
        &["--defer", "3s", "FILE:bob"],
        "Subject: held\r\n\r\nWait.\r\n",
    );
    assert_eq!(host.command(&["hold", &id]).code, Some(0));
    assert_eq!(host.show(&id)["held"], true);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        site.delivered_files("files").is_empty(),
        "a held message is not sent"
    );
    assert!(host.command(&["queue"]).stdout.contains("(held)"));
    assert_eq!(host.command(&["release", &id]).code, Some(0));
    wait_until(PROMPTLY, "the released message goes out", || {
        site.delivered_files("files").len() == 1
    });

    let doomed = host.submit(
        &["--defer", "1h", "FILE:bob"],
        "Subject: never mind\r\n\r\nOops.\r\n",
    );
    assert_eq!(host.command(&["delete", &doomed]).code, Some(0));
    let gone = host.command(&["show", &doomed]);
    assert!(
        gone.stderr.contains("there is no message"),
        "{}",
        gone.stderr
    );
    let again = host.command(&["hold", &id]);
    assert!(
        again.stderr.contains("is not queued (it is in Sent Items)"),
        "{}",
        again.stderr
    );
}

#[test]
fn a_provider_dropped_into_the_folder_after_start_is_loaded_on_sighup() {
    let site = Site::with_providers(&["store-embedded"]);
    let config = site.write_config(&PICKUP.replace("max_delay = \"1s\"", "max_delay = \"1h\""));
    let host = Host::start(&config, "host.log");
    let id = host.submit(
        &["FILE:bob"],
        "Subject: waiting for a transport\r\n\r\nHi.\r\n",
    );
    wait_until(
        PROMPTLY,
        "the recipient waits for the missing transport",
        || {
            host.show(&id)["recipients"][0]["last_answer"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be started")
        },
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status.contains("there is no transport provider `directory` in the providers folder"),
        "{status}"
    );

    site.providers().add_library("transport-directory");
    host.signal(libc::SIGHUP);
    wait_until(
        PROMPTLY,
        "the new transport delivers the waiting mail",
        || site.delivered_files("files").len() == 1,
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("files") && l.contains("online")),
        "{status}"
    );
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

#[test]
fn another_user_cannot_use_the_control_socket() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: another_user_cannot_use_the_control_socket needs root to run a client as another user (CI runs as root)");
        return;
    }
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    // A copy nobody can run, wherever the checkout is.
    let client = site.path("spooler-host");
    fs::copy(host_binary(), &client).unwrap();
    spooler_tests::set_mode(&client, 0o755);
    let as_nobody = || {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(&client)
            .args(["status", "--config"])
            .arg(host.config())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let refused = as_nobody();
    assert_eq!(
        refused.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"));

    // Even with the folder and socket opened up, the host checks who is calling.
    spooler_tests::set_mode(&site.path("data"), 0o755);
    spooler_tests::set_mode(&site.path("data/control.sock"), 0o666);
    let refused = as_nobody();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr.contains("permission denied: this spooler belongs to uid 0"),
        "{stderr}"
    );
    assert_eq!(
        host.command(&["status"]).code,
        Some(0),
        "its owner still can"
    );
}

#[test]
fn a_report_is_announced_to_watchers() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    let watcher = host.watch();
    host.submit(&["X400:nobody"], "Subject: into the void\r\n\r\nHello?\r\n");
    let event = watcher.next(PROMPTLY);
    assert_eq!(event["event"], "report", "{event}");
    assert_eq!(event["folder"], "Inbox");
    assert_eq!(event["subject"], "Undelivered Mail Returned to Sender");
}

/// One request over the control socket, as a program speaking the protocol sends it.
fn raw_request(host_socket: &std::path::Path, request: Value) -> Value {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(host_socket).expect("the socket");
    writeln!(stream, "{request}").expect("sending the request");
    let mut answer = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut answer)
        .expect("the host answers");
    serde_json::from_str(&answer).expect("a JSON answer")
}

#[test]
fn queue_and_status_page_and_count_a_long_outbox() {
    let site = Site::new();
    let config = site.write_config(PICKUP);
    fs::create_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files/.offline"), "").unwrap();
    let host = Host::start(&config, "host.log");
    let socket = site.path("data/control.sock");
    let ids = submit_many(&socket, 2_500);
    wait_until(
        PROMPTLY,
        "every message waits for the offline transport",
        || {
            host.command(&["status"])
                .stdout
                .lines()
                .any(|l| l.starts_with("files") && l.contains("2500 queued"))
        },
    );
    assert!(host
        .command(&["status"])
        .stdout
        .contains("Outbox: 2500 message(s)"));

    // The host answers a page at a time (1,000 at most); the client joins the pages.
    let listed: Vec<String> = host
        .command(&["queue", "--json"])
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(listed, ids, "every message once, oldest first");

    let first = raw_request(
        &socket,
        serde_json::json!({ "command": "queue", "limit": 10 }),
    );
    let page: Vec<&str> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, ids[..10]);
    assert_eq!(first["next"], ids[9]);
    let second = raw_request(
        &socket,
        serde_json::json!({ "command": "list", "folder": "Outbox", "after": ids[9], "limit": 10 }),
    );
    assert_eq!(second["messages"][0]["id"], ids[10]);
    assert_eq!(second["messages"].as_array().unwrap().len(), 10);

    // `queue | head -3`: the first lines come at once, and the client ends quietly when its
    // reader goes away.
    let mut queue = std::process::Command::new(host_binary())
        .args(["queue", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the client starts");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        queue.stdout.take().expect("its output"),
    ));
    let head: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    assert!(head[0].starts_with(&ids[0]), "{head:?}");
    drop(lines);
    let ended = queue.wait_with_output().expect("the client ends");
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        String::from_utf8_lossy(&ended.stderr)
    );
}

#[test]
fn a_message_over_the_size_limit_is_refused_at_once_and_nothing_is_stored() {
    use std::io::{BufRead, Write};
    let site = Site::new();
    let config = site.write_config("[limits]\nmax_message_size = \"64K\"\n");
    let host = Host::start(&config, "host.log");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(200 * 1024));

    // `submit` (and so `sendmail`) stops before sending: sendmail's EX_DATAERR, the limit named.
    let refused = host.submit_with_status(&["LOCAL:alice"], &big);
    assert_eq!(refused.code, Some(65), "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("at most 65536 bytes (limits.max_message_size)"),
        "{}",
        refused.stderr
    );

    // A client that does not check, still writing 8 MiB, gets the host's answer instead of
    // waiting for ever: the host answers and closes.
    let stream = std::os::unix::net::UnixStream::connect(site.path("data/control.sock"))
        .expect("the control socket");
    stream.set_write_timeout(Some(PROMPTLY)).unwrap();
    stream.set_read_timeout(Some(PROMPTLY)).unwrap();
    let content = vec![b'x'; 8 << 20];
    let request = serde_json::json!({
        "command": "submit",
        "sender": "LOCAL:load",
        "recipients": [{ "address": "LOCAL:alice", "kind": "to" }],
        "content_length": content.len(),
    });
    let written = (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .and_then(|()| (&stream).write_all(&content));
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .expect("the host answers before the timeout");
    assert!(
        answer.contains("this spooler takes at most 65536 bytes"),
        "{answer} (writing: {written:?})"
    );
    assert!(written.is_err(), "the host closed the connection");

    // Nothing was stored, and the host takes the next message as usual.
    assert!(host.list("Outbox").is_empty());
    assert!(host.list("Local/alice").is_empty());
    host.submit(&["LOCAL:alice"], "Subject: small\r\n\r\nfits\r\n");
    wait_until(PROMPTLY, "the small one is delivered", || {
        host.list("Local/alice").len() == 1
    });
}
