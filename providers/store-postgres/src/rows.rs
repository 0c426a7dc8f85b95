//! Envelopes to rows and back. Reads take many messages at once (one query per table, not
//! one per message), and a status change writes only the recipients it changed.

use std::collections::{HashMap, HashSet};

use postgres::{Error, GenericClient, Row};
use provider_abi::abi_stable::std_types::{RString, RVec};
use provider_abi::headers::header;
use provider_abi::store::{SubmissionKey, OUTBOX};
use provider_abi::{
    Address, DeliveryState, Envelope, MessageId, Priority, Property, Recipient, RecipientKind,
    RecipientStatus, ReportRequest, Timestamp,
};

use crate::db::Db;

/// A message read back: its envelope and folder, and its content when asked for.
pub struct ReadMessage {
    pub envelope: Envelope,
    pub folder: String,
    pub subject: String,
    pub size: u64,
    pub content: Option<Vec<u8>>,
}

/// Inserts a message into `folder` with its content, recipients and properties, in one
/// statement (one round trip), and returns its id.
pub fn insert<C: GenericClient>(
    db: &mut Db<'_, C>,
    folder: &str,
    envelope: &Envelope,
    content: &[u8],
) -> Result<MessageId, Error> {
    let subject = header(content, "Subject").unwrap_or_default();
    let due = (folder == OUTBOX)
        .then(|| envelope.due().map(|due| due.0))
        .flatten();
    let mut r = RecipientColumns::default();
    for (position, recipient) in envelope.recipients.iter().enumerate() {
        r.push(MessageId(0), position, recipient);
    }
    let names: Vec<&str> = envelope
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let values: Vec<&str> = envelope
        .properties
        .iter()
        .map(|p| p.value.as_str())
        .collect();
    let row = db.query_one(
        "WITH message AS (
             INSERT INTO messages (folder, sender, report_delivery, report_non_delivery, priority,
                 submitted_at, deferred_until, expires_at, delete_after_submission, is_report,
                 held, preprocessed, subject, size, due)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             RETURNING id),
         content AS (
             INSERT INTO contents (message_id, content) SELECT id, $16 FROM message),
         recipient AS (
             INSERT INTO recipients (message_id, position, address_type, address, kind, state,
                 transport, attempts, next_attempt, last_answer, status_code, diagnostic,
                 delay_warned, reported)
             SELECT message.id, r.position - 1, r.address_type, r.address, r.kind, r.state,
                 r.transport, r.attempts, r.next_attempt, r.last_answer, r.status_code,
                 r.diagnostic, r.delay_warned, r.reported
             FROM message, unnest($17::TEXT[], $18::TEXT[], $19::BIGINT[], $20::BIGINT[],
                 $21::TEXT[], $22::BIGINT[], $23::BIGINT[], $24::TEXT[], $25::TEXT[],
                 $26::TEXT[], $27::BOOLEAN[], $28::BOOLEAN[]) WITH ORDINALITY
                 AS r(address_type, address, kind, state, transport, attempts, next_attempt,
                     last_answer, status_code, diagnostic, delay_warned, reported, position)),
         property AS (
             INSERT INTO properties (message_id, position, name, value)
             SELECT message.id, p.position - 1, p.name, p.value
             FROM message, unnest($29::TEXT[], $30::TEXT[]) WITH ORDINALITY
                 AS p(name, value, position))
         SELECT id FROM message",
        &[
            &folder,
            &envelope.sender.to_string(),
            &envelope.reports.delivery,
            &envelope.reports.non_delivery,
            &envelope.priority.as_number(),
            &envelope.submitted_at.0,
            &envelope.deferred_until.map(|t| t.0).into_option(),
            &envelope.expires_at.map(|t| t.0).into_option(),
            &envelope.delete_after_submission,
            &envelope.is_report,
            &envelope.held,
            &envelope.preprocessed,
            &subject,
            &(content.len() as i64),
            &due,
            &content,
            &r.address_type,
            &r.address,
            &r.kind,
            &r.state,
            &r.transport,
            &r.attempts,
            &r.next_attempt,
            &r.last_answer,
            &r.status_code,
            &r.diagnostic,
            &r.delay_warned,
            &r.reported,
            &names,
            &values,
        ],
    )?;
    Ok(MessageId(row.get::<_, i64>(0) as u64))
}

