//! The crash harness: the host is SIGKILLed again and again while clients submit mail, and
//! restarted each time; afterwards every acknowledged message is looked for where it was
//! sent. `bench/crash` runs it large and prints the figures; a test runs it small in CI.
//!
//! The clients are real `submit` processes, as cron and mail programs run them: each message
//! has its own Message-ID, and a client whose `submit` failed (the host died under it)
//! submits the same message again until it is acknowledged, as a careful caller does with
//! sendmail's EX_TEMPFAIL. Half the messages go over SMTP to `smtp-sink` (the SMTP transport
//! isolated in child processes, which die with the host), half through the directory
//! transport into a folder.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::{free_port, host_binary, Host, Site, SmtpSink, PROMPTLY};

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct CrashSettings {
    /// How many times the host is killed.
    pub kills: usize,
    /// How many clients submit side by side.
    pub submitters: usize,
    /// The host lives a random time up to this long between kills (at least a tenth of it).
    pub longest_life: Duration,
    /// How long the harness waits, after the last kill, for every message to arrive.
    pub drain_limit: Duration,
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    /// Kills made.
    pub kills: usize,
    /// Messages `submit` acknowledged with a queue id.
    pub acknowledged: usize,
    /// `submit` calls that failed and were made again (the host was killed under them).
    pub resubmissions: usize,
    /// Acknowledged messages that never arrived.
    pub lost: Vec<usize>,
    /// Messages stored twice (under two queue ids).
    pub stored_twice: Vec<usize>,
    /// Messages delivered more than once, over SMTP.
    pub delivered_twice_smtp: Vec<usize>,
    /// Messages delivered more than once, into the folder.
    pub delivered_twice_files: Vec<usize>,
    /// The longest time from an acknowledgement to the message's arrival.
    pub worst_delay: Duration,
    /// The median of those times.
    pub median_delay: Duration,
    /// The whole run.
    pub elapsed: Duration,
}

impl CrashReport {
    /// The figures as a table.
    pub fn table(&self) -> String {
        let row = |name: &str, value: String| format!("{name:<44} {value:>12}\n");
        let count = |list: &Vec<usize>| list.len().to_string();
        [
            row("host SIGKILLed and restarted", self.kills.to_string()),
            row(
                "messages acknowledged by submit",
                self.acknowledged.to_string(),
            ),
            row(
                "submit calls failed and made again",
                self.resubmissions.to_string(),
            ),
            row("lost (acknowledged, never arrived)", count(&self.lost)),
            row("stored twice (two queue ids)", count(&self.stored_twice)),
            row(
                "delivered twice into the folder",
                count(&self.delivered_twice_files),
            ),
            row(
                "delivered twice over SMTP (see below)",
                count(&self.delivered_twice_smtp),
            ),
            row(
                "median delay, acknowledgement to arrival",
                format!("{} ms", self.median_delay.as_millis()),
            ),
            row(
                "worst delay, acknowledgement to arrival",
                format!("{} ms", self.worst_delay.as_millis()),
            ),
            row("run time", format!("{:.0} s", self.elapsed.as_secs_f64())),
        ]
        .concat()
    }
}

/// Message `n`: its own Message-ID and a subject that names it.
fn message(n: usize) -> String {
    format!(
        "Message-ID: <crash-{n}@harness.example>\r\nFrom: harness@example.com\r\n\
         Subject: crash {n}\r\n\r\nMessage number {n}.\r\n"
    )
}

/// The number in a delivered copy's `Subject: crash <n>`.
fn number_in(copy: &str) -> Option<usize> {
    copy.lines()
        .find_map(|line| line.strip_prefix("Subject: crash "))
        .and_then(|n| n.trim().parse().ok())
}

