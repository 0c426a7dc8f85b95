//! Delivery status notifications (RFC 3464 `multipart/report` messages): delivery reports,
//! non-delivery reports and delay warnings, for the sender's Inbox.
//!
//! A report lists only the recipients it is about. It is addressed to the original sender,
//! the only one who may see Bcc recipients, and the original headers it quotes never carry a
//! `Bcc` field. No report is ever made about a report.

use std::fmt::Write;

use provider_abi::store::INBOX;
use provider_abi::{
    Address, DeliveryState, Envelope, Recipient, RecipientKind, RecipientStatus, Timestamp,
};

use crate::clients::submission::ORIGINAL_RECIPIENT;

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
/// (`delayed_long`) and they were not warned about yet.
pub fn owed(
    original: &Envelope,
    original_content: &[u8],
    delayed_long: bool,
    reporting_host: &str,
    now: Timestamp,
) -> Vec<(Envelope, Vec<u8>)> {
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
            build(
                kind,
                original,
                original_content,
                &about,
                reporting_host,
                now,
            )
        })
        .collect()
}

/// The envelope and RFC 5322 content of a report about `recipients` of `original`.
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
    let boundary = format!("=_report_{}_{}", original.id, now.0);
    let mut text = String::new();
    let date = rfc5322_date(now);
    let _ = write!(
        text,
        "From: Mail Delivery System <mailer-daemon@{reporting_host}>\r\n\
         To: {sender}\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <report.{id}.{millis}@{reporting_host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {lead}\r\n\
         \r\n\
         Message {id}, submitted {submitted}.\r\n\
         \r\n",
        sender = original.sender.address(),
        subject = kind.subject(),
        id = original.id,
        millis = now.0,
        lead = kind.lead(),
        submitted = rfc5322_date(original.submitted_at),
    );
    for recipient in recipients {
        let status = &recipient.status;
        let _ = write!(text, "  {}", recipient.address);
        if recipient.kind == RecipientKind::Bcc {
            text.push_str(" (Bcc)");
        }
        let _ = write!(text, ": {}\r\n", human_answer(status));
    }
    let _ = write!(
        text,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {reporting_host}\r\n\
         Original-Envelope-Id: {id}\r\n\
         Arrival-Date: {arrival}\r\n",
        id = original.id,
        arrival = rfc5322_date(original.submitted_at),
    );
    for recipient in recipients {
        let status = &recipient.status;
        text.push_str("\r\n");
        if let Some(original) = original_recipient(original, &recipient.address) {
            let _ = write!(text, "Original-Recipient: rfc822; {original}\r\n");
        }
        let _ = write!(
            text,
            "Final-Recipient: {}\r\nAction: {}\r\nStatus: {}\r\n",
            dsn_address(&recipient.address),
            kind.action(),
            status_code(kind, status),
        );
        if let Some(transport) = status.transport.as_ref().into_option() {
            let _ = write!(text, "X-Spooler-Transport: {transport}\r\n");
        }
        let diagnostic = if status.diagnostic.is_empty() {
            status.last_answer.as_str()
        } else {
            status.diagnostic.as_str()
        };
        if !diagnostic.is_empty() {
            let _ = write!(text, "Diagnostic-Code: {}\r\n", diagnostic_code(diagnostic));
        }
        if let Some(next) = status
            .next_attempt
            .into_option()
            .filter(|_| kind == ReportKind::Delayed)
        {
            let _ = write!(text, "Will-Retry-Until: {}\r\n", rfc5322_date(next));
        }
        let _ = write!(text, "Last-Attempt-Date: {date}\r\n");
    }
    let _ = write!(
        text,
        "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{}\r\n--{boundary}--\r\n",
        headers_without_bcc(original_content)
    );
    let mut to_sender = Recipient::new(original.sender.clone(), RecipientKind::To);
    to_sender.status.state = DeliveryState::Delivered;
    to_sender.status.last_answer = format!("placed in {INBOX}").into();
    to_sender.status.reported = true;
    let mut envelope = Envelope::new(reporter(), vec![to_sender]);
    envelope.is_report = true;
    (envelope, text.into_bytes())
}

