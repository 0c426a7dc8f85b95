//! Delivery status notifications (RFC 3464 `multipart/report` messages): delivery reports,
//! non-delivery reports and delay warnings, for the sender's Inbox.
//!
//! A report lists only the recipients it is about. It is addressed to the original sender,
//! the only one who may see Bcc recipients, and the original headers it quotes never carry a
//! `Bcc` field. No report is ever made about a report.

use mail_builder::headers::address::Address as MailAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::HeaderType;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use provider_abi::headers::{field_spans, header, header_block_len, mailboxes};

use crate::base::bounce::BounceClass;
use crate::base::mail::rfc5322_date;
use provider_abi::store::INBOX;
use provider_abi::{
    Address, DeliveryState, Envelope, Recipient, RecipientKind, RecipientStatus, Timestamp,
};

use crate::base::properties::{ORIGINAL_RECIPIENT, RETURN};

/// What a report says about its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// They were delivered (the sender asked to know).
    Delivered,
    /// They failed for good.
    Failed,
    /// They are still waiting; delivery goes on.
    Delayed,
}

impl ReportKind {
    /// Its name in metrics and delivery events: `delivery`, `non_delivery` or `delay`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Delivered => "delivery",
            ReportKind::Failed => "non_delivery",
            ReportKind::Delayed => "delay",
        }
    }

    fn subject(self) -> &'static str {
        match self {
            ReportKind::Delivered => "Delivery Status Notification (Success)",
            ReportKind::Failed => "Undelivered Mail Returned to Sender",
            ReportKind::Delayed => "Delayed Mail (still being retried)",
        }
    }

    fn action(self) -> &'static str {
        match self {
            ReportKind::Delivered => "delivered",
            ReportKind::Failed => "failed",
            ReportKind::Delayed => "delayed",
        }
    }

    fn lead(self) -> &'static str {
        match self {
            ReportKind::Delivered => "Your message was delivered to the following recipients.",
            ReportKind::Failed => {
                "Your message could not be delivered to the following recipients. \
                 This is a permanent error; the spooler will not try again."
            }
            ReportKind::Delayed => {
                "Your message has not yet been delivered to the following recipients. \
                 The spooler keeps trying; you need not send it again."
            }
        }
    }
}

/// The sender of every report.
pub fn reporter() -> Address {
    Address::new("LOCAL", "mailer-daemon").expect("a valid address")
}

/// The reports a pass over `original` owes its sender, as the sender asked for them: one
/// about the recipients that failed and one about those delivered since the last report,
/// and a delay warning for those still pending when the message has waited long
/// (`delayed_long`) and they were not warned about yet. Each comes with its kind.
pub fn owed(
    original: &Envelope,
    original_content: &[u8],
    delayed_long: bool,
    reporting_host: &str,
    now: Timestamp,
) -> Vec<(ReportKind, Envelope, Vec<u8>)> {
    let wanted = [
        (
            ReportKind::Failed,
            original.reports.non_delivery,
            DeliveryState::Failed,
        ),
        (
            ReportKind::Delivered,
            original.reports.delivery,
            DeliveryState::Delivered,
        ),
    ];
    let mut reports: Vec<(ReportKind, Vec<&Recipient>)> = wanted
        .into_iter()
        .filter(|(_, wanted, _)| *wanted)
        .map(|(kind, _, state)| {
            let about = original
                .recipients
                .iter()
                .filter(|r| r.status.state == state && !r.status.reported)
                .collect();
            (kind, about)
        })
        .collect();
    if delayed_long {
        let about = original
            .recipients
            .iter()
            .filter(|r| !r.status.is_final() && !r.status.delay_warned)
            .collect();
        reports.push((ReportKind::Delayed, about));
    }
    reports
        .into_iter()
        .filter(|(_, about)| !about.is_empty())
        .map(|(kind, about)| {
            let (envelope, content) = build(
                kind,
                original,
                original_content,
                &about,
                reporting_host,
                now,
            );
            (kind, envelope, content)
        })
        .collect()
}

