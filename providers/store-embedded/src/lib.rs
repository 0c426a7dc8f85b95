//! The embedded store, the spooler's default: folders, messages and per-recipient status in
//! one SQLite database file, durable when a commit returns.
//!
//! It is tightly coupled to the address types in `delivers_itself` (`LOCAL` by default):
//! once a message is preprocessed, the store delivers its pending recipients of those types
//! itself, into the folder `Local/<address>`, in the same transaction that stores it.
//!
//! It honours submission keys: a retried submission gets the first one's id.
//!
//! A commit is the store engine of `store_support` over this store's statements
//! (`transaction`).
//!
//! ```toml
//! path = "/var/lib/spooler/store.sqlite"
//! delivers_itself = ["LOCAL"]
//! ```

mod rows;
mod schema;
mod submissions;
mod transaction;

use std::collections::HashSet;
use std::path::PathBuf;

use provider_abi::store::{
    self, CommitReceipt, FolderInfo, MessageSummary, QueueCounts, ShapeCell, StoreBatch,
    TransportCount,
};
use provider_abi::{
    export_library, ErrorKind, Library, MessageId, OpenContext, ProviderError, Store,
    StoredMessage, Timestamp,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use store_support::{Applied, LocalDelivery};
use submissions::{Remembered, Submissions};
use transaction::Commit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The database file; created with its folder if missing.
    path: PathBuf,
    /// The address types this store delivers itself.
    #[serde(default = "default_local_types")]
    delivers_itself: Vec<String>,
}

fn default_local_types() -> Vec<String> {
    vec!["LOCAL".into()]
}

/// The store instance: one database connection and the locks of this run.
pub struct EmbeddedStore {
    name: String,
    connection: Connection,
    /// The address types it delivers itself.
    local: LocalDelivery,
    locked: HashSet<MessageId>,
    submissions: Submissions,
    /// When the next commit that submits forgets the expired submission keys.
    forget_submissions_at: Timestamp,
}

/// Free pages up to one in this many of the file stay in it for the next submissions (see
/// `give_space_back`).
const FREE_SHARE_KEPT: i64 = 8;

/// How often expired submission keys are forgotten, in ms. Once per message, the DELETE was
/// a statement run and an index seek per message for a table that only needs to stay small.
const FORGET_SUBMISSIONS_EVERY: i64 = 60_000;

impl EmbeddedStore {
    /// Opens (or creates) the database named in the configuration.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let name = context.name().to_owned();
        let config: Config = context.config_as()?;
        if let Some(bad) = config
            .delivers_itself
            .iter()
            .find(|t| !provider_abi::address::is_address_type(t))
        {
            return Err(context.config_error(
                "delivers_itself",
                format!("`{bad}` is not an address type (letters, digits, '-' or '_')"),
            ));
        }
        if let Some(folder) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|error| {
                context.config_error(
                    "path",
                    format!("cannot create folder {}: {error}", folder.display()),
                )
            })?;
        }
        let mut connection = Connection::open(&config.path).map_err(|error| {
            context.config_error(
                "path",
                format!("cannot open database {}: {error}", config.path.display()),
            )
        })?;
        schema::prepare(&mut connection).map_err(|why| {
            ProviderError::permanent(format!(
                "store `{name}` at {}: {why}",
                config.path.display()
            ))
        })?;
        let submissions = Submissions::read(&connection, Timestamp::now()).map_err(|error| {
            ProviderError::permanent(format!(
                "store `{name}` at {}: cannot read the submission keys: {error}",
                config.path.display()
            ))
        })?;
        log::info!("store `{name}` opened at {}", config.path.display());
        Ok(EmbeddedStore {
            local: LocalDelivery::new(&name, &config.delivers_itself),
            name,
            connection,
            locked: HashSet::new(),
            submissions,
            forget_submissions_at: Timestamp(0),
        })
    }

    fn error(&self, doing: &str, error: rusqlite::Error) -> ProviderError {
        let message = format!("store `{}`: {doing}: {error}", self.name);
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => ProviderError::new(ErrorKind::Full, message),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            | Some(rusqlite::ErrorCode::SystemIoFailure) => ProviderError::temporary(message),
            _ => ProviderError::permanent(message),
        }
    }

    fn read_message(&self, id: MessageId) -> rusqlite::Result<Option<StoredMessage>> {
        // The content in the same statement as the envelope: one statement less per message
        // read.
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {}, {} FROM messages JOIN contents ON message_id = id WHERE id = ?1",
            rows::ENVELOPE_COLUMNS,
            rows::CONTENT_COLUMN
        ))?;
        statement
            .query_row(params![id.0 as i64, rows::SMALL_CONTENT_PARAMETER], |row| {
                let (envelope, folder) = rows::read_envelope(&self.connection, row)?;
                let content = rows::content_in(&self.connection, id, row.get_ref(13)?)?;
                Ok(StoredMessage {
                    envelope,
                    folder: folder.into(),
                    content: content.into(),
                })
            })
            .optional()
    }

    /// Outbox ids in queue order that are due at `until` and not locked, at most `limit`.
    fn due_ids(&self, until: i64, limit: u32) -> rusqlite::Result<Vec<(MessageId, i64)>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, due FROM messages INDEXED BY messages_due
             WHERE due IS NOT NULL AND due <= ?1
             ORDER BY due, priority DESC, submitted_at, id LIMIT ?2",
        )?;
        let wanted = i64::from(limit) + self.locked.len() as i64;
        let rows = statement.query_map(params![until, wanted], |row| {
            Ok((
                MessageId(row.get::<_, i64>(0)? as u64),
                row.get::<_, i64>(1)?,
            ))
        })?;
        let mut ids = Vec::new();
        for row in rows {
            let (id, due) = row?;
            if !self.locked.contains(&id) {
                ids.push((id, due));
                if ids.len() == limit as usize {
                    break;
                }
            }
        }
        Ok(ids)
    }
}

