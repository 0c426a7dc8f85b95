//! The PostgreSQL store as it runs between machines: over TLS (`sslmode` as libpq means it,
//! a private CA, a client certificate), through a database restart in the middle of a run,
//! through a 30-second outage, and in a host that starts while the database is down. Each
//! test starts its own PostgreSQL and `smtp-sink`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spooler_tests::{
    free_port, host_binary, real_server, submit_numbered, wait_until, Certificates, Host, Postgres,
    Site, SmtpClient, SmtpSink, PROMPTLY,
};

use crate::common::one_at_a_time;

/// The real servers these tests need: smtp-sink and PostgreSQL.
fn servers() -> Option<Postgres> {
    real_server("smtp-sink")?;
    Postgres::start()
}

/// A site whose store is PostgreSQL with `store` (the inside of its `config = { … }`), and
/// whose SMTP transport relays to `sink_port`; with an SMTP listener on `listener_port`.
/// `sendmail` tries a temporary failure again for 3 s (`client_retry`), then exits with 75.
fn postgres_site(store: &str, sink_port: u16, listener_port: Option<u16>) -> Site {
    let site = Site::with_providers(&["store-postgres", "transport-smtp"]);
    let listener = listener_port.map_or(String::new(), |port| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\nhostname = \"mx.test\"\n\
             allowed_networks = [\"127.0.0.0/8\"]\n"
        )
    });
    site.write_config(&format!(
        "[store]\nprovider = \"postgres\"\nconfig = {{ {store}, host_name = \"a\" }}\n\
         [[transport]]\nprovider = \"smtp\"\nname = \"smtp\"\nparallel = 10\n\
         config = {{ host = \"127.0.0.1\", port = {sink_port}, tls = \"none\", helo = \"a.test\", timeout_secs = 30 }}\n\
         [retry]\nmin_delay = \"1s\"\nmax_delay = \"2s\"\n\
         [limits]\nmax_in_flight = 300\n[submission]\nclient_retry = \"3s\"\n{listener}"
    ));
    site
}

