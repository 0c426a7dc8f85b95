//! The database layout and how a connection is set up.

use rusqlite::Connection;

/// The schema version this code reads and writes (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

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
    -- Outbox only: when the next attempt is due; NULL when held or nothing is pending.
    due INTEGER,
    content BLOB NOT NULL
);
CREATE INDEX messages_queue ON messages (due, priority DESC, submitted_at, id)
    WHERE folder = 'Outbox' AND due IS NOT NULL;
CREATE INDEX messages_folder ON messages (folder, id);
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

/// Sets the connection up for durability and creates the schema in a new database.
///
/// WAL with `synchronous = FULL`: a commit is on disk when it returns, and one commit (one
/// fsync) covers a whole batch.
pub fn prepare(connection: &mut Connection) -> Result<(), String> {
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(|error| format!("cannot set the database up: {error}"))?;
    let version: i64 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|error| format!("cannot read the schema version: {error}"))?;
    match version {
        0 => {
            let transaction = connection
                .transaction()
                .map_err(|error| format!("cannot create the schema: {error}"))?;
            transaction
                .execute_batch(SCHEMA)
                .and_then(|()| transaction.pragma_update(None, "user_version", SCHEMA_VERSION))
                .and_then(|()| transaction.commit())
                .map_err(|error| format!("cannot create the schema: {error}"))
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(format!(
            "the database has schema version {other}, this store reads version {SCHEMA_VERSION}; \
             use the store version that wrote it"
        )),
    }
}
