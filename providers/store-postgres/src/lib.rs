//! A message store on PostgreSQL that several spooler hosts share: one queue, worked by
//! every host, with nothing lost when one of them dies.
//!
//! Same semantics as the embedded store (durable on commit, folders, per-recipient status,
//! `LOCAL` delivered by the store itself), plus what sharing needs (see
//! [`provider_abi::store`]):
//! - a message is worked by one host at a time, through a **lease** taken with
//!   `FOR UPDATE SKIP LOCKED`, stamped with this host run's session and an expiry on the
//!   database's clock, and renewed at every check-in (a third of the lease);
//! - a host whose lease expired or was taken over cannot store anything about that message
//!   (**fencing**), so no recorded delivery is made again and no host overwrites another's
//!   answers;
//! - `NOTIFY`/`LISTEN` wake idle hosts when another host changes the queue (`listener`).
//!
//! A commit is the store engine of `store_support` over this store's statements, fenced by
//! its leases (`commit`, `fence`).
//!
//! ```toml
//! [store]
//! provider = "postgres"
//! config = { url = "postgres://spooler@db.example.net/spooler", password_file = "/etc/spooler/db-password", host_name = "mx1", lease = 60 }
//! ```

mod commit;
mod config;
mod db;
mod fence;
mod listener;
mod rows;
mod schema;
mod tls;

use std::collections::HashSet;

use postgres::{Client, GenericClient};
use provider_abi::store::{
    self, CheckIn, CommitReceipt, FolderInfo, HostInfo, MessageSummary, QueueCounts, ShapeCell,
    StoreBatch, TransportCount, OUTBOX,
};
use provider_abi::{
    export_library, ErrorKind, Library, MessageId, OpenContext, ProviderError, Store,
    StoredMessage, Timestamp,
};
use store_support::LocalDelivery;

use commit::Commit;
use config::Config;
use db::{Db, Statements};
use fence::Fences;
use listener::Listener;

/// One host's store instance: its connection, its session (this run of this host), and the
/// leases it holds.
pub struct PostgresStore {
    name: String,
    config: Config,
    /// `None` after the connection broke; the next call connects again.
    client: Option<Client>,
    statements: Statements,
    session: i64,
    /// The messages this instance locked and has not released.
    leased: HashSet<MessageId>,
    /// Leased messages whose updates were refused since the last check-in.
    lost: Vec<MessageId>,
    /// The address types it delivers itself.
    local: LocalDelivery,
    listener: Listener,
}

