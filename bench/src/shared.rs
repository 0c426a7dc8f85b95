//! `bench/run --only shared` (issue 26): the PostgreSQL store against the embedded store, in
//! one run, on one private PostgreSQL server (a temporary folder, fsync on) with
//! `pg_stat_statements` loaded:
//! - the one-host drain: `--shared` messages queued while the smart host is down, then
//!   flushed to `smtp-sink`, on each store (the full run's shared-store lines come from the
//!   same [`store_drains`]);
//! - the database's time per message: the server's execution time of every top-level
//!   statement (`pg_stat_statements`, `total_exec_time`) from the reset before the fill to
//!   the end of the drain, divided by the messages, and the statements that took the most.
//!   It leaves out the round trips and the commits' wait for the disk: PostgreSQL commits
//!   after the `COMMIT` statement's execution is timed (it shows about 1 µs a call);
//! - the SMTP listener's path (`smtp-source` → listener → SMTP transport → `smtp-sink`) on
//!   each store;
//! - the stall during a fan-out: p99 latency of single messages idle and while one message to
//!   `--fanout` recipients is delivered, on each store.

use std::collections::HashMap;
use std::fmt::Write;

use spooler_tests::{free_port, Postgres, SmtpSink};

use crate::{
    latency, millis, per_second, percent, postgres_store, row, spooler_listener, Latency, Moment,
    Queued, Row, Settings, Variant,
};

/// The database the one-host drain runs on.
const DRAIN_DATABASE: &str = "one_host";

/// The database the listener run on PostgreSQL uses.
const LISTENER_DATABASE: &str = "listener";

/// How many statements the report lists.
const TOP_STATEMENTS: usize = 5;

/// Fan-outs in a row per store: one lasts a fraction of a second, a few samples; the p99 is
/// taken over the samples of all of them.
const FANOUTS: usize = 20;

/// The target for the database's time per message, in ms.
const DATABASE_MS_TARGET: f64 = 0.1;

/// The same queue drained on the embedded store and by one host on PostgreSQL.
pub struct StoreDrains {
    pub embedded_fill: f64,
    pub embedded: f64,
    pub postgres_fill: f64,
    pub postgres: f64,
    /// What the database executed for the PostgreSQL queue, when `pg_stat_statements` ran.
    pub database: Option<Work>,
}

/// What the database executed for a run, by part.
pub struct Work {
    /// From the reset to the end of the fill (every message submitted).
    pub fill: Snapshot,
    /// From there to the last message delivered.
    pub drain: Snapshot,
    /// The whole: fill and drain.
    pub whole: Snapshot,
}

/// Fills a queue of `count` messages while the smart host is down and drains it, first on the
/// embedded store, then with one host on a new database of `postgres`; with `statistics`, the
/// statements the database executed meanwhile (reset once the host runs, before the fill).
pub fn store_drains(
    postgres: &Postgres,
    count: usize,
    statistics: Option<&Statistics<'_>>,
) -> StoreDrains {
    eprintln!("shared store: {count} drained on the embedded store…");
    let (embedded, embedded_fill) = Queued::fill(count);
    let (embedded, _) = embedded.drain();
    eprintln!("shared store: {count} drained by one host on PostgreSQL…");
    let url = postgres.create_database(DRAIN_DATABASE);
    if let Some(statistics) = statistics {
        statistics.install(DRAIN_DATABASE);
    }
    let mut queued = Queued::start_with(&[postgres_store(&url, "a")]);
    if let Some(statistics) = statistics {
        statistics.reset(DRAIN_DATABASE);
    }
    let postgres_fill = queued.submit(count);
    let filled = statistics.map(|s| s.snapshot(DRAIN_DATABASE));
    let (postgres_drain, _) = queued.deliver();
    let drained = statistics.map(|s| s.snapshot(DRAIN_DATABASE));
    drop(queued);
    StoreDrains {
        embedded_fill,
        embedded,
        postgres_fill,
        postgres: postgres_drain,
        database: filled.zip(drained).map(|(fill, whole)| Work {
            drain: whole.since(&fill),
            fill,
            whole,
        }),
    }
}

