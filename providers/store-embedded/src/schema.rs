//! The database layout, how a connection is set up, and how an older layout is brought up
//! to date.
//!
//! What the layout is for: every query the engine makes on its per-message path reads only
//! what it needs, whatever the length of the queue.
//! - Content lives in `contents`, apart from the queue rows, so that queue and folder queries
//!   never read message bodies.
//! - `messages.due` is set for Outbox messages only (NULL when held or in another folder), and
//!   the partial index `messages_due` holds exactly the queue in the order it is worked: the
//!   next due message is one index step away.
//! - `recipients_waiting` holds the pending recipients (they exist in the Outbox only) by
//!   transport, for the status counts; `messages_held` the held messages, for their count.
//! - `submissions` remembers submission keys apart from the messages, so that a retried
//!   submission is recognised even after its message was delivered and deleted. The keys
//!   are looked up in memory (`submissions.rs` says why), so the table has no index on them.

use rusqlite::config::DbConfig;
use rusqlite::Connection;

/// The schema version this code reads and writes (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    folder TEXT NOT NULL,
    sender TEXT NOT NULL,
    report_delivery INTEGER NOT NULL,
    report_non_delivery INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    submitted_at INTEGER NOT NULL,
    deferred_until INTEGER,
    expires_at INTEGER,
    delete_after_submission INTEGER NOT NULL,
    is_report INTEGER NOT NULL,
    held INTEGER NOT NULL,
    preprocessed INTEGER NOT NULL,
    subject TEXT NOT NULL,
    size INTEGER NOT NULL,
    -- Outbox only: when the next attempt is due; NULL when held, and in every other folder.
    due INTEGER
);
CREATE INDEX messages_folder ON messages (folder, id);
CREATE TABLE contents (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    content BLOB NOT NULL
);
CREATE TABLE recipients (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    address_type TEXT NOT NULL,
    address TEXT NOT NULL,
    kind INTEGER NOT NULL,
    state INTEGER NOT NULL,
    transport TEXT,
    attempts INTEGER NOT NULL,
    next_attempt INTEGER,
    last_answer TEXT NOT NULL,
    status_code TEXT NOT NULL,
    diagnostic TEXT NOT NULL,
    delay_warned INTEGER NOT NULL,
    reported INTEGER NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
CREATE TABLE properties (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
) WITHOUT ROWID;
";

/// The indexes of both versions' tables in this version's form.
const INDEXES: &str = "
CREATE INDEX messages_due ON messages (due, priority DESC, submitted_at, id)
    WHERE due IS NOT NULL;
CREATE INDEX recipients_waiting ON recipients (transport, state) WHERE state = 0;
";

/// Added in version 3: submission keys (`provider_abi::store::SubmissionKey`) and the
/// message each one made, until `remember_until`. Since version 4 the key is not indexed.
const SUBMISSIONS: &str = "
CREATE TABLE submissions (
    key TEXT NOT NULL,
    message_id INTEGER NOT NULL,
    remember_until INTEGER NOT NULL
);
CREATE INDEX submissions_expiry ON submissions (remember_until);
";

/// The held Outbox messages, for `held_messages` (the host's held gauge, read at every
/// scrape): counting them reads this small index, never the queue's rows. Created when
/// missing at every open, with no new schema version: a store that does not know the index
/// works on the database as before (SQLite keeps the index up to date for it).
const HELD: &str = "
CREATE INDEX IF NOT EXISTS messages_held ON messages (folder) WHERE held <> 0;
";

/// Version 3 indexed the submission keys (as the table's primary key): the keys move to a
/// table without that index.
const FROM_VERSION_3: &str = "
DROP INDEX submissions_expiry;
ALTER TABLE submissions RENAME TO submissions_version_3;
";

/// After [`SUBMISSIONS`], on the way from version 3.
const KEYS_FROM_VERSION_3: &str = "
INSERT INTO submissions (key, message_id, remember_until)
    SELECT key, message_id, remember_until FROM submissions_version_3;
DROP TABLE submissions_version_3;
";

/// Version 1 kept the content in `messages` and indexed the queue under a condition on the
/// folder that SQLite's planner passed over, so every queue query read the whole Outbox.
const FROM_VERSION_1: &str = "
CREATE TABLE contents (
    message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    content BLOB NOT NULL
);
INSERT INTO contents (message_id, content) SELECT id, content FROM messages;
DROP INDEX messages_queue;
ALTER TABLE messages DROP COLUMN content;
UPDATE messages SET due = NULL WHERE folder <> 'Outbox';
";

/// The page cache, in KiB (SQLite's default is 2 MiB). It holds the queue's rows and indexes
/// (a few hundred bytes per message), so that working the queue reads no page from the file.
const CACHE_KIB: i64 = 32 * 1024;

/// How many pages the WAL holds before a commit copies them into the database file
/// (SQLite's default is 1,000). The same index and folder pages change in nearly every
/// commit, and a checkpoint copies each page once however often it changed: ten times fewer
/// checkpoints cut the store thread's CPU by 9% under the listener benchmark. The WAL grows
/// to about 40 MiB before it is reused; durability is the same (a commit is in the WAL, synced,
/// before it returns).
const WAL_CHECKPOINT_PAGES: u32 = 10_000;

/// How many prepared statements the connection keeps. The store uses about two dozen; with
/// rusqlite's default of 16 they pushed each other out, and every message paid for parsing
/// and planning its statements again (a quarter of the store thread's time in a drain).
const STATEMENT_CACHE: usize = 64;

/// Lets the file give the pages of removed messages back (`auto_vacuum = INCREMENTAL`; the
/// store runs `incremental_vacuum` after a prune that leaves much of the file free). SQLite's
/// default keeps them in the file for reuse, so a store that once held a long queue stayed
/// that large for good. A new
/// database (`version` 0, no tables yet) takes the setting at once; an existing one is
/// rewritten once by `VACUUM`, which needs as much free disk as the file.
fn allow_space_back(connection: &Connection, version: i64) -> Result<(), String> {
    let mode: i64 = connection
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .map_err(|error| format!("cannot read auto_vacuum: {error}"))?;
    if mode == AUTO_VACUUM_INCREMENTAL {
        return Ok(());
    }
    connection
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(|error| format!("cannot set auto_vacuum: {error}"))?;
    if version != 0 {
        log::info!(
            "rewriting the database once (VACUUM) so that it gives the space of removed \
             messages back; this takes a while on a large file"
        );
        connection.execute_batch("VACUUM").map_err(|error| {
            format!("cannot rewrite the database (VACUUM) to give space back: {error}")
        })?;
    }
    Ok(())
}

/// `PRAGMA auto_vacuum`'s value for INCREMENTAL.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// Sets the connection up for durability and speed, and creates or upgrades the schema.
///
/// WAL with `synchronous = FULL`: a commit is on disk when it returns, and one commit (one
/// fsync) covers a whole batch; checkpoints every [`WAL_CHECKPOINT_PAGES`] pages.
///
/// Foreign keys are not enforced: the `REFERENCES` clauses document the layout, and
/// `rows::delete` deletes a message's rows in every table itself. Enforced, they made SQLite
/// look the message up again for every content, recipient and property row written, and
/// run each `ON DELETE CASCADE` as a trigger that collects the rows to delete in a
/// temporary B-tree: together a fifth of the store's instructions per message.
pub fn prepare(connection: &mut Connection) -> Result<(), String> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|error| format!("cannot set the database up: {error}"))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| format!("cannot read the schema version: {error}"))?;
    // Before the journal mode: switching a new database to WAL writes its first page, and
    // auto_vacuum can then no longer be set without a VACUUM.
    allow_space_back(connection, version)?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;
             PRAGMA cache_size = -{CACHE_KIB}; PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES};"
        ))
        .map_err(|error| format!("cannot set the database up: {error}"))?;
    let steps = match version {
        0 => [SCHEMA, INDEXES, SUBMISSIONS, HELD].concat(),
        1 => [FROM_VERSION_1, INDEXES, SUBMISSIONS, HELD].concat(),
        2 => [SUBMISSIONS, HELD].concat(),
        3 => [FROM_VERSION_3, SUBMISSIONS, KEYS_FROM_VERSION_3, HELD].concat(),
        SCHEMA_VERSION => {
            return connection
                .execute_batch(HELD)
                .map_err(|error| format!("cannot index the held messages: {error}"))
        }
        other => {
            return Err(format!(
                "the database has schema version {other}, this store reads version \
                 {SCHEMA_VERSION}; use the store version that wrote it"
            ))
        }
    };
    if version != 0 {
        log::info!("upgrading the database from schema version {version} to {SCHEMA_VERSION}");
    }
    let transaction = connection
        .transaction()
        .map_err(|error| format!("cannot create the schema: {error}"))?;
    transaction
        .execute_batch(&steps)
        .and_then(|()| transaction.pragma_update(None, "user_version", SCHEMA_VERSION))
        .and_then(|()| transaction.commit())
        .map_err(|error| format!("cannot bring the schema to version {SCHEMA_VERSION}: {error}"))
}