/// The envelope and RFC 5322 content of a report about `recipients` of `original`, built
/// by `mail-builder`: MIME boundaries, encoded words for non-ASCII names, folded header
/// fields and transfer encodings for lines that would be too long are its work.
///
/// `recipients` must not be empty; the caller never makes a report about a report.
pub fn build(
    kind: ReportKind,
    original: &Envelope,
    original_content: &[u8],
    recipients: &[&Recipient],
    reporting_host: &str,
    now: Timestamp,
) -> (Envelope, Vec<u8>) {
    debug_assert!(!original.is_report, "never a report about a report");
    let report = MimePart::new(
        // The report type written as part of the type, so it stays unquoted as mail
        // programs (and this project's tests) are used to; the boundary is added after it.
        ContentType::new("multipart/report; report-type=delivery-status"),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "utf-8"),
                human_part(kind, original, original_content, recipients),
            ),
            MimePart::new(
                ContentType::new("message/delivery-status"),
                // As bytes, so no charset is added: the part is 7-bit ASCII.
                delivery_status(kind, original, recipients, reporting_host, now).into_bytes(),
            )
            // Mail readers parse this part's fields as they stand: it is kept 7-bit
            // (non-ASCII is escaped by `dsn_text`) and never transfer-encoded.
            .transfer_encoding("7bit"),
            returned(kind, original, original_content),
        ],
    );
    let content = MessageBuilder::new()
        .from((
            "Mail Delivery System".to_owned(),
            format!("mailer-daemon@{reporting_host}"),
        ))
        .header("To", report_recipient(original, original_content))
        .subject(kind.subject())
        .date(Date::new(now.0.div_euclid(1000)))
        .message_id(format!("report.{}.{}@{reporting_host}", original.id, now.0))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .expect("writing into memory does not fail");
    let mut to_sender = Recipient::new(original.sender.clone(), RecipientKind::To);
    to_sender.status.state = DeliveryState::Delivered;
    to_sender.status.last_answer = format!("placed in {INBOX}").into();
    to_sender.status.reported = true;
    let mut envelope = Envelope::new(reporter(), vec![to_sender]);
    envelope.is_report = true;
    (envelope, content)
}

/// The report's third part: the whole original (`message/rfc822`) in a failure report when
/// the sender asked for it (RET=FULL), else its headers (`text/rfc822-headers`). The stored
/// message has no Bcc field: submission removed it.
fn returned(kind: ReportKind, original: &Envelope, original_content: &[u8]) -> MimePart<'static> {
    let full = kind == ReportKind::Failed
        && original
            .properties
            .iter()
            .any(|p| p.name.as_str() == RETURN && p.value.eq_ignore_ascii_case("FULL"));
    if full {
        // RFC 2046 allows a message/rfc822 part no transfer encoding but 7bit or 8bit (or
        // binary): the message goes as it is, its lines ended with CRLF.
        let mut message = Vec::with_capacity(original_content.len() + 64);
        for line in original_content.split_inclusive(|&b| b == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            message.extend_from_slice(text.strip_suffix(b"\r").unwrap_or(text));
            message.extend_from_slice(b"\r\n");
        }
        let encoding = if message.is_ascii() { "7bit" } else { "8bit" };
        MimePart::new(ContentType::new("message/rfc822"), message).transfer_encoding(encoding)
    } else {
        MimePart::new(
            ContentType::new("text/rfc822-headers").attribute("charset", "utf-8"),
            quoted_headers(original_content),
        )
    }
}

/// The report's `To`: the original sender, with the display name (encoded if need be) that
/// the original's `From` gives that address; without one, the bare address.
fn report_recipient(original: &Envelope, original_content: &[u8]) -> HeaderType<'static> {
    let address = original.sender.address().to_owned();
    let name = mailboxes(original_content, "From")
        .into_iter()
        .find(|from| from.address.eq_ignore_ascii_case(&address))
        .and_then(|from| from.name)
        .filter(|name| !name.trim().is_empty());
    match name {
        Some(name) => MailAddress::new_address(Some(name), address).into(),
        None => Raw::new(address).into(),
    }
}