/// `pg_stat_statements` on a private server.
pub struct Statistics<'a> {
    postgres: &'a Postgres,
}

impl<'a> Statistics<'a> {
    /// Loads `pg_stat_statements` (tracking statements inside functions too) and restarts the
    /// server; why not, when this PostgreSQL lacks it.
    pub fn enable(postgres: &'a Postgres) -> Result<Statistics<'a>, String> {
        let available = postgres.psql(
            "postgres",
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'",
        );
        if available.trim() != "1" {
            return Err(
                "pg_stat_statements is not installed with this PostgreSQL (it comes in \
                 postgresql-contrib: on Debian part of the postgresql-NN package, elsewhere \
                 a package of its own): the database's time per message is not measured"
                    .into(),
            );
        }
        // The server knows pg_stat_statements.track only once the library is loaded: ALTER
        // SYSTEM refuses it before the restart.
        postgres.configure(&[("shared_preload_libraries", "pg_stat_statements")]);
        postgres.restart();
        postgres.configure(&[("pg_stat_statements.track", "all")]);
        let track = postgres.psql("postgres", "SHOW pg_stat_statements.track");
        if track.trim() != "all" {
            return Err(format!(
                "pg_stat_statements did not load (pg_stat_statements.track is `{}`)",
                track.trim()
            ));
        }
        Ok(Statistics { postgres })
    }

    /// Creates the extension (its view) in `database`.
    fn install(&self, database: &str) {
        self.postgres.psql(
            database,
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        );
    }

    /// Forgets every statement counted so far, on the whole server.
    fn reset(&self, database: &str) {
        self.postgres
            .psql(database, "SELECT pg_stat_statements_reset()");
    }

    /// The statements counted in `database` since the reset, except these questions.
    fn snapshot(&self, database: &str) -> Snapshot {
        let rows = self.postgres.psql(
            database,
            "SELECT queryid, toplevel, calls, total_exec_time,
                 regexp_replace(query, '\\s+', ' ', 'g')
             FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND query NOT LIKE '%pg_stat_statements%'",
        );
        let mut statements = HashMap::new();
        for line in rows.lines().filter(|line| !line.is_empty()) {
            let fields: Vec<&str> = line.splitn(5, '|').collect();
            let [id, toplevel, calls, ms, text] = fields[..] else {
                panic!("pg_stat_statements answered `{line}`");
            };
            statements.insert(
                (id.to_owned(), toplevel == "t"),
                Statement {
                    text: text.trim().to_owned(),
                    calls: calls.parse().expect("calls is a number"),
                    ms: ms.parse().expect("total_exec_time is a number"),
                },
            );
        }
        Snapshot(statements)
    }
}

/// One statement's counts.
#[derive(Clone)]
pub struct Statement {
    pub text: String,
    pub calls: u64,
    /// Its total execution time on the server, in ms.
    pub ms: f64,
}

/// What `pg_stat_statements` counted, by statement (its query id, and whether it ran at the
/// top level rather than inside a function).
#[derive(Clone, Default)]
pub struct Snapshot(HashMap<(String, bool), Statement>);

impl Snapshot {
    /// What was counted after `earlier`.
    fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .map(|(key, now)| {
                    let before = earlier.0.get(key);
                    let statement = Statement {
                        text: now.text.clone(),
                        calls: now.calls - before.map_or(0, |b| b.calls),
                        ms: now.ms - before.map_or(0.0, |b| b.ms),
                    };
                    (key.clone(), statement)
                })
                .filter(|(_, statement)| statement.calls > 0)
                .collect(),
        )
    }

    fn top_level(&self) -> impl Iterator<Item = (&String, &Statement)> {
        self.0
            .iter()
            .filter(|((_, top), _)| *top)
            .map(|((id, _), statement)| (id, statement))
    }

    /// The execution time of the top-level statements (a statement run inside a function is
    /// in its caller's time already), in ms.
    pub fn total_ms(&self) -> f64 {
        self.top_level().map(|(_, s)| s.ms).sum()
    }

    /// How many top-level statements ran.
    pub fn calls(&self) -> u64 {
        self.top_level().map(|(_, s)| s.calls).sum()
    }

    /// The time of statements run inside functions, in ms (part of [`total_ms`](Self::total_ms)).
    fn nested_ms(&self) -> f64 {
        self.0
            .iter()
            .filter(|((_, top), _)| !*top)
            .map(|(_, s)| s.ms)
            .sum()
    }

    /// The top-level statements that took the most time, most first, with their query ids.
    fn top(&self, n: usize) -> Vec<(&String, &Statement)> {
        let mut all: Vec<_> = self.top_level().collect();
        all.sort_by(|a, b| b.1.ms.total_cmp(&a.1.ms));
        all.truncate(n);
        all
    }

    /// The calls of statement `id` (top level).
    fn calls_of(&self, id: &str) -> u64 {
        self.0
            .get(&(id.to_owned(), true))
            .map_or(0, |statement| statement.calls)
    }
}

