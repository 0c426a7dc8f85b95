//! Tests of recipients that cannot go yet: deferred by their transport, or waiting for an
//! offline transport to come back.

use std::time::Duration;

use provider_abi::store::{OUTBOX, SENT_ITEMS};
use provider_abi::{
    DeliveryState, MessageId, Notice, ProviderState, RecipientOutcome, StoredMessage, Timestamp,
};
use provider_testkit::{Call, ScriptedTransport};

use crate::providers::host_services::ProviderNotice;
use crate::queue::QueueCommand;
use crate::testing::{envelope, eventually, spooler_with, Spooler};

/// Message `id` once it is back in the queue, unlocked, after an attempt at its first
/// recipient.
fn back_in_the_queue(spooler: &Spooler, id: MessageId) -> StoredMessage {
    eventually(&format!("message {id} back in the queue"), || {
        let message = spooler.message(id)?;
        let recipient = &message.envelope.recipients[0];
        let answered = !recipient.status.last_answer.is_empty();
        (answered && !spooler.memory.locked().contains(&id)).then_some(message)
    })
}

#[test]
fn a_deferred_recipient_stays_in_the_outbox_unlocked_until_its_next_attempt() {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    smtp.answer(
        "SMTP:bob@example.net",
        RecipientOutcome::deferred("451 4.7.1 greylisted", Some(900)),
    );
    let memory = &spooler.memory;
    let before = Timestamp::now();

    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));

    let queued = back_in_the_queue(&spooler, id);
    assert_eq!(queued.folder, OUTBOX);
    let status = &queued.envelope.recipients[0].status;
    assert_eq!(status.state, DeliveryState::Pending);
    assert_eq!(status.attempts, 1);
    assert_eq!(status.last_answer, "deferred by smtp: 451 4.7.1 greylisted");
    let next = status.next_attempt.into_option().expect("a next attempt");
    assert!(
        next >= before.plus(Duration::from_secs(900)),
        "the transport's retry-after holds"
    );
    assert_eq!(smtp.submissions().len(), 1);
    assert!(memory.folder(SENT_ITEMS).is_empty());
}

#[test]
fn a_transport_that_panics_has_its_recipients_deferred_and_the_message_kept() {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    smtp.then(Call::Panic("out of sockets".into()));

    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));

    let queued = back_in_the_queue(&spooler, id);
    assert_eq!(queued.folder, OUTBOX);
    let status = &queued.envelope.recipients[0].status;
    assert_eq!((status.state, status.attempts), (DeliveryState::Pending, 1));
    assert!(
        status.last_answer.contains("out of sockets"),
        "{}",
        status.last_answer
    );
    assert!(status.next_attempt.into_option().is_some());
}

/// Starts a spooler whose transport `smtp` is offline and submits a message for it; the
/// spooler, the transport and the message, once parked.
fn parked() -> (Spooler, ScriptedTransport, MessageId) {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    // What the provider's `set_status` does when it loses its link.
    spooler
        .status
        .set("smtp", ProviderState::Offline, "link down");
    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));
    let queued = back_in_the_queue(&spooler, id);
    let status = &queued.envelope.recipients[0].status;
    assert_eq!(status.state, DeliveryState::Pending);
    assert_eq!(
        status.last_answer,
        "waiting: transport smtp is offline (link down)"
    );
    assert!(
        smtp.submissions().is_empty(),
        "an offline transport is not called"
    );
    (spooler, smtp, id)
}

#[test]
fn an_offline_transport_s_mail_waits_and_goes_when_it_says_it_is_back_online() {
    let (spooler, smtp, id) = parked();

    let back = ProviderNotice {
        instance: "smtp".into(),
        notice: Notice::BackOnline,
    };
    spooler.notices.send(back).unwrap();

    spooler.in_folder(id, SENT_ITEMS);
    assert_eq!(smtp.submissions().len(), 1);
    assert_eq!(spooler.status.state("smtp"), ProviderState::Online);
}

#[test]
fn a_flush_sends_the_mail_that_waited_for_a_transport_online_again() {
    let (spooler, smtp, id) = parked();

    spooler.status.set("smtp", ProviderState::Online, "");
    spooler
        .queue
        .send(QueueCommand::Flush(Some("smtp".into())))
        .unwrap();

    spooler.in_folder(id, SENT_ITEMS);
    assert_eq!(smtp.submissions().len(), 1);
}
