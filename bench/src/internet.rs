//! `bench/run --only internet` (issue 28): mail to 100 domains, 100 messages each, through
//! the SMTP transport in MX mode (40 connections, the default 20 per destination), with the
//! domains' MX records in a private dnsmasq pointing at `smtp-sink`s on loopback. One of
//! the domains is slow: its sink waits 3 s before answering DATA (`smtp-sink -w 3`).
//!
//! Four runs, each on a fresh host: the 99 fast domains alone, then all 100, then all 100
//! with no per-destination limit (each domain may take every connection), to show what the
//! limit is for, then all 100 after a backlog of 1,000 messages to the slow domain was
//! queued (more than the host holds in memory). The figure is the rate of the 99 fast
//! domains' 9,900 messages in each run, from their first submission to the last of them
//! finished (8 clients submit in parallel, interleaved by domain; the submissions overlap
//! the deliveries alike in every run).
//! Target: with the slow domain, interleaved or its backlog first, the others keep at least
//! 90% of their rate without it.

use std::time::{Duration, Instant};

use spooler_tests::{free_port, submit_numbered, Dnsmasq, Host, Site, SmtpSink, Zone};

use crate::finished::Finished;
use crate::{per_second, rate, row, Row, PHASE_LIMIT};

/// The domains, the messages per domain, and which domain is slow.
const DOMAINS: usize = 100;
const PER_DOMAIN: usize = 100;
const SLOW: usize = 0;

/// The transport's connections; each destination gets at most the default 20 of them.
const PARALLEL: usize = 40;

/// The clients submitting at once.
const CLIENTS: usize = 8;

/// The slow domain's messages queued before the others in the backlog run: more than the
/// host holds in memory (`max_in_flight`, 256).
const BACKLOG: usize = 1000;

/// The runs; their rows and the checks.
pub fn phase(rows: &mut Vec<Row>, checks: &mut Vec<(String, bool)>) {
    let port = free_port();
    let mut zone = Zone::new();
    for n in 0..DOMAINS {
        let address = if n == SLOW { "127.0.0.3" } else { "127.0.0.2" };
        zone = zone.exchanger(&format!("d{n}.test"), address);
    }
    let dns = Dnsmasq::start(zone).expect("dnsmasq (apt-get install dnsmasq-base)");
    let _fast = SmtpSink::discarding_at("127.0.0.2", port, &[]);
    let _slow = SmtpSink::discarding_at("127.0.0.3", port, &["-w", "3"]);

    eprintln!("internet: 99 domains x {PER_DOMAIN} messages through MX delivery…");
    let alone = run(&dns, port, Slow::Absent, None);
    eprintln!("internet: the same with a slow 100th domain…");
    let beside_slow = run(&dns, port, Slow::Interleaved, None);
    eprintln!("internet: the same without a per-destination limit…");
    let unlimited = run(&dns, port, Slow::Interleaved, Some(PARALLEL));
    eprintln!("internet: the same behind a backlog of {BACKLOG} to the slow domain…");
    let behind_backlog = run(&dns, port, Slow::Backlog(BACKLOG), None);
    let fast = (DOMAINS - 1) * PER_DOMAIN;
    rows.push(row(
        format!("MX delivery: {fast} msgs to 99 domains, alone ({PARALLEL} connections)"),
        per_second(alone),
        "",
    ));
    rows.push(row(
        format!("  the same 99 beside a slow domain ({PER_DOMAIN} msgs, 3 s each)"),
        per_second(beside_slow),
        format!("{:.0}% of alone", 100.0 * beside_slow / alone),
    ));
    rows.push(row(
        format!("  the same, each domain allowed all {PARALLEL} connections (no limit)"),
        per_second(unlimited),
        format!("{:.0}% of alone", 100.0 * unlimited / alone),
    ));
    rows.push(row(
        format!("  the same 99 after {BACKLOG} msgs to the slow domain were queued"),
        per_second(behind_backlog),
        format!("{:.0}% of alone", 100.0 * behind_backlog / alone),
    ));
    checks.push((
        format!(
            "99 domains beside a slow one keep >= 90% of their rate alone ({:.0}%)",
            100.0 * beside_slow / alone
        ),
        beside_slow >= 0.9 * alone,
    ));
    checks.push((
        format!(
            "99 domains behind a backlog to a slow one keep >= 90% of their rate alone ({:.0}%)",
            100.0 * behind_backlog / alone
        ),
        behind_backlog >= 0.9 * alone,
    ));
}