/// How many times each message number arrived at the sink (`Subject: message <n>`).
fn arrivals(sink: &SmtpSink) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for text in sink.transactions() {
        let number = text
            .lines()
            .find_map(|line| line.strip_prefix("Subject: message "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        if let Some(n) = number {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

/// The number of messages in folder `name`, from `folders --json`.
fn folder_count(host: &Host, name: &str) -> u64 {
    host.command(&["folders", "--json"])
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|folder| folder["name"] == name)
        .and_then(|folder| folder["messages"].as_u64())
        .unwrap_or(0)
}

/// Submits `numbers` through `socket` until each is acknowledged, trying again after a
/// refusal (a temporary failure while the database is away) as a client does. Returns the
/// acknowledged ids and how many refusals there were.
fn submit_all(socket: &Path, numbers: std::ops::Range<usize>) -> (Vec<String>, usize) {
    let (mut ids, mut refusals, mut next) = (Vec::new(), 0, numbers.start);
    let deadline = Instant::now() + Duration::from_secs(600);
    while next < numbers.end {
        assert!(Instant::now() < deadline, "the submissions are stuck");
        let (done, failure) = submit_numbered(socket, next..numbers.end, |n| {
            format!("SMTP:user{n}@example.net")
        });
        next += done.len();
        ids.extend(done.into_iter().map(|(_, id)| id));
        if let Some(why) = failure {
            assert!(
                why.contains("temporary") || why.contains("closed") || why.contains("connect"),
                "a submission failed for good: {why}"
            );
            refusals += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    (ids, refusals)
}

/// Waits until the host's log contains `text`, or fails showing the log.
fn wait_for_log(host: &Host, text: &str) {
    let deadline = Instant::now() + PROMPTLY;
    while !host.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "the log never said `{text}`:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_store_connects_over_tls_checking_the_server_as_libpq_does() {
    let Some(postgres) = servers() else {
        return;
    };
    let certificates_site = Site::with_providers(&[]);
    let certificates = Certificates::issue(&certificates_site.path("tls"), &["localhost"]);
    postgres.create_database("spooler");
    postgres.create_database("certdb");
    postgres.enable_tls(&certificates, "certdb");
    let port = postgres.port();
    let ca = certificates.ca_file.display().to_string();
    let url = |host: &str, database: &str| format!("postgres://spooler@{host}:{port}/{database}");
    // The TLS sessions of the host's connections (the store's and its listener's), as the
    // server sees them: whether encrypted, and the client certificate's subject.
    let sessions = |database: &str| {
        postgres.psql(
            "postgres",
            &format!(
                "SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name LIKE 'spooler-host%' AND a.datname = '{database}'"
            ),
        )
    };
    let sink_port = free_port();

    // Trusted: the CA in sslrootcert issued the server's certificate for `localhost`.
    let site = postgres_site(
        &format!(
            "url = \"{}\", sslmode = \"verify-full\", sslrootcert = \"{ca}\"",
            url("localhost", "spooler")
        ),
        sink_port,
        None,
    );
    let host = Host::start(&site.path("spooler.toml"), "host.log");
    assert!(
        host.log().contains("(sslmode verify-full)"),
        "{}",
        host.log()
    );
    host.submit(&["someone@example.net"], "Subject: over TLS\n\nHello.\n");
    wait_until(PROMPTLY, "the store and its listener are connected", || {
        sessions("spooler").lines().count() >= 2
    });
    let seen = sessions("spooler");
    assert!(
        seen.lines().all(|line| line.starts_with("t|")),
        "every connection is encrypted: {seen}"
    );
    drop(host);

    // Untrusted: without sslrootcert only the public CAs are trusted, and none issued it.
    let site = postgres_site(
        &format!(
            "url = \"{}\", sslmode = \"verify-full\"",
            url("localhost", "spooler")
        ),
        sink_port,
        None,
    );
    let host = Host::launch(&site.path("spooler.toml"), "host.log");
    wait_for_log(
        &host,
        "is not trusted: no trusted CA issued it; set `sslrootcert`",
    );
    assert!(host.log().contains("waiting for the store `postgres`"));
    drop(host);

    // A wrong host name: the certificate is for `localhost`, not for 127.0.0.1…
    let by_address = |mode: &str| {
        postgres_site(
            &format!(
                "url = \"{}?sslmode={mode}&sslrootcert={ca}\"",
                url("127.0.0.1", "spooler")
            ),
            sink_port,
            None,
        )
    };
    let site = by_address("verify-full");
    let host = Host::launch(&site.path("spooler.toml"), "host.log");
    wait_for_log(&host, "is not issued for that name");
    drop(host);
    // … which verify-ca does not check.
    let site = by_address("verify-ca");
    let host = Host::start(&site.path("spooler.toml"), "host.log");
    assert!(host.log().contains("(sslmode verify-ca)"), "{}", host.log());
    drop(host);

    // A database that asks for a client certificate: refused without one…
    let certified = |client: &str| {
        postgres_site(
            &format!(
                "url = \"{}\", sslmode = \"verify-full\", sslrootcert = \"{ca}\"{client}",
                url("localhost", "certdb")
            ),
            sink_port,
            None,
        )
    };
    let site = certified("");
    let host = Host::launch(&site.path("spooler.toml"), "host.log");
    wait_for_log(&host, "certificate");
    wait_for_log(&host, "waiting for the store `postgres`");
    drop(host);
    // … and let in with the one issued to the role.
    let site = certified(&format!(
        ", sslcert = \"{}\", sslkey = \"{}\"",
        certificates.client_cert_file.display(),
        certificates.client_key_file.display()
    ));
    let host = Host::start(&site.path("spooler.toml"), "host.log");
    host.submit(&["someone@example.net"], "Subject: certified\n\nHello.\n");
    assert!(
        sessions("certdb").contains("t|/CN=spooler"),
        "{}",
        sessions("certdb")
    );
    drop(host);

    // On loopback with no sslmode, libpq's default, prefer: TLS, since the server offers it.
    let site = postgres_site(
        &format!("url = \"{}\"", url("localhost", "spooler")),
        sink_port,
        None,
    );
    let host = Host::start(&site.path("spooler.toml"), "host.log");
    assert!(host.log().contains("(sslmode prefer)"), "{}", host.log());
}

#[test]
fn a_database_restart_in_the_middle_of_10000_messages_loses_nothing() {
    let _alone = one_at_a_time();
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    let sink_site = Site::with_providers(&[]);
    let sink = SmtpSink::start(&sink_site, "sink", free_port(), &[]);
    let site = postgres_site(&format!("url = \"{database}\""), sink.port, None);
    let host = Host::start(&site.path("spooler.toml"), "host.log");

    const TOTAL: usize = 10_000;
    let socket = site.path("data/control.sock");
    let submitter = std::thread::spawn(move || submit_all(&socket, 0..TOTAL));
    wait_until(
        Duration::from_secs(300),
        "half the messages are delivered",
        || sink.transactions_count() >= TOTAL / 2,
    );
    let restarted = Instant::now();
    postgres.restart();
    eprintln!("PostgreSQL restarted in {:?}", restarted.elapsed());
    let (ids, refusals) = submitter.join().expect("the submitter");
    assert_eq!(ids.len(), TOTAL, "every message was acknowledged once");

    let deadline = Instant::now() + Duration::from_secs(300);
    while arrivals(&sink).len() < TOTAL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let arrived = arrivals(&sink);
    if arrived.len() < TOTAL {
        let missing: Vec<usize> = (0..TOTAL)
            .filter(|n| !arrived.contains_key(n))
            .take(20)
            .collect();
        panic!(
            "after 300 s, {} of {TOTAL} messages arrived ({} transactions dumped, {} of them \
             readable); the first missing: {missing:?}",
            arrived.len(),
            sink.transactions_count(),
            sink.transactions().len()
        );
    }
    wait_until(PROMPTLY, "the Outbox is empty", || {
        folder_count(&host, "Outbox") == 0
    });
    let arrived = arrivals(&sink);
    assert_eq!(arrived.len(), TOTAL, "every acknowledged message arrived");
    let twice = arrived.values().filter(|&&count| count > 1).count();
    eprintln!(
        "{refusals} submissions refused during the restart and submitted again; \
         {twice} messages delivered twice"
    );
    assert_eq!(
        folder_count(&host, "Sent Items"),
        TOTAL as u64,
        "each message is recorded once, resubmissions included"
    );
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), TOTAL, "no submission was stored twice");
    // A delivery whose record was cut by the restart may be made again (at least once),
    // but only for messages in flight then.
    assert!(twice <= 300, "{twice} messages were delivered twice");
    assert!(
        host.log().contains("the store works again"),
        "the host says it reconnected:\n{}",
        host.log()
    );
}

#[test]
fn during_a_30_second_outage_clients_are_told_to_try_again_and_nothing_is_lost() {
    let _alone = one_at_a_time();
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    let sink_site = Site::with_providers(&[]);
    let sink = SmtpSink::start(&sink_site, "sink", free_port(), &[]);
    let listener_port = free_port();
    let site = postgres_site(
        &format!("url = \"{database}\""),
        sink.port,
        Some(listener_port),
    );
    let host = Host::start(&site.path("spooler.toml"), "host.log");
    let sendmail = site.path("sendmail");
    std::os::unix::fs::symlink(host_binary(), &sendmail).unwrap();
    let send = |subject: &str| {
        let started = Instant::now();
        let mut child = Command::new(&sendmail)
            .args(["-oi", "someone@example.net"])
            .env("SPOOLER_CONFIG", host.config())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("Subject: message {subject}\n\nHello.\n").as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (output, started.elapsed())
    };
    let (before, _) = send("1");
    assert!(before.status.success(), "{before:?}");

    postgres.stop();
    let stopped = Instant::now();
    let (during, took) = send("2");
    assert_eq!(
        during.status.code(),
        Some(75),
        "sendmail exits with EX_TEMPFAIL: {}",
        String::from_utf8_lossy(&during.stderr)
    );
    assert!(
        took < Duration::from_secs(10),
        "sendmail gave up after its client_retry of 3 s, not later: {took:?}"
    );
    let (mut client, _) = SmtpClient::greeted(listener_port);
    assert!(client.command("EHLO client.test").starts_with("250"));
    client.start_data("app@example.com", "someone@example.net");
    client.send("Subject: message 3\r\n\r\nHello.\r\n");
    let reply = client.command(".");
    assert!(reply.starts_with("451"), "the listener defers: {reply}");

    // `status` shows the outage, with its cause, while it lasts.
    let status = host.command(&["status"]);
    assert_ne!(status.code, Some(0));
    assert!(
        status.stderr.contains("store `postgres`") && status.stderr.contains("Connection refused"),
        "{}",
        status.stderr
    );
    let down_for = Duration::from_secs(30).saturating_sub(stopped.elapsed());
    std::thread::sleep(down_for);
    postgres.start_again();

    // The host reconnects by itself; what was deferred is submitted again and everything
    // acknowledged arrives, once.
    wait_until(PROMPTLY, "the host answers again", || {
        host.command(&["status"]).code == Some(0)
    });
    let (after, _) = send("2");
    assert!(after.status.success(), "{after:?}");
    let (mut client, _) = SmtpClient::greeted(listener_port);
    assert!(client.command("EHLO client.test").starts_with("250"));
    let reply = client.send_message(
        "app@example.com",
        "someone@example.net",
        "Subject: message 3\r\n\r\nHello.\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    wait_until(PROMPTLY, "the three messages arrive", || {
        arrivals(&sink).len() == 3
    });
    assert!(arrivals(&sink).values().all(|&count| count == 1));
    wait_for_log(&host, "the store works again");
}

#[test]
fn a_host_that_starts_while_the_database_is_down_waits_and_says_so() {
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    let sink_site = Site::with_providers(&[]);
    let sink = SmtpSink::start(&sink_site, "sink", free_port(), &[]);
    postgres.stop();
    let site = postgres_site(&format!("url = \"{database}\""), sink.port, None);
    let host = Host::launch(&site.path("spooler.toml"), "host.log");
    wait_for_log(&host, "waiting for the store `postgres`");
    assert!(host.log().contains("Connection refused"), "{}", host.log());
    // Clients hear why, and that it is worth trying again.
    let submitted = host.submit_with_status(&["someone@example.net"], "Subject: early\n\nHi.\n");
    assert_eq!(submitted.code, Some(75), "{}", submitted.stderr);
    assert!(
        submitted
            .stderr
            .contains("waiting for its store `postgres`"),
        "{}",
        submitted.stderr
    );
    std::thread::sleep(Duration::from_secs(3));
    postgres.start_again();
    wait_until(Duration::from_secs(90), "the host starts", || {
        host.command(&["status"]).code == Some(0)
    });
    assert!(host.log().contains("answers, after"), "{}", host.log());
    host.submit(&["someone@example.net"], "Subject: message 1\n\nHi.\n");
    wait_until(PROMPTLY, "the message arrives", || {
        sink.transactions_count() == 1
    });
}
