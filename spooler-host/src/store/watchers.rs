//! New-mail notification: every client watching gets an event when the store has committed
//! an inbound message or a report.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::observe::events::{self, EventKind, Happening};

/// What a watching client is told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MailEvent {
    /// What arrived: on the wire `"event": "new_mail"` or `"report"`.
    #[serde(rename = "event")]
    pub kind: MailEventKind,
    /// The folder it was stored in.
    pub folder: String,
    /// Its id.
    pub id: String,
    /// Its sender.
    pub sender: String,
    /// Its subject.
    pub subject: String,
}

/// What kind of mail a [`MailEvent`] tells of.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailEventKind {
    /// Inbound mail, or mail the store delivered itself.
    NewMail,
    /// A delivery status notification for the owner of the mailbox.
    Report,
}

impl MailEventKind {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MailEventKind::NewMail => "new_mail",
            MailEventKind::Report => "report",
        }
    }
}

/// How many events a slow watcher may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// The watching clients.
#[derive(Clone, Default)]
pub struct Watchers(Arc<Mutex<Vec<Sender<MailEvent>>>>);

impl Watchers {
    /// A new subscription; events arrive until the receiver is dropped.
    pub fn subscribe(&self) -> Receiver<MailEvent> {
        let (sender, receiver) = bounded(BACKLOG);
        self.0.lock().push(sender);
        receiver
    }

    /// Tells every watcher; forgets the ones that went away. A watcher too slow to keep up
    /// misses the event (and is told so in the log) rather than holding up the spooler.
    /// New mail is a delivery event too (a report is one already, sent by the queue).
    pub fn publish(&self, event: &MailEvent) {
        if event.kind == MailEventKind::NewMail {
            events::publish(
                Happening::message(EventKind::Inbound, &event.id).detail(&event.folder),
            );
        }
        self.0
            .lock()
            .retain(|watcher| match watcher.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        "a watching client is {BACKLOG} events behind; it misses {}",
                        event.id
                    );
                    true
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }
}

impl MailEvent {
    /// The event for a message the store has just committed into `folder`.
    pub fn stored(
        id: provider_abi::MessageId,
        folder: &str,
        envelope: &provider_abi::Envelope,
        content: &[u8],
    ) -> Self {
        MailEvent {
            kind: if envelope.is_report {
                MailEventKind::Report
            } else {
                MailEventKind::NewMail
            },
            folder: folder.to_owned(),
            id: id.to_string(),
            sender: envelope.sender.to_string(),
            subject: provider_abi::headers::header(content, "Subject").unwrap_or_default(),
        }
    }
}