/// The slow domain's part in a run.
#[derive(Clone, Copy, PartialEq)]
enum Slow {
    /// No mail for it.
    Absent,
    /// Its 100 messages among the others', interleaved.
    Interleaved,
    /// Its 100 interleaved, and before them a backlog of this many, queued first.
    Backlog(usize),
}

/// One run on a fresh host: the fast domains' messages, interleaved, with the slow domain's
/// as `slow` says, and the default per-destination concurrency or `concurrency`; the fast
/// ones' rate, from their first submission to the last of them finished.
fn run(dns: &Dnsmasq, port: u16, slow: Slow, concurrency: Option<usize>) -> f64 {
    let site = Site::with_providers(&["store-embedded", "transport-smtp"]);
    let config = site.write_config(&format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"internet\"\nparallel = {PARALLEL}\n\
         config = {{ mode = \"mx\", resolver = \"127.0.0.1:{}\", mx_port = {port}, helo = \"bench.example.com\", timeout_secs = 30 }}\n{}",
        dns.port,
        concurrency.map_or(String::new(), |n| format!("[destinations]\nconcurrency = {n}\n"))
    ));
    let host = Host::start(&config, "host.log");
    let finished = Finished::follow(host.log_path());
    let socket = site.path("data").join("control.sock");
    // Message n goes to domain n % DOMAINS, so every domain has mail from the start; without
    // the slow domain, its messages (n % DOMAINS == SLOW) are left out. A backlog takes
    // numbers past the others', all for the slow domain.
    if let Slow::Backlog(count) = slow {
        let backlog: Vec<usize> = (0..count)
            .map(|k| SLOW + (PER_DOMAIN + k) * DOMAINS)
            .collect();
        submit_all(&socket, &backlog);
    }
    let numbers: Vec<usize> = (0..DOMAINS * PER_DOMAIN)
        .filter(|&n| slow != Slow::Absent || domain_of(n) != SLOW)
        .collect();
    let started = Instant::now();
    let fast_ids: Vec<String> = submit_all(&socket, &numbers)
        .into_iter()
        .filter(|(n, _)| domain_of(*n) != SLOW)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(fast_ids.len(), (DOMAINS - 1) * PER_DOMAIN);
    let deadline = Instant::now() + PHASE_LIMIT;
    let last = loop {
        let times: Vec<Option<Instant>> = fast_ids.iter().map(|id| finished.when(id)).collect();
        if times.iter().all(Option::is_some) {
            break times.into_iter().flatten().max().unwrap_or(started);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages finished within {PHASE_LIMIT:?}",
            times.iter().flatten().count(),
            fast_ids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    rate(fast_ids.len(), last - started)
}

/// The domain of message `n`.
fn domain_of(n: usize) -> usize {
    n % DOMAINS
}

/// Submits a message for each of `numbers` (`r<n>@d<domain>.test`), with several clients
/// at once so that submission outruns delivery and the figure is the delivery's (one client
/// waits for a group commit per message); each number with its message's id.
fn submit_all(socket: &std::path::Path, numbers: &[usize]) -> Vec<(usize, String)> {
    std::thread::scope(|scope| {
        let chunk = numbers.len().div_ceil(CLIENTS);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                scope.spawn(move || {
                    let indexes = k * chunk..((k + 1) * chunk).min(numbers.len());
                    let (acked, failure) = submit_numbered(socket, indexes, |i| {
                        format!("SMTP:r{}@d{}.test", numbers[i], domain_of(numbers[i]))
                    });
                    assert!(failure.is_none(), "submission failed: {failure:?}");
                    acked
                        .into_iter()
                        .map(|(i, id)| (numbers[i], id))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("a submitting client"))
            .collect()
    })
}
