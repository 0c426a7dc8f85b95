//! The database layout, created and brought up to date when the store opens.
//!
//! The layout follows the embedded store's (content apart from the queue rows, a partial
//! index holding exactly the queue in the order it is worked, pending recipients indexed by
//! transport) and adds what several hosts need: `spooler_sessions` (one row per host run),
//! and each message's lease (`lease_session`, `lease_until`, in milliseconds of the database
//! server's clock, so hosts' clocks never decide who holds a message). Version 2 added
//! `spooler_submissions`: submission keys and the message each made, kept apart from the
//! messages so a retried submission is recognised after its message is gone.

use postgres::Client;

use crate::db::explain;

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i32 = 2;

const SCHEMA: &str = "
CREATE TABLE spooler_sessions (
    session BIGSERIAL PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    lease_ms BIGINT NOT NULL
);
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    folder TEXT NOT NULL,
    sender TEXT NOT NULL,
    report_delivery BOOLEAN NOT NULL,
    report_non_delivery BOOLEAN NOT NULL,
    priority BIGINT NOT NULL,
    submitted_at BIGINT NOT NULL,
    deferred_until BIGINT,
    expires_at BIGINT,
    delete_after_submission BOOLEAN NOT NULL,
    is_report BOOLEAN NOT NULL,
    held BOOLEAN NOT NULL,
    preprocessed BOOLEAN NOT NULL,
    subject TEXT NOT NULL,
    size BIGINT NOT NULL,
    -- Outbox only: when the next attempt is due; NULL when held, and in every other folder.
    due BIGINT,
    -- The host run working on it, and until when (database clock, ms since the epoch).
    lease_session BIGINT,
    lease_until BIGINT
);
CREATE INDEX messages_folder ON messages (folder, id);
CREATE INDEX messages_due ON messages (due, priority DESC, submitted_at, id)
    WHERE due IS NOT NULL;
CREATE INDEX messages_leased ON messages (lease_session) WHERE lease_session IS NOT NULL;
CREATE INDEX messages_lease_ends ON messages (lease_until) WHERE lease_session IS NOT NULL;
CREATE TABLE contents (
    message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    content BYTEA NOT NULL
);
CREATE TABLE recipients (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    address_type TEXT NOT NULL,
    address TEXT NOT NULL,
    kind BIGINT NOT NULL,
    state BIGINT NOT NULL,
    transport TEXT,
    attempts BIGINT NOT NULL,
    next_attempt BIGINT,
    last_answer TEXT NOT NULL,
    status_code TEXT NOT NULL,
    diagnostic TEXT NOT NULL,
    delay_warned BOOLEAN NOT NULL,
    reported BOOLEAN NOT NULL,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX recipients_waiting ON recipients (transport) WHERE state = 0;
CREATE TABLE properties (
    message_id BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (message_id, position)
);
";

/// Added in version 2.
const SUBMISSIONS: &str = "
CREATE TABLE spooler_submissions (
    key TEXT PRIMARY KEY,
    message_id BIGINT NOT NULL,
    remember_until BIGINT NOT NULL
);
CREATE INDEX spooler_submissions_expiry ON spooler_submissions (remember_until);
";

/// The database server's clock in milliseconds: leases are measured on it alone.
const NOW_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION spooler_now_ms() RETURNS BIGINT LANGUAGE SQL VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;
";

/// Creates the layout in an empty database, or checks the version of an existing one. Hosts
/// that start together take turns (an advisory lock), so only one creates it.
pub fn prepare(client: &mut Client) -> Result<(), String> {
    let mut transaction = client.transaction().map_err(|e| explain(&e))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock(7715032001)", &[])
        .map_err(|e| format!("cannot lock the schema: {}", explain(&e)))?;
    let exists: bool = transaction
        .query_one("SELECT to_regclass('spooler_schema') IS NOT NULL", &[])
        .map_err(|e| format!("cannot look for the schema table: {}", explain(&e)))?
        .get(0);
    if !exists {
        transaction
            .batch_execute("CREATE TABLE spooler_schema (version INTEGER NOT NULL)")
            .map_err(|e| format!("cannot create the schema table: {}", explain(&e)))?;
    }
    let version: Option<i32> = transaction
        .query_one("SELECT max(version) FROM spooler_schema", &[])
        .map_err(|e| format!("cannot read the schema version: {}", explain(&e)))?
        .get(0);
    match version {
        None => {
            transaction
                .batch_execute(&[SCHEMA, SUBMISSIONS].concat())
                .map_err(|e| format!("cannot create the tables: {}", explain(&e)))?;
            transaction
                .execute(
                    "INSERT INTO spooler_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .map_err(|e| format!("cannot record the schema version: {}", explain(&e)))?;
            log::info!("created the spooler's tables (schema version {SCHEMA_VERSION})");
        }
        Some(1) => {
            transaction
                .batch_execute(SUBMISSIONS)
                .map_err(|e| format!("cannot add the submissions table: {}", explain(&e)))?;
            transaction
                .execute("UPDATE spooler_schema SET version = $1", &[&SCHEMA_VERSION])
                .map_err(|e| format!("cannot record the schema version: {}", explain(&e)))?;
            log::info!("upgraded the spooler's tables from schema version 1 to {SCHEMA_VERSION}");
        }
        Some(SCHEMA_VERSION) => {}
        Some(newer) if newer > SCHEMA_VERSION => {
            return Err(format!(
                "the database has schema version {newer}, written by a newer store-postgres; \
                 this one knows versions up to {SCHEMA_VERSION}. Install the newer provider \
                 library on this host (and leave the database as it is)"
            ));
        }
        Some(older) => {
            return Err(format!(
                "the database has schema version {older}, which this store-postgres cannot \
                 upgrade (it knows only version {SCHEMA_VERSION})"
            ));
        }
    }
    transaction
        .batch_execute(NOW_FUNCTION)
        .map_err(|e| format!("cannot create spooler_now_ms(): {}", explain(&e)))?;
    transaction.commit().map_err(|e| explain(&e))
}