impl PostgresStore {
    /// Connects, prepares the schema and starts this host's session.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        PostgresStore::open_as(context.name(), context.config(), context.host().clone())
    }

    /// [`open`](Self::open) with the context's parts: instance `name`, its `config` table and
    /// the `host` to notify.
    fn open_as(name: &str, config: &str, host: provider_abi::Host) -> Result<Self, ProviderError> {
        let name = name.to_owned();
        let config = Config::parse(&name, config)?;
        let mut client = connect(&name, &config)?;
        schema::prepare(&mut client).map_err(|why| {
            ProviderError::permanent(format!(
                "store `{name}` on {}: {why}",
                config.server.describe
            ))
        })?;
        let session = start_session(&mut client, &config).map_err(|error| {
            classify(
                format!("store `{name}`: cannot start this host's session"),
                &error,
            )
        })?;
        log::info!(
            "store `{name}` opened on {} (sslmode {}) as host `{}` (session {session}, leases \
             of {} s)",
            config.server.describe,
            config.server.tls_mode.name(),
            config.host_name,
            config.lease.as_secs()
        );
        let listener = Listener::start(&name, config.server.clone(), session, host);
        Ok(PostgresStore {
            local: LocalDelivery::new(&name, &config.delivers_itself),
            name,
            config,
            client: Some(client),
            statements: Statements::default(),
            session,
            leased: HashSet::new(),
            lost: Vec::new(),
            listener,
        })
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease.as_millis() as i64
    }

    /// Lets go of the messages whose changes fencing `refused`: the next check-in reports
    /// them lost.
    fn lose(&mut self, refused: Vec<MessageId>) {
        for id in refused {
            log::warn!(
                "store `{}`: message {id}: this host's lease on it expired or was taken over; \
                 its update is refused (fencing) and the host that holds it now carries on",
                self.name
            );
            self.leased.remove(&id);
            self.lost.push(id);
        }
    }

    /// The connection, connecting again if it broke.
    fn client(&mut self) -> Result<(&mut Client, &mut Statements), ProviderError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = None;
            let mut client = connect(&self.name, &self.config)?;
            log::info!("store `{}`: connected again", self.name);
            // The connection may have broken between a lock's commit and its answer: those
            // messages are released now, not at the next check-in, up to 20 s later.
            release_unknown_leases(&mut client, self.session, &self.leased).map_err(|error| {
                classify(
                    format!("store `{}`: cannot release lost locks", self.name),
                    &error,
                )
            })?;
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected just above");
        Ok((client, &mut self.statements))
    }

    /// Runs `work` on the connection, statement by statement, **without waiting for the
    /// disk**: for reads and for lease bookkeeping (taking, renewing, releasing leases). A
    /// lease lost when the database server crashes is harmless: the host that held it finds
    /// its answers refused (fencing) and another host delivers the message again, at least
    /// once, never zero times. A failure becomes an error naming the store and `doing`,
    /// temporary when the server or the connection is at fault.
    fn run<T>(
        &mut self,
        doing: &str,
        work: impl FnOnce(&mut Db<'_, Client>) -> Result<T, postgres::Error>,
    ) -> Result<T, ProviderError> {
        let name = self.name.clone();
        let (client, statements) = self.client()?;
        work(&mut Db { client, statements })
            .map_err(|error| classify(format!("store `{name}`: {doing}"), &error))
    }

    /// Like [`run`](Self::run), in one transaction that commits when `work` succeeds, and
    /// durably: the commit returns once it is on the server's disk.
    fn transaction<T>(
        &mut self,
        doing: &str,
        work: impl FnOnce(&mut Db<'_, postgres::Transaction<'_>>) -> Result<T, postgres::Error>,
    ) -> Result<T, ProviderError> {
        let name = self.name.clone();
        let (client, statements) = self.client()?;
        let result = client.transaction().and_then(|mut transaction| {
            transaction.batch_execute("SET LOCAL synchronous_commit = on")?;
            let value = work(&mut Db {
                client: &mut transaction,
                statements,
            })?;
            transaction.commit().map(|()| value)
        });
        result.map_err(|error| classify(format!("store `{name}`: {doing}"), &error))
    }
}

fn connect(name: &str, config: &Config) -> Result<Client, ProviderError> {
    config
        .server
        .connect()
        .map_err(|why| ProviderError::temporary(format!("store `{name}`: {why}")))
}

/// A database error as a provider error: out of space when the disk is full; temporary when
/// it is about the connection, the server's resources or a conflict between transactions;
/// permanent otherwise.
fn classify(doing: String, error: &postgres::Error) -> ProviderError {
    let message = format!("{doing}: {}", db::explain(error));
    let temporary = match error.code() {
        None => true,
        Some(code) => ["08", "40", "53", "57", "58"]
            .iter()
            .any(|class| code.code().starts_with(class)),
    };
    // 53100 is disk_full: out of space, which the host tells apart (SMTP clients get 452).
    if error.code().is_some_and(|code| code.code() == "53100") {
        ProviderError::new(ErrorKind::Full, message)
    } else if temporary {
        ProviderError::temporary(message)
    } else {
        ProviderError::permanent(message)
    }
}