/// The answer a person reads: the transport's text, and why.
/// The address the client gave for `address`, when an alias made it.
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

/// `rfc822; bob@example.com` for SMTP, `x-fax; +4930…` for other address types.
fn dsn_address(address: &Address) -> String {
    if address.has_type("SMTP") {
        format!("rfc822; {}", address.address())
    } else {
        format!(
            "x-{}; {}",
            address.address_type().to_ascii_lowercase(),
            address.address()
        )
    }
}

/// A diagnostic as `type; text`, keeping a transport's own `smtp; …` form.
fn diagnostic_code(diagnostic: &str) -> String {
    let one_line = diagnostic.replace(['\r', '\n'], " ");
    match one_line.split_once(';') {
        Some((kind, _))
            if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            one_line
        }
        _ => format!("x-spooler; {one_line}"),
    }
}

/// The original's header block without any `Bcc` field (folded lines included).
fn headers_without_bcc(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let mut out = String::new();
    let mut skipping = false;
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.push_str(line);
                out.push_str("\r\n");
            }
            continue;
        }
        skipping = line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("bcc"));
        if !skipping {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// Weekday names, from the weekday of day 0 of the epoch (a Thursday).
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 18:21:42 +0000`.
pub fn rfc5322_date(time: Timestamp) -> String {
    let seconds = time.0.div_euclid(1000);
    let days = seconds.div_euclid(86400);
    let of_day = seconds.rem_euclid(86400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Howard Hinnant's days-to-civil conversion.
/// `Sun Nov 29 09:31:08`, as `mailq` shows arrival times (UTC).
pub fn asctime(time: Timestamp) -> String {
    let seconds = time.0.div_euclid(1000);
    let days = seconds.div_euclid(86400);
    let of_day = seconds.rem_euclid(86400);
    let (_, month, day) = civil_from_days(days);
    format!(
        "{} {} {day:2} {:02}:{:02}:{:02}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::MessageId;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(
            rfc5322_date(Timestamp(0)),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(Timestamp(1_795_457_702_000)),
            "Mon, 23 Nov 2026 18:15:02 +0000"
        );
    }

    #[test]
    fn a_non_delivery_report_names_the_failure_and_hides_bcc_headers() {
        let sender = Address::parse("SMTP:alice@example.com").unwrap();
        let mut failed = Recipient::new(Address::parse("FAX:+4930123").unwrap(), RecipientKind::To);
        failed.status.state = DeliveryState::Failed;
        failed.status.status_code = "5.1.1".into();
        failed.status.diagnostic = "x-fax; number not in service".into();
        failed.status.last_answer = "the fax gateway refused the number".into();
        let mut original = Envelope::new(sender, vec![failed.clone()]);
        original.id = MessageId(42);
        let content = b"From: alice@example.com\r\nBcc: secret@example.com,\r\n  other@example.com\r\nSubject: hi\r\n\r\nbody";
        let (envelope, report) = build(
            ReportKind::Failed,
            &original,
            content,
            &[&failed],
            "host",
            Timestamp(0),
        );
        let report = String::from_utf8(report).unwrap();
        assert!(envelope.is_report);
        assert_eq!(
            envelope.recipients[0].address.to_string(),
            "SMTP:alice@example.com"
        );
        assert!(
            report.contains(
                "Final-Recipient: x-fax; +4930123\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            ),
            "{report}"
        );
        assert!(
            report.contains("Diagnostic-Code: x-fax; number not in service"),
            "{report}"
        );
        assert!(report.contains(
            "FAX:+4930123: the fax gateway refused the number (x-fax; number not in service)"
        ));
        assert!(report.contains("Subject: hi"));
        assert!(
            !report.contains("secret") && !report.contains("other@"),
            "{report}"
        );
    }
}
