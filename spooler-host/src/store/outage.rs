//! A failing store, told once: while the store keeps failing (a full disk, a database server
//! that is down), the queue manager retries every second, and one error line says so, not
//! one per retry. A reminder follows every ten minutes, and a line when it works again.
//! Meanwhile the store's row in the status table says `offline` and why, so that `status`
//! shows the outage while it lasts.

use std::time::{Duration, Instant};

use provider_abi::{ProviderError, ProviderState};

use crate::providers::status::StatusTable;

/// How often a store that is still failing is mentioned again.
const REMINDER: Duration = Duration::from_secs(600);

/// Whether the store is failing, since when, and when that was last logged.
pub struct Outage {
    /// The store instance's name, its row in `status`.
    store: String,
    status: StatusTable,
    since: Option<Instant>,
    last_told: Option<Instant>,
}

impl Outage {
    /// No outage yet of store instance `store`, whose state goes to `status`.
    pub fn new(store: &str, status: StatusTable) -> Outage {
        Outage {
            store: store.to_owned(),
            status,
            since: None,
            last_told: None,
        }
    }

    /// The store failed while `doing` something.
    pub fn failed(&mut self, doing: &str, error: &ProviderError) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        match self.last_told {
            None => {
                self.status
                    .set(&self.store, ProviderState::Offline, error.message());
                log::error!(
                    "the store failed ({doing}): {error}; retrying every second, and saying so \
                     again only if it lasts"
                )
            }
            Some(told) if told.elapsed() >= REMINDER => log::error!(
                "the store has been failing for {} min ({doing}): {error}",
                since.elapsed().as_secs() / 60
            ),
            Some(_) => {
                log::debug!("the store failed again ({doing}): {error}");
                return;
            }
        }
        self.last_told = Some(now);
    }

    /// A store call worked.
    pub fn over(&mut self) {
        if let Some(since) = self.since.take() {
            self.status.set(&self.store, ProviderState::Online, "");
            log::info!(
                "the store works again, after failing for {} s",
                since.elapsed().as_secs()
            );
        }
        self.last_told = None;
    }
}
