//! Two hosts' instances of the store on one private PostgreSQL, driven directly through the
//! `Store` contract: leases, fencing at commit, and operators reaching a message another host
//! holds. (`tests/features/scale_out.rs` runs the same through whole hosts.)

use std::time::Duration;

use provider_abi::abi_stable::sabi_trait::TD_Opaque;
use provider_abi::abi_stable::std_types::{RArc, ROption, RSlice, RString};
use provider_abi::host::{HostServices, HostServices_TO, NoticeAbi, ProviderStateAbi};
use provider_abi::store::{Finish, NewMessage, StoreBatch, OUTBOX, SENT_ITEMS};
use provider_abi::{
    Address, DeliveryState, Envelope, Host, MessageId, Recipient, RecipientKind, Store, Timestamp,
};
use spooler_tests::Postgres;

use crate::PostgresStore;

/// A host that ignores what stores tell it.
#[derive(Clone)]
struct Deaf;

impl HostServices for Deaf {
    fn notify(&self, _notice: NoticeAbi) {}
    fn set_status(&self, _state: ProviderStateAbi, _text: RString) {}
}

fn open(url: &str, host_name: &str) -> PostgresStore {
    let config = format!("url = \"{url}\"\nhost_name = \"{host_name}\"\nlease = 3");
    let host = Host::from_object(HostServices_TO::from_ptr(RArc::new(Deaf), TD_Opaque));
    PostgresStore::open_as(host_name, &config, host).expect("the store opens")
}

fn submit(store: &mut PostgresStore) -> MessageId {
    let recipient = Recipient::new(
        Address::parse("SMTP:bob@example.net").unwrap(),
        RecipientKind::To,
    );
    let mut envelope = Envelope::new(
        Address::parse("alice@example.com").unwrap(),
        vec![recipient],
    );
    envelope.preprocessed = true;
    let content = b"Subject: shared\r\n\r\nHello.\r\n";
    let receipt = store
        .commit(&StoreBatch {
            submit: RSlice::from_slice(&[NewMessage {
                envelope,
                content: RSlice::from_slice(content),
            }]),
            ..StoreBatch::EMPTY
        })
        .expect("submitted");
    receipt.submitted[0]
}

/// `envelope` with its one recipient delivered by `transport`.
fn delivered(mut envelope: Envelope, transport: &str) -> Envelope {
    let status = &mut envelope.recipients[0].status;
    status.state = DeliveryState::Delivered;
    status.transport = ROption::RSome(transport.into());
    status.attempts += 1;
    envelope
}

/// Locks message `id` for `store`'s session as a lost answer leaves it: committed in the
/// database, unknown to the host. Returns the connection that did it.
fn lock_behind_the_hosts_back(url: &str, store: &PostgresStore, id: MessageId) -> postgres::Client {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE messages SET lease_session = $1, lease_until = spooler_now_ms() + 60000
             WHERE id = $2",
            &[&store.session, &(id.0 as i64)],
        )
        .unwrap();
    client
}

fn later() -> Timestamp {
    Timestamp::now().plus(Duration::from_secs(1))
}

/// A lock the database committed but whose answer never reached the host (the connection
/// broke in between, as in a database restart) is released at the next check-in, and the
/// message is handed out again; before, the check-in renewed it for as long as the host ran.
#[test]
fn a_lock_whose_answer_was_lost_is_released_at_the_next_check_in() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.create_database("lost_answer");
    let mut a = open(&url, "a");
    let id = submit(&mut a);
    lock_behind_the_hosts_back(&url, &a, id);
    assert!(
        a.lock_due(later(), 10).unwrap().is_empty(),
        "locked, unknown"
    );

    let news = a.check_in(Timestamp::now()).unwrap();
    assert!(news.lost.is_empty(), "the host never held it");
    let again = a.lock_due(later(), 10).unwrap();
    assert_eq!(again.len(), 1, "released and handed out");
    assert_eq!(again[0].envelope.id, id);
    a.check_in(Timestamp::now()).unwrap();
    assert!(
        a.lock_due(later(), 10).unwrap().is_empty(),
        "a lock the host knows of is kept"
    );
}

