//! The control socket and its clients: `queue` (and `queue --shape`), `show`, `flush`,
//! `hold`, `release`, `delete`, `status` and `watch`, paging a long Outbox, the raw protocol,
//! and a socket that only its owner may use.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use spooler_tests::{
    free_port, host_binary, submit_many, wait_until, Host, Postgres, Site, PROMPTLY,
};

use crate::common::PICKUP;

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

/// Mail that cannot go: SMTP to a smart host on a loopback port where nothing listens, FAX
/// to an offline directory transport; retries only after an hour.
const NOWHERE_TO_GO: &str = r#"
[[transport]]
provider = "smtp"
name = "relay"
config = { host = "127.0.0.1", port = {port}, tls = "none", helo = "spooler.test", timeout_secs = 5 }

[[transport]]
provider = "directory"
name = "fax"
config = { path = "{site}/fax", address_type = "FAX" }

[retry]
min_delay = "1h"
max_delay = "1h"
"#;

/// A host on `site` (whose profile starts with `store`, empty for the embedded store) where
/// SMTP and FAX mail waits, with three messages queued: five pending recipients in three
/// rows (a held message's count too; the store's own LOCAL one is delivered, not counted).
fn host_with_a_shaped_queue(site: &Site, store: &str) -> Host {
    fs::create_dir_all(site.path("fax")).unwrap();
    fs::write(site.path("fax/.offline"), "").unwrap();
    let profile = NOWHERE_TO_GO.replace("{port}", &free_port().to_string());
    let host = Host::start(&site.write_config(&format!("{store}{profile}")), "host.log");
    let message = "Subject: shaped\r\n\r\nWaiting.\r\n";
    host.submit(
        &[
            "bob@example.org",
            "carol@example.org",
            "dave@EXAMPLE.net",
            "LOCAL:erin",
        ],
        message,
    );
    let held = host.submit(&["frank@example.org"], message);
    assert_eq!(host.command(&["hold", &held]).code, Some(0));
    host.submit(&["FAX:+1 555 0100"], message);
    host
}

/// `queue --shape`'s rows as (name, counts): total, then the ten buckets.
fn shape_rows(table: &str) -> Vec<(String, Vec<u64>)> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"],
        "{table}"
    );
    lines
        .map(|line| {
            let (name, counts) = line
                .trim_start()
                .split_once(' ')
                .expect("a name and counts");
            let counts = counts
                .split_whitespace()
                .map(|n| n.parse().unwrap())
                .collect();
            (name.to_owned(), counts)
        })
        .collect()
}

/// The rows of the queue `host_with_a_shaped_queue` makes: every message younger than five
/// minutes.
fn expected_shape() -> Vec<(String, Vec<u64>)> {
    let row = |name: &str, n: u64| {
        let mut counts = vec![n, n];
        counts.resize(11, 0);
        (name.to_owned(), counts)
    };
    vec![
        row("TOTAL", 5),
        row("example.org", 3),
        row("FAX", 1),
        row("example.net", 1),
    ]
}

#[test]
fn queue_shape_counts_waiting_recipients_by_domain_and_age_as_qshape_does() {
    let site = Site::new();
    let host = host_with_a_shaped_queue(&site, "");
    let shape = host.command(&["queue", "--shape"]);
    assert_eq!(shape.code, Some(0), "{}", shape.stderr);
    assert_eq!(
        shape_rows(&shape.stdout),
        expected_shape(),
        "{}",
        shape.stdout
    );

    let top = host.command(&["queue", "--shape", "--top", "1"]).stdout;
    assert_eq!(shape_rows(&top), expected_shape()[..2], "{top}");
}

#[test]
fn queue_shape_json_is_one_object_with_every_row() {
    let site = Site::new();
    let host = host_with_a_shaped_queue(&site, "");
    let json = host.command(&["queue", "--shape", "--json"]).stdout;
    assert_eq!(json.lines().count(), 1, "{json}");
    let shape: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        shape["bucket_minutes"],
        serde_json::json!([5, 10, 20, 40, 80, 160, 320, 640, 1280])
    );
    assert_eq!(shape["total"]["total"], 5);
    assert_eq!(shape["total"]["buckets"][0], 5);
    let rows: Vec<(&str, u64, usize)> = shape["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let buckets = row["buckets"].as_array().unwrap().len();
            (
                row["domain"].as_str().unwrap(),
                row["total"].as_u64().unwrap(),
                buckets,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("example.org", 3, 10),
            ("FAX", 1, 10),
            ("example.net", 1, 10)
        ]
    );
}

/// The same through a host on the PostgreSQL store, whose count query is its own.
#[test]
fn queue_shape_counts_a_postgres_queue_alike() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let database = postgres.create_database("shape");
    let site = Site::with_providers(&["store-postgres", "transport-smtp", "transport-directory"]);
    let store = format!(
        "[store]\nprovider = \"postgres\"\nconfig = {{ url = \"{database}\", host_name = \"shape\" }}\n"
    );
    let host = host_with_a_shaped_queue(&site, &store);
    let shape = host.command(&["queue", "--shape"]);
    assert_eq!(shape.code, Some(0), "{}", shape.stderr);
    assert_eq!(
        shape_rows(&shape.stdout),
        expected_shape(),
        "{}",
        shape.stdout
    );
}

/// What `spooler-host run ARGS` logs about its profile: its first log line, read once the
/// control socket in `data` exists; the host is then stopped.
fn profile_line(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::path::Path)],
    data: &std::path::Path,
) -> String {
    let log = data.with_extension("log");
    let mut command = Command::new(host_binary());
    command
        .arg("run")
        .args(args)
        .env_remove("SPOOLER_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the host starts");
    let socket = data.join("control.sock");
    let started = std::time::Instant::now();
    while !socket.exists() && started.elapsed() < PROMPTLY {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        socket.exists(),
        "the host did not start in {}:\n{log}",
        data.display()
    );
    log.lines()
        .find_map(|line| {
            line.split_once("spooler_host] profile: ")
                .map(|(_, rest)| rest.to_owned())
        })
        .unwrap_or_else(|| panic!("no profile line in:\n{log}"))
}

#[test]
fn run_says_which_profile_it_read_and_data_dir_alone_reads_none() {
    let site = Site::new();
    let config = site.write_config("");
    let providers = site.providers().path().as_os_str();
    let other = site.path("other");

    let line = profile_line(
        &["--config".as_ref(), config.as_os_str()],
        &[],
        &site.path("data"),
    );
    assert_eq!(
        line,
        format!(
            "{} (--config); data folder: {}",
            config.display(),
            site.path("data").display()
        )
    );

    // $SPOOLER_CONFIG is read like --config; --data-dir replaces the profile's data folder.
    let line = profile_line(
        &["--data-dir".as_ref(), other.as_os_str()],
        &[("SPOOLER_CONFIG", &config)],
        &other,
    );
    assert_eq!(
        line,
        format!(
            "{} ($SPOOLER_CONFIG); data folder: {}",
            config.display(),
            other.display()
        )
    );

    // --data-dir alone: no profile, not even the system's, and it says so.
    let alone = site.path("alone");
    let line = profile_line(
        &[
            "--data-dir".as_ref(),
            alone.as_os_str(),
            "--providers".as_ref(),
            providers,
        ],
        &[],
        &alone,
    );
    assert_eq!(
        line,
        format!(
            "none, the defaults (--data-dir without --config does not read \
             /etc/spooler/spooler.toml); data folder: {}",
            alone.display()
        )
    );
}
