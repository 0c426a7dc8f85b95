//! Submitting mail with `spooler-host submit`: `submit -t` from a shell, undisclosed
//! recipients, the size limit, bad addresses refused with sendmail's exit codes, and what a
//! client can rely on when an answer or a connection is lost: a message is stored once
//! however often it is retried.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use spooler_tests::{files_per_message, host_binary, wait_until, Host, Site, PROMPTLY};

use crate::common::FILES;

const WITH_ID: &str =
    "Message-ID: <invoice-42@shop.example>\r\nFrom: shop@example.com\r\nSubject: invoice 42\r\n\r\nPlease pay.\r\n";

#[test]
fn a_submission_retried_after_a_lost_answer_is_stored_and_delivered_once() {
    let site = Site::new();
    let config = site.write_config(FILES);
    // The first submission is durable, then the host dies before anyone reads more from it:
    // the client cannot know, and submits again to the restarted host.
    let mut host = Host::start(&config, "first.log");
    let first = host.submit(
        &["-f", "shop@example.com", "FILE:alice", "FILE:bob"],
        WITH_ID,
    );
    host.kill_hard();
    let host = Host::start(&config, "second.log");
    let again = host.submit(
        &["-f", "shop@example.com", "FILE:bob", "FILE:alice"],
        WITH_ID,
    );
    assert_eq!(
        again, first,
        "the same message (recipients in another order) gets its first id"
    );
    assert!(
        host.log().contains(&format!("{first}: submitted again")),
        "{}",
        host.log()
    );

    wait_until(PROMPTLY, "the message is delivered", || {
        !site.delivered_files("files").is_empty()
    });
    // After delivery the key is still remembered: a late retry stores nothing either.
    wait_until(PROMPTLY, "the message leaves the Outbox", || {
        host.list("Outbox").is_empty()
    });
    let late = host.submit(
        &["-f", "shop@example.com", "FILE:alice", "FILE:bob"],
        WITH_ID,
    );
    assert_eq!(late, first);
    std::thread::sleep(Duration::from_millis(500));
    let files = site.delivered_files("files");
    assert_eq!(files.len(), 1, "one copy: {files:?}");
    assert_eq!(files_per_message(&files).get(&first), Some(&1));

    // Another recipient list, sender or Message-ID is another message.
    let other = host.submit(&["-f", "shop@example.com", "FILE:alice"], WITH_ID);
    assert_ne!(other, first);
    let other_sender = host.submit(
        &["-f", "billing@example.com", "FILE:alice", "FILE:bob"],
        WITH_ID,
    );
    assert_ne!(other_sender, first);
}

#[test]
fn submit_gives_a_message_without_message_id_one_so_that_two_submissions_are_two_messages() {
    let site = Site::new();
    let host = Host::start(&site.write_config(FILES), "host.log");
    let text = "Subject: disk usage\n\n/ is 91% full\n";
    let first = host.submit(&["FILE:ops"], text);
    let second = host.submit(&["FILE:ops"], text);
    assert_ne!(first, second, "a cron job's two reports are two messages");
    let content = host.show(&first)["content"].as_str().unwrap().to_owned();
    assert!(content.starts_with("Message-ID: <"), "{content}");
    assert!(
        content.contains("\nDate: ") && content.contains("\nFrom: "),
        "{content}"
    );
    assert!(
        content.ends_with("\nSubject: disk usage\n\n/ is 91% full\n"),
        "{content}"
    );
}

#[test]
fn the_duplicate_window_can_be_turned_off() {
    let site = Site::new();
    let config = format!("{FILES}\n[submission]\nduplicate_window = \"0s\"\n");
    let host = Host::start(&site.write_config(&config), "host.log");
    let first = host.submit(&["FILE:alice"], WITH_ID);
    assert_ne!(host.submit(&["FILE:alice"], WITH_ID), first);
}

#[test]
fn submit_retries_a_lost_connection_by_itself_and_the_message_arrives_once() {
    let site = Site::new();
    let config = site.write_config(FILES);
    std::fs::create_dir_all(site.path("data")).unwrap();
    // Something that takes the request and dies without answering, where the host's socket is.
    let socket = site.path("data/control.sock");
    let impostor = UnixListener::bind(&socket).unwrap();
    let mut submit = Command::new(host_binary())
        .args(["submit", "--config"])
        .arg(&config)
        .arg("FILE:alice")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = submit.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, WITH_ID.as_bytes()).unwrap();
    drop(stdin);
    let (connection, _) = impostor.accept().unwrap();
    let mut request = String::new();
    BufReader::new(&connection).read_line(&mut request).unwrap();
    assert!(request.contains("\"submit\""), "{request}");
    drop(connection);
    drop(impostor);
    std::fs::remove_file(&socket).unwrap();

    // The real host comes up; `submit` gets through on a later try.
    let _host = Host::start(&config, "host.log");
    let output = submit.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    wait_until(PROMPTLY, "the message is delivered", || {
        site.delivered_files("files").len() == 1
    });
    assert!(site.delivered_files("files")[0]
        .to_string_lossy()
        .contains(&id));
}

#[test]
fn a_bad_address_is_refused_at_once_naming_it_with_sendmails_exit_code() {
    let site = Site::new();
    let host = Host::start(&site.write_config(FILES), "host.log");
    for (bad, says) in [
        ("SMTP:x@example.net> NOTIFY=NEVER", "angle bracket"),
        ("bob smith@example.com", "is not an SMTP mailbox"),
        ("bob@exa mple.com", "is not an SMTP mailbox"),
    ] {
        let refused = host.submit_with_status(&[bad], "Subject: x\r\n\r\nx\r\n");
        assert_eq!(
            refused.code,
            Some(67),
            "EX_NOUSER for {bad}: {}",
            refused.stderr
        );
        assert!(refused.stderr.contains(bad), "{}", refused.stderr);
        assert!(refused.stderr.contains(says), "{}", refused.stderr);
    }
    let bad_sender = host.submit_with_status(&["-f", "<a@b>", "FILE:x"], "Subject: x\r\n\r\nx\r\n");
    assert_eq!(bad_sender.code, Some(67), "{}", bad_sender.stderr);
    assert!(host.list("Outbox").is_empty(), "nothing was stored");
}

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
