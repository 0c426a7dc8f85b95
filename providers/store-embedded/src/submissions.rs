//! The submission keys the store remembers (see "Submissions that happen once" in
//! `provider_abi::store`): kept in the `submissions` table, looked up in memory.
//!
//! Why in memory: a key is a digest, so an index on it puts every new key on a random page.
//! Under the listener benchmark that index was a fifth of the pages each group commit wrote
//! (8 of ~40), plus an index search per submission. The table is now only appended to (and
//! trimmed by expiry, through an index that grows at its end), and read whole when the store
//! opens, or when another connection wrote the database (a store instance opened again after
//! a hang, while the old one may still commit).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use provider_abi::store::SubmissionKey;
use provider_abi::{MessageId, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};

/// A key the store remembers, by the hash of the key.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Its row in `submissions`, where the whole key is compared on a match: two keys with
    /// the same hash are then two messages.
    row: i64,
    message: MessageId,
    until: Timestamp,
}

/// The remembered keys, as of the last transaction this connection committed.
pub struct Submissions {
    hasher: RandomState,
    known: HashMap<u64, Known>,
    /// SQLite's `data_version` when the keys were read or last checked: it changes when
    /// another connection commits.
    data_version: i64,
}

/// The keys one transaction remembered; they become known when it commits
/// ([`Submissions::committed`]), so a transaction that fails leaves nothing behind.
#[derive(Default)]
pub struct Remembered(Vec<(u64, Known)>);

impl Submissions {
    /// Reads the keys still remembered at `now`.
    pub fn read(connection: &Connection, now: Timestamp) -> rusqlite::Result<Submissions> {
        let mut submissions = Submissions {
            hasher: RandomState::new(),
            known: HashMap::new(),
            data_version: data_version(connection)?,
        };
        submissions.read_known(connection, now)?;
        Ok(submissions)
    }

    fn read_known(&mut self, connection: &Connection, now: Timestamp) -> rusqlite::Result<()> {
        self.known.clear();
        let mut statement = connection.prepare(
            "SELECT rowid, key, message_id, remember_until FROM submissions
             WHERE remember_until >= ?1 ORDER BY rowid",
        )?;
        let mut rows = statement.query([now.0])?;
        while let Some(row) = rows.next()? {
            let known = Known {
                row: row.get(0)?,
                message: MessageId(row.get::<_, i64>(2)? as u64),
                until: Timestamp(row.get(3)?),
            };
            // A key submitted again after its time was over has a later row: it wins.
            self.known
                .insert(self.hasher.hash_one(row.get_ref(1)?.as_str()?), known);
        }
        Ok(())
    }

    /// At the start of a transaction: reads the keys again if another connection committed
    /// since this one last looked.
    pub fn refresh(&mut self, transaction: &Connection, now: Timestamp) -> rusqlite::Result<()> {
        let version = data_version(transaction)?;
        if version != self.data_version {
            log::info!("another connection wrote the database: reading the submission keys again");
            self.read_known(transaction, now)?;
            self.data_version = version;
        }
        Ok(())
    }

    /// The message `key` made, if it is remembered at `now` (by this transaction or an
    /// earlier one).
    pub fn first(
        &self,
        transaction: &Connection,
        remembered: &Remembered,
        key: &SubmissionKey,
        now: Timestamp,
    ) -> rusqlite::Result<Option<MessageId>> {
        let hash = self.hasher.hash_one(key.key.as_str());
        let candidate = remembered
            .0
            .iter()
            .rev()
            .find(|(h, _)| *h == hash)
            .map(|(_, known)| known)
            .or_else(|| self.known.get(&hash));
        let Some(known) = candidate.filter(|known| known.until >= now) else {
            return Ok(None);
        };
        let stored: Option<String> = transaction
            .prepare_cached("SELECT key FROM submissions WHERE rowid = ?1")?
            .query_row([known.row], |row| row.get(0))
            .optional()?;
        Ok((stored.as_deref() == Some(key.key.as_str())).then_some(known.message))
    }

    /// Remembers in `transaction` that `key` made message `id`.
    pub fn remember(
        &self,
        transaction: &Connection,
        remembered: &mut Remembered,
        key: &SubmissionKey,
        id: MessageId,
    ) -> rusqlite::Result<()> {
        transaction
            .prepare_cached(
                "INSERT INTO submissions (key, message_id, remember_until) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key.key, id.0 as i64, key.remember_until.0])?;
        remembered.0.push((
            self.hasher.hash_one(key.key.as_str()),
            Known {
                row: transaction.last_insert_rowid(),
                message: id,
                until: key.remember_until,
            },
        ));
        Ok(())
    }

    /// Deletes in `transaction` the keys whose time is over at `now`. [`Submissions::first`]
    /// already passes over them, so this only keeps the table from growing.
    pub fn forget(transaction: &Connection, now: Timestamp) -> rusqlite::Result<()> {
        transaction
            .prepare_cached("DELETE FROM submissions WHERE remember_until < ?1")?
            .execute([now.0])?;
        Ok(())
    }

    /// The transaction that remembered these keys (and forgot those over at `forgot`, if it
    /// did) committed.
    pub fn committed(&mut self, remembered: Remembered, forgot: Option<Timestamp>) {
        if let Some(now) = forgot {
            self.known.retain(|_, known| known.until >= now);
        }
        self.known.extend(remembered.0);
    }
}

fn data_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}