/// The first `limit` characters of `text`.
fn shortened(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(limit - 1).collect();
        short.push('…');
        short
    }
}

/// The statements of `work` that took the most time, as a table for `messages` messages
/// (with the calls of the fill and of the drain apart when the fill was measured).
fn statements_table(title: &str, work: &Work, messages: usize) -> String {
    let split = !work.fill.0.is_empty();
    let per = |n: f64| n / messages.max(1) as f64;
    let total = work.whole.total_ms();
    let mut text = format!(
        "{title}: the {TOP_STATEMENTS} top-level statements that took the most database time \
         (pg_stat_statements, total_exec_time), of {:.0} ms in {} statements for {messages} \
         messages ({:.1} statements per message):\n\n\
         | statement (first 80 characters) | calls | calls per message{} | total ms | ms per message | share |\n\
         |---|---:|---:|---:|---:|---:|\n",
        total,
        work.whole.calls(),
        per(work.whole.calls() as f64),
        if split { ", fill + drain" } else { "" },
    );
    for (id, statement) in work.whole.top(TOP_STATEMENTS) {
        let parts = if split {
            format!(
                " ({:.2} + {:.2})",
                per(work.fill.calls_of(id) as f64),
                per(work.drain.calls_of(id) as f64)
            )
        } else {
            String::new()
        };
        writeln!(
            text,
            "| `{}` | {} | {:.2}{parts} | {:.0} | {:.4} | {} |",
            shortened(&statement.text, 80),
            statement.calls,
            per(statement.calls as f64),
            statement.ms,
            per(statement.ms),
            percent(statement.ms, total),
        )
        .expect("writing to a string");
    }
    let nested = work.whole.nested_ms();
    if nested > 0.0 {
        writeln!(
            text,
            "\n(statements run inside functions took {nested:.0} ms more, counted in their \
             callers' time already)"
        )
        .expect("writing to a string");
    }
    text.push('\n');
    text
}

