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
}

impl<'d, 'c, 'f, C: GenericClient> Commit<'d, 'c, 'f, C> {
    /// The transaction on `db`, committing at `now` with these `fences`.
    pub fn new(db: &'d mut Db<'c, C>, fences: Fences<'f>, now: Timestamp) -> Self {
        Commit {
            db,
            fences,
            now,
            wake_others: false,
        }
    }

    /// Tells the other hosts, when the transaction commits, of the mail `receipt` delivered
    /// into folders and of new work in the queue.
    pub fn notify_others(self, receipt: &CommitReceipt) -> Result<(), postgres::Error> {
        let session = self.fences.session;
        for id in receipt.delivered.iter() {
            notify(self.db, &listener::mail_arrived(session, *id))?;
        }
        if self.wake_others {
            notify(self.db, &listener::queue_changed(session))?;
        }
        Ok(())
    }

    /// Writes the columns of one envelope if its fence allows.
    fn update_columns(&mut self, envelope: &Envelope) -> Result<Access, postgres::Error> {
        let (id, session) = (envelope.id, self.fences.session);
        let mine = self.fences.leased.contains(&id);
        // The update checks the fence itself (one round trip); only when it changes nothing
        // is it worth asking why.
        let known = self.fences.known(id);
        let mut stored = !matches!(known, Some(Access::Refused | Access::Gone))
            && rows::update_columns(self.db, envelope, mine, session)?;
        if !stored {
            // Ask why; the row is locked from here on. Open now means the lease changed
            // hands in between and is this host's again: write it.
            self.fences.forget(id);
            stored = self.fences.check(self.db, id)? == Access::Granted
                && rows::update_columns(self.db, envelope, mine, session)?;
        }
        if stored {
            self.fences.opened(id);
            return Ok(Access::Granted);
        }
        Ok(match self.fences.known(id) {
            Some(Access::Refused) => Access::Refused,
            _ => Access::Gone,
        })
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
        let verdicts = envelopes
            .iter()
            .map(|envelope| self.update_columns(envelope))
            .collect::<Result<Vec<_>, _>>()?;
        let written: Vec<&Envelope> = envelopes
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| **verdict == Access::Granted)
            .map(|(envelope, _)| envelope)
            .collect();
        rows::update_lists(self.db, &written)?;
        Ok(verdicts)
    }

    fn move_to(&mut self, id: MessageId, folder: &str) -> Result<(), postgres::Error> {
        self.db.execute(
            "UPDATE messages SET folder = $2, due = NULL, lease_session = NULL,
                lease_until = NULL WHERE id = $1",
            &[&(id.0 as i64), &folder],
        )?;
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
        let due_now = self.db.query_one(
            "WITH released AS (
                 UPDATE messages SET lease_session = NULL, lease_until = NULL
                 WHERE id = ANY($1) AND lease_session = $2 RETURNING due)
             SELECT count(*) FROM released WHERE due <= $3",
            &[&ids, &self.fences.session, &self.now.0],
        )?;
        self.wake_others |= due_now.get::<_, i64>(0) > 0;
        Ok(())
    }
}