/// Forgets the submission keys whose time is over.
pub fn forget_old_submissions<C: GenericClient>(
    db: &mut Db<'_, C>,
    now: Timestamp,
) -> Result<(), Error> {
    db.execute(
        "DELETE FROM spooler_submissions WHERE remember_until < $1",
        &[&now.0],
    )?;
    Ok(())
}

/// Claims `key` for a submission about to be stored. `Some(id)` if the key is remembered
/// already: message `id` is that submission. A host committing the same key at the same
/// moment waits on the key's row, then finds it.
pub fn claim_submission<C: GenericClient>(
    db: &mut Db<'_, C>,
    key: &SubmissionKey,
    now: Timestamp,
) -> Result<Option<MessageId>, Error> {
    let claimed = db.query_opt(
        "INSERT INTO spooler_submissions (key, message_id, remember_until) VALUES ($1, 0, $2)
         ON CONFLICT (key) DO UPDATE SET message_id = 0, remember_until = EXCLUDED.remember_until
             WHERE spooler_submissions.remember_until < $3
         RETURNING key",
        &[&key.key, &key.remember_until.0, &now.0],
    )?;
    if claimed.is_some() {
        return Ok(None);
    }
    let first = db.query_one(
        "SELECT message_id FROM spooler_submissions WHERE key = $1",
        &[&key.key],
    )?;
    Ok(Some(MessageId(first.get::<_, i64>(0) as u64)))
}

/// Records which message a claimed key made.
pub fn record_submission<C: GenericClient>(
    db: &mut Db<'_, C>,
    key: &SubmissionKey,
    id: MessageId,
) -> Result<(), Error> {
    db.execute(
        "UPDATE spooler_submissions SET message_id = $2 WHERE key = $1",
        &[&key.key, &(id.0 as i64)],
    )?;
    Ok(())
}

/// Replaces a message's content (nothing, if there is no such message).
pub fn replace_content<C: GenericClient>(
    db: &mut Db<'_, C>,
    id: MessageId,
    content: &[u8],
) -> Result<(), Error> {
    let id = id.0 as i64;
    db.execute(
        "UPDATE messages SET size = $2, subject = $3 WHERE id = $1",
        &[
            &id,
            &(content.len() as i64),
            &header(content, "Subject").unwrap_or_default(),
        ],
    )?;
    db.execute(
        "UPDATE contents SET content = $2 WHERE message_id = $1",
        &[&id, &content],
    )?;
    Ok(())
}

/// A message's content.
pub fn read_content<C: GenericClient>(
    db: &mut Db<'_, C>,
    id: MessageId,
) -> Result<Option<Vec<u8>>, Error> {
    Ok(db
        .query_opt(
            "SELECT content FROM contents WHERE message_id = $1",
            &[&(id.0 as i64)],
        )?
        .map(|row| row.get(0)))
}