/// Registers this run of the host and takes back the leases of its previous runs (a host
/// restarted after a crash works its own messages again at once, not after the lease).
fn start_session(client: &mut Client, config: &Config) -> Result<i64, postgres::Error> {
    let mut transaction = client.transaction()?;
    let lease_ms = config.lease.as_millis() as i64;
    let recent = transaction.query_opt(
        "SELECT spooler_now_ms() - max(last_seen) FROM spooler_sessions WHERE host = $1
         HAVING max(last_seen) > spooler_now_ms() - $2",
        &[&config.host_name, &lease_ms],
    )?;
    if let Some(row) = recent {
        let ago: i64 = row.get(0);
        log::warn!(
            "host `{}` was last seen {} s ago; taking over its leases. If that host is still \
             running, give each host its own `host_name`",
            config.host_name,
            ago / 1000
        );
    }
    transaction.execute(
        "UPDATE messages SET lease_session = NULL, lease_until = NULL
         WHERE lease_session IN (SELECT session FROM spooler_sessions WHERE host = $1)",
        &[&config.host_name],
    )?;
    transaction.execute(
        "DELETE FROM spooler_sessions WHERE host = $1
            OR last_seen < spooler_now_ms() - 86400000",
        &[&config.host_name],
    )?;
    let row = transaction.query_one(
        "INSERT INTO spooler_sessions (host, pid, started_at, last_seen, lease_ms)
         VALUES ($1, $2, spooler_now_ms(), spooler_now_ms(), $3) RETURNING session",
        &[&config.host_name, &i64::from(std::process::id()), &lease_ms],
    )?;
    transaction.commit()?;
    Ok(row.get(0))
}

/// Releases the leases `session` holds on messages missing from `leased`. Such a lock's
/// answer was lost with the connection (the database committed it, then went away before
/// the rows reached this host): renewed, it would keep the message locked for as long as
/// this host runs; released, the message is due again.
fn release_unknown_leases<C: GenericClient>(
    client: &mut C,
    session: i64,
    leased: &HashSet<MessageId>,
) -> Result<(), postgres::Error> {
    let held: Vec<i64> = leased.iter().map(|id| id.0 as i64).collect();
    client.execute(
        "UPDATE messages SET lease_session = NULL, lease_until = NULL
         WHERE lease_session = $1 AND NOT (id = ANY($2))",
        &[&session, &held],
    )?;
    Ok(())
}

/// Tells the other hosts `payload` when the transaction commits.
pub(crate) fn notify<C: GenericClient>(
    db: &mut Db<'_, C>,
    payload: &str,
) -> Result<(), postgres::Error> {
    db.execute("SELECT pg_notify('spooler', $1)", &[&payload])?;
    Ok(())
}

impl Store for PostgresStore {
    fn commit(&mut self, batch: &StoreBatch<'_>) -> Result<CommitReceipt, ProviderError> {
        let (session, leased, local) = (self.session, self.leased.clone(), self.local.clone());
        let applied = self.transaction("cannot commit", |db| {
            let now = Timestamp::now();
            let mut commit = Commit::new(db, Fences::new(session, &leased), now);
            let applied = store_support::apply(&mut commit, batch, &local, now)?;
            commit.finish(&applied.receipt)?;
            Ok(applied)
        })?;
        for id in store_support::released(batch) {
            self.leased.remove(&id);
        }
        self.lose(applied.refused);
        Ok(applied.receipt)
    }