impl Store for EmbeddedStore {
    fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError> {
        // The connection is only ever used from this one call at a time, so the unchecked
        // form (it borrows the connection shared) cannot nest transactions.
        let now = Timestamp::now();
        let forget_submissions =
            (!batch.submit.is_empty() && now >= self.forget_submissions_at).then_some(now);
        let transaction = self
            .connection
            .unchecked_transaction()
            .map_err(|error| self.error("cannot begin a transaction", error))?;
        if !batch.submit.is_empty() {
            self.submissions
                .refresh(&transaction, now)
                .map_err(|error| self.error("cannot read the submission keys", error))?;
        }
        let mut commit = Commit {
            transaction: &transaction,
            submissions: &self.submissions,
            remembered: Remembered::default(),
        };
        let applied = forget_submissions
            .map_or(Ok(()), |now| Submissions::forget(&transaction, now))
            .and_then(|()| store_support::apply(&mut commit, batch, &self.local, now));
        let remembered = commit.remembered;
        let Applied { receipt, .. } = applied
            .and_then(|applied| transaction.commit().map(|()| applied))
            .map_err(|error| self.error("cannot commit", error))?;
        self.submissions.committed(remembered, forget_submissions);
        if forget_submissions.is_some() {
            self.forget_submissions_at = Timestamp(now.0 + FORGET_SUBMISSIONS_EVERY);
        }
        for id in store_support::released(batch) {
            self.locked.remove(&id);
        }
        Ok(receipt)
    }

    fn lock_due(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProviderError> {
        let ids = self
            .due_ids(now.0, limit)
            .map_err(|error| self.error("cannot read the queue", error))?;
        // Read everything before locking anything, and pass over a message that cannot be
        // read (it stays in the Outbox, reported) instead of stalling the whole queue.
        let mut messages = Vec::with_capacity(ids.len());
        for (id, _) in ids {
            match self.read_message(id) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => {}
                Err(error) => log::error!(
                    "store `{}`: message {id} cannot be read and is skipped: {error}",
                    self.name
                ),
            }
        }
        self.locked
            .extend(messages.iter().map(|message| message.envelope.id));
        Ok(messages)
    }

    fn next_due(&mut self) -> Result<Option<Timestamp>, ProviderError> {
        self.due_ids(i64::MAX, 1)
            .map(|ids| ids.first().map(|(_, due)| Timestamp(*due)))
            .map_err(|error| self.error("cannot read the queue", error))
    }