/// Writes the envelopes' own columns over the stored ones, in one statement, where this
/// host may: a message whose lease it holds (`mine`) needs that lease still valid, any other
/// message no valid lease of another host (`session` is this host's run). Such a message
/// keeps its stored `held` flag: an operator may have held it meanwhile. Returns the ids
/// written; an id appears at most once in `envelopes`.
pub fn update_columns<C: GenericClient>(
    db: &mut Db<'_, C>,
    envelopes: &[(&Envelope, bool)],
    session: i64,
) -> Result<HashSet<MessageId>, Error> {
    if envelopes.is_empty() {
        return Ok(HashSet::new());
    }
    let column = |f: &dyn Fn(&Envelope) -> bool| -> Vec<bool> {
        envelopes.iter().map(|(e, _)| f(e)).collect()
    };
    let ids: Vec<i64> = envelopes.iter().map(|(e, _)| e.id.0 as i64).collect();
    let priorities: Vec<i64> = envelopes
        .iter()
        .map(|(e, _)| e.priority.as_number())
        .collect();
    let time = |f: &dyn Fn(&Envelope) -> Option<i64>| -> Vec<Option<i64>> {
        envelopes.iter().map(|(e, _)| f(e)).collect()
    };
    let mine: Vec<bool> = envelopes.iter().map(|(_, mine)| *mine).collect();
    let rows = db.query_text(
        "UPDATE messages AS m SET report_delivery = u.report_delivery,
            report_non_delivery = u.report_non_delivery, priority = u.priority,
            deferred_until = u.deferred_until, expires_at = u.expires_at,
            delete_after_submission = u.delete_after_submission, is_report = u.is_report,
            held = CASE WHEN u.mine THEN m.held ELSE u.held END, preprocessed = u.preprocessed,
            due = CASE WHEN m.folder <> 'Outbox' OR (CASE WHEN u.mine THEN m.held ELSE u.held END)
                THEN NULL ELSE u.due END
         FROM unnest($1::BIGINT[], $2::BOOLEAN[], $3::BOOLEAN[], $4::BIGINT[], $5::BIGINT[],
             $6::BIGINT[], $7::BOOLEAN[], $8::BOOLEAN[], $9::BOOLEAN[], $10::BOOLEAN[],
             $11::BIGINT[], $12::BOOLEAN[])
             AS u(id, report_delivery, report_non_delivery, priority, deferred_until,
                 expires_at, delete_after_submission, is_report, held, preprocessed, due, mine)
         WHERE m.id = u.id AND CASE WHEN u.mine
             THEN m.lease_session = $13 AND m.lease_until > spooler_now_ms()
             ELSE m.lease_session IS NULL OR m.lease_session = $13
                 OR m.lease_until <= spooler_now_ms()
         END
         RETURNING m.id",
        &[
            &ids,
            &column(&|e| e.reports.delivery),
            &column(&|e| e.reports.non_delivery),
            &priorities,
            &time(&|e| e.deferred_until.map(|t| t.0).into_option()),
            &time(&|e| e.expires_at.map(|t| t.0).into_option()),
            &column(&|e| e.delete_after_submission),
            &column(&|e| e.is_report),
            &column(&|e| e.held),
            &column(&|e| e.preprocessed),
            &time(&|e| e.due().map(|due| due.0)),
            &mine,
            &session,
        ],
    )?;
    Ok(rows
        .iter()
        .map(|row| MessageId(row.get::<_, i64>(0) as u64))
        .collect())
}

/// Moves messages into folders, out of the queue and its leases: one statement for all.
pub fn move_all<C: GenericClient>(
    db: &mut Db<'_, C>,
    ids: &[i64],
    folders: &[String],
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    db.execute_text(
        "UPDATE messages AS m SET folder = f.folder, due = NULL, lease_session = NULL,
            lease_until = NULL
         FROM unnest($1::BIGINT[], $2::TEXT[]) AS f(id, folder) WHERE m.id = f.id",
        &[&ids, &folders],
    )?;
    Ok(())
}

/// Stores the recipients and properties of `envelopes` (already stored messages) where they
/// differ from the stored ones: one read for all of them, one write for all changed rows.
pub fn update_lists<C: GenericClient>(
    db: &mut Db<'_, C>,
    envelopes: &[&Envelope],
) -> Result<(), Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = envelopes.iter().map(|e| e.id.0 as i64).collect();
    let stored_recipients = read_recipients(db, &ids)?;
    let stored_properties = read_properties(db, &ids)?;
    let empty = RVec::new();
    let lists: Vec<(MessageId, &RVec<Recipient>, &[Recipient])> = envelopes
        .iter()
        .map(|e| {
            let stored = stored_recipients.get(&e.id).unwrap_or(&empty);
            (e.id, &e.recipients, stored.as_slice())
        })
        .collect();
    write_recipients(db, &lists)?;
    for envelope in envelopes {
        if stored_properties.get(&envelope.id).map_or(0, |p| p.len()) == 0
            && envelope.properties.is_empty()
        {
            continue;
        }
        if stored_properties.get(&envelope.id) != Some(&envelope.properties) {
            let names: Vec<&str> = envelope
                .properties
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            let values: Vec<&str> = envelope
                .properties
                .iter()
                .map(|p| p.value.as_str())
                .collect();
            let id = envelope.id.0 as i64;
            db.execute("DELETE FROM properties WHERE message_id = $1", &[&id])?;
            db.execute(
                "INSERT INTO properties (message_id, position, name, value)
                 SELECT $1, p.position - 1, p.name, p.value
                 FROM unnest($2::TEXT[], $3::TEXT[]) WITH ORDINALITY AS p(name, value, position)",
                &[&id, &names, &values],
            )?;
        }
    }
    Ok(())
}