    fn lock_due(
        &mut self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ProviderError> {
        let (session, lease_ms) = (self.session, self.lease_ms());
        let messages = self.run("cannot take messages from the queue", |db| {
            let rows = db.query(
                // `= ANY(ARRAY(…))`: the picked ids are looked up one by one in the primary
                // key; `IN (…)` let the planner hash-join against a scan of the whole table.
                "UPDATE messages SET lease_session = $1, lease_until = spooler_now_ms() + $2
                 WHERE id = ANY(ARRAY(SELECT id FROM messages
                     WHERE due IS NOT NULL AND due <= $3
                         AND (lease_session IS NULL OR lease_until <= spooler_now_ms())
                     ORDER BY due, priority DESC, submitted_at, id LIMIT $4
                     FOR UPDATE SKIP LOCKED))
                 RETURNING id, due, priority, submitted_at",
                &[&session, &lease_ms, &now.0, &i64::from(limit)],
            )?;
            let mut order: Vec<(i64, i64, i64, i64)> = rows
                .iter()
                .map(|row| (row.get(1), -row.get::<_, i64>(2), row.get(3), row.get(0)))
                .collect();
            order.sort_unstable();
            let ids: Vec<i64> = order.iter().map(|o| o.3).collect();
            rows::read(db, &ids, true)
        })?;
        let messages: Vec<StoredMessage> = messages
            .into_iter()
            .map(|m| StoredMessage {
                envelope: m.envelope,
                folder: m.folder.into(),
                content: m.content.unwrap_or_default().into(),
            })
            .collect();
        self.leased
            .extend(messages.iter().map(|message| message.envelope.id));
        Ok(messages)
    }

    fn next_due(&mut self) -> Result<Option<Timestamp>, ProviderError> {
        let session = self.session;
        let now = Timestamp::now();
        self.run("cannot read the queue", |db| {
            // The first free message due, and when another host's lease on a due message
            // ends (if that host died, its messages are due then); each one index step away.
            let row = db.query_one(
                "SELECT
                    (SELECT due FROM messages
                     WHERE due IS NOT NULL
                         AND (lease_session IS NULL OR lease_until <= spooler_now_ms())
                     ORDER BY due, priority DESC, submitted_at, id LIMIT 1),
                    (SELECT lease_until - spooler_now_ms() FROM messages
                     WHERE lease_session IS NOT NULL AND lease_session <> $1
                         AND due IS NOT NULL
                     ORDER BY lease_until LIMIT 1)",
                &[&session],
            )?;
            let free: Option<i64> = row.get(0);
            let lease_ends_in: Option<i64> = row.get(1);
            let takeover = lease_ends_in.map(|ms| Timestamp(now.0 + ms.max(0)));
            Ok(match (free.map(Timestamp), takeover) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
        })
    }

    fn get(&mut self, id: MessageId) -> Result<Option<StoredMessage>, ProviderError> {
        let messages = self.run(&format!("cannot read message {id}"), |db| {
            rows::read(db, &[id.0 as i64], true)
        })?;
        Ok(messages.into_iter().next().map(|m| StoredMessage {
            envelope: m.envelope,
            folder: m.folder.into(),
            content: m.content.unwrap_or_default().into(),
        }))
    }

    fn folders(&mut self) -> Result<Vec<FolderInfo>, ProviderError> {
        let rows = self.run("cannot list folders", |db| {
            db.query("SELECT folder, count(*) FROM messages GROUP BY folder", &[])
        })?;
        let folders: Vec<FolderInfo> = rows
            .iter()
            .map(|row| FolderInfo {
                name: row.get::<_, String>(0).into(),
                messages: row.get::<_, i64>(1) as u64,
            })
            .collect();
        Ok(store::with_standard_folders(folders))
    }

    fn list(&mut self, folder: &str) -> Result<Vec<MessageSummary>, ProviderError> {
        let mut all = Vec::new();
        loop {
            let page = self.list_page(
                folder,
                all.last().map(|m: &MessageSummary| m.envelope.id),
                1000,
            )?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    fn list_page(
        &mut self,
        folder: &str,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageSummary>, ProviderError> {
        let after = after.map_or(0, |id| id.0 as i64);
        let messages = self.run(&format!("cannot list folder {folder}"), |db| {
            let ids: Vec<i64> = db
                .query(
                    "SELECT id FROM messages WHERE folder = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&folder, &after, &i64::from(limit)],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            rows::read(db, &ids, false)
        })?;
        Ok(messages
            .into_iter()
            .map(|m| MessageSummary {
                envelope: m.envelope,
                folder: m.folder.into(),
                subject: m.subject.into(),
                size: m.size,
            })
            .collect())
    }

    fn queue_counts(&mut self) -> Result<QueueCounts, ProviderError> {
        self.run("cannot count the queue", |db| {
            let messages: i64 = db
                .query_one("SELECT count(*) FROM messages WHERE folder = 'Outbox'", &[])?
                .get(0);
            // Pending recipients exist in the Outbox only.
            let waiting = db
                .query(
                    "SELECT transport, count(*) FROM recipients
                     WHERE state = 0 AND transport IS NOT NULL GROUP BY transport",
                    &[],
                )?
                .iter()
                .map(|row| TransportCount {
                    transport: row.get::<_, String>(0).into(),
                    recipients: row.get::<_, i64>(1) as u64,
                })
                .collect::<Vec<_>>();
            Ok(QueueCounts {
                messages: messages as u64,
                waiting: waiting.into(),
            })
        })
    }

    fn flush(&mut self, transport: Option<&str>, now: Timestamp) -> Result<u64, ProviderError> {
        let session = self.session;
        self.transaction("cannot flush the queue", |db| {
            let made_due = db.execute(
                "UPDATE recipients SET next_attempt = $1
                 WHERE state = 0 AND ($2::TEXT IS NULL OR transport = $2)
                 AND message_id IN (SELECT id FROM messages WHERE folder = 'Outbox')",
                &[&now.0, &transport],
            )?;
            // A held message (due NULL) stays held; the others are due now, or after their
            // deferral.
            db.execute(
                "UPDATE messages SET due = LEAST(due, GREATEST($1, COALESCE(deferred_until, $1)))
                 WHERE due IS NOT NULL AND id IN (SELECT message_id FROM recipients
                     WHERE state = 0 AND ($2::TEXT IS NULL OR transport = $2))",
                &[&now.0, &transport],
            )?;
            notify(db, &listener::queue_changed(session))?;
            Ok(made_due)
        })
    }

    fn delivers_itself(&self) -> Vec<String> {
        self.local.types().to_vec()
    }

    fn hold(
        &mut self,
        id: MessageId,
        hold: bool,
        now: Timestamp,
    ) -> Result<Option<String>, ProviderError> {
        let session = self.session;
        let doing = format!(
            "cannot {} message {id}",
            if hold { "hold" } else { "release" }
        );
        self.transaction(&doing, |db| {
            let id = id.0 as i64;
            let Some(row) = db.query_opt(
                "SELECT folder FROM messages WHERE id = $1 FOR UPDATE",
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let folder: String = row.get(0);
            if folder != OUTBOX {
                return Ok(Some(folder));
            }
            if hold {
                db.execute(
                    "UPDATE messages SET held = TRUE, due = NULL WHERE id = $1",
                    &[&id],
                )?;
            } else {
                db.execute(
                    "UPDATE recipients SET next_attempt = $2 WHERE message_id = $1 AND state = 0",
                    &[&id, &now.0],
                )?;
                db.execute(
                    "UPDATE messages SET held = FALSE,
                        due = GREATEST($2, COALESCE(deferred_until, $2)) WHERE id = $1",
                    &[&id, &now.0],
                )?;
                notify(db, &listener::queue_changed(session))?;
            }
            Ok(Some(folder))
        })
    }

    fn delete(&mut self, id: MessageId) -> Result<bool, ProviderError> {
        let deleted = self.transaction(&format!("cannot delete message {id}"), |db| {
            db.execute("DELETE FROM messages WHERE id = $1", &[&(id.0 as i64)])
        })?;
        self.leased.remove(&id);
        Ok(deleted > 0)
    }

    fn check_in(&mut self, now: Timestamp) -> Result<CheckIn, ProviderError> {
        let (session, lease_ms) = (self.session, self.lease_ms());
        let leased = self.leased.clone();
        let renewed: HashSet<MessageId> = self.run("cannot renew this host's leases", |db| {
            db.execute(
                "UPDATE spooler_sessions SET last_seen = spooler_now_ms() WHERE session = $1",
                &[&session],
            )?;
            release_unknown_leases(db.client, session, &leased)?;
            Ok(db
                .query(
                    "UPDATE messages SET lease_until = spooler_now_ms() + $2
                     WHERE lease_session = $1 AND lease_until > spooler_now_ms() RETURNING id",
                    &[&session, &lease_ms],
                )?
                .iter()
                .map(|row| MessageId(row.get::<_, i64>(0) as u64))
                .collect())
        })?;
        let mut lost = std::mem::take(&mut self.lost);
        lost.extend(self.leased.iter().filter(|id| !renewed.contains(id)));
        self.leased.retain(|id| renewed.contains(id));
        Ok(CheckIn {
            lost: lost.into(),
            arrived: self.listener.take_arrived().into(),
            next: Some(now.plus(self.config.lease / 3)).into(),
        })
    }

    fn queue_shape(
        &mut self,
        now: Timestamp,
        bounds: &[u64],
    ) -> Result<Vec<ShapeCell>, ProviderError> {
        let bounds = store_support::shape::bounds_in_ms(bounds);
        let mut parameters: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&now.0];
        parameters.extend(
            bounds
                .iter()
                .map(|b| b as &(dyn postgres::types::ToSql + Sync)),
        );
        self.run("cannot count the queue by domain", |db| {
            let rows = db.query_text(&shape_query(bounds.len()), &parameters)?;
            Ok(rows
                .iter()
                .map(|row| ShapeCell {
                    domain: row.get::<_, String>(0).into(),
                    bucket: row.get::<_, i32>(1) as u32,
                    recipients: row.get::<_, i64>(2) as u64,
                })
                .collect())
        })
    }

    fn prune(
        &mut self,
        folder: &str,
        reports_only: bool,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, ProviderError> {
        // One statement, its own transaction; the rows of contents, recipients and
        // properties go by their foreign keys' cascade. Autovacuum gives the space back.
        self.run(&format!("cannot prune folder `{folder}`"), |db| {
            let removed = db.execute(
                "DELETE FROM messages WHERE id IN (
                    SELECT id FROM messages WHERE folder = $1 AND submitted_at < $2
                        AND ($3 = FALSE OR is_report)
                    ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)",
                &[&folder, &before.0, &reports_only, &i64::from(limit)],
            )?;
            Ok(removed)
        })
    }

    fn size_on_disk(&mut self) -> Result<u64, ProviderError> {
        self.run("cannot read the size of the store's tables", |db| {
            let row = db.query_one(
                "SELECT COALESCE(sum(pg_total_relation_size(to_regclass(t))), 0)::BIGINT
                 FROM unnest(ARRAY['messages', 'contents', 'recipients', 'properties',
                    'spooler_submissions', 'spooler_sessions']) AS t",
                &[],
            )?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn held_messages(&mut self) -> Result<u64, ProviderError> {
        self.run("cannot count held messages", |db| {
            let row = db.query_one(
                "SELECT count(*) FROM messages WHERE folder = 'Outbox' AND held",
                &[],
            )?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn hosts(&mut self) -> Result<Vec<HostInfo>, ProviderError> {
        let now = Timestamp::now();
        let rows = self.run("cannot list the hosts", |db| {
            db.query(
                "SELECT s.host, spooler_now_ms() - s.last_seen, s.lease_ms, count(m.id)
                 FROM spooler_sessions s LEFT JOIN messages m
                     ON m.lease_session = s.session AND m.lease_until > spooler_now_ms()
                 GROUP BY s.session ORDER BY s.host, s.session",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|row| {
                let ago: i64 = row.get(1);
                HostInfo {
                    name: row.get::<_, String>(0).into(),
                    alive: ago < row.get::<_, i64>(2),
                    last_seen: Timestamp(now.0 - ago.max(0)),
                    leases: row.get::<_, i64>(3) as u64,
                }
            })
            .collect())
    }
}

impl Drop for PostgresStore {
    /// A host that stops lets go of its leases at once and leaves the hosts list.
    fn drop(&mut self) {
        let session = self.session;
        let released = self.run("cannot end this host's session", |db| {
            db.execute(
                "UPDATE messages SET lease_session = NULL, lease_until = NULL
                 WHERE lease_session = $1",
                &[&session],
            )?;
            db.execute(
                "DELETE FROM spooler_sessions WHERE session = $1",
                &[&session],
            )
        });
        if let Err(error) = released {
            log::warn!("{error}; its leases end when they expire");
        }
    }
}

/// The count query of [`Store::queue_shape`] for `bounds` age bounds (parameters `$2` on,
/// after `now` as `$1`): one pass over the pending recipients (`recipients_waiting` holds
/// exactly them), each joined to its message. The domain is what `store::shape_domain`
/// computes: after the last `@`, ASCII letters in lower case (`translate`, not `lower`, whose
/// answer depends on the database's locale).
fn shape_query(bounds: usize) -> String {
    let bucket = store_support::shape::age_bucket("($1 - m.submitted_at)", bounds, |i| {
        format!("${}", i + 2)
    });
    format!(
        "SELECT CASE WHEN r.address_type = 'SMTP' AND strpos(r.address, '@') > 0
                THEN translate(substring(r.address from '[^@]*$'),
                    'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
                ELSE r.address_type END AS domain,
            ({bucket})::INTEGER AS bucket, count(*)
         FROM recipients AS r JOIN messages AS m ON m.id = r.message_id
         WHERE r.state = 0 AND m.folder = 'Outbox'
         GROUP BY 1, 2"
    )
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).store(
        "postgres",
        &["LOCAL"],
        PostgresStore::open,
    )
}

export_library!(library);

#[cfg(test)]
mod shared_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_shorter_than_three_seconds_is_refused() {
        let error = Config::parse("pg", "url = \"postgres://u@localhost/db\"\nlease = 1")
            .err()
            .expect("refused");
        assert!(error.to_string().contains("at least 3"), "{error}");
    }

    #[test]
    fn keeps_the_hosts_store_contract() {
        let Some(postgres) = spooler_tests::Postgres::start() else {
            return;
        };
        let url = postgres.create_database("contract");
        let config = format!("url = \"{url}\"\nhost_name = \"contract\"\nlease = 3");
        provider_testkit::check_store(library, "postgres", &config).unwrap();
    }

    #[test]
    fn a_misspelt_key_is_refused_naming_it() {
        let error = provider_testkit::open_store(
            library,
            "postgres",
            "url = \"postgres://u@localhost/db\"\nleese = 5",
        )
        .err()
        .expect("refused");
        assert!(
            error.message().starts_with(
                "instance \"postgres-test\": key leese at line 2: unknown field `leese`, expected one of"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_server_is_required() {
        let error = Config::parse("pg", "").err().expect("refused");
        assert!(error.to_string().contains("no database server"), "{error}");
    }

    #[test]
    fn the_password_comes_from_the_environment() {
        std::env::set_var("STORE_POSTGRES_TEST_PASSWORD", "s3cret");
        let config = Config::parse(
            "pg",
            "url = \"postgres://u@localhost/db\"\npassword_env = \"STORE_POSTGRES_TEST_PASSWORD\"",
        )
        .expect("accepted");
        assert_eq!(
            config.server.connection.get_password(),
            Some(&b"s3cret"[..])
        );
        assert!(!config.server.describe.contains("s3cret"));
    }
}