/// The part a person reads: what happened, the message (its subject decoded), and each
/// recipient with the answer, wrapped to lines of at most 76 characters.
fn human_part(
    kind: ReportKind,
    original: &Envelope,
    original_content: &[u8],
    recipients: &[&Recipient],
) -> String {
    let mut text = String::new();
    let mut paragraph = |words: String| {
        text.push_str(&wrapped(&words, TEXT_WIDTH, "", "    "));
        text.push_str("\r\n");
    };
    paragraph(kind.lead().to_owned());
    let subject = header(original_content, "Subject").filter(|s| !s.is_empty());
    paragraph(match subject {
        Some(subject) => format!(
            "Message {} (\"{subject}\"), submitted {}.",
            original.id,
            rfc5322_date(original.submitted_at)
        ),
        None => format!(
            "Message {}, submitted {}.",
            original.id,
            rfc5322_date(original.submitted_at)
        ),
    });
    for recipient in recipients {
        let bcc = if recipient.kind == RecipientKind::Bcc {
            " (Bcc)"
        } else {
            ""
        };
        let line = format!(
            "{}{bcc}: {}",
            recipient.address,
            human_answer(&recipient.status)
        );
        text.push_str(&wrapped(&line, TEXT_WIDTH, "  ", "    "));
        if let Some(class) = BounceClass::of(&recipient.status) {
            let why = format!("Why: {} ({}).", class.meaning(), class.name());
            text.push_str(&wrapped(&why, TEXT_WIDTH, "    ", "      "));
        }
    }
    text
}

/// `words` broken at spaces into lines of at most `width` characters (a longer word stands
/// on a line of its own), the first line starting with `first`, the others with `rest`;
/// each line ends with CRLF.
fn wrapped(words: &str, width: usize, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut line_has_word = false;
    for word in words.split_whitespace() {
        if line_has_word && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push_str("\r\n");
            line = rest.to_owned();
            line_has_word = false;
        }
        if line_has_word {
            line.push(' ');
        }
        line.push_str(word);
        line_has_word = true;
    }
    out.push_str(&line);
    out.push_str("\r\n");
    out
}

/// How wide the text a person reads is wrapped: under mail-builder's 76 so that plain ASCII
/// stays 7-bit, not quoted-printable.
const TEXT_WIDTH: usize = 72;

/// The longest line RFC 5322 allows (998 octets without CRLF); delivery status fields
/// longer than that are folded. Shorter ones stay on one line, as programs that read
/// reports by line (and this project's tests) expect.
const MAX_LINE: usize = 998;

/// `name: value` as a delivery status field line (or lines, folded at spaces, if longer
/// than RFC 5322 allows), ending with CRLF.
fn dsn_field(name: &str, value: &str) -> String {
    let line = format!("{name}: {value}");
    if line.len() <= MAX_LINE {
        line + "\r\n"
    } else {
        wrapped(&line, 76, "", " ")
    }
}

/// The `message/delivery-status` part (RFC 3464): the per-message fields, then a block of
/// fields per recipient. Every line is 7-bit and within RFC 5322's 998 octets (longer
/// values are folded at spaces).
fn delivery_status(
    kind: ReportKind,
    original: &Envelope,
    recipients: &[&Recipient],
    reporting_host: &str,
    now: Timestamp,
) -> String {
    let mut text = String::new();
    let mut field = |name: &str, value: &str| text.push_str(&dsn_field(name, value));
    field(
        "Reporting-MTA",
        &format!("dns; {}", dsn_text(reporting_host)),
    );
    field("Original-Envelope-Id", &original.id.to_string());
    field("Arrival-Date", &rfc5322_date(original.submitted_at));
    for recipient in recipients {
        text.push_str("\r\n");
        let mut field = |name: &str, value: &str| text.push_str(&dsn_field(name, value));
        let status = &recipient.status;
        if let Some(given) = original_recipient(original, &recipient.address) {
            field("Original-Recipient", &dsn_text(given));
        }
        field("Final-Recipient", &dsn_address(&recipient.address));
        field("Action", kind.action());
        field("Status", &status_code(kind, status));
        if let Some(transport) = status.transport.as_ref().into_option() {
            field("X-Spooler-Transport", &dsn_text(transport));
        }
        let diagnostic = if status.diagnostic.is_empty() {
            status.last_answer.as_str()
        } else {
            status.diagnostic.as_str()
        };
        if !diagnostic.is_empty() {
            field("Diagnostic-Code", &diagnostic_code(diagnostic));
        }
        if let Some(next) = status
            .next_attempt
            .into_option()
            .filter(|_| kind == ReportKind::Delayed)
        {
            field("Will-Retry-Until", &rfc5322_date(next));
        }
        field("Last-Attempt-Date", &rfc5322_date(now));
    }
    text
}

