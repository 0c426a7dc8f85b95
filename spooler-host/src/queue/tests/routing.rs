//! Tests of routing: which transport gets which recipient, in which calls, and what happens
//! to a recipient no transport takes.

use provider_abi::store::{INBOX, SENT_ITEMS};
use provider_abi::{DeliveryState, RecipientKind, RecipientOutcome};
use provider_testkit::{MemoryStore, ScriptedTransport};

use crate::testing::{envelope, spooler_with, Parts, Spooler};

/// A spooler with transports `fax` and `smtp`, in that order; it and their scripts.
fn fax_and_smtp() -> (Spooler, ScriptedTransport, ScriptedTransport) {
    let (fax, smtp) = (
        ScriptedTransport::new(&["FAX"]),
        ScriptedTransport::new(&["SMTP"]),
    );
    let spooler = Parts::new(&MemoryStore::new())
        .transport("fax", &fax)
        .transport("smtp", &smtp)
        .start();
    (spooler, fax, smtp)
}

/// The recipients of each call `script` received, in order.
fn calls(script: &ScriptedTransport) -> Vec<Vec<String>> {
    let calls = script.submissions().into_iter();
    calls
        .map(|call| call.recipients.iter().map(|a| a.to_string()).collect())
        .collect()
}

#[test]
fn a_message_goes_to_the_transport_claiming_its_address_type_and_to_no_other() {
    let (spooler, fax, smtp) = fax_and_smtp();

    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));

    let sent = spooler.in_folder(id, SENT_ITEMS);
    let bob = &sent.envelope.recipients[0];
    assert_eq!(bob.status.state, DeliveryState::Delivered);
    assert_eq!(bob.status.transport.as_ref().into_option().unwrap(), "smtp");
    assert_eq!(calls(&smtp), [["SMTP:bob@example.net"]]);
    assert_eq!(smtp.submissions()[0].content, crate::testing::CONTENT);
    assert!(fax.submissions().is_empty());
}

#[test]
fn recipients_of_two_types_go_to_their_two_transports_in_one_call_each() {
    let (spooler, fax, smtp) = fax_and_smtp();

    let recipients = [
        "SMTP:bob@example.net",
        "FAX:+3312345678",
        "SMTP:carol@example.org",
    ];
    let id = spooler.submit(envelope(&recipients));

    spooler.in_folder(id, SENT_ITEMS);
    assert_eq!(
        calls(&smtp),
        [["SMTP:bob@example.net", "SMTP:carol@example.org"]]
    );
    assert_eq!(calls(&fax), [["FAX:+3312345678"]]);
}

#[test]
fn each_bcc_recipient_goes_in_a_call_of_its_own_and_to_and_cc_recipients_share_one() {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    let mut mail = envelope(&[
        "SMTP:to@example.net",
        "SMTP:hidden1@example.net",
        "SMTP:cc@example.net",
        "SMTP:hidden2@example.net",
    ]);
    let kinds = [
        RecipientKind::To,
        RecipientKind::Bcc,
        RecipientKind::Cc,
        RecipientKind::Bcc,
    ];
    for (recipient, kind) in mail.recipients.iter_mut().zip(kinds) {
        recipient.kind = kind;
    }

    let id = spooler.submit(mail);

    spooler.in_folder(id, SENT_ITEMS);
    let mut sorted = calls(&smtp);
    sorted.sort();
    assert_eq!(
        sorted,
        [
            vec!["SMTP:hidden1@example.net"],
            vec!["SMTP:hidden2@example.net"],
            vec!["SMTP:to@example.net", "SMTP:cc@example.net"],
        ]
    );
}

#[test]
fn a_recipient_no_transport_claims_fails_and_the_sender_gets_a_non_delivery_report() {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    let memory = &spooler.memory;
    let watching = spooler.watchers.subscribe();

    let id = spooler.submit(envelope(&["SMTP:bob@example.net", "X400:c=fr;s=dupont"]));

    let sent = spooler.in_folder(id, SENT_ITEMS);
    let stranger = &sent.envelope.recipients[1];
    assert_eq!(stranger.status.state, DeliveryState::Failed);
    assert_eq!(stranger.status.status_code, "5.4.4");
    assert_eq!(
        stranger.status.last_answer,
        "no transport claims address type X400"
    );
    assert_eq!(calls(&smtp), [["SMTP:bob@example.net"]]);

    let inbox = memory.folder(INBOX);
    assert_eq!(inbox.len(), 1);
    let report = &inbox[0];
    assert!(report.envelope.is_report);
    assert_eq!(
        report.envelope.recipients[0].address.to_string(),
        "SMTP:ann@example.com"
    );
    let text = String::from_utf8_lossy(&report.content);
    assert_eq!(text.matches("Final-Recipient:").count(), 1, "{text}");
    assert!(
        text.contains("c=fr;s=dupont\r\nAction: failed\r\n"),
        "{text}"
    );
    let event = watching
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("watchers hear of the report");
    assert_eq!(event.kind, crate::store::watchers::MailEventKind::Report);
    assert_eq!(event.folder, INBOX);
}

#[test]
fn a_recipient_one_transport_answers_not_mine_goes_to_the_next_transport_claiming_its_type() {
    let (first, second) = (
        ScriptedTransport::new(&["SMTP"]),
        ScriptedTransport::new(&["SMTP"]),
    );
    first.answer("SMTP:bob@example.net", RecipientOutcome::NotMine);
    let spooler = Parts::new(&MemoryStore::new())
        .transport("first", &first)
        .transport("second", &second)
        .start();

    let id = spooler.submit(envelope(&[
        "SMTP:bob@example.net",
        "SMTP:carol@example.org",
    ]));

    let sent = spooler.in_folder(id, SENT_ITEMS);
    let via = |index: usize| {
        let status = &sent.envelope.recipients[index].status;
        assert_eq!(status.state, DeliveryState::Delivered);
        status.transport.as_ref().into_option().unwrap().to_string()
    };
    assert_eq!(via(0), "second");
    assert_eq!(via(1), "first");
    assert_eq!(
        calls(&first),
        [["SMTP:bob@example.net", "SMTP:carol@example.org"]]
    );
    assert_eq!(calls(&second), [["SMTP:bob@example.net"]]);
}