/// Writes the recipients of each message that differ from its stored ones (the rows as they
/// are), in one statement, and removes stored rows past the end of its list.
fn write_recipients<C: GenericClient>(
    db: &mut Db<'_, C>,
    lists: &[(MessageId, &RVec<Recipient>, &[Recipient])],
) -> Result<(), Error> {
    let mut columns = RecipientColumns::default();
    for (id, recipients, stored) in lists {
        for (position, recipient) in recipients.iter().enumerate() {
            if stored.get(position) != Some(recipient) {
                columns.push(*id, position, recipient);
            }
        }
        if stored.len() > recipients.len() {
            db.execute(
                "DELETE FROM recipients WHERE message_id = $1 AND position >= $2",
                &[&(id.0 as i64), &(recipients.len() as i64)],
            )?;
        }
    }
    if columns.message_id.is_empty() {
        return Ok(());
    }
    let c = &columns;
    db.execute(
        "INSERT INTO recipients (message_id, position, address_type, address, kind, state,
            transport, attempts, next_attempt, last_answer, status_code, diagnostic,
            delay_warned, reported)
         SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[],
            $6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::TEXT[],
            $12::TEXT[], $13::BOOLEAN[], $14::BOOLEAN[])
         ON CONFLICT (message_id, position) DO UPDATE SET address_type = excluded.address_type,
            address = excluded.address, kind = excluded.kind, state = excluded.state,
            transport = excluded.transport, attempts = excluded.attempts,
            next_attempt = excluded.next_attempt, last_answer = excluded.last_answer,
            status_code = excluded.status_code, diagnostic = excluded.diagnostic,
            delay_warned = excluded.delay_warned, reported = excluded.reported",
        &[
            &c.message_id,
            &c.position,
            &c.address_type,
            &c.address,
            &c.kind,
            &c.state,
            &c.transport,
            &c.attempts,
            &c.next_attempt,
            &c.last_answer,
            &c.status_code,
            &c.diagnostic,
            &c.delay_warned,
            &c.reported,
        ],
    )?;
    Ok(())
}

/// Recipient rows as columns, for one `unnest` insert.
#[derive(Default)]
struct RecipientColumns {
    message_id: Vec<i64>,
    position: Vec<i64>,
    address_type: Vec<String>,
    address: Vec<String>,
    kind: Vec<i64>,
    state: Vec<i64>,
    transport: Vec<Option<String>>,
    attempts: Vec<i64>,
    next_attempt: Vec<Option<i64>>,
    last_answer: Vec<String>,
    status_code: Vec<String>,
    diagnostic: Vec<String>,
    delay_warned: Vec<bool>,
    reported: Vec<bool>,
}

impl RecipientColumns {
    fn push(&mut self, id: MessageId, position: usize, recipient: &Recipient) {
        let status = &recipient.status;
        self.message_id.push(id.0 as i64);
        self.position.push(position as i64);
        self.address_type
            .push(recipient.address.address_type().to_owned());
        self.address.push(recipient.address.address().to_owned());
        self.kind.push(recipient.kind.as_number());
        self.state.push(status.state.as_number());
        self.transport.push(
            status
                .transport
                .as_ref()
                .map(|t| t.to_string())
                .into_option(),
        );
        self.attempts.push(i64::from(status.attempts));
        self.next_attempt
            .push(status.next_attempt.map(|t| t.0).into_option());
        self.last_answer.push(status.last_answer.to_string());
        self.status_code.push(status.status_code.to_string());
        self.diagnostic.push(status.diagnostic.to_string());
        self.delay_warned.push(status.delay_warned);
        self.reported.push(status.reported);
    }
}