/// `text` in 7 bits: each character outside printable ASCII written `\x{HEX}` as RFC 6533
/// writes UTF-8 in delivery status fields.
fn dsn_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == ' ' || c.is_ascii_graphic() && c != '\\' {
            out.push(c);
        } else if c.is_whitespace() {
            out.push(' ');
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// The original's header block as `text/rfc822-headers` quotes it: without any `Bcc` field
/// (found as `-t` finds them), each line ending in CRLF.
fn quoted_headers(content: &[u8]) -> String {
    let block = &content[..header_block_len(content)];
    let mut kept = Vec::with_capacity(block.len());
    let mut from = 0;
    for span in field_spans(block, "Bcc") {
        kept.extend_from_slice(&block[from..span.start]);
        from = span.end;
    }
    kept.extend_from_slice(&block[from..]);
    let text = String::from_utf8_lossy(&kept);
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    out
}

/// The answer a person reads: the transport's text, and why.
/// What `address` was given as (`type; address`), when an alias made it or the client's
/// ORCPT named it.
fn original_recipient<'a>(original: &'a Envelope, address: &Address) -> Option<&'a str> {
    let name = format!("{ORIGINAL_RECIPIENT}{address}");
    original
        .properties
        .iter()
        .find(|p| p.name.as_str() == name)
        .map(|p| p.value.as_str())
}

fn human_answer(status: &RecipientStatus) -> String {
    match (status.last_answer.is_empty(), status.diagnostic.is_empty()) {
        (false, false) if status.last_answer != status.diagnostic => {
            format!("{} ({})", status.last_answer, status.diagnostic)
        }
        (false, _) => status.last_answer.to_string(),
        (true, false) => status.diagnostic.to_string(),
        (true, true) => "no details".into(),
    }
}

fn status_code(kind: ReportKind, status: &RecipientStatus) -> String {
    let code = status.status_code.as_str();
    let plausible = code.split('.').count() == 3 && code.starts_with(['2', '4', '5']);
    match (plausible, kind) {
        (true, _) => code.to_owned(),
        (false, ReportKind::Delivered) => "2.0.0".into(),
        (false, ReportKind::Failed) => "5.0.0".into(),
        (false, ReportKind::Delayed) => "4.0.0".into(),
    }
}

/// `rfc822; bob@example.com` for SMTP, `utf-8; j\x{FC}rgen@example.net` for an SMTPUTF8
/// address (RFC 6533), `x-fax; +4930…` for other address types.
fn dsn_address(address: &Address) -> String {
    if address.has_type("SMTP") && address.address().is_ascii() {
        format!("rfc822; {}", address.address())
    } else if address.has_type("SMTP") {
        format!("utf-8; {}", dsn_text(address.address()))
    } else {
        format!(
            "x-{}; {}",
            address.address_type().to_ascii_lowercase(),
            dsn_text(address.address())
        )
    }
}

/// A diagnostic as `type; text`, keeping a transport's own `smtp; …` form.
fn diagnostic_code(diagnostic: &str) -> String {
    let one_line = dsn_text(diagnostic);
    match one_line.split_once(';') {
        Some((kind, _))
            if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            one_line
        }
        _ => format!("x-spooler; {one_line}"),
    }
}

#[cfg(test)]
mod tests;
