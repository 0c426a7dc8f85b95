//! `bench/run --only soak` (issue 27): `--soak` messages (200,000 by default) from
//! `smtp-source` through the SMTP listener and the SMTP transport into `smtp-sink`, on the
//! embedded store, once with `keep_sent = "0s"` (a finished message is deleted) and once
//! with a short `keep_sent` (filed, then pruned by the retention thread while the load
//! goes on). It sends in ten slices, and reports each run's rate per slice and the store's
//! size on disk (the database file and its write-ahead log, sampled every 250 ms): the
//! largest, and at the end. Targets: the size stays under the stated bound (a fixed base,
//! the day's submission keys, and one and a half keep times of filed mail at the measured
//! rate), and the rate of the last five slices (pruning under way) is at least 80% of the
//! first five's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spooler_tests::{free_port, Host, Site, SmtpSink};

use crate::finished::Finished;
use crate::{per_second, row, smtp_source, Row, PHASE_LIMIT};

/// The slices each run is sent in.
pub const SLICES: usize = 10;

/// What the store may take without any mail in it: the database's tables and indexes for
/// the queue in flight, and the write-ahead log, which grows to about 40 MiB before it is
/// reused (`store-embedded`'s `WAL_CHECKPOINT_PAGES`).
const BASE_BOUND_BYTES: f64 = 64e6;

/// What one 2 KB message takes in Sent Items (a message row, its recipient, its content,
/// their index entries), measured with `status` after 2,000 messages: 4.5 KB, rounded up.
const FILED_MESSAGE_BYTES: f64 = 5_000.0;

/// What one message's submission key takes while the duplicate window (a day) remembers
/// it: the Message-ID, sender and recipients hashed, with the message's id and an expiry.
const SUBMISSION_KEY_BYTES: f64 = 120.0;

/// The short keep time of the second run, in seconds.
const SHORT_KEEP_SECS: u64 = 20;

/// Both runs; their rows and checks.
pub fn phase(count: usize, rows: &mut Vec<Row>, checks: &mut Vec<(String, bool)>) {
    let sink_port = free_port();
    let _sink = SmtpSink::discarding(sink_port, &[]);
    for keep in [0, SHORT_KEEP_SECS] {
        eprintln!("soak: {count} messages through the listener, keep_sent = \"{keep}s\"…");
        let run = soak(sink_port, count, keep);
        let half = SLICES / 2;
        let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
        let (early, late) = (mean(&run.rates[..half]), mean(&run.rates[half..]));
        // Filed mail stays one and a half keep times at most (a pass every half keep time).
        let kept_seconds = 1.5 * keep as f64;
        let bound = BASE_BOUND_BYTES
            + count as f64 * SUBMISSION_KEY_BYTES
            + kept_seconds * late.max(early) * FILED_MESSAGE_BYTES;
        let rates: Vec<String> = run.rates.iter().map(|r| format!("{r:.0}")).collect();
        rows.push(row(
            format!(
                "soak, keep_sent = \"{keep}s\": {count} msgs, rate per slice of {}",
                count / SLICES
            ),
            format!("{} msg/s", rates.join(" ")),
            format!("last half {:.0}% of first half", 100.0 * late / early),
        ));
        rows.push(row(
            "  store on disk: largest sample / after the load, keep time and a pass later",
            format!(
                "{:.1} MB / {:.1} MB",
                run.largest as f64 / 1e6,
                run.last as f64 / 1e6
            ),
            format!("bound {:.0} MB", bound / 1e6),
        ));
        rows.push(row(
            "  whole run",
            per_second(count as f64 / run.took.as_secs_f64()),
            "",
        ));
        checks.push((
            format!(
                "soak, keep_sent = \"{keep}s\": the store stays under {:.0} MB \
                 (64 MB + {count} keys x 120 B + 1.5 x {keep} s x rate x 5 KB)",
                bound / 1e6
            ),
            (run.largest as f64) <= bound,
        ));
        checks.push((
            format!(
                "soak, keep_sent = \"{keep}s\": the last half's rate >= 80% of the first half's"
            ),
            late >= 0.8 * early,
        ));
        let empty = BASE_BOUND_BYTES + count as f64 * SUBMISSION_KEY_BYTES;
        checks.push((
            format!(
                "soak, keep_sent = \"{keep}s\": once the kept mail is gone, the store is back \
                 under {:.0} MB (64 MB + {count} keys x 120 B)",
                empty / 1e6
            ),
            (run.last as f64) <= empty,
        ));
    }
}

/// One run's figures.
struct Soak {
    /// Messages per second of each slice, from its first message sent to its last finished.
    rates: Vec<f64>,
    /// The largest sample of the store's size during the load, and its size once the load
    /// stopped and one and a half keep times and a pass went by, in bytes.
    largest: u64,
    last: u64,
    /// The whole run.
    took: Duration,
}

/// `count` messages through a host keeping sent mail `keep` seconds.
fn soak(sink_port: u16, count: usize, keep: u64) -> Soak {
    let site = Site::with_providers(&["store-embedded", "transport-smtp"]);
    let listener_port = free_port();
    let config = site.write_config(&format!(
        "[store]\nkeep_sent = \"{keep}s\"\n\
         [[listener]]\naddress = \"127.0.0.1:{listener_port}\"\n\
         [[transport]]\nprovider = \"smtp\"\nparallel = 20\nisolate = false\n\
         config = {{ host = \"127.0.0.1\", port = {sink_port}, tls = \"none\", helo = \"bench.example.com\" }}\n"
    ));
    let host = Host::start(&config, "host.log");
    let finished = Finished::follow(host.log_path());
    let store = site.path("data").join("store.sqlite");
    let sampling = Arc::new(AtomicBool::new(true));
    let largest = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, largest, store) =
            (Arc::clone(&sampling), Arc::clone(&largest), store.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                largest.fetch_max(size_on_disk(&store), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let slice = count / SLICES;
    let started = Instant::now();
    let rates = (1..=SLICES)
        .map(|n| {
            let began = Instant::now();
            smtp_source(listener_port, slice);
            let done = finished.wait_for(n * slice, PHASE_LIMIT);
            slice as f64 / (done - began).as_secs_f64()
        })
        .collect();
    let took = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("the sampler ends");
    // Once the load stops, what was filed goes when its time is over, and the file shrinks.
    if keep > 0 {
        std::thread::sleep(Duration::from_secs(keep * 3 / 2 + 5));
    }
    Soak {
        rates,
        largest: largest.load(Ordering::Relaxed),
        last: size_on_disk(&store),
        took,
    }
}

/// The database file's size and its write-ahead log's.
fn size_on_disk(database: &Path) -> u64 {
    let mut log = PathBuf::from(database);
    log.set_extension("sqlite-wal");
    [database, &log]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum()
}
