//! Fuzz targets for what the host reads from others: the control protocol's frames (a
//! request line, a submission's content after it) and the answers a client reads, and
//! `sendmail -t`'s message (recipients from its headers, Bcc fields removed, the headers a
//! report quotes). Run on stable by `cargo test` (bolero replays the seed corpus in
//! `__fuzz__/` and tries random inputs for a second); see README.md, "Fuzzing".

use provider_abi::headers::header_fields;
use provider_abi::Timestamp;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::sendmail::{self, SubmitArgs};
use crate::config::LocalNames;
use crate::front::control::{read_request, ReadError};
use crate::intake::aliases::Aliases;
use crate::intake::checks::{envelope_and_content, Rules};
use crate::protocol::{
    KindName, PriorityName, Request, Response, Source, Submission, SubmittedRecipient,
};
use crate::queue::reports::{self, ReportKind};

#[global_allocator]
static ALLOCATOR: fuzz_support::Counting = fuzz_support::Counting;

/// The largest message the control targets accept, small so that the memory bound means
/// something.
const MAX_MESSAGE: usize = 64 * 1024;

/// Reads `stream` as a client's side of a connection, request after request, as the host
/// does: no panic, and never more held than the message limit and a multiple of the input.
fn read_control_stream(stream: &[u8]) {
    let mut reader = stream;
    fuzz_support::assert_peak_within(
        MAX_MESSAGE + 64 * stream.len() + 64 * 1024,
        "reading requests",
        || loop {
            match read_request(&mut reader, MAX_MESSAGE) {
                Ok(Some((Request::Submit(submission), content))) => {
                    assert_eq!(content.len(), submission.content_length)
                }
                Ok(Some((_, content))) => assert!(content.is_empty()),
                Err(ReadError::Unreadable(_)) => {}
                Ok(None) | Err(ReadError::Refused(..) | ReadError::Gone(_)) => break,
            }
        },
    );
}

#[test]
fn control_stream_of_bytes() {
    bolero::check!(name = "control_stream").for_each(read_control_stream);
}

#[test]
fn control_stream_of_json_pieces() {
    const PIECES: &[&[u8]] = &[
        b"{\"command\":\"submit\",",
        b"\"sender\":\"SMTP:ann@example.org\",",
        b"\"recipients\":[",
        b"{\"address\":\"bob@example.net\",\"kind\":\"bcc\"}",
        b"],",
        b"\"content_length\":",
        b"0",
        b"5",
        b"65537",
        b"18446744073709551616",
        b"-1",
        b"1e3",
        b"}\n",
        b"\n",
        b",",
        b"{\"command\":\"show\",\"id\":\"00000000000000ff\",\"content\":true}\n",
        b"{\"command\":\"list\",\"folder\":\"Outbox\",\"after\":null,\"limit\":4294967296}\n",
        b"{\"command\":\"watch\"}\n",
        b"\"priority\":\"high\",",
        b"\"\\u0000\\ud800\"",
        b"[[[[[[[[",
        b"Subject: x\r\n\r\nbody\r\n",
        b"\xff",
    ];
    bolero::check!(name = "control_stream_from_pieces")
        .for_each(|picks: &[u8]| read_control_stream(&fuzz_support::assemble(picks, PIECES)));
}

/// A request as a client writes it is read back as the same request, with its content.
#[test]
fn control_request_round_trips() {
    type Fields = (
        u8,
        String,
        Vec<(String, u8)>,
        Option<i64>,
        Option<u32>,
        bool,
        Vec<u8>,
    );
    bolero::check!().with_type::<Fields>().for_each(
        |(which, text, recipients, time, limit, flag, content)| {
            let request = match which % 5 {
                0 => Request::Submit(Submission {
                    sender: text.clone(),
                    recipients: recipients
                        .iter()
                        .map(|(address, kind)| SubmittedRecipient {
                            address: address.clone(),
                            kind: [KindName::To, KindName::Cc, KindName::Bcc][*kind as usize % 3],
                        })
                        .collect(),
                    delivery_report: *flag,
                    no_non_delivery_report: !*flag,
                    priority: [PriorityName::Low, PriorityName::Normal, PriorityName::High]
                        [*which as usize % 3],
                    deferred_until: *time,
                    expires_at: time.map(i64::wrapping_neg),
                    delete_after_submission: *flag,
                    return_full: *flag,
                    source: [Source::Control, Source::Listener, Source::Sendmail]
                        [*which as usize % 3],
                    content_length: content.len(),
                }),
                1 => Request::Show {
                    id: text.clone(),
                    content: *flag,
                },
                2 => Request::List {
                    folder: text.clone(),
                    after: recipients.first().map(|(after, _)| after.clone()),
                    limit: *limit,
                },
                3 => Request::Flush {
                    transport: flag.then(|| text.clone()),
                },
                _ => Request::Delete { id: text.clone() },
            };
            let mut frame = serde_json::to_vec(&request).expect("requests serialize");
            frame.push(b'\n');
            let sent = if matches!(request, Request::Submit(_)) {
                frame.extend_from_slice(content);
                content.clone()
            } else {
                Vec::new()
            };
            let mut reader = frame.as_slice();
            match read_request(&mut reader, usize::MAX) {
                Ok(Some((read, read_content))) => {
                    assert_eq!(read, request);
                    assert_eq!(read_content, sent);
                }
                other => panic!("{request:?} read back as {other:?}"),
            }
            assert!(reader.is_empty());
        },
    );
}

