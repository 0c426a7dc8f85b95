//! How long finished mail stays in the store (`[store] keep_sent`, `keep_reports`): the
//! settings and their defaults. The pruning itself is the store layer's (`store::retention`).
//!
//! Without limits the store grew by every message relayed (4.5 KB each in Sent Items), so a
//! busy relay filled its disk in weeks and then refused all mail. Postfix removes a message
//! once it is delivered; a MAPI client chooses per message whether a sent copy is kept.

use std::time::Duration;

/// The defaults: a day of sent mail, a week of reports.
///
/// A day of Sent Items answers "did it go out, and what did the server say?" for yesterday's
/// mail (the log keeps the same for longer, outside the store), and bounds the store to one
/// day's traffic: at a million messages a day, about 4.5 GB. Reports are few (one per failed
/// or delayed message) and read by people, so they stay a week.
pub const DEFAULT_KEEP_SENT: Duration = Duration::from_secs(24 * 3600);
/// See [`DEFAULT_KEEP_SENT`].
pub const DEFAULT_KEEP_REPORTS: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long finished mail is kept, counted from its submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages in Sent Items. Zero: a message is deleted when it is finished, never filed
    /// (as Postfix does).
    pub keep_sent: Duration,
    /// Delivery and non-delivery reports in the Inbox. Other Inbox mail and local folders
    /// are never removed.
    pub keep_reports: Duration,
}

impl Retention {
    /// Whether finished messages go to Sent Items at all.
    pub fn files_sent(&self) -> bool {
        !self.keep_sent.is_zero()
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_sent: DEFAULT_KEEP_SENT,
            keep_reports: DEFAULT_KEEP_REPORTS,
        }
    }
}
