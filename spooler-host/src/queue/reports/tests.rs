//! The reports as their readers see them: parsed back by mail-parser and Python's `email`,
//! with the fields, parts and line lengths RFC 3464 and RFC 5322 ask for.

use super::*;
use provider_abi::MessageId;

#[test]
fn dates_are_rfc5322() {
    // mail-builder writes the day without a leading zero (RFC 5322's `1*2DIGIT`).
    assert_eq!(rfc5322_date(Timestamp(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
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
        report.contains("Final-Recipient: x-fax; +4930123\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
        "{report}"
    );
    assert!(
        report.contains("Diagnostic-Code: x-fax; number not in service"),
        "{report}"
    );
    // The text a person reads is wrapped to short lines: compared with spaces collapsed.
    let words = report.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains(
        "FAX:+4930123: the fax gateway refused the number (x-fax; number not in service)"
    ));
    assert!(
        words.contains("Why: the mailbox does not exist (bad-mailbox)."),
        "the class of 5.1.1, for a person: {report}"
    );
    assert!(report.contains("Subject: hi"));
    assert!(
        !report.contains("secret") && !report.contains("other@"),
        "{report}"
    );
}

#[test]
fn ret_full_returns_the_whole_message_in_a_failure_report_only() {
    let sender = Address::parse("SMTP:alice@example.com").unwrap();
    let mut failed = Recipient::new(Address::parse("FAX:+4930123").unwrap(), RecipientKind::To);
    failed.status.state = DeliveryState::Failed;
    let mut original = Envelope::new(sender, vec![failed.clone()]);
    original.properties.push(provider_abi::Property {
        name: RETURN.into(),
        value: "FULL".into(),
    });
    let content = b"From: alice@example.com\r\nSubject: hi\r\n\r\nthe whole body\r\n";
    let report = |kind| {
        let (_, report) = build(kind, &original, content, &[&failed], "host", Timestamp(0));
        String::from_utf8(report).unwrap()
    };
    let failure = report(ReportKind::Failed);
    assert!(
        failure.contains("Content-Type: message/rfc822"),
        "{failure}"
    );
    assert!(failure.contains("the whole body"), "{failure}");
    let delayed = report(ReportKind::Delayed);
    assert!(delayed.contains("text/rfc822-headers"), "{delayed}");
    assert!(!delayed.contains("the whole body"), "{delayed}");
}

/// A failed report about an SMTPUTF8 recipient of a message with a non-ASCII subject
/// and sender name, and a long diagnostic.
fn international_report() -> Vec<u8> {
    let sender = Address::parse("SMTP:jurgen@example.net").unwrap();
    let mut failed = Recipient::new(
        Address::parse("SMTP:jörg@müller.example").unwrap(),
        RecipientKind::Bcc,
    );
    failed.status.state = DeliveryState::Failed;
    failed.status.status_code = "5.1.1".into();
    failed.status.diagnostic = format!(
        "smtp; 550 5.1.1 <jörg@müller.example>: Recipient address rejected: {}",
        "user unknown in virtual mailbox table ".repeat(6)
    )
    .into();
    let mut original = Envelope::new(sender, vec![failed.clone()]);
    original.id = MessageId(7);
    let content = "From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jurgen@example.net>\n\
        To: friends: ann@example.net;\n\
        Bcc: jörg@müller.example\n\
        Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\
        \n\
        body\n";
    build(
        ReportKind::Failed,
        &original,
        content.as_bytes(),
        &[&failed],
        "host.example",
        Timestamp(1_795_457_702_000),
    )
    .1
}

#[test]
fn very_long_status_fields_are_folded_and_plain_text_stays_7bit() {
    assert_eq!(dsn_field("Action", "failed"), "Action: failed\r\n");
    let long = dsn_field(
        "Diagnostic-Code",
        &format!("smtp; 550 {}", "word ".repeat(300)),
    );
    assert!(long.split("\r\n").all(|line| line.len() <= 78), "{long}");
    assert!(long.starts_with("Diagnostic-Code: smtp; 550 word"));
    let text = wrapped(&"a ".repeat(100), TEXT_WIDTH, "  ", "    ");
    assert!(text.split("\r\n").all(|line| line.len() <= TEXT_WIDTH));
}

#[test]
fn reports_are_well_formed_mime_with_short_crlf_lines() {
    let report = international_report();
    for line in report.split(|&b| b == b'\n') {
        assert!(
            line.is_empty() || line.ends_with(b"\r"),
            "a bare LF in {}",
            String::from_utf8_lossy(&report)
        );
        assert!(line.len() <= 999, "{}", String::from_utf8_lossy(line));
    }
    assert!(report.is_ascii(), "{}", String::from_utf8_lossy(&report));
    let message = mail_parser::MessageParser::default()
        .parse(&report)
        .expect("the report parses");
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    let to = message.to().and_then(|to| to.first()).unwrap();
    assert_eq!(to.name(), Some("Jürgen Müller"));
    assert_eq!(to.address(), Some("jurgen@example.net"));
    let types: Vec<String> = message
        .parts
        .iter()
        .filter_map(|part| mail_parser::MimeHeaders::content_type(part))
        .map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or_default()))
        .collect();
    assert_eq!(
        types,
        [
            "multipart/report",
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    // The text a person reads stays within 78 characters a line, and 7-bit if ASCII.
    let raw_text = String::from_utf8_lossy(&report);
    let raw_text = raw_text
        .split("Content-Type: text/plain")
        .nth(1)
        .and_then(|part| part.split("\r\n\r\n").nth(1))
        .unwrap();
    assert!(raw_text.lines().all(|line| line.len() <= 78), "{raw_text}");
    let text = message.body_text(0).unwrap();
    assert!(text.contains("(\"Grüße\")"), "{text}");
    assert!(text.contains("jörg@müller.example (Bcc)"), "{text}");
    let status = String::from_utf8_lossy(message.parts[2].contents());
    assert!(
        status.contains("Final-Recipient: utf-8; j\\x{F6}rg@m\\x{FC}ller.example\r\n"),
        "{status}"
    );
    let quoted = String::from_utf8_lossy(message.parts[3].contents()).into_owned();
    assert!(
        quoted.contains("To: friends: ann@example.net;\r\n"),
        "{quoted}"
    );
    assert!(!quoted.contains("Bcc"), "{quoted}");
}

/// Python's `email` package reads the report as a mail program would: the report type,
/// the decoded subject and names, the delivery status fields per recipient.
#[test]
fn reports_parse_with_pythons_email_package() {
    let script = r#"
import email, email.policy, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
assert not m.defects, m.defects
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
assert str(m["Subject"]) == "Undelivered Mail Returned to Sender"
assert m["To"].addresses[0].display_name == "Jürgen Müller", m["To"]
text, status, headers = m.get_payload()
for part in m.walk():
    assert not part.defects, (part.get_content_type(), part.defects)
assert "Grüße" in text.get_content(), text.get_content()
blocks = status.get_payload()
assert len(blocks) == 2, blocks
assert blocks[1]["Action"] == "failed" and blocks[1]["Status"] == "5.1.1"
assert headers.get_content_type() == "text/rfc822-headers"
assert "Bcc" not in headers.get_content()
print("ok")
"#;
    let python = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut python = match python {
        Ok(child) => child,
        Err(error) if std::env::var_os("SPOOLER_REQUIRE_SERVERS").is_some_and(|v| v == "1") => {
            panic!("python3 is required (SPOOLER_REQUIRE_SERVERS=1) and cannot be run: {error}")
        }
        Err(error) => {
            eprintln!("skipped: python3 cannot be run: {error}");
            return;
        }
    };
    use std::io::Write as _;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(&international_report())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout == b"ok\n",
        "Python's email package rejected the report:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
