//! Tests of operators' commands to the queue manager: hold, release and delete.

use std::time::Duration;

use provider_abi::abi_stable::std_types::ROption;
use provider_abi::store::{OUTBOX, SENT_ITEMS};
use provider_abi::{MessageId, Timestamp};
use provider_testkit::ScriptedTransport;

use crate::queue::QueueCommand;
use crate::testing::{envelope, spooler_with, Spooler};

/// Starts a spooler with transport `smtp` and queues a message for it that is due only in an
/// hour, so that no pass works on it meanwhile.
fn queued_for_later() -> (Spooler, ScriptedTransport, MessageId) {
    let (spooler, smtp) = spooler_with("smtp", "SMTP");
    let mut mail = envelope(&["SMTP:bob@example.net"]);
    let later = Timestamp::now().plus(Duration::from_secs(3600));
    mail.recipients[0].status.next_attempt = ROption::RSome(later);
    let id = spooler.submit(mail);
    (spooler, smtp, id)
}

#[test]
fn a_held_message_stays_held_until_released_and_then_goes_at_once() {
    let (spooler, smtp, id) = queued_for_later();

    assert_eq!(spooler.ask(|reply| QueueCommand::Hold(id, reply)), Ok(()));
    let held = spooler.message(id).unwrap();
    assert!(held.envelope.held);
    assert_eq!(held.folder, OUTBOX);

    assert_eq!(
        spooler.ask(|reply| QueueCommand::Release(id, reply)),
        Ok(())
    );
    spooler.in_folder(id, SENT_ITEMS);
    assert!(!spooler.message(id).unwrap().envelope.held);
    assert_eq!(smtp.submissions().len(), 1);
}

#[test]
fn delete_removes_a_queued_message_for_good_and_commands_about_a_missing_one_say_so() {
    let (spooler, smtp, id) = queued_for_later();

    assert_eq!(spooler.ask(|reply| QueueCommand::Delete(id, reply)), Ok(()));
    assert!(spooler.memory.messages().is_empty());
    let missing = format!("there is no message {id}");
    assert_eq!(
        spooler.ask(|reply| QueueCommand::Delete(id, reply)),
        Err(missing.clone())
    );
    assert_eq!(
        spooler.ask(|reply| QueueCommand::Hold(id, reply)),
        Err(missing.clone())
    );
    assert_eq!(
        spooler.ask(|reply| QueueCommand::Release(id, reply)),
        Err(missing)
    );
    assert!(smtp.submissions().is_empty());
}

#[test]
fn a_finished_message_cannot_be_held() {
    let (spooler, _) = spooler_with("smtp", "SMTP");
    let id = spooler.submit(envelope(&["SMTP:bob@example.net"]));
    spooler.in_folder(id, SENT_ITEMS);

    let refused = spooler.ask(|reply| QueueCommand::Hold(id, reply));

    assert_eq!(
        refused,
        Err(format!(
            "message {id} is not queued (it is in {SENT_ITEMS})"
        ))
    );
    assert!(!spooler.message(id).unwrap().envelope.held);
}
