//! What a client can rely on when things break: a submission whose answer was lost is stored
//! once however often it is retried, `submit` retries a lost connection by itself, a bad
//! address is refused at once with sendmail's exit code, and twenty SIGKILLs under load lose
//! nothing and write nothing twice.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use spooler_tests::{
    crash, files_per_message, host_binary, real_server, wait_until, Host, Site, SmallDisk, PROMPTLY,
};

/// A directory transport for FILE mail that delivers at once.
const FILES: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }
"#;

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
        content.ends_with(">\nSubject: disk usage\n\n/ is 91% full\n"),
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

fn recipient_of(host: &Host, id: &str, address: &str) -> serde_json::Value {
    host.show(id)["recipients"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["address"] == address).cloned())
        .unwrap_or_default()
}

const QUICK_RETRY: &str = "[retry]\nmin_delay = \"200ms\"\nmax_delay = \"200ms\"\n";

#[test]
fn a_transport_call_that_hangs_is_abandoned_its_mail_deferred_and_a_fresh_copy_delivers_it() {
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
        recipient_of(&host, &stuck, "HANG:alice")["state"] == "delivered"
    });
    let alice = recipient_of(&host, &stuck, "HANG:alice");
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
    let alice = recipient_of(&host, &broken, "BROKEN:alice");
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