/// Reads the messages `ids` (those that exist), in the order of `ids`.
///
/// These reads of many ids at once are planned at each call, for the ids given
/// (`query_text`): a plan cached once for any array was made while the tables were nearly
/// empty, and went on scanning the whole of `recipients` for every batch as they grew.
pub fn read<C: GenericClient>(
    db: &mut Db<'_, C>,
    ids: &[i64],
    with_content: bool,
) -> Result<Vec<ReadMessage>, Error> {
    let rows = if with_content {
        db.query_text(
            "SELECT id, sender, report_delivery, report_non_delivery, priority, submitted_at,
                deferred_until, expires_at, delete_after_submission, is_report, held,
                preprocessed, folder, subject, size,
                (SELECT content FROM contents WHERE message_id = id)
             FROM messages WHERE id = ANY($1)",
            &[&ids],
        )?
    } else {
        db.query_text(
            "SELECT id, sender, report_delivery, report_non_delivery, priority, submitted_at,
                deferred_until, expires_at, delete_after_submission, is_report, held,
                preprocessed, folder, subject, size
             FROM messages WHERE id = ANY($1)",
            &[&ids],
        )?
    };
    let mut recipients = read_recipients(db, ids)?;
    let mut properties = read_properties(db, ids)?;
    let mut messages: HashMap<i64, ReadMessage> = HashMap::with_capacity(rows.len());
    for row in rows {
        let id = MessageId(row.get::<_, i64>(0) as u64);
        let sender: String = row.get(1);
        let Ok(sender) = Address::parse(&sender) else {
            log::error!("message {id}: its stored sender `{sender}` is not an address; skipped");
            continue;
        };
        let envelope = Envelope {
            id,
            sender,
            recipients: recipients.remove(&id).unwrap_or_default(),
            reports: ReportRequest {
                delivery: row.get(2),
                non_delivery: row.get(3),
            },
            priority: Priority::from_number(row.get(4)),
            submitted_at: Timestamp(row.get(5)),
            deferred_until: row.get::<_, Option<i64>>(6).map(Timestamp).into(),
            expires_at: row.get::<_, Option<i64>>(7).map(Timestamp).into(),
            delete_after_submission: row.get(8),
            is_report: row.get(9),
            held: row.get(10),
            preprocessed: row.get(11),
            properties: properties.remove(&id).unwrap_or_default(),
        };
        messages.insert(
            id.0 as i64,
            ReadMessage {
                envelope,
                folder: row.get(12),
                subject: row.get(13),
                size: row.get::<_, i64>(14) as u64,
                content: with_content
                    .then(|| row.get::<_, Option<Vec<u8>>>(15).unwrap_or_default()),
            },
        );
    }
    Ok(ids.iter().filter_map(|id| messages.remove(id)).collect())
}

fn read_recipients<C: GenericClient>(
    db: &mut Db<'_, C>,
    ids: &[i64],
) -> Result<HashMap<MessageId, RVec<Recipient>>, Error> {
    let rows = db.query_text(
        "SELECT message_id, address_type, address, kind, state, transport, attempts,
            next_attempt, last_answer, status_code, diagnostic, delay_warned, reported
         FROM recipients WHERE message_id = ANY($1) ORDER BY message_id, position",
        &[&ids],
    )?;
    let mut lists: HashMap<MessageId, RVec<Recipient>> = HashMap::new();
    for row in rows {
        let id = MessageId(row.get::<_, i64>(0) as u64);
        let recipient = recipient_from(&row);
        match recipient {
            Ok(recipient) => lists.entry(id).or_default().push(recipient),
            Err(why) => log::error!("message {id}: a stored recipient is unreadable: {why}"),
        }
    }
    Ok(lists)
}

fn recipient_from(row: &Row) -> Result<Recipient, provider_abi::AddressError> {
    let address_type: String = row.get(1);
    let address: String = row.get(2);
    Ok(Recipient {
        address: Address::new(&address_type, &address)?,
        kind: RecipientKind::from_number(row.get(3)),
        status: RecipientStatus {
            state: DeliveryState::from_number(row.get(4)),
            transport: row.get::<_, Option<String>>(5).map(RString::from).into(),
            attempts: u32::try_from(row.get::<_, i64>(6)).unwrap_or(u32::MAX),
            next_attempt: row.get::<_, Option<i64>>(7).map(Timestamp).into(),
            last_answer: row.get::<_, String>(8).into(),
            status_code: row.get::<_, String>(9).into(),
            diagnostic: row.get::<_, String>(10).into(),
            delay_warned: row.get(11),
            reported: row.get(12),
        },
    })
}

fn read_properties<C: GenericClient>(
    db: &mut Db<'_, C>,
    ids: &[i64],
) -> Result<HashMap<MessageId, RVec<Property>>, Error> {
    let rows = db.query_text(
        "SELECT message_id, name, value FROM properties WHERE message_id = ANY($1)
         ORDER BY message_id, position",
        &[&ids],
    )?;
    let mut lists: HashMap<MessageId, RVec<Property>> = HashMap::new();
    for row in rows {
        lists
            .entry(MessageId(row.get::<_, i64>(0) as u64))
            .or_default()
            .push(Property {
                name: row.get::<_, String>(1).into(),
                value: row.get::<_, String>(2).into(),
            });
    }
    Ok(lists)
}
