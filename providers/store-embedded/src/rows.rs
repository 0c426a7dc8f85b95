//! Envelopes to rows and back: `messages` holds one row per message, `contents` its content,
//! `recipients` and `properties` one row per recipient and property, so statuses are
//! queryable on their own and a status change rewrites only the recipients it changed.

use provider_abi::abi_stable::std_types::{RString, RVec};
use provider_abi::headers::header;
use provider_abi::{
    Address, DeliveryState, Envelope, MessageId, Priority, Property, Recipient, RecipientKind,
    RecipientStatus, ReportRequest, Timestamp,
};
use rusqlite::blob::ZeroBlob;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row, MAIN_DB};

/// Inserts a message into `folder` and returns its id.
pub fn insert(
    connection: &Connection,
    folder: &str,
    envelope: &Envelope,
    content: &[u8],
) -> rusqlite::Result<MessageId> {
    let subject = header(content, "Subject").unwrap_or_default();
    let due = if folder == provider_abi::store::OUTBOX {
        envelope.due().map(|due| due.0)
    } else {
        None
    };
    connection
        .prepare_cached(
            "INSERT INTO messages (folder, sender, report_delivery, report_non_delivery, priority,
                submitted_at, deferred_until, expires_at, delete_after_submission, is_report, held,
                preprocessed, subject, size, due)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            folder,
            envelope.sender.to_string(),
            envelope.reports.delivery,
            envelope.reports.non_delivery,
            envelope.priority.as_number(),
            envelope.submitted_at.0,
            envelope.deferred_until.map(|t| t.0).into_option(),
            envelope.expires_at.map(|t| t.0).into_option(),
            envelope.delete_after_submission,
            envelope.is_report,
            envelope.held,
            envelope.preprocessed,
            subject,
            content.len() as i64,
            due,
        ])?;
    let id = MessageId(connection.last_insert_rowid() as u64);
    let mut insert_content =
        connection.prepare_cached("INSERT INTO contents (message_id, content) VALUES (?1, ?2)")?;
    if is_small(content) {
        insert_content.execute(params![id.0 as i64, content])?;
    } else {
        insert_content.execute(params![id.0 as i64, room_for(content)])?;
        write_content(connection, id, content)?;
    }
    write_recipients(connection, id, &envelope.recipients, &[])?;
    write_properties(connection, id, &envelope.properties)?;
    Ok(id)
}

/// Deletes a message with its rows in every table: foreign keys are not enforced (see
/// `schema::prepare` for why), so no `ON DELETE CASCADE` does it.
pub fn delete(connection: &Connection, id: MessageId) -> rusqlite::Result<()> {
    for statement in [
        "DELETE FROM contents WHERE message_id = ?1",
        "DELETE FROM recipients WHERE message_id = ?1",
        "DELETE FROM properties WHERE message_id = ?1",
        "DELETE FROM messages WHERE id = ?1",
    ] {
        connection
            .prepare_cached(statement)?
            .execute([id.0 as i64])?;
    }
    Ok(())
}

/// Replaces a message's content (nothing, if there is no such message).
pub fn replace_content(
    connection: &Connection,
    id: MessageId,
    content: &[u8],
) -> rusqlite::Result<()> {
    let mut update_content =
        connection.prepare_cached("UPDATE contents SET content = ?2 WHERE message_id = ?1")?;
    if is_small(content) {
        if update_content.execute(params![id.0 as i64, content])? == 0 {
            return Ok(());
        }
    } else {
        if update_content.execute(params![id.0 as i64, room_for(content)])? == 0 {
            return Ok(());
        }
        write_content(connection, id, content)?;
    }
    connection
        .prepare_cached("UPDATE messages SET size = ?2, subject = ?3 WHERE id = ?1")?
        .execute(params![
            id.0 as i64,
            content.len() as i64,
            header(content, "Subject").unwrap_or_default()
        ])?;
    Ok(())
}

/// Contents up to this size (nearly every message) are bound as a parameter and read as a
/// column: SQLite copies them once more, which costs little at this size, and it saves the
/// incremental blob handle, whose opening and closing (a cursor, a statement of SQLite's
/// own, a seek per open) cost more than the copy. Larger contents go through the
/// incremental blob I/O of [`write_content`] and [`content_in`], so that a message at the
/// size limit is not in memory several times over.
const SMALL_CONTENT: usize = 256 * 1024;

fn is_small(content: &[u8]) -> bool {
    content.len() <= SMALL_CONTENT
}

/// A zero-filled blob the size of `content`, for [`write_content`] to fill.
fn room_for(content: &[u8]) -> ZeroBlob {
    ZeroBlob(content.len() as u64)
}