    fn get(&mut self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError> {
        self.read_message(id)
            .map_err(|error| self.error(&format!("cannot read message {id}"), error))
    }

    fn folders(&mut self) -> Result<Vec<FolderInfo>, ProviderError> {
        let read = || -> rusqlite::Result<Vec<FolderInfo>> {
            let mut statement = self
                .connection
                .prepare_cached("SELECT folder, COUNT(*) FROM messages GROUP BY folder")?;
            let folders: Vec<FolderInfo> = statement
                .query_map([], |row| {
                    Ok(FolderInfo {
                        name: row.get::<_, String>(0)?.into(),
                        messages: row.get::<_, i64>(1)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(store::with_standard_folders(folders))
        };
        read().map_err(|error| self.error("cannot list folders", error))
    }

    fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, ProviderError> {
        self.list_page(folder, None, u32::MAX)
    }

    fn list_page(
        &mut self,
        folder: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageSummary>, ProviderError> {
        let read = || -> rusqlite::Result<Vec<MessageSummary>> {
            let mut statement = self.connection.prepare_cached(&format!(
                "SELECT {}, subject, size FROM messages WHERE folder = ?1 AND id > ?2
                 ORDER BY id LIMIT ?3",
                rows::ENVELOPE_COLUMNS
            ))?;
            let after = after.map_or(0, |id| id.0 as i64);
            let rows = statement.query_map(params![folder, after, limit], |row| {
                let (envelope, folder) = rows::read_envelope(&self.connection, row)?;
                Ok(MessageSummary {
                    envelope,
                    folder: folder.into(),
                    subject: row.get::<_, String>(13)?.into(),
                    size: row.get::<_, i64>(14)? as u64,
                })
            })?;
            rows.collect()
        };
        read().map_err(|error| self.error(&format!("cannot list folder {folder}"), error))
    }

    fn queue_counts(&mut self) -> Result<QueueCounts, ProviderError> {
        let read = || -> rusqlite::Result<QueueCounts> {
            let messages: i64 = self
                .connection
                .prepare_cached("SELECT COUNT(*) FROM messages WHERE folder = 'Outbox'")?
                .query_row([], |row| row.get(0))?;
            // Pending recipients exist in the Outbox only: a message leaves it when every
            // recipient is final.
            let mut statement = self.connection.prepare_cached(
                "SELECT transport, COUNT(*) FROM recipients INDEXED BY recipients_waiting
                 WHERE state = 0 AND transport IS NOT NULL GROUP BY transport",
            )?;
            let waiting = statement
                .query_map([], |row| {
                    Ok(TransportCount {
                        transport: row.get::<_, String>(0)?.into(),
                        recipients: row.get::<_, i64>(1)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(QueueCounts {
                messages: messages as u64,
                waiting: waiting.into(),
            })
        };
        read().map_err(|error| self.error("cannot count the queue", error))
    }

    fn flush(&mut self, transport: Option<&str>, now: Timestamp) -> Result<u64, ProviderError> {
        let transaction = self
            .connection
            .unchecked_transaction()
            .map_err(|error| self.error("cannot begin a transaction", error))?;
        let flush = || -> rusqlite::Result<u64> {
            let made_due = transaction
                .prepare_cached(
                    "UPDATE recipients SET next_attempt = ?1
                     WHERE state = 0 AND (?2 IS NULL OR transport = ?2)
                     AND message_id IN (SELECT id FROM messages WHERE folder = 'Outbox')",
                )?
                .execute(params![now.0, transport])?;
            // A held message (due NULL) stays held; the others are due now, or after their
            // deferral.
            transaction
                .prepare_cached(
                    "UPDATE messages SET due = MIN(due, MAX(?1, COALESCE(deferred_until, ?1)))
                     WHERE due IS NOT NULL AND id IN (SELECT message_id FROM recipients
                         WHERE state = 0 AND (?2 IS NULL OR transport = ?2))",
                )?
                .execute(params![now.0, transport])?;
            transaction.commit()?;
            Ok(made_due as u64)
        };
        flush().map_err(|error| self.error("cannot flush the queue", error))
    }

    fn delivers_itself(&self) -> Vec<String> {
        self.local.types().to_vec()
    }

    fn queue_shape(
        &mut self,
        now: Timestamp,
        bounds: &[u64],
    ) -> Result<Vec<ShapeCell>, ProviderError> {
        let read = || -> rusqlite::Result<Vec<ShapeCell>> {
            let bounds = store_support::shape::bounds_in_ms(bounds);
            let mut statement = self.connection.prepare_cached(&shape_query(bounds.len()))?;
            let parameters = std::iter::once(now.0).chain(bounds);
            let cells = statement.query_map(rusqlite::params_from_iter(parameters), |row| {
                Ok(ShapeCell {
                    domain: row.get::<_, String>(0)?.into(),
                    bucket: row.get(1)?,
                    recipients: row.get::<_, i64>(2)? as u64,
                })
            })?;
            cells.collect()
        };
        read().map_err(|error| self.error("cannot count the queue by domain", error))
    }

    fn prune(
        &mut self,
        folder: &str,
        reports_only: bool,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, ProviderError> {
        let removed = prune_oldest(&mut self.connection, folder, reports_only, before, limit)
            .map_err(|error| self.error(&format!("cannot prune folder `{folder}`"), error))?;
        if removed > 0 {
            give_space_back(&self.connection).map_err(|error| {
                self.error("cannot give the removed messages' space back", error)
            })?;
        }
        Ok(removed)
    }

    fn size_on_disk(&mut self) -> Result<u64, ProviderError> {
        let pages = |name: &str| pragma_number(&self.connection, name);
        let file = pages("page_count")
            .and_then(|count| Ok(count * pages("page_size")?))
            .map_err(|error| self.error("cannot read the database's size", error))?;
        // The write-ahead log holds recent commits until a checkpoint copies them.
        let log = self
            .connection
            .path()
            .and_then(|path| std::fs::metadata(format!("{path}-wal")).ok())
            .map_or(0, |metadata| metadata.len());
        Ok(file as u64 + log)
    }

    fn held_messages(&mut self) -> Result<u64, ProviderError> {
        self.connection
            .prepare_cached(
                "SELECT COUNT(*) FROM messages INDEXED BY messages_held
                 WHERE folder = 'Outbox' AND held <> 0",
            )
            .and_then(|mut statement| statement.query_row([], |row| row.get::<_, i64>(0)))
            .map(|held| held as u64)
            .map_err(|error| self.error("cannot count held messages", error))
    }
}

/// Removes up to `limit` messages of `folder` submitted before `before` (reports only, if
/// `reports_only`), oldest (lowest id) first, in one transaction; returns how many.
fn prune_oldest(
    connection: &mut Connection,
    folder: &str,
    reports_only: bool,
    before: Timestamp,
    limit: u32,
) -> rusqlite::Result<u64> {
    let transaction = connection.transaction()?;
    let ids: Vec<i64> = transaction
        .prepare_cached(
            "SELECT id FROM messages WHERE folder = ?1 AND submitted_at < ?2
                AND (?3 = 0 OR is_report <> 0)
             ORDER BY id LIMIT ?4",
        )?
        .query_map(params![folder, before.0, reports_only, limit], |row| {
            row.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    for id in &ids {
        rows::delete(&transaction, MessageId(*id as u64))?;
    }
    transaction.commit()?;
    Ok(ids.len() as u64)
}

/// Returns the file's free pages to the file system (`auto_vacuum = INCREMENTAL`) once they
/// are more than [`FREE_SHARE_KEPT`] of it. Under a steady load the pages a prune frees are
/// taken again by the next submissions within seconds: giving each batch's back (SQLite
/// moves pages from the end of the file into the holes to do so) cost a fifth of the
/// listener's rate in the soak benchmark, for a file that grew right back. SQLite frees one
/// page per step of the pragma, so every step is taken (`execute_batch` would take one).
fn give_space_back(connection: &Connection) -> rusqlite::Result<()> {
    let pages = |name: &str| pragma_number(connection, name);
    if pages("freelist_count")? * FREE_SHARE_KEPT <= pages("page_count")? {
        return Ok(());
    }
    let mut statement = connection.prepare_cached("PRAGMA incremental_vacuum")?;
    let mut steps = statement.query([])?;
    while steps.next()?.is_some() {}
    // The file shrinks when the write-ahead log is copied back into it: now, rather than at
    // the next automatic checkpoint, which a quiet store may not reach for hours.
    connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// The number a `PRAGMA name` answers (a page count or size).
fn pragma_number(connection: &Connection, name: &str) -> rusqlite::Result<i64> {
    connection.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
}

/// The count query of [`Store::queue_shape`] for `bounds` age bounds (parameters `?2` on,
/// after `now` as `?1`). It walks the pending recipients in `recipients_waiting` (which
/// holds exactly them) and looks each one's message up by its key: one pass over the queue.
///
/// The domain is what `store::shape_domain` computes: after the last `@`. SQLite has no
/// search from the right, so an address with a second `@` (a quoted local part) finds it as
/// the length of what `rtrim` leaves when it strips every character but `@` from the right;
/// that costs a comparison per pair of characters, and took 40% of the query when every
/// address went that way, so the usual address with one `@` is cut after it.
fn shape_query(bounds: usize) -> String {
    let bucket = store_support::shape::age_bucket("(?1 - m.submitted_at)", bounds, |i| {
        format!("?{}", i + 2)
    });
    format!(
        "SELECT CASE
                WHEN r.address_type <> 'SMTP' OR instr(r.address, '@') = 0 THEN r.address_type
                WHEN instr(substr(r.address, instr(r.address, '@') + 1), '@') = 0
                THEN lower(substr(r.address, instr(r.address, '@') + 1))
                ELSE lower(substr(r.address,
                    length(rtrim(r.address, replace(r.address, '@', ''))) + 1))
                END AS domain,
            {bucket} AS bucket, COUNT(*)
         FROM recipients AS r INDEXED BY recipients_waiting
         JOIN messages AS m ON m.id = r.message_id
         WHERE r.state = 0 AND m.folder = 'Outbox'
         GROUP BY domain, bucket"
    )
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).store(
        "embedded",
        &["LOCAL"],
        EmbeddedStore::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use provider_abi::abi_stable::std_types::{ROption, RSlice, RStr};
    use provider_abi::store::{
        ContentReplacement, Delivery, Finish, NewMessage, StoreBatch, StoreObject, SubmissionKey,
        SENT_ITEMS,
    };
    use std::path::PathBuf;
    use std::time::Duration;

    use provider_abi::{Envelope, MessageId, Property, Timestamp};

    #[test]
    fn keeps_the_hosts_store_contract() {
        let (_folder, _, config) = store_in_temporary_folder();
        provider_testkit::check_store(super::library, "embedded", &config).unwrap();
    }

    /// Contents up to 256 KiB are bound and read as a column, larger ones go through
    /// incremental blob I/O: both ways, and a replacement across the limit, keep every byte.
    #[test]
    fn keeps_small_and_large_contents_and_their_replacements() {
        let (_folder, _, config) = store_in_temporary_folder();
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let content = |size: usize, fill: u8| {
            let mut content = b"Subject: sized\r\n\r\n".to_vec();
            content.resize(size, fill);
            content
        };
        let small = content(1000, b's');
        let large = content(300 * 1024, b'l');
        let mut submit = |content: &[u8]| {
            let envelope = provider_testkit::message(&["SMTP:bob@example.net"], "").envelope;
            let receipt = store
                .commit(StoreBatch {
                    submit: RSlice::from_slice(&[NewMessage {
                        envelope,
                        content: RSlice::from_slice(content),
                    }]),
                    ..StoreBatch::EMPTY
                })
                .into_result()
                .unwrap();
            receipt.submitted[0]
        };
        let (small_id, large_id) = (submit(&small), submit(&large));
        assert_eq!(content_of(&mut store, small_id), small);
        assert_eq!(content_of(&mut store, large_id), large);

        let replacements = [
            ContentReplacement {
                id: small_id,
                content: RSlice::from_slice(&large),
            },
            ContentReplacement {
                id: large_id,
                content: RSlice::from_slice(&small),
            },
        ];
        store
            .commit(StoreBatch {
                replace_content: RSlice::from_slice(&replacements),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        assert_eq!(content_of(&mut store, small_id), large);
        assert_eq!(content_of(&mut store, large_id), small);
    }

    /// Foreign keys are not enforced, so no cascade cleans up after a deleted message: the
    /// store deletes its rows in every table itself.
    #[test]
    fn a_deleted_message_leaves_no_row_behind() {
        let (_folder, path, config) = store_in_temporary_folder();
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let mut envelope = provider_testkit::message(&["SMTP:bob@example.net"], "").envelope;
        envelope.properties.push(Property {
            name: "note".into(),
            value: "kept until deleted".into(),
        });
        let receipt = store
            .commit(StoreBatch {
                submit: RSlice::from_slice(&[NewMessage {
                    envelope,
                    content: RSlice::from_slice(b"Subject: gone\r\n\r\nBody.\r\n"),
                }]),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        store
            .commit(StoreBatch {
                finish: RSlice::from_slice(&[Finish {
                    id: receipt.submitted[0],
                    move_to: ROption::RNone,
                }]),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        for table in ["messages", "contents", "recipients", "properties"] {
            let rows: i64 = connection
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(rows, 0, "rows left in {table}");
        }
    }

    /// A new database gives the space of removed messages back from the start.
    #[test]
    fn a_new_database_gives_space_back() {
        let (_folder, path, config) = store_in_temporary_folder();
        let (store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        let mode: i64 = connection
            .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, 2, "auto_vacuum is INCREMENTAL");
    }

    /// A database written before the store gave space back (SQLite's default, no
    /// `auto_vacuum`) is rewritten once at open; pruning then shrinks the file.
    #[test]
    fn an_older_database_gives_the_space_of_pruned_messages_back() {
        let (_folder, path, config) = store_in_temporary_folder();
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let content = vec![b'x'; 20_000];
        let envelope = provider_testkit::message(&["SMTP:bob@example.net"], "").envelope;
        let deliveries: Vec<Delivery<'_>> = (0..200)
            .map(|_| Delivery {
                folder: RStr::from_str(SENT_ITEMS),
                envelope: envelope.clone(),
                content: RSlice::from_slice(&content),
            })
            .collect();
        store
            .commit(StoreBatch {
                deliver: RSlice::from_slice(&deliveries),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
        drop(connection);

        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let full = store.size_on_disk().into_result().unwrap();
        assert!(full > 4_000_000, "200 messages of 20 KB take {full} bytes");
        let later = Timestamp::now().plus(Duration::from_secs(1));
        let mut removed = 0;
        loop {
            let batch = store
                .prune(RStr::from_str(SENT_ITEMS), false, later, 50)
                .into_result()
                .unwrap();
            if batch == 0 {
                break;
            }
            removed += batch;
        }
        assert_eq!(removed, 200);
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let mode: i64 = connection
            .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, 2, "auto_vacuum is INCREMENTAL after the upgrade");
        let file = std::fs::metadata(&path).unwrap().len();
        assert!(
            file < full / 10,
            "the file is {file} bytes after pruning everything, {full} before"
        );
    }

    /// A temporary folder, the database's path in it, and the store's configuration.
    fn store_in_temporary_folder() -> (tempfile::TempDir, PathBuf, String) {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("store.sqlite");
        let config = format!("path = \"{}\"", path.display());
        (folder, path, config)
    }

    /// An envelope carrying submission key `key`, remembered until `until`.
    fn keyed(key: &str, until: Timestamp) -> Envelope {
        let mut envelope = provider_testkit::message(&["SMTP:bob@example.net"], "").envelope;
        let key = SubmissionKey {
            key: key.to_owned(),
            remember_until: until,
        };
        envelope.properties.push(key.property());
        envelope
    }

    /// Submits `envelopes` in one commit; their ids.
    fn submit(store: &mut StoreObject, envelopes: Vec<Envelope>) -> Vec<MessageId> {
        let messages: Vec<NewMessage<'_>> = envelopes
            .into_iter()
            .map(|envelope| NewMessage {
                envelope,
                content: RSlice::from_slice(b"Subject: once\r\n\r\nBody.\r\n"),
            })
            .collect();
        let receipt = store
            .commit(StoreBatch {
                submit: RSlice::from_slice(&messages),
                ..StoreBatch::EMPTY
            })
            .into_result()
            .unwrap();
        receipt.submitted.to_vec()
    }

    /// The keys are looked up in memory: a key is known to the commit that remembers it,
    /// to later commits, and after the store is opened again; a key whose time is over is not.
    #[test]
    fn a_submission_key_is_recognised_in_its_own_commit_and_after_a_reopen() {
        let (_folder, _, config) = store_in_temporary_folder();
        let tomorrow = Timestamp::now().plus(Duration::from_secs(86_400));
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let ids = submit(
            &mut store,
            vec![
                keyed("k1", tomorrow),
                keyed("k1", tomorrow),
                keyed("k2", tomorrow),
            ],
        );
        assert_eq!(
            ids[0], ids[1],
            "the same key twice in one commit is one message"
        );
        assert_ne!(ids[0], ids[2]);
        assert_eq!(submit(&mut store, vec![keyed("k2", tomorrow)]), [ids[2]]);
        let over = Timestamp(Timestamp::now().0 - 1);
        let first_expired = submit(&mut store, vec![keyed("k3", over)])[0];
        drop(store);

        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        assert_eq!(
            submit(
                &mut store,
                vec![keyed("k1", tomorrow), keyed("k2", tomorrow)]
            ),
            [ids[0], ids[2]]
        );
        assert_ne!(
            submit(&mut store, vec![keyed("k3", tomorrow)]),
            [first_expired]
        );
    }

    /// A store instance opened again after a hang works beside the old one, which may still
    /// commit: a key the other connection remembered is recognised.
    #[test]
    fn a_submission_key_remembered_by_another_connection_is_recognised() {
        let (_folder, _, config) = store_in_temporary_folder();
        let tomorrow = Timestamp::now().plus(Duration::from_secs(86_400));
        let (mut old, _old_host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let (mut new, _new_host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let first = submit(&mut old, vec![keyed("k1", tomorrow)]);
        assert_eq!(submit(&mut new, vec![keyed("k1", tomorrow)]), first);
    }

    /// A database of schema version 3 (keys as the primary key of `submissions`) keeps its
    /// keys through the upgrade, and loses the index on them.
    #[test]
    fn a_version_3_database_keeps_its_submission_keys() {
        let (_folder, path, config) = store_in_temporary_folder();
        let tomorrow = Timestamp::now().plus(Duration::from_secs(86_400));
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        let first = submit(&mut store, vec![keyed("k1", tomorrow)]);
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "DROP INDEX submissions_expiry;
                 ALTER TABLE submissions RENAME TO version_4;
                 CREATE TABLE submissions (
                     key TEXT PRIMARY KEY,
                     message_id INTEGER NOT NULL,
                     remember_until INTEGER NOT NULL
                 );
                 CREATE INDEX submissions_expiry ON submissions (remember_until);
                 INSERT INTO submissions SELECT key, message_id, remember_until FROM version_4;
                 DROP TABLE version_4;
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        drop(connection);

        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        assert_eq!(submit(&mut store, vec![keyed("k1", tomorrow)]), first);
        drop(store);
        let connection = rusqlite::Connection::open(&path).unwrap();
        let indexes: Vec<String> = connection
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'submissions'",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["submissions_expiry"]);
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, 4);
    }

    fn content_of(store: &mut StoreObject, id: MessageId) -> Vec<u8> {
        store
            .get(id)
            .into_result()
            .unwrap()
            .into_option()
            .unwrap()
            .content
            .to_vec()
    }

    /// The queue's shape is one pass over the pending recipients, through the index that
    /// holds exactly them. A measurement, not run by default:
    /// `cargo test --release -p store-embedded -- --ignored --nocapture shape_of_100_000`
    #[test]
    #[ignore = "a measurement: fills a queue of 100,000 messages"]
    fn shape_of_100_000_queued_messages() {
        let (_folder, path, config) = store_in_temporary_folder();
        let (mut store, _host) =
            provider_testkit::open_store(super::library, "embedded", &config).unwrap();
        for batch in 0..100 {
            let envelopes = (0..1000)
                .map(|n| {
                    let recipient = format!("SMTP:user{n}@domain{}.example", (batch + n) % 50);
                    provider_testkit::message(&[recipient.as_str()], "").envelope
                })
                .collect();
            submit(&mut store, envelopes);
        }
        let bounds = [300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 76800];
        let started = std::time::Instant::now();
        let cells = store
            .queue_shape(Timestamp::now(), RSlice::from_slice(&bounds))
            .into_result()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(cells.iter().map(|c| c.recipients).sum::<u64>(), 100_000);
        assert_eq!(cells.len(), 50);
        eprintln!("queue_shape of 100,000 queued messages: {took:?}");

        let connection = rusqlite::Connection::open(&path).unwrap();
        let plan: Vec<String> = connection
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                super::shape_query(bounds.len())
            ))
            .unwrap()
            .query_map(rusqlite::params_from_iter([0i64; 10]), |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        eprintln!("{}", plan.join("\n"));
        assert!(
            plan.iter().any(|step| step.contains("recipients_waiting")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let error = provider_testkit::open_store(super::library, "embedded", "path = 5")
            .err()
            .expect("refused");
        assert_eq!(
            error.message(),
            "instance \"embedded-test\": key path at line 1: invalid type: integer `5`, expected path string"
        );
    }
}