/// A client reads any answer line without panicking.
#[test]
fn control_answer_of_bytes() {
    bolero::check!(name = "control_answer").for_each(|line: &[u8]| {
        let _ = serde_json::from_slice::<Response>(line);
    });
}

/// `sendmail -t` with `input` on standard input: the message as read (a lone dot ends it),
/// its recipients from To, Cc and Bcc (SMTP mailboxes or bare local names, groups or not), its envelope and
/// Bcc-less content, and a non-delivery report quoting its headers. No Bcc field survives into what is stored or
/// quoted, as far as the header reader can tell.
fn sendmail_t(input: &[u8]) {
    let args = SubmitArgs {
        from_headers: true,
        ..SubmitArgs::default()
    };
    let now = Timestamp(1_795_000_000_000);
    let stored =
        fuzz_support::assert_peak_within(64 * input.len() + 64 * 1024, "sendmail -t", || {
            let origin = sendmail::message::Origin {
                host: "host.example",
                from: "me@host.example",
                full_name: None,
                now,
            };
            let content = sendmail::message::with_missing_fields(
                sendmail::message::message_from_input(input.to_vec(), false),
                &origin,
            );
            let submission = sendmail::submission(&args, "LOCAL:me", &content, now).ok()?;
            let rules = Rules {
                max_message_size: usize::MAX,
                duplicate_window: Duration::from_secs(86_400),
                aliases: Arc::new(Aliases::new(LocalNames::default())),
            };
            envelope_and_content(&submission, content, &rules, now).ok()
        });
    let Some((envelope, content)) = stored else {
        return;
    };
    // A header names RFC 5322 mailboxes (or bare local names, which go to the local store):
    // never another of the spooler's own address types.
    assert!(
        envelope
            .recipients
            .iter()
            .all(|r| r.address.has_type("SMTP") || r.address.has_type("LOCAL")),
        "{:?}",
        envelope.recipients
    );
    let is_bcc = |(name, _): &(String, String)| name.eq_ignore_ascii_case("bcc");
    assert!(!header_fields(&content).iter().any(is_bcc), "{content:?}");
    let recipients: Vec<_> = envelope.recipients.iter().collect();
    let (_, report) = reports::build(
        ReportKind::Failed,
        &envelope,
        &content,
        &recipients,
        "host.example",
        now,
    );
    let report = mail_parser::MessageParser::default()
        .parse(&report)
        .expect("reports parse");
    let quoted = report
        .parts
        .iter()
        .find(|part| {
            mail_parser::MimeHeaders::content_type(*part)
                .is_some_and(|t| t.subtype() == Some("rfc822-headers"))
        })
        .expect("a report quotes the headers")
        .contents();
    assert!(!header_fields(quoted).iter().any(is_bcc), "{quoted:?}");
}

#[test]
fn sendmail_t_of_bytes() {
    bolero::check!(name = "sendmail_t").for_each(sendmail_t);
}

#[test]
fn sendmail_t_of_header_pieces() {
    bolero::check!(name = "sendmail_t_from_pieces").for_each(|picks: &[u8]| {
        sendmail_t(&fuzz_support::assemble(picks, fuzz_support::HEADER_PIECES))
    });
}

/// Found by `sendmail_t_from_pieces`: `-t` read `\rBcc:` as a Bcc field (names are trimmed)
/// while the Bcc remover did not, so the stored content kept it for every recipient to see.
#[test]
fn regression_a_bcc_field_after_a_carriage_return_is_removed() {
    sendmail_t(b"\rBcc:To:To:");
    let content = b"\rBcc: secret@example.org\r\nTo: ann@example.org\r\n\r\nbody\r\n".to_vec();
    assert_eq!(
        crate::intake::checks::without_bcc_header(content),
        b"To: ann@example.org\r\n\r\nbody\r\n"
    );
}