/// Writes message `id`'s content into the room made for it, with SQLite's incremental blob
/// I/O: a bound parameter would be copied by SQLite first, so a message at the size limit
/// would be in memory twice more.
fn write_content(connection: &Connection, id: MessageId, content: &[u8]) -> rusqlite::Result<()> {
    connection
        .blob_open(MAIN_DB, "contents", "content", id.0 as i64, false)?
        .write_all_at(content, 0)
}

/// The column expression that reads a message's content from `contents`, with parameter `?2`
/// bound to [`SMALL_CONTENT`]: the content itself when it is small, only its length otherwise
/// (`length` of a blob reads no overflow page), for [`content_in`].
pub const CONTENT_COLUMN: &str =
    "CASE WHEN length(content) <= ?2 THEN content ELSE length(content) END";

/// [`SMALL_CONTENT`] as the value bound to `?2` for [`CONTENT_COLUMN`].
pub const SMALL_CONTENT_PARAMETER: i64 = SMALL_CONTENT as i64;

/// Message `id`'s content from the value of [`CONTENT_COLUMN`]: a small one as read; a larger
/// one straight into one buffer with incremental blob I/O (reading the column would have
/// SQLite assemble it in a buffer of its own first).
pub fn content_in(
    connection: &Connection,
    id: MessageId,
    column: ValueRef<'_>,
) -> rusqlite::Result<Vec<u8>> {
    if let ValueRef::Blob(content) = column {
        return Ok(content.to_vec());
    }
    let blob = connection.blob_open(MAIN_DB, "contents", "content", id.0 as i64, true)?;
    let mut content = vec![0; blob.len()];
    blob.read_at_exact(&mut content, 0)?;
    Ok(content)
}

/// A message's content (see [`content_in`]).
pub fn read_content(connection: &Connection, id: MessageId) -> rusqlite::Result<Option<Vec<u8>>> {
    connection
        .prepare_cached(&format!(
            "SELECT {CONTENT_COLUMN} FROM contents WHERE message_id = ?1"
        ))?
        .query_row(params![id.0 as i64, SMALL_CONTENT_PARAMETER], |row| {
            content_in(connection, id, row.get_ref(0)?)
        })
        .optional()
}

/// Stores `envelope` over the stored one (same id); returns false if there is none.
pub fn update(connection: &Connection, envelope: &Envelope) -> rusqlite::Result<bool> {
    let id = envelope.id.0 as i64;
    // `due` is set in the Outbox only; the UPDATE checks the folder itself rather than have
    // a SELECT read it first (one statement less per delivery).
    let updated = connection
        .prepare_cached(
            "UPDATE messages SET report_delivery = ?2, report_non_delivery = ?3, priority = ?4,
                deferred_until = ?5, expires_at = ?6, delete_after_submission = ?7, is_report = ?8,
                held = ?9, preprocessed = ?10, due = CASE WHEN folder = ?12 THEN ?11 END
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            envelope.reports.delivery,
            envelope.reports.non_delivery,
            envelope.priority.as_number(),
            envelope.deferred_until.map(|t| t.0).into_option(),
            envelope.expires_at.map(|t| t.0).into_option(),
            envelope.delete_after_submission,
            envelope.is_report,
            envelope.held,
            envelope.preprocessed,
            envelope.due().map(|due| due.0),
            provider_abi::store::OUTBOX,
        ])?;
    if updated == 0 {
        return Ok(false);
    }
    let stored = read_recipients(connection, envelope.id)?;
    write_recipients(connection, envelope.id, &envelope.recipients, &stored)?;
    if read_properties(connection, envelope.id)? != envelope.properties {
        connection
            .prepare_cached("DELETE FROM properties WHERE message_id = ?1")?
            .execute([id])?;
        write_properties(connection, envelope.id, &envelope.properties)?;
    }
    Ok(true)
}

/// Writes the recipients that differ from `stored` (the rows as they are), and removes
/// stored rows past the end of `recipients`. A status change touches only its own rows: a
/// message to ten thousand recipients does not rewrite ten thousand rows per answer.
fn write_recipients(
    connection: &Connection,
    id: MessageId,
    recipients: &[Recipient],
    stored: &[Recipient],
) -> rusqlite::Result<()> {
    let mut write = connection.prepare_cached(
        "INSERT INTO recipients (message_id, position, address_type, address, kind, state,
            transport, attempts, next_attempt, last_answer, status_code, diagnostic, delay_warned,
            reported)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (message_id, position) DO UPDATE SET address_type = ?3, address = ?4,
            kind = ?5, state = ?6, transport = ?7, attempts = ?8, next_attempt = ?9,
            last_answer = ?10, status_code = ?11, diagnostic = ?12, delay_warned = ?13,
            reported = ?14",
    )?;
    for (position, recipient) in recipients.iter().enumerate() {
        if stored.get(position) == Some(recipient) {
            continue;
        }
        let status = &recipient.status;
        write.execute(params![
            id.0 as i64,
            position as i64,
            recipient.address.address_type(),
            recipient.address.address(),
            recipient.kind.as_number(),
            status.state.as_number(),
            status.transport.as_ref().map(|t| t.as_str()).into_option(),
            status.attempts,
            status.next_attempt.map(|t| t.0).into_option(),
            status.last_answer.as_str(),
            status.status_code.as_str(),
            status.diagnostic.as_str(),
            status.delay_warned,
            status.reported,
        ])?;
    }
    if stored.len() > recipients.len() {
        connection
            .prepare_cached("DELETE FROM recipients WHERE message_id = ?1 AND position >= ?2")?
            .execute(params![id.0 as i64, recipients.len() as i64])?;
    }
    Ok(())
}

