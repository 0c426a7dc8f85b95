//! In-process tests of the store thread over a memory store: group commits answer each
//! caller with its own receipt, a failing store fails its callers and changes nothing, and
//! reads answer.

use std::sync::Arc;

use provider_abi::store::{StoreObject, INBOX, OUTBOX};
use provider_abi::{ErrorKind, MessageId, ProviderKind};
use provider_testkit::MemoryStore;

use crate::providers::status::StatusTable;
use crate::providers::worker::Opener;
use crate::store::thread::{Commit, StoreClient};
use crate::testing::{envelope, CONTENT};

/// The store thread over `memory`.
fn store_thread(memory: &MemoryStore) -> StoreClient {
    let status = StatusTable::default();
    status.register("store", ProviderKind::Store, "memory");
    let open: Opener<StoreObject> = Arc::new({
        let memory = memory.clone();
        move || Ok(provider_testkit::store_object(memory.open()))
    });
    StoreClient::start("store", open, status).0
}

/// A commit that submits a message to `recipient` and delivers one into `folder`.
fn submit_and_deliver(recipient: &str, folder: &str) -> Commit {
    Commit {
        submit: vec![(envelope(&[recipient]), CONTENT.to_vec())],
        deliver: vec![(folder.to_owned(), envelope(&[recipient]), recipient.into())],
        ..Commit::default()
    }
}

#[test]
fn concurrent_commits_are_all_stored_and_each_caller_gets_its_own_receipt() {
    let memory = MemoryStore::new();
    let store = store_thread(&memory);
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 0..25 {
                    let recipient = format!("SMTP:c{caller}n{n}@example.net");
                    let folder = format!("Caller {caller}");
                    let receipt = store
                        .commit(submit_and_deliver(&recipient, &folder))
                        .unwrap();
                    assert_eq!((receipt.submitted.len(), receipt.delivered.len()), (1, 1));
                    assert_eq!(receipt.stored.len(), 1);
                    assert_eq!(receipt.stored[0].id, receipt.submitted[0]);
                    let stored = store.get(receipt.submitted[0]).unwrap().unwrap();
                    assert_eq!(stored.envelope.recipients[0].address.to_string(), recipient);
                    let delivered = store.get(receipt.delivered[0]).unwrap().unwrap();
                    assert_eq!(
                        (delivered.folder.as_str(), delivered.content.as_slice()),
                        (folder.as_str(), recipient.as_bytes())
                    );
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("every caller got its receipt");
    }
    assert_eq!(memory.folder(OUTBOX).len(), 200);
    assert_eq!(memory.messages().len(), 400);
}

#[test]
fn a_failing_store_gives_its_callers_the_error_and_stores_nothing_of_their_commits() {
    let memory = MemoryStore::new();
    let store = store_thread(&memory);

    memory.fail_commits(1, ErrorKind::Temporary);
    let failed = store.commit(submit_and_deliver("SMTP:bob@example.net", INBOX));
    assert_eq!(failed.unwrap_err().kind(), ErrorKind::Temporary);
    assert!(memory.messages().is_empty(), "nothing half-done");

    memory.set_outage(Some(ErrorKind::Permanent));
    let down = store.commit(submit_and_deliver("SMTP:bob@example.net", INBOX));
    assert_eq!(down.unwrap_err().kind(), ErrorKind::Permanent);
    assert!(store.folders().is_err());
    assert!(memory.messages().is_empty());

    memory.set_outage(None);
    let receipt = store.commit(submit_and_deliver("SMTP:bob@example.net", INBOX));
    assert_eq!(receipt.unwrap().submitted.len(), 1);
    assert_eq!(memory.messages().len(), 2);
}

#[test]
fn reads_find_messages_count_folders_and_page_through_a_folder() {
    let memory = MemoryStore::new();
    let store = store_thread(&memory);
    let deliveries = (0..5)
        .map(|n| {
            (
                INBOX.to_owned(),
                envelope(&["LOCAL:me"]),
                format!("Subject: {n}\r\n\r\n").into_bytes(),
            )
        })
        .collect();
    let receipt = store
        .commit(Commit {
            deliver: deliveries,
            ..Commit::default()
        })
        .unwrap();
    let ids = receipt.delivered.to_vec();

    let third = store.get(ids[2]).unwrap().expect("message three");
    assert_eq!(third.content.as_slice(), b"Subject: 2\r\n\r\n");
    assert!(store.get(MessageId(999)).unwrap().is_none());
    let inbox = store
        .folders()
        .unwrap()
        .into_iter()
        .find(|f| f.name == INBOX)
        .unwrap();
    assert_eq!(inbox.messages, 5);

    let first_page = store.list_page(INBOX, None, 2).unwrap();
    let page_ids = |page: &[provider_abi::store::MessageSummary]| -> Vec<MessageId> {
        page.iter().map(|m| m.envelope.id).collect()
    };
    assert_eq!(page_ids(&first_page), ids[..2]);
    assert_eq!(first_page[1].subject, "1");
    let rest = store.list_page(INBOX, Some(ids[1]), 10).unwrap();
    assert_eq!(page_ids(&rest), ids[2..]);
}
