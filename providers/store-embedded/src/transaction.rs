//! One commit's SQLite transaction as the store engine sees it: its statements are the
//! `rows` functions, and the submission keys it remembers wait in memory until it commits.

use provider_abi::store::SubmissionKey;
use provider_abi::{Envelope, MessageId, Timestamp};
use rusqlite::{params, Transaction};
use store_support::{Access, Backend};

use crate::rows;
use crate::submissions::{Remembered, Submissions};

/// The open transaction, with the store's submission keys.
pub struct Commit<'t, 'c> {
    pub transaction: &'t Transaction<'c>,
    pub submissions: &'t Submissions,
    /// The keys this transaction remembered, known once it commits.
    pub remembered: Remembered,
}

impl Backend for Commit<'_, '_> {
    type Error = rusqlite::Error;

    fn claim_submission(
        &mut self,
        key: &SubmissionKey,
        now: Timestamp,
    ) -> rusqlite::Result<Option<MessageId>> {
        self.submissions
            .first(self.transaction, &self.remembered, key, now)
    }

    fn remember_submission(&mut self, key: &SubmissionKey, id: MessageId) -> rusqlite::Result<()> {
        self.submissions
            .remember(self.transaction, &mut self.remembered, key, id)
    }

    fn insert(
        &mut self,
        folder: &str,
        envelope: &Envelope,
        content: &[u8],
    ) -> rusqlite::Result<MessageId> {
        rows::insert(self.transaction, folder, envelope, content)
    }

    fn read_content(&mut self, id: MessageId) -> rusqlite::Result<Option<Vec<u8>>> {
        rows::read_content(self.transaction, id)
    }

    fn replace_content(&mut self, id: MessageId, content: &[u8]) -> rusqlite::Result<()> {
        rows::replace_content(self.transaction, id, content)
    }

    fn update(&mut self, envelopes: &[Envelope]) -> rusqlite::Result<Vec<Access>> {
        envelopes
            .iter()
            .map(|envelope| {
                let updated = rows::update(self.transaction, envelope)?;
                Ok(if updated {
                    Access::Granted
                } else {
                    Access::Gone
                })
            })
            .collect()
    }

    fn move_to(&mut self, id: MessageId, folder: &str) -> rusqlite::Result<()> {
        self.transaction
            .prepare_cached("UPDATE messages SET folder = ?2, due = NULL WHERE id = ?1")?
            .execute(params![id.0 as i64, folder])?;
        Ok(())
    }

    fn delete(&mut self, id: MessageId) -> rusqlite::Result<()> {
        rows::delete(self.transaction, id)
    }
}