/// Runs the harness on `site` (its providers folder must hold the embedded store and the
/// SMTP and directory transports).
pub fn run(site: &Site, settings: CrashSettings) -> CrashReport {
    let started = Instant::now();
    let sink = SmtpSink::start(site, "sink", free_port(), &[]);
    let config = site.write_config(&format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"relay\"\nparallel = 4\nisolate = true\n\
         config = {{ host = \"127.0.0.1\", port = {}, tls = \"none\", timeout_secs = 5 }}\n\
         [[transport]]\nprovider = \"directory\"\nname = \"files\"\n\
         config = {{ path = \"{{site}}/files\" }}\n\
         [retry]\nmin_delay = \"200ms\"\nmax_delay = \"1s\"\n\
         [submission]\nclient_retry = \"1s\"\n",
        sink.port
    ));
    let mut host = Host::start(&config, "run-0.log");

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let resubmissions = Arc::new(AtomicUsize::new(0));
    let submitters: Vec<_> = (0..settings.submitters)
        .map(|_| {
            let (stop, next, resubmissions) = (stop.clone(), next.clone(), resubmissions.clone());
            let config = config.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let recipient = if n % 2 == 0 {
                        format!("SMTP:rcpt{}@example.net", n % 100)
                    } else {
                        format!("FILE:box{}", n % 10)
                    };
                    loop {
                        if let Some(id) = submit(&config, &recipient, &message(n)) {
                            acknowledged.push((n, id, SystemTime::now()));
                            break;
                        }
                        resubmissions.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                acknowledged
            })
        })
        .collect();

    let mut random = Random::seeded();
    for kill in 1..=settings.kills {
        let longest = settings.longest_life.as_millis() as u64;
        let life = longest / 10 + random.below(longest - longest / 10);
        std::thread::sleep(Duration::from_millis(life));
        host.kill_hard();
        host = Host::start(&config, &format!("run-{kill}.log"));
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<(usize, String, SystemTime)> = submitters
        .into_iter()
        .flat_map(|s| s.join().expect("a submitter finished"))
        .collect();

    // Every message is looked for until all have arrived or the drain limit has passed.
    let deadline = Instant::now() + settings.drain_limit;
    let arrivals = loop {
        let arrivals = Arrivals::read(site, &sink);
        let missing = acknowledged
            .iter()
            .any(|(n, _, _)| !arrivals.smtp.contains_key(n) && !arrivals.files.contains_key(n));
        if !missing || Instant::now() > deadline {
            break arrivals;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let stored = stored_copies(&host);
    drop(host);

    let mut report = CrashReport {
        kills: settings.kills,
        acknowledged: acknowledged.len(),
        resubmissions: resubmissions.load(Ordering::Relaxed),
        ..CrashReport::default()
    };
    let mut delays = Vec::new();
    for (n, _, at) in &acknowledged {
        let smtp = arrivals.smtp.get(n);
        let files = arrivals.files.get(n);
        match smtp.or(files) {
            None => report.lost.push(*n),
            Some(times) => {
                let first = times.iter().min().expect("an arrival has a time");
                delays.push(first.duration_since(*at).unwrap_or_default());
            }
        }
        if smtp.is_some_and(|t| t.len() > 1) {
            report.delivered_twice_smtp.push(*n);
        }
        if files.is_some_and(|t| t.len() > 1) {
            report.delivered_twice_files.push(*n);
        }
        if stored.get(n).is_some_and(|&copies| copies > 1) {
            report.stored_twice.push(*n);
        }
    }
    delays.sort_unstable();
    report.worst_delay = delays.last().copied().unwrap_or_default();
    report.median_delay = delays.get(delays.len() / 2).copied().unwrap_or_default();
    report.elapsed = started.elapsed();
    report
}

/// Submits with the real client: the queue id; `None` if `submit` failed in a way a caller
/// tries again after (EX_TEMPFAIL, EX_UNAVAILABLE: the host died or is restarting).
fn submit(config: &Path, recipient: &str, message: &str) -> Option<String> {
    let mut child = Command::new(host_binary())
        .args(["submit", "--config"])
        .arg(config)
        .args(["-f", "harness@example.com", recipient])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("submit starts");
    if let Some(mut stdin) = child.stdin.take() {
        // A host killed while reading leaves `submit` exiting early: its exit code tells.
        stdin.write_all(message.as_bytes()).ok();
    }
    let output = child.wait_with_output().expect("submit ends");
    match output.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&output.stdout).trim().to_owned()),
        Some(69 | 75) => None,
        other => panic!(
            "submit failed with {other:?}, which no retry mends: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// When each message arrived, per way it went (a message that arrived twice has two times).
struct Arrivals {
    smtp: BTreeMap<usize, Vec<SystemTime>>,
    files: BTreeMap<usize, Vec<SystemTime>>,
}

impl Arrivals {
    fn read(site: &Site, sink: &SmtpSink) -> Arrivals {
        let mut smtp: BTreeMap<usize, Vec<SystemTime>> = BTreeMap::new();
        for (copy, at) in sink.transactions_with_times() {
            if let Some(n) = number_in(&copy) {
                smtp.entry(n).or_default().push(at);
            }
        }
        let mut files: BTreeMap<usize, Vec<SystemTime>> = BTreeMap::new();
        for file in site.delivered_files("files") {
            let copy = fs::read_to_string(&file).unwrap_or_default();
            let at = fs::metadata(&file).and_then(|m| m.modified());
            if let (Some(n), Ok(at)) = (number_in(&copy), at) {
                files.entry(n).or_default().push(at);
            }
        }
        Arrivals { smtp, files }
    }
}

/// How many stored messages each number has, in the Outbox and Sent Items together.
fn stored_copies(host: &Host) -> BTreeMap<usize, usize> {
    let mut copies = BTreeMap::new();
    for folder in ["Outbox", "Sent Items"] {
        for message in host.list(folder) {
            let subject = message["subject"].as_str().unwrap_or_default();
            if let Some(n) = subject.strip_prefix("crash ").and_then(|n| n.parse().ok()) {
                *copies.entry(n).or_default() += 1;
            }
        }
    }
    copies
}

/// A small xorshift generator: the kill times need no more, and no crate.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        Random(u64::from(nanos) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// The settings the CI test uses: small enough for a debug build on two cores.
pub const IN_CI: CrashSettings = CrashSettings {
    kills: 20,
    submitters: 4,
    longest_life: Duration::from_millis(800),
    drain_limit: PROMPTLY,
};