/// The same lost answer, seen from the connection: when the host connects again after the
/// connection broke, such locks are released at once, not at the next check-in (up to a
/// third of the lease later).
#[test]
fn a_lock_whose_answer_was_lost_is_released_when_the_host_connects_again() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.create_database("lost_connection");
    let mut a = open(&url, "a");
    let id = submit(&mut a);
    let mut client = lock_behind_the_hosts_back(&url, &a, id);
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = 'lost_connection' AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();

    // pg_terminate_backend returns before the backend is gone: a call may still be answered
    // on the old connection (the lock held, nothing due), or fail on it; the call after a
    // failure reconnects, releases the lock and hands the message out.
    let mut answers = Vec::new();
    let again = loop {
        let answer = a.lock_due(later(), 10);
        match answer {
            Ok(locked) if !locked.is_empty() => break locked,
            other if answers.len() < 10 => answers.push(format!("{other:?}")),
            other => panic!("never handed out: {answers:#?} then {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(again.len(), 1, "released on reconnecting and handed out");
    assert_eq!(again[0].envelope.id, id);
}

#[test]
fn a_host_whose_lease_was_taken_over_cannot_commit_a_status() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.create_database("fencing");
    let (mut a, mut b) = (open(&url, "a"), open(&url, "b"));
    let id = submit(&mut a);
    let taken = a.lock_due(later(), 10).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(b.lock_due(later(), 10).unwrap().is_empty(), "a holds it");

    // a stops checking in; its lease runs out and b takes the message over.
    std::thread::sleep(Duration::from_millis(3_200));
    let retaken = b.lock_due(later(), 10).unwrap();
    assert_eq!(retaken.len(), 1, "b takes over the expired lease");

    // a's answer comes too late: refused, whole, and a learns that it lost the message.
    let late = delivered(taken[0].envelope.clone(), "smtp-a");
    a.commit(&StoreBatch {
        update_envelopes: RSlice::from_slice(std::slice::from_ref(&late)),
        finish: RSlice::from_slice(&[Finish {
            id,
            move_to: ROption::RSome(SENT_ITEMS.into()),
        }]),
        unlock: RSlice::from_slice(&[id]),
        ..StoreBatch::EMPTY
    })
    .expect("a commit with a refused part still commits the rest");
    let stored = b.get(id).unwrap().expect("still there");
    assert_eq!(stored.folder, OUTBOX);
    assert_eq!(
        stored.envelope.recipients[0].status.state,
        DeliveryState::Pending
    );
    assert_eq!(stored.envelope.recipients[0].status.attempts, 0);
    assert_eq!(a.check_in(Timestamp::now()).unwrap().lost.as_slice(), [id]);
    assert!(
        b.check_in(Timestamp::now()).unwrap().lost.is_empty(),
        "b still holds it"
    );

    // b's answer is stored.
    let answer = delivered(retaken[0].envelope.clone(), "smtp-b");
    b.commit(&StoreBatch {
        update_envelopes: RSlice::from_slice(std::slice::from_ref(&answer)),
        finish: RSlice::from_slice(&[Finish {
            id,
            move_to: ROption::RSome(SENT_ITEMS.into()),
        }]),
        ..StoreBatch::EMPTY
    })
    .unwrap();
    let stored = a.get(id).unwrap().expect("still there");
    assert_eq!(stored.folder, SENT_ITEMS);
    assert_eq!(
        stored.envelope.recipients[0].status.transport,
        ROption::RSome("smtp-b".into())
    );
}

#[test]
fn an_operator_on_one_host_holds_and_deletes_what_another_host_works_on() {
    let Some(postgres) = Postgres::start() else {
        return;
    };
    let url = postgres.create_database("operators");
    let (mut a, mut b) = (open(&url, "a"), open(&url, "b"));
    let held = submit(&mut a);
    let deleted = submit(&mut a);
    let taken = b.lock_due(later(), 10).unwrap();
    assert_eq!(taken.len(), 2);
    let hosts = a.hosts().unwrap();
    let b_row = hosts.iter().find(|h| h.name == "b").expect("b is listed");
    assert!(b_row.alive);
    assert_eq!(b_row.leases, 2);

    // An operator on a holds one message and deletes the other while b works on them.
    assert_eq!(
        a.hold(held, true, Timestamp::now()).unwrap().as_deref(),
        Some(OUTBOX)
    );
    assert!(a.delete(deleted).unwrap());

    // b stores its pass (a deferral) and lets go: the hold stays.
    let mut deferred = taken
        .iter()
        .find(|m| m.envelope.id == held)
        .unwrap()
        .envelope
        .clone();
    deferred.recipients[0].status.attempts += 1;
    deferred.recipients[0].status.next_attempt = ROption::RSome(Timestamp::now());
    b.commit(&StoreBatch {
        update_envelopes: RSlice::from_slice(std::slice::from_ref(&deferred)),
        unlock: RSlice::from_slice(&[held]),
        ..StoreBatch::EMPTY
    })
    .unwrap();
    let stored = a.get(held).unwrap().unwrap();
    assert!(stored.envelope.held, "b's update kept the operator's hold");
    assert_eq!(stored.envelope.recipients[0].status.attempts, 1);
    assert!(
        a.lock_due(later(), 10).unwrap().is_empty(),
        "held: nobody takes it"
    );
    assert_eq!(
        b.check_in(Timestamp::now()).unwrap().lost.as_slice(),
        [deleted]
    );

    // Released, it is due at once for whichever host asks.
    a.hold(held, false, Timestamp::now()).unwrap();
    assert_eq!(b.lock_due(later(), 10).unwrap().len(), 1);
}
