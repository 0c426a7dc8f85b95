//! One commit's PostgreSQL transaction as the store engine sees it: the `rows` statements,
//! fenced by this host's leases, and the notices that wake the other hosts.

use postgres::GenericClient;
use provider_abi::store::{CommitReceipt, SubmissionKey, OUTBOX};
use provider_abi::{Envelope, MessageId, Timestamp};
use store_support::{Access, Backend};

use crate::db::Db;
use crate::fence::Fences;
use crate::{listener, notify, rows};

/// The open transaction, with the fences of the messages it touched.
pub struct Commit<'d, 'c, 'f, C: GenericClient> {
    db: &'d mut Db<'c, C>,
    fences: Fences<'f>,
    now: Timestamp,
    /// Whether the other hosts have new work: a message stored into the Outbox, or a due
    /// message unlocked.
    wake_others: bool,
    /// Whether the expired submission keys were forgotten in this transaction (once is
    /// enough).
    forgot_old_keys: bool,
    /// Messages finished into folders, moved all at once by [`Commit::finish`] (their
    /// fences are open: the row locks hold to the end of the transaction).
    moves: (Vec<i64>, Vec<String>),
}

impl<'d, 'c, 'f, C: GenericClient> Commit<'d, 'c, 'f, C> {
    /// The transaction on `db`, committing at `now` with these `fences`.
    pub fn new(db: &'d mut Db<'c, C>, fences: Fences<'f>, now: Timestamp) -> Self {
        Commit {
            db,
            fences,
            now,
            wake_others: false,
            forgot_old_keys: false,
            moves: (Vec::new(), Vec::new()),
        }
    }

    /// Does what was gathered to be done at once ([`Backend::move_to`]), then tells the
    /// other hosts, when the transaction commits, of the mail `receipt` delivered into
    /// folders and of new work in the queue.
    pub fn finish(self, receipt: &CommitReceipt) -> Result<(), postgres::Error> {
        rows::move_all(self.db, &self.moves.0, &self.moves.1)?;
        let session = self.fences.session;
        for id in receipt.delivered.iter() {
            notify(self.db, &listener::mail_arrived(session, *id))?;
        }
        if self.wake_others {
            notify(self.db, &listener::queue_changed(session))?;
        }
        Ok(())
    }

    /// Writes the columns of `envelopes`, each where its fence allows: all in one
    /// statement (the update checks the fences itself); only for those it did not write is
    /// it worth asking why, one by one. Returns each envelope's verdict.
    fn update_columns(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, postgres::Error> {
        let session = self.fences.session;
        // The last of two envelopes of one message wins, as written one after the other.
        let mut last: std::collections::HashMap<MessageId, usize> = Default::default();
        for (index, envelope) in envelopes.iter().enumerate() {
            last.insert(envelope.id, index);
        }
        let candidates: Vec<(&Envelope, bool)> = envelopes
            .iter()
            .enumerate()
            .filter(|(index, envelope)| {
                last[&envelope.id] == *index
                    && !matches!(
                        self.fences.known(envelope.id),
                        Some(Access::Refused | Access::Gone)
                    )
            })
            .map(|(_, envelope)| (envelope, self.fences.leased.contains(&envelope.id)))
            .collect();
        let mut stored = rows::update_columns(self.db, &candidates, session)?;
        for (envelope, mine) in candidates {
            let id = envelope.id;
            if stored.contains(&id) {
                continue;
            }
            // Ask why; the row is locked from here on. Open now means the lease changed
            // hands in between and is this host's again: write it.
            self.fences.forget(id);
            if self.fences.check(self.db, id)? == Access::Granted
                && !rows::update_columns(self.db, &[(envelope, mine)], session)?.is_empty()
            {
                stored.insert(id);
            }
        }
        for id in &stored {
            self.fences.opened(*id);
        }
        Ok(envelopes
            .iter()
            .map(|envelope| match self.fences.known(envelope.id) {
                _ if stored.contains(&envelope.id) => Access::Granted,
                Some(Access::Refused) => Access::Refused,
                _ => Access::Gone,
            })
            .collect())
    }
}

impl<C: GenericClient> Backend for Commit<'_, '_, '_, C> {
    type Error = postgres::Error;

    fn access(&mut self, id: MessageId) -> Result<Access, postgres::Error> {
        self.fences.check(self.db, id)
    }

    fn claim_submission(
        &mut self,
        key: &SubmissionKey,
        now: Timestamp,
    ) -> Result<Option<MessageId>, postgres::Error> {
        if !self.forgot_old_keys {
            rows::forget_old_submissions(self.db, now)?;
            self.forgot_old_keys = true;
        }
        rows::claim_submission(self.db, key, now)
    }

    fn remember_submission(
        &mut self,
        key: &SubmissionKey,
        id: MessageId,
    ) -> Result<(), postgres::Error> {
        rows::record_submission(self.db, key, id)
    }

    fn insert(
        &mut self,
        folder: &str,
        envelope: &Envelope,
        content: &[u8],
    ) -> Result<MessageId, postgres::Error> {
        self.wake_others |= folder == OUTBOX;
        rows::insert(self.db, folder, envelope, content)
    }

    fn read_content(&mut self, id: MessageId) -> Result<Option<Vec<u8>>, postgres::Error> {
        rows::read_content(self.db, id)
    }

    fn replace_content(&mut self, id: MessageId, content: &[u8]) -> Result<(), postgres::Error> {
        rows::replace_content(self.db, id, content)
    }

    /// The columns envelope by envelope (each fenced), then the recipients and properties of
    /// those written, all in one go.
    fn update(&mut self, envelopes: &[Envelope]) -> Result<Vec<Access>, postgres::Error> {
        let verdicts = self.update_columns(envelopes)?;
        let written: Vec<&Envelope> = envelopes
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| **verdict == Access::Granted)
            .map(|(envelope, _)| envelope)
            .collect();
        rows::update_lists(self.db, &written)?;
        Ok(verdicts)
    }

    /// Gathered, and done for all at once by [`Commit::finish`].
    fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), postgres::Error> {
        self.moves.0.push(id.0 as i64);
        self.moves.1.push(folder.to_owned());
        Ok(())
    }

    fn delete(&mut self, id: MessageId) -> Result<(), postgres::Error> {
        self.db
            .execute("DELETE FROM messages WHERE id = $1", &[&(id.0 as i64)])?;
        Ok(())
    }

    /// Releases this host's leases on `ids`; the other hosts are woken if one of them is due.
    fn unlock(&mut self, ids: &[MessageId]) -> Result<(), postgres::Error> {
        let ids: Vec<i64> = ids.iter().map(|id| id.0 as i64).collect();
        let due_now = self.db.query_text(
            "WITH released AS (
                 UPDATE messages SET lease_session = NULL, lease_until = NULL
                 WHERE id = ANY($1) AND lease_session = $2 RETURNING due)
             SELECT count(*) FROM released WHERE due <= $3",
            &[&ids, &self.fences.session, &self.now.0],
        )?;
        self.wake_others |= due_now.first().is_some_and(|row| row.get::<_, i64>(0) > 0);
        Ok(())
    }
}
