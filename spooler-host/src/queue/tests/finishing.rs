//! Tests of the end of a message's trip: the move to Sent Items (or deletion) once every
//! recipient is final, delivery reports, and outbound hooks.

use std::sync::Arc;
use std::time::Duration;

use provider_abi::store::{INBOX, OUTBOX, SENT_ITEMS};
use provider_abi::{
    DeliveryState, Direction, Hook, HookAction, HookMessage, Library, ProviderError,
    RecipientOutcome,
};
use provider_testkit::{MemoryStore, ScriptedTransport};

use crate::store::watchers::MailEventKind;
use crate::testing::{envelope, eventually, spooler_with, Parts};

#[test]
fn a_message_moves_to_sent_items_only_once_every_recipient_is_final() {
    let smtp = ScriptedTransport::new(&["SMTP"]);
    smtp.answer(
        "SMTP:carol@example.org",
        RecipientOutcome::deferred("452 mailbox full", None),
    );
    let memory = MemoryStore::new();
    let policy = crate::queue::policy::RetryPolicy {
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let spooler = Parts::new(&memory)
        .transport("smtp", &smtp)
        .policy(policy)
        .start();

    let id = spooler.submit(envelope(&[
        "SMTP:bob@example.net",
        "SMTP:carol@example.org",
    ]));

    let waiting = eventually("bob delivered, carol still pending", || {
        let message = spooler.message(id)?;
        let bob = &message.envelope.recipients[0].status;
        (bob.state == DeliveryState::Delivered && !memory.locked().contains(&id)).then_some(message)
    });
    assert_eq!(waiting.folder, OUTBOX);
    assert_eq!(
        waiting.envelope.recipients[1].status.state,
        DeliveryState::Pending
    );
    smtp.answer(
        "SMTP:carol@example.org",
        RecipientOutcome::failed("5.2.2", "smtp; 552 mailbox full", "Mailbox full for good."),
    );

    let sent = spooler.in_folder(id, SENT_ITEMS);
    let carol = &sent.envelope.recipients[1];
    assert_eq!(carol.status.state, DeliveryState::Failed);
    assert!(carol.status.attempts >= 2);
    let calls = smtp.submissions();
    assert!(
        calls[1..].iter().all(|c| c.recipients.len() == 1),
        "bob, delivered, is never sent again"
    );
    assert!(memory.locked().is_empty());
}

#[test]
fn a_message_to_be_deleted_after_submission_is_deleted_once_delivered() {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    let memory = &spooler.memory;
    let mut mail = envelope(&["SMTP:bob@example.net"]);
    mail.delete_after_submission = true;

    spooler.submit(mail);

    eventually("the delivered message deleted", || {
        (smtp.submissions().len() == 1 && memory.messages().is_empty()).then_some(())
    });
}

#[test]
fn a_sender_who_asked_for_delivery_reports_gets_one_in_the_inbox_and_watchers_hear_of_it() {
    let (spooler, _) = spooler_with("smtp", "SMTP");
    let memory = &spooler.memory;
    let watching = spooler.watchers.subscribe();
    let mut mail = envelope(&["SMTP:bob@example.net"]);
    mail.reports.delivery = true;

    let id = spooler.submit(mail);

    spooler.in_folder(id, SENT_ITEMS);
    let inbox = memory.folder(INBOX);
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].envelope.is_report);
    let text = String::from_utf8_lossy(&inbox[0].content);
    assert!(text.contains("Action: delivered\r\n"), "{text}");
    let event = watching.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(event.kind, MailEventKind::Report);
    assert_eq!(
        (event.folder.as_str(), event.id),
        (INBOX, inbox[0].envelope.id.to_string())
    );
    let sent = spooler.message(id).unwrap();
    assert!(sent.envelope.recipients[0].status.reported);
}

/// A hook that files outbound mail in `Archive` and leaves inbound mail alone.
struct Archive;

impl Hook for Archive {
    fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError> {
        Ok(match message.direction {
            Direction::Outbound => HookAction::MoveTo {
                folder: "Archive".into(),
            },
            _ => HookAction::Leave,
        })
    }
}

fn archiving() -> Library {
    Library::new("archiving", "0.1.0").hook("archive", |_| Ok(Archive))
}

#[test]
fn an_outbound_hook_files_a_finished_message_where_it_says_and_a_failing_one_is_passed_over() {
    let smtp = ScriptedTransport::new(&["SMTP"]);
    let memory = MemoryStore::new();
    let spooler = Parts::new(&memory)
        .transport("smtp", &smtp)
        .hook(
            "broken",
            Arc::new(|| Err(ProviderError::temporary("cannot be opened"))),
        )
        .hook(
            "archive",
            Arc::new(|| provider_testkit::open_hook(archiving, "archive", "").map(|(h, _)| h)),
        )
        .start();

    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));

    spooler.in_folder(id, "Archive");
    assert!(memory.folder(SENT_ITEMS).is_empty());
    assert_eq!(smtp.submissions().len(), 1);
}
