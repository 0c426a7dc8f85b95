//! Several hosts on one PostgreSQL store: they share one queue, a host that dies loses its
//! leases to the others, and a host whose lease was taken over cannot store a status.
//! Each test starts its own PostgreSQL (initdb + pg_ctl on a free loopback port) and
//! `smtp-sink`s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use spooler_tests::{
    free_port, real_server, recorded_deliveries, submit_numbered, wait_until, Host, Postgres, Site,
    SmtpSink, PROMPTLY,
};

use crate::common::one_at_a_time;

/// The lease the hosts take on a message; short, so that takeovers happen within a test.
const LEASE_SECONDS: u64 = 5;

/// A site whose profile puts the store on `database` as host `name`, with an SMTP transport
/// (`parallel` connections) to `sink_port`.
fn shared_host_site(database: &str, name: &str, sink_port: u16, parallel: u32) -> Site {
    let site = Site::with_providers(&["store-postgres", "transport-smtp"]);
    site.write_config(&format!(
        "[store]\nprovider = \"postgres\"\n\
         config = {{ url = \"{database}\", host_name = \"{name}\", lease = {LEASE_SECONDS} }}\n\
         [[transport]]\nprovider = \"smtp\"\nname = \"smtp-{name}\"\nparallel = {parallel}\n\
         config = {{ host = \"127.0.0.1\", port = {sink_port}, tls = \"none\", helo = \"{name}.test\", timeout_secs = 30 }}\n\
         [retry]\nmin_delay = \"1h\"\nmax_delay = \"1h\"\n\
         [limits]\nmax_in_flight = 300\n"
    ));
    site
}

fn servers() -> Option<Postgres> {
    real_server("smtp-sink")?;
    Postgres::start()
}

/// The numbers of the messages in the sink's transactions (`Subject: message <n>`), with
/// when each number last arrived.
fn received(sink: &SmtpSink) -> (BTreeMap<usize, usize>, BTreeMap<usize, SystemTime>) {
    let mut counts = BTreeMap::new();
    let mut last = BTreeMap::new();
    for (text, modified) in sink.transactions_with_times() {
        let Some(n) = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: message "))
            .and_then(|n| n.trim().parse::<usize>().ok())
        else {
            continue;
        };
        *counts.entry(n).or_default() += 1;
        last.entry(n)
            .and_modify(|t: &mut SystemTime| *t = (*t).max(modified))
            .or_insert(modified);
    }
    (counts, last)
}

fn sent_items(host: &Host) -> u64 {
    let folders = host.command(&["folders", "--json"]);
    folders
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|f| f["name"] == "Sent Items")
        .and_then(|f| f["messages"].as_u64())
        .unwrap_or(0)
}

