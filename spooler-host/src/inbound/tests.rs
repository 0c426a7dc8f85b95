//! In-process tests of the inbound manager: fetched mail is stored in the Inbox, watchers
//! hear of it, and its transport is told only once it is stored.

use provider_abi::abi_stable::std_types::{ROption, RVec};
use provider_abi::store::INBOX;
use provider_abi::{DeliveryState, ErrorKind, InboundMessage, Notice};

use crate::inbound::InboundCommand;
use crate::providers::host_services::ProviderNotice;
use crate::store::watchers::MailEventKind;
use crate::testing::{eventually, spooler_with};

/// A message from the outside with source id `source_id`, envelope in its headers only.
fn arriving(source_id: &str) -> InboundMessage {
    let content = format!(
        "From: dan@example.org\r\nTo: ann@example.com\r\nSubject: news {source_id}\r\n\r\nHi.\r\n"
    );
    InboundMessage {
        source_id: source_id.into(),
        sender: ROption::RNone,
        recipients: RVec::new(),
        content: content.into_bytes().into(),
    }
}

#[test]
fn a_fetched_message_is_stored_in_the_inbox_watchers_hear_of_it_and_then_it_is_acknowledged() {
    let (spooler, pop) = spooler_with("pop", "POP");
    pop.add_inbound(arriving("uid-1"));
    let memory = &spooler.memory;
    let watching = spooler.watchers.subscribe();

    spooler
        .inbound
        .send(InboundCommand::Fetch(Some("pop".into())))
        .unwrap();

    // Read once acknowledged: by then it must be stored.
    let inbox = eventually("the acknowledgement", || {
        (!pop.acknowledged().is_empty()).then(|| memory.folder(INBOX))
    });
    assert_eq!(pop.acknowledged(), ["uid-1"]);
    assert_eq!(inbox.len(), 1, "stored before it was acknowledged");
    let stored = &inbox[0].envelope;
    assert_eq!(stored.sender.to_string(), "SMTP:dan@example.org");
    assert_eq!(
        stored.recipients[0].address.to_string(),
        "SMTP:ann@example.com"
    );
    assert_eq!(stored.recipients[0].status.state, DeliveryState::Delivered);
    let event = watching
        .try_recv()
        .expect("told before the acknowledgement");
    assert_eq!(event.kind, MailEventKind::NewMail);
    assert_eq!(
        (event.folder.as_str(), event.subject.as_str()),
        (INBOX, "news uid-1")
    );
    assert_eq!(event.id, stored.id.to_string());
}

#[test]
fn a_transport_s_new_mail_notice_has_its_mail_fetched_at_once() {
    let (spooler, pop) = spooler_with("pop", "POP");
    let memory = &spooler.memory;
    pop.add_inbound(arriving("uid-7"));

    let notice = ProviderNotice {
        instance: "pop".into(),
        notice: Notice::NewMail,
    };
    spooler.notices.send(notice).unwrap();

    eventually("the message stored", || memory.folder(INBOX).pop());
    eventually("the acknowledgement", || {
        (pop.acknowledged() == ["uid-7"]).then_some(())
    });
}

#[test]
fn a_message_the_store_cannot_take_stays_unacknowledged_at_its_source() {
    let (spooler, pop) = spooler_with("pop", "POP");
    pop.add_inbound(arriving("uid-1"));
    let memory = &spooler.memory;
    memory.fail_commits(1, ErrorKind::Temporary);

    spooler
        .inbound
        .send(InboundCommand::Fetch(Some("pop".into())))
        .unwrap();
    // The manager answers a shutdown once the fetch before it is over.
    let (done, stopped) = crossbeam_channel::bounded(1);
    spooler
        .inbound
        .send(InboundCommand::Shutdown(done))
        .unwrap();
    stopped
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();

    assert!(memory.messages().is_empty());
    assert!(pop.acknowledged().is_empty());
}
