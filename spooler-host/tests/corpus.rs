//! The message corpus: real-world-shaped messages in `tests/corpus/` (written for this
//! project, as Mutt, Thunderbird, Outlook, git send-email and RFC 5322's own examples write
//! them), each `NAME.eml` with a `NAME.expected` giving the recipients `submit -t` must take
//! from it and the subject `queue`, `list` and `show` display.
//!
//! For each message: the recipients and subject are as expected; the submission passes the
//! address checks and its stored copy keeps no Bcc field; the whole message parses (MIME
//! parts, attachments); and a non-delivery report about it parses too, quoting its headers
//! without Bcc.

use std::fs;
use std::path::{Path, PathBuf};

use provider_abi::headers::{header, header_fields};
use provider_abi::Timestamp;
use spooler_host::cli::sendmail::{self, SubmitArgs};
use spooler_host::config::LocalNames;
use spooler_host::intake::aliases::Aliases;
use spooler_host::intake::checks::envelope_and_content;
use spooler_host::intake::Rules;
use spooler_host::protocol::KindName;
use spooler_host::queue::reports::{self, ReportKind};

#[derive(serde::Deserialize)]
struct Expected {
    subject: String,
    recipients: Vec<String>,
}

fn corpus() -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut messages: Vec<PathBuf> = fs::read_dir(&folder)
        .expect("the corpus folder")
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "eml"))
        .collect();
    messages.sort();
    assert!(messages.len() >= 8, "the corpus is in {}", folder.display());
    messages
}

fn kind_name(kind: KindName) -> &'static str {
    match kind {
        KindName::To => "to",
        KindName::Cc => "cc",
        KindName::Bcc => "bcc",
    }
}

/// What `submit -t` and the displays make of one message, or what differs from expected.
fn check(path: &Path) -> Result<(), String> {
    let content = fs::read(path).map_err(|e| e.to_string())?;
    let expected_text =
        fs::read_to_string(path.with_extension("expected")).map_err(|e| e.to_string())?;
    let expected: Expected = toml::from_str(&expected_text).map_err(|e| e.to_string())?;

    let args = SubmitArgs {
        from_headers: true,
        ..SubmitArgs::default()
    };
    let now = Timestamp(1_795_457_702_000);
    let submission = sendmail::submission(&args, "SMTP:sender@example.com", &content, now)?;
    let recipients: Vec<String> = submission
        .recipients
        .iter()
        .map(|r| format!("{} {}", kind_name(r.kind), r.address))
        .collect();
    if recipients != expected.recipients {
        return Err(format!(
            "recipients {recipients:#?}, expected {:#?}",
            expected.recipients
        ));
    }
    let subject = header(&content, "Subject").unwrap_or_default();
    if subject != expected.subject {
        return Err(format!(
            "subject {subject:?}, expected {:?}",
            expected.subject
        ));
    }

    let rules = Rules {
        max_message_size: usize::MAX,
        duplicate_window: std::time::Duration::from_secs(3600),
        aliases: std::sync::Arc::new(Aliases::new(LocalNames::default())),
    };
    let (envelope, stored) = envelope_and_content(&submission, content.clone(), &rules, now)
        .map_err(|refusal| format!("refused: {}", refusal.message))?;
    if header_fields(&stored)
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("bcc"))
    {
        return Err("the stored copy keeps a Bcc field".into());
    }
    let message = mail_parser::MessageParser::default()
        .parse(&stored)
        .ok_or("the stored copy does not parse")?;
    if message.parts.is_empty() {
        return Err("the stored copy has no parts".into());
    }

    let about: Vec<_> = envelope.recipients.iter().collect();
    let (_, report) = reports::build(
        ReportKind::Failed,
        &envelope,
        &stored,
        &about,
        "host.example",
        now,
    );
    let report = mail_parser::MessageParser::default()
        .parse(&report)
        .ok_or("the report does not parse")?;
    let quoted = report
        .parts
        .iter()
        .find(|part| {
            mail_parser::MimeHeaders::content_type(*part)
                .is_some_and(|t| t.subtype() == Some("rfc822-headers"))
        })
        .ok_or("the report quotes no headers")?;
    let quoted = header_fields(quoted.contents());
    if quoted
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("bcc"))
    {
        return Err("the report quotes a Bcc field".into());
    }
    if !quoted
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("subject") && *value == expected.subject)
    {
        return Err(format!("the report quotes no subject: {quoted:?}"));
    }
    Ok(())
}

#[test]
fn every_corpus_message_gives_its_recipients_and_subject() {
    let failures: Vec<String> = corpus()
        .iter()
        .filter_map(|path| {
            check(path)
                .err()
                .map(|why| format!("{}: {why}", path.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