/// The PostgreSQL store against the embedded store: rows and targets of the table, and what
/// to print between the table and the targets (the top statements, or why they are missing).
pub fn phase(
    settings: &Settings,
    ceiling: f64,
    rows: &mut Vec<Row>,
    checks: &mut Vec<(String, bool)>,
) -> String {
    let count = settings.shared;
    let mut notes = String::new();
    let postgres = Postgres::start();
    let statistics = postgres.as_ref().and_then(|postgres| {
        Statistics::enable(postgres)
            .map_err(|why| {
                eprintln!("{why}");
                writeln!(notes, "NOTE: {why}\n").expect("writing to a string");
            })
            .ok()
    });
    let Some(postgres) = postgres.as_ref() else {
        notes.push_str(
            "NOTE: PostgreSQL is not installed (apt-get install postgresql): only the \
             embedded store was measured\n\n",
        );
        let sink_port = free_port();
        let _sink = SmtpSink::discarding(sink_port, &[]);
        let (accepted, delivered) =
            spooler_listener(sink_port, count, Variant::Plain, "", &mut |_| {});
        listener_rows(count, ceiling, (accepted, delivered), None, rows);
        let embedded = latency(settings.fanout, "", FANOUTS);
        fanout_rows(settings.fanout, "embedded store", &embedded, rows, checks);
        return notes;
    };

    // 1 and 2: the one-host drain, and what the database did for it.
    let drains = store_drains(postgres, count, statistics.as_ref());
    rows.push(row(
        format!("drain, {count} queued, embedded store, 1 host"),
        per_second(drains.embedded),
        format!("{} of ceiling", percent(drains.embedded, ceiling)),
    ));
    rows.push(row(
        "  filling that queue, 8 socket clients, embedded store",
        per_second(drains.embedded_fill),
        "",
    ));
    rows.push(row(
        format!("drain, {count} queued, PostgreSQL, 1 host"),
        per_second(drains.postgres),
        format!(
            "{} of the embedded store",
            percent(drains.postgres, drains.embedded)
        ),
    ));
    rows.push(row(
        "  filling that queue, 8 socket clients, PostgreSQL",
        per_second(drains.postgres_fill),
        format!(
            "{} of the embedded store",
            percent(drains.postgres_fill, drains.embedded_fill)
        ),
    ));
    checks.push((
        format!(
            "one-host drain on PostgreSQL >= 80% of the embedded store's ({})",
            percent(drains.postgres, drains.embedded)
        ),
        drains.postgres >= 0.8 * drains.embedded,
    ));
    let per = |ms: f64| ms / count.max(1) as f64;
    if let Some(work) = &drains.database {
        let whole = per(work.whole.total_ms());
        rows.push(row(
            "database ms per message, PostgreSQL, submit + deliver (reset before the fill, read after the drain)",
            format!("{whole:.3} ms"),
            format!(
                "{:.1} statements per message; target <= {DATABASE_MS_TARGET} ms; execution \
                 only (no round trips, no wait for the disk at COMMIT)",
                work.whole.calls() as f64 / count.max(1) as f64
            ),
        ));
        rows.push(row(
            "  of which the fill (submission over the control socket)",
            format!("{:.3} ms", per(work.fill.total_ms())),
            format!(
                "{:.1} statements per message",
                work.fill.calls() as f64 / count.max(1) as f64
            ),
        ));
        rows.push(row(
            "  of which the drain alone (flush to the last delivery)",
            format!("{:.3} ms", per(work.drain.total_ms())),
            format!(
                "{:.1} statements per message",
                work.drain.calls() as f64 / count.max(1) as f64
            ),
        ));
        checks.push((
            format!(
                "database ms per message (PostgreSQL, submit + deliver): {whole:.3} ms <= \
                 {DATABASE_MS_TARGET} ms"
            ),
            whole <= DATABASE_MS_TARGET,
        ));
        notes.push_str(&statements_table(
            "Drain, PostgreSQL, submit + deliver",
            work,
            count,
        ));
    } else {
        rows.push(row(
            "database ms per message, PostgreSQL",
            "not measured",
            "pg_stat_statements is missing (see the note)",
        ));
    }

    // 3: the listener path on each store.
    let sink_port = free_port();
    let sink = SmtpSink::discarding(sink_port, &[]);
    eprintln!("shared store: {count} messages smtp-source -> listener, embedded store…");
    let embedded = spooler_listener(sink_port, count, Variant::Plain, "", &mut |_| {});
    eprintln!("shared store: {count} messages smtp-source -> listener, PostgreSQL…");
    let url = postgres.create_database(LISTENER_DATABASE);
    if let Some(statistics) = &statistics {
        statistics.install(LISTENER_DATABASE);
    }
    let mut snapshot = None;
    let on_postgres = spooler_listener(
        sink_port,
        count,
        Variant::Plain,
        &postgres_store(&url, "a"),
        &mut |moment| {
            if let Some(statistics) = &statistics {
                match moment {
                    Moment::Started => statistics.reset(LISTENER_DATABASE),
                    Moment::Delivered => snapshot = Some(statistics.snapshot(LISTENER_DATABASE)),
                }
            }
        },
    );
    listener_rows(count, ceiling, embedded, Some(on_postgres), rows);
    if let Some(snapshot) = snapshot {
        rows.push(row(
            "  database ms per message, listener path on PostgreSQL (SMTP in + deliver)",
            format!("{:.3} ms", per(snapshot.total_ms())),
            format!(
                "{:.1} statements per message",
                snapshot.calls() as f64 / count.max(1) as f64
            ),
        ));
        let work = Work {
            fill: Snapshot::default(),
            drain: snapshot.clone(),
            whole: snapshot,
        };
        notes.push_str(&statements_table(
            "Listener path, PostgreSQL, SMTP in + deliver",
            &work,
            count,
        ));
    }
    drop(sink);

    // 4: the stall during a fan-out, on each store.
    eprintln!(
        "shared store: latency while {} recipients fan out, embedded store…",
        settings.fanout
    );
    let embedded = latency(settings.fanout, "", FANOUTS);
    fanout_rows(settings.fanout, "embedded store", &embedded, rows, checks);
    eprintln!(
        "shared store: latency while {} recipients fan out, PostgreSQL…",
        settings.fanout
    );
    let url = postgres.create_database("fanout");
    let on_postgres = latency(settings.fanout, &postgres_store(&url, "a"), FANOUTS);
    fanout_rows(settings.fanout, "PostgreSQL", &on_postgres, rows, checks);
    notes
}

