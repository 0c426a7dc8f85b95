//! Intake, Postfix's cleanup: the one way into the Outbox, for the control socket and the
//! SMTP listener alike. It checks a submission (`checks`: sender, recipients, size, Bcc),
//! writes local names through the aliases (`aliases`) and mailbox syntax (`mailbox`),
//! computes the submission key that makes a retry return the first id, and commits it
//! through the store thread. It answers with a queue id or a [`Refusal`] of a typed kind,
//! which each front end turns into its own language.
//!
//! May call: `base`, `observe`, `config`, `providers` (the routing table, to know whether a
//! message needs preprocessing), `store` and `protocol`.

pub mod aliases;
pub mod checks;
pub mod mailbox;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use provider_abi::store::CommitReceipt;
use provider_abi::{ErrorKind, MessageId, Property, ProviderError, Timestamp};

use crate::observe::events::{self, EventKind, Happening};
use crate::observe::metrics::{metrics, BySource};
use crate::protocol::{Source, Submission};
use crate::providers::routing_table::RoutesInForce;
use crate::store::thread::{Commit, StoreClient};
pub use checks::Rules;

/// What kind of refusal a submission met: each front end answers in its own language
/// from this (an exit code for `submit`, a reply code for SMTP), never from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The sender or a recipient is not a valid address.
    BadAddress,
    /// The message is empty or too large.
    BadMessage,
    /// Not now: the spooler is stopping, the aliases could not be read, the store failed.
    /// The same submission can succeed later.
    Temporary,
    /// Not now: the store is out of space. It can succeed once space is freed.
    StoreFull,
}

/// Why a submission was refused, and what kind of refusal it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind: what the client is told to do.
    pub kind: RefusalKind,
    /// Why, naming the address, limit or cause.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A store's answer to a submission's commit, not yet read: [`Intake::outcome`] reads it.
/// It crosses from the store thread to whoever waits for the submission (the SMTP
/// listener's event loop) as it is, so that the reading happens on the waiter's thread.
/// It keeps where the submission came from, which the new message is counted by.
pub struct Committed(Result<CommitReceipt, ProviderError>, Source);

/// The way into the Outbox.
#[derive(Clone)]
pub struct Intake {
    store: StoreClient,
    routes: RoutesInForce,
    rules: Rules,
    /// Set when the spooler stops: submissions are refused, as temporary.
    stopping: Arc<AtomicBool>,
    /// Told of every new message in the Outbox (the daemon wakes the queue manager). It
    /// must not block: submitters must never wait for the queue manager.
    on_new_message: Arc<dyn Fn(MessageId) + Send + Sync>,
}

impl Intake {
    /// Intake into `store`, under `rules`; `on_new_message` hears of each new message.
    pub fn new(
        store: StoreClient,
        routes: RoutesInForce,
        rules: Rules,
        on_new_message: impl Fn(MessageId) + Send + Sync + 'static,
    ) -> Intake {
        Intake {
            store,
            routes,
            rules,
            stopping: Arc::new(AtomicBool::new(false)),
            on_new_message: Arc::new(on_new_message),
        }
    }

    /// What submissions are held to.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Refuses every submission from now on: the spooler is stopping.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Checks the submission and commits it, with extra envelope `properties` (the SMTP
    /// listener's DSN parameters); waits until the store has it.
    pub fn submit(
        &self,
        submission: &Submission,
        content: Vec<u8>,
        properties: Vec<Property>,
    ) -> Result<MessageId, Refusal> {
        let commit = self.commit_for(submission, content, properties)?;
        self.outcome(Committed(self.store.commit(commit), submission.source))
    }

    /// [`Intake::submit`] without waiting for the store: `then` gets the commit's result on
    /// the store thread, for [`Intake::outcome`] elsewhere; or the refusal comes back at once.
    pub fn submit_then(
        &self,
        submission: &Submission,
        content: Vec<u8>,
        properties: Vec<Property>,
        then: impl FnOnce(Committed) + Send + 'static,
    ) -> Result<(), Refusal> {
        let commit = self.commit_for(submission, content, properties)?;
        let source = submission.source;
        self.store
            .commit_then(commit, move |result| then(Committed(result, source)));
        Ok(())
    }

    /// The commit that puts a checked submission into the Outbox, or the refusal.
    fn commit_for(
        &self,
        submission: &Submission,
        content: Vec<u8>,
        properties: Vec<Property>,
    ) -> Result<Commit, Refusal> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(Refusal::new(
                RefusalKind::Temporary,
                "the store is not taking messages: the spooler is shutting down; try again",
            ));
        }
        let (mut envelope, content) =
            checks::envelope_and_content(submission, content, &self.rules, Timestamp::now())?;
        envelope.properties.extend(properties);
        let routes = self.routes.current();
        envelope.preprocessed = routes.preprocessors_for(&envelope.recipients).is_empty();
        if envelope.preprocessed {
            routes.claim_ahead_of_store(&mut envelope);
        }
        Ok(Commit {
            submit: vec![(envelope, content)],
            ..Commit::default()
        })
    }

    /// The queue id a committed submission got, or why the store did not take it; tells
    /// of a new message, and counts it. A submission stored once before (a retry) is not
    /// counted again.
    pub fn outcome(&self, committed: Committed) -> Result<MessageId, Refusal> {
        let Committed(result, source) = committed;
        let receipt = result.map_err(|error| {
            let kind = match error.kind() {
                ErrorKind::Full => RefusalKind::StoreFull,
                _ => RefusalKind::Temporary,
            };
            let message = format!("the store could not take the message: {error}; try again");
            Refusal::new(kind, message)
        })?;
        let Some(&id) = receipt.submitted.first() else {
            return Err(Refusal::new(
                RefusalKind::Temporary,
                "the store assigned no id",
            ));
        };
        if receipt.stored.iter().any(|stored| stored.id == id) {
            (self.on_new_message)(id);
            log::info!("{id}: submitted by a client");
            submitted(source).inc();
            events::publish(Happening::message(EventKind::Submitted, id));
        } else {
            log::info!(
                "{id}: submitted again (same Message-ID, sender and recipients); stored once"
            );
        }
        Ok(id)
    }
}

/// The submitted counter of `source`, looked up once per process: on the listener's hot
/// path a submission only adds to an atomic, without hashing labels under the family's lock.
fn submitted(source: Source) -> &'static Counter {
    static COUNTERS: OnceLock<[Counter; 3]> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        [Source::Control, Source::Listener, Source::Sendmail].map(|source| {
            metrics().submitted.get_or_create_owned(&BySource {
                source: source.as_str().to_owned(),
            })
        })
    });
    &counters[source as usize]
}
