//! Fencing: whether this host may change a message now, asked of the database once per
//! message and commit.

use std::collections::{HashMap, HashSet};

use postgres::GenericClient;
use provider_abi::MessageId;
use store_support::Access;

use crate::db::Db;

/// Whether this host may change message `id` now. A message this host leased needs its lease
/// still valid; any other message needs no valid lease of another host. The row stays locked
/// to the end of the transaction, so no host takes the message over meanwhile.
fn fence<C: GenericClient>(
    db: &mut Db<'_, C>,
    id: MessageId,
    session: i64,
    leased_by_me: bool,
) -> Result<Access, postgres::Error> {
    let row = db.query_opt(
        "SELECT lease_session, lease_until, spooler_now_ms() FROM messages WHERE id = $1
         FOR UPDATE",
        &[&(id.0 as i64)],
    )?;
    let Some(row) = row else {
        return Ok(Access::Gone);
    };
    let holder: Option<i64> = row.get(0);
    let until: Option<i64> = row.get(1);
    let now: i64 = row.get(2);
    let valid = until.is_some_and(|until| until > now);
    let open = if leased_by_me {
        holder == Some(session) && valid
    } else {
        holder.is_none() || holder == Some(session) || !valid
    };
    Ok(if open {
        Access::Granted
    } else {
        Access::Refused
    })
}

/// The fences of the messages one commit touches, each asked of the database once.
pub struct Fences<'a> {
    known: HashMap<MessageId, Access>,
    /// This host's run.
    pub session: i64,
    /// The messages this host leased.
    pub leased: &'a HashSet<MessageId>,
}

impl<'a> Fences<'a> {
    pub fn new(session: i64, leased: &'a HashSet<MessageId>) -> Fences<'a> {
        Fences {
            known: HashMap::new(),
            session,
            leased,
        }
    }

    /// The fence of message `id`, asked of the database unless known.
    pub fn check<C: GenericClient>(
        &mut self,
        db: &mut Db<'_, C>,
        id: MessageId,
    ) -> Result<Access, postgres::Error> {
        if let Some(known) = self.known.get(&id) {
            return Ok(*known);
        }
        let verdict = fence(db, id, self.session, self.leased.contains(&id))?;
        self.known.insert(id, verdict);
        Ok(verdict)
    }

    /// The fence of message `id` if it was asked already.
    pub fn known(&self, id: MessageId) -> Option<Access> {
        self.known.get(&id).copied()
    }

    /// Forgets what is known of message `id`'s fence, to ask again.
    pub fn forget(&mut self, id: MessageId) {
        self.known.remove(&id);
    }

    /// Notes that message `id` was written: its fence is open to the end of the commit.
    pub fn opened(&mut self, id: MessageId) {
        self.known.insert(id, Access::Granted);
    }
}