/// The listener path's rows: the embedded store's rates (accepted, delivered), and
/// PostgreSQL's when measured.
fn listener_rows(
    count: usize,
    ceiling: f64,
    embedded: (f64, f64),
    postgres: Option<(f64, f64)>,
    rows: &mut Vec<Row>,
) {
    rows.push(row(
        format!("listener: smtp-source -> spooler -> smtp-sink, embedded store ({count} msgs)"),
        per_second(embedded.1),
        format!("{} of ceiling", percent(embedded.1, ceiling)),
    ));
    rows.push(row(
        "  accepted by the listener, embedded store",
        per_second(embedded.0),
        "",
    ));
    if let Some(postgres) = postgres {
        rows.push(row(
            format!("listener: smtp-source -> spooler -> smtp-sink, PostgreSQL ({count} msgs)"),
            per_second(postgres.1),
            format!("{} of the embedded store", percent(postgres.1, embedded.1)),
        ));
        rows.push(row(
            "  accepted by the listener, PostgreSQL",
            per_second(postgres.0),
            format!("{} of the embedded store", percent(postgres.0, embedded.0)),
        ));
    }
}

/// The fan-out rows and target of one store.
fn fanout_rows(
    recipients: usize,
    store: &str,
    latency: &Latency,
    rows: &mut Vec<Row>,
    checks: &mut Vec<(String, bool)>,
) {
    let ratio = latency.during.1.as_secs_f64() / latency.idle.1.as_secs_f64().max(1e-9);
    rows.push(row(
        format!("latency submit -> delivered, p50 / p99, idle, {store}"),
        format!("{} / {}", millis(latency.idle.0), millis(latency.idle.1)),
        "",
    ));
    rows.push(row(
        format!(
            "  during {} fan-outs to {recipients} recipients, {store} ({} samples, {:.2} s each)",
            latency.fanouts,
            latency.samples_during,
            latency.fanout_took.as_secs_f64()
        ),
        format!(
            "{} / {}",
            millis(latency.during.0),
            millis(latency.during.1)
        ),
        format!("p99 {ratio:.1}x idle"),
    ));
    checks.push((
        format!(
            "fan-out stall, {store}: p99 during the fan-out ({}) <= 3x p99 idle ({}): {ratio:.1}x",
            millis(latency.during.1),
            millis(latency.idle.1)
        ),
        ratio <= 3.0,
    ));
}