#[test]
fn three_hosts_work_one_queue_and_a_killed_host_loses_nothing() {
    let _alone = one_at_a_time();
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    // The smart host is down while the messages are submitted (each is tried once and
    // deferred for an hour), so that the queue is deep when a host dies: each host then holds
    // as many leases as it may. A flush then makes them all due.
    let sink_port = free_port();
    let sites: Vec<Site> = ["a", "b", "c"]
        .iter()
        .map(|name| shared_host_site(&database, name, sink_port, 10))
        .collect();
    let mut hosts: Vec<Host> = sites
        .iter()
        .map(|site| Host::start(&site.path("spooler.toml"), "host.log"))
        .collect();

    // 10,000 messages, a third through each host's socket; a submitter whose host does not
    // answer carries on through the next host's socket.
    const TOTAL: usize = 10_000;
    let sockets: Vec<_> = sites.iter().map(|s| s.path("data/control.sock")).collect();
    let submitters: Vec<_> = (0..3)
        .map(|k| {
            let sockets = sockets.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let (mut next, end) = (k * TOTAL / 3, (k + 1) * TOTAL / 3);
                let mut socket = k;
                let deadline = Instant::now() + Duration::from_secs(600);
                while next < end {
                    assert!(Instant::now() < deadline, "submitter {k} is stuck");
                    let (done, failure) = submit_numbered(&sockets[socket], next..end, |_| {
                        "SMTP:someone@example.net".to_owned()
                    });
                    next += done.len();
                    acked.extend(done);
                    if failure.is_some() {
                        socket = (socket + 1) % 3;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                acked
            })
        })
        .collect();

    let acked: Vec<(usize, String)> = submitters
        .into_iter()
        .flat_map(|s| s.join().expect("a submitter"))
        .collect();
    assert_eq!(acked.len(), TOTAL, "every submission was acknowledged");
    let sink_site = Site::with_providers(&[]);
    let sink = SmtpSink::start(&sink_site, "sink", sink_port, &[]);
    let flushed = hosts[2].command(&["flush"]);
    assert_eq!(flushed.code, Some(0), "{}", flushed.stderr);
    // The flush went through host c; the others hear of it at once (LISTEN/NOTIFY), not at
    // their next look at the queue on a timer (30 s).
    wait_until(PROMPTLY, "every host is delivering", || {
        sites.iter().all(|site| {
            let log = std::fs::read_to_string(site.path("host.log")).unwrap_or_default();
            !recorded_deliveries(&log).is_empty()
        })
    });

    // Midway through delivery, host b dies with messages leased.
    wait_until(
        Duration::from_secs(300),
        "3,000 messages reach the sink",
        || sink.transactions_count() >= 3_000,
    );
    let leased_by_b = || -> BTreeSet<u64> {
        postgres
            .psql(
                "spooler",
                "SELECT m.id FROM messages m JOIN spooler_sessions s \
                 ON m.lease_session = s.session WHERE s.host = 'b' AND m.folder = 'Outbox'",
            )
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    // Between two batches a host may hold no lease for a moment: kill it while it holds some.
    wait_until(PROMPTLY, "host b holds leases", || {
        !leased_by_b().is_empty()
    });
    hosts[1].kill_hard();
    let killed_at = SystemTime::now();
    let orphans = leased_by_b();
    assert!(
        !orphans.is_empty(),
        "host b held no leases when it was killed"
    );
    // It stays down longer than its leases last: the other hosts take its messages over.
    std::thread::sleep(Duration::from_secs(LEASE_SECONDS + 3));
    hosts[1] = Host::start(&sites[1].path("spooler.toml"), "host-restarted.log");
    wait_until(
        Duration::from_secs(600),
        "Sent Items holds all 10,000",
        || sent_items(&hosts[0]) >= TOTAL as u64,
    );

    // Every acknowledged message arrived at least once. (The sink writes its dump file as it
    // answers; give the last few a moment.)
    let missing = |counts: &BTreeMap<usize, usize>| -> Vec<(usize, String)> {
        acked
            .iter()
            .filter(|(n, _)| !counts.contains_key(n))
            .cloned()
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (counts, last_arrival) = loop {
        let (counts, last_arrival) = received(&sink);
        if missing(&counts).is_empty() || Instant::now() > deadline {
            break (counts, last_arrival);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Some((n, id)) = missing(&counts).first() {
        let mentions: Vec<String> = sites
            .iter()
            .flat_map(|s| ["host.log", "host-restarted.log"].map(|l| s.path(l)))
            .flat_map(|p| {
                let log = std::fs::read_to_string(&p).unwrap_or_default();
                log.lines()
                    .filter(|l| l.contains(id.as_str()))
                    .map(|l| format!("{}: {l}", p.display()))
                    .collect::<Vec<_>>()
            })
            .collect();
        panic!(
            "message {n} ({id}) was acknowledged but never received; the logs say:\n{}\n{}",
            mentions.join("\n"),
            postgres.psql(
                "spooler",
                &format!(
                    "SELECT folder, lease_session FROM messages WHERE id = {}",
                    u64::from_str_radix(id, 16).unwrap()
                )
            )
        );
    }
    // Sent Items holds exactly one copy of each.
    for host in &hosts {
        assert_eq!(
            sent_items(host),
            TOTAL as u64,
            "every host sees the whole store"
        );
    }
    // No delivery was recorded twice, and a message sent twice was one whose first send was
    // never recorded: it was in flight on the killed host.
    let logs: Vec<String> = sites
        .iter()
        .flat_map(|s| ["host.log", "host-restarted.log"].map(|l| s.path(l)))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let mut recorded: BTreeMap<String, usize> = BTreeMap::new();
    for id in logs.iter().flat_map(|log| recorded_deliveries(log)) {
        *recorded.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = recorded.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "deliveries recorded twice: {twice:?}");
    let id_of: BTreeMap<usize, u64> = acked
        .iter()
        .map(|(n, id)| (*n, u64::from_str_radix(id, 16).expect("a hex queue id")))
        .collect();
    let repeated: Vec<usize> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    for n in &repeated {
        assert!(
            orphans.contains(&id_of[n]),
            "message {n} was sent twice but was not in flight on the killed host"
        );
    }
    // What the killed host held was delivered (for the last time, the delivery that was
    // recorded) at most the lease after the kill, give or take the time to send it: the
    // other hosts take it over when the lease expires, without waiting for a retry.
    let worst = orphans
        .iter()
        .filter_map(|id| id_of.iter().find(|(_, i)| *i == id).map(|(n, _)| *n))
        .filter_map(|n| last_arrival.get(&n))
        .filter_map(|t| t.duration_since(killed_at).ok())
        .max()
        .unwrap_or_default();
    let bound = Duration::from_secs(LEASE_SECONDS) + PROMPTLY;
    assert!(
        worst <= bound,
        "a taken-over message waited {worst:?} after the kill"
    );
    let gave_up = logs.iter().filter(|log| gave_up_its_lease(log)).count();
    eprintln!("scale-out: {gave_up} host log(s) show a lease given up");
    eprintln!(
        "scale-out: {TOTAL} acknowledged, {} leased by the killed host, {} sent twice, \
         worst wait after the kill {worst:?}",
        orphans.len(),
        repeated.len()
    );
    // Everything is done: no host holds a lease any more, and `status` lists the hosts.
    let status = hosts[0].command(&["status"]).stdout;
    for name in ["a", "b", "c"] {
        assert!(status.contains(&format!("Host {name}")), "{status}");
    }
    assert!(status.contains("Outbox: 0 message(s)"), "{status}");
}

/// Whether host `name`'s log says it was refused or dropped a message it no longer held.
fn gave_up_its_lease(log: &str) -> bool {
    log.contains("refused (fencing)") || log.contains("no longer holds it")
}

#[test]
fn a_host_whose_lease_was_taken_over_cannot_store_a_status() {
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    // Host a's smart host answers DATA only after 8 s; host b's at once.
    let sinks = Site::with_providers(&[]);
    let slow = SmtpSink::start(&sinks, "slow", free_port(), &["-w", "8"]);
    let fast = SmtpSink::start(&sinks, "fast", free_port(), &[]);
    let site_a = shared_host_site(&database, "a", slow.port, 1);
    let site_b = shared_host_site(&database, "b", fast.port, 1);
    let host_a = Host::start(&site_a.path("spooler.toml"), "host.log");
    let id = host_a.submit(
        &["-f", "alice@example.com", "bob@example.net"],
        "Subject: message 1\r\n\r\nWho delivers me?\r\n",
    );
    // It takes the message at once; after two seconds it waits for the slow DATA answer.
    std::thread::sleep(Duration::from_secs(2));
    // Host a stops (as a hung machine does) while it holds the lease...
    host_a.signal(libc::SIGSTOP);
    let host_b = Host::start(&site_b.path("spooler.toml"), "host.log");
    // ...host b takes the message over when the lease expires and delivers it...
    wait_until(PROMPTLY, "host b delivered it", || {
        host_b.show(&id)["folder"] == "Sent Items"
    });
    // ...and host a, back, gets its smart host's answer but cannot store it.
    host_a.signal(libc::SIGCONT);
    wait_until(PROMPTLY, "host a gave the message up", || {
        gave_up_its_lease(&host_a.log())
    });
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "fencing: host a {}",
        if host_a.log().contains("refused (fencing)") {
            "tried to store its answer and the store refused it"
        } else {
            "learnt at its check-in that it no longer held the message"
        }
    );
    let message = host_b.show(&id);
    let recipient = &message["recipients"][0];
    assert_eq!(message["folder"], "Sent Items", "{message}");
    assert_eq!(recipient["transport"], "smtp-b", "{message}");
    assert_eq!(
        recipient["attempts"], 1,
        "host a's attempt was not stored: {message}"
    );
    assert_eq!(host_a.show(&id), message, "both hosts see host b's answer");
    assert_eq!(fast.transactions().len(), 1);
    assert_eq!(sent_items(&host_a), 1);
    assert!(
        !recorded_deliveries(&host_a.log()).contains(&id),
        "host a recorded a delivery it no longer held:\n{}",
        host_a.log()
    );
}

#[test]
fn a_client_watching_one_host_hears_of_mail_another_host_took_in() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let database = postgres.create_database("spooler");
    let store = |name: &str| {
        format!(
            "[store]\nprovider = \"postgres\"\n\
             config = {{ url = \"{database}\", host_name = \"{name}\", lease = {LEASE_SECONDS} }}\n"
        )
    };
    let site_a = Site::with_providers(&["store-postgres", "transport-directory"]);
    site_a.write_config(&format!(
        "{}[[transport]]\nprovider = \"directory\"\n\
         config = {{ path = \"{{site}}/files\", pickup = \"{{site}}/pickup\", poll_interval_secs = 1 }}\n",
        store("a")
    ));
    let site_b = Site::with_providers(&["store-postgres"]);
    site_b.write_config(&store("b"));
    let _host_a = Host::start(&site_a.path("spooler.toml"), "host.log");
    let host_b = Host::start(&site_b.path("spooler.toml"), "host.log");
    let watcher = host_b.watch();

    site_a.drop_message(
        "pickup",
        "0001.eml",
        "From: Carol <carol@example.org>\r\nSubject: minutes of Monday\r\n\r\nSee below.\r\n",
    );
    let event = watcher.next(PROMPTLY);
    assert_eq!(event["event"], "new_mail", "{event}");
    assert_eq!(event["folder"], "Inbox");
    assert_eq!(event["subject"], "minutes of Monday");
    assert_eq!(
        host_b.show(event["id"].as_str().unwrap())["folder"],
        "Inbox"
    );
}

#[test]
fn a_message_submitted_again_to_another_host_on_the_same_store_is_stored_once() {
    let Some(postgres) = servers() else {
        return;
    };
    let database = postgres.create_database("spooler");
    let sink_site = Site::with_providers(&[]);
    let sink = SmtpSink::start(&sink_site, "sink", free_port(), &[]);
    let a = shared_host_site(&database, "a", sink.port, 1);
    let b = shared_host_site(&database, "b", sink.port, 1);
    let host_a = Host::start(&a.path("spooler.toml"), "host.log");
    let host_b = Host::start(&b.path("spooler.toml"), "host.log");
    let message = "Message-ID: <order-7@shop.example>\r\nSubject: order 7\r\n\r\nShipped.\r\n";
    let first = host_a.submit(&["-f", "shop@example.com", "ann@example.net"], message);
    let again = host_b.submit(&["-f", "shop@example.com", "ann@example.net"], message);
    assert_eq!(
        again, first,
        "the retry, wherever it lands, finds the first"
    );
    let other = host_b.submit(&["-f", "shop@example.com", "bob@example.net"], message);
    assert_ne!(other, first);
    assert!(
        host_b.log().contains(&format!("{first}: submitted again")),
        "{}",
        host_b.log()
    );
    wait_until(PROMPTLY, "both messages are delivered", || {
        sink.transactions_count() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.transactions_count(), 2, "one copy each");
}