fn write_properties(
    connection: &Connection,
    id: MessageId,
    properties: &[Property],
) -> rusqlite::Result<()> {
    let mut insert_property = connection.prepare_cached(
        "INSERT INTO properties (message_id, position, name, value) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (position, property) in properties.iter().enumerate() {
        insert_property.execute(params![
            id.0 as i64,
            position as i64,
            property.name.as_str(),
            property.value.as_str()
        ])?;
    }
    Ok(())
}

/// The columns [`read_envelope`] reads, in its order.
pub const ENVELOPE_COLUMNS: &str = "id, sender, report_delivery, report_non_delivery, priority,
    submitted_at, deferred_until, expires_at, delete_after_submission, is_report, held,
    preprocessed, folder";

/// Reads an envelope from a row of [`ENVELOPE_COLUMNS`] plus its recipients and properties.
/// Returns it with its folder.
pub fn read_envelope(
    connection: &Connection,
    row: &Row<'_>,
) -> rusqlite::Result<(Envelope, String)> {
    let id = MessageId(row.get::<_, i64>(0)? as u64);
    let sender: String = row.get(1)?;
    let envelope = Envelope {
        id,
        sender: parse_address(&sender, 1)?,
        recipients: read_recipients(connection, id)?,
        reports: ReportRequest {
            delivery: row.get(2)?,
            non_delivery: row.get(3)?,
        },
        priority: Priority::from_number(row.get(4)?),
        submitted_at: Timestamp(row.get(5)?),
        deferred_until: row.get::<_, Option<i64>>(6)?.map(Timestamp).into(),
        expires_at: row.get::<_, Option<i64>>(7)?.map(Timestamp).into(),
        delete_after_submission: row.get(8)?,
        is_report: row.get(9)?,
        held: row.get(10)?,
        preprocessed: row.get(11)?,
        properties: read_properties(connection, id)?,
    };
    Ok((envelope, row.get(12)?))
}

fn read_recipients(connection: &Connection, id: MessageId) -> rusqlite::Result<RVec<Recipient>> {
    let mut statement = connection.prepare_cached(
        "SELECT address_type, address, kind, state, transport, attempts, next_attempt,
            last_answer, status_code, diagnostic, delay_warned, reported
         FROM recipients WHERE message_id = ?1 ORDER BY position",
    )?;
    let rows = statement.query_map([id.0 as i64], |row| {
        let address_type: String = row.get(0)?;
        let address: String = row.get(1)?;
        Ok(Recipient {
            address: Address::new(&address_type, &address)
                .map_err(|error| conversion_error(1, error))?,
            kind: RecipientKind::from_number(row.get(2)?),
            status: RecipientStatus {
                state: DeliveryState::from_number(row.get(3)?),
                transport: row.get::<_, Option<String>>(4)?.map(RString::from).into(),
                attempts: row.get(5)?,
                next_attempt: row.get::<_, Option<i64>>(6)?.map(Timestamp).into(),
                last_answer: row.get::<_, String>(7)?.into(),
                status_code: row.get::<_, String>(8)?.into(),
                diagnostic: row.get::<_, String>(9)?.into(),
                delay_warned: row.get(10)?,
                reported: row.get(11)?,
            },
        })
    })?;
    rows.collect()
}

fn read_properties(connection: &Connection, id: MessageId) -> rusqlite::Result<RVec<Property>> {
    let mut statement = connection.prepare_cached(
        "SELECT name, value FROM properties WHERE message_id = ?1 ORDER BY position",
    )?;
    let rows = statement.query_map([id.0 as i64], |row| {
        Ok(Property {
            name: row.get::<_, String>(0)?.into(),
            value: row.get::<_, String>(1)?.into(),
        })
    })?;
    rows.collect()
}

fn parse_address(text: &str, column: usize) -> rusqlite::Result<Address> {
    Address::parse(text).map_err(|error| conversion_error(column, error))
}

fn conversion_error(column: usize, error: provider_abi::AddressError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(error))
}
