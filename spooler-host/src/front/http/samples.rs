//! The dashboard's plots: every [`EVERY`], how many messages are in the Outbox (a count
//! query) and how many recipients were delivered since the last sample (from the event
//! stream), kept for the last hour in memory. Nothing is stored: a restart starts the plots
//! anew, as a live view should.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::observe::events::{self, EventKind};
use crate::store::thread::StoreClient;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(10);

/// How many are kept: an hour's worth.
const KEPT: usize = 360;

/// One sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// When (milliseconds since the epoch).
    pub at: i64,
    /// Messages in the Outbox; `null` if the store could not count them.
    pub queued: Option<u64>,
    /// Recipients delivered since the previous sample.
    pub delivered: u64,
}

/// The samples, shared with the thread that takes them.
#[derive(Clone)]
pub struct Samples(Arc<Mutex<VecDeque<Sample>>>);

impl Samples {
    /// Starts taking samples.
    pub fn start(store: StoreClient) -> Samples {
        let samples = Samples(Arc::new(Mutex::new(VecDeque::with_capacity(KEPT))));
        let kept = samples.clone();
        let started = std::thread::Builder::new()
            .name("http samples".into())
            .spawn(move || kept.take(&store));
        if let Err(error) = started {
            log::warn!("http: the dashboard's plots will stay empty: {error}");
        }
        samples
    }

    /// The samples of the last hour, oldest first.
    pub fn recent(&self) -> Vec<Sample> {
        self.0.lock().iter().copied().collect()
    }

    fn take(&self, store: &StoreClient) {
        let mut subscription = events::subscribe(None);
        let mut last_id = None;
        loop {
            let mut delivered = 0;
            let until = Instant::now() + EVERY;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match subscription.events.recv_timeout(left) {
                    Ok(event) => {
                        last_id = Some(event.id);
                        delivered += u64::from(event.kind == EventKind::Delivered);
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        // Fell behind in a burst: count what was missed, and go on.
                        subscription = events::subscribe(last_id);
                        delivered += subscription
                            .missed
                            .iter()
                            .filter(|e| e.kind == EventKind::Delivered)
                            .count() as u64;
                        last_id = subscription.missed.last().map(|e| e.id).or(last_id);
                    }
                }
            }
            let queued = store.queue_counts().ok().map(|counts| counts.messages);
            let mut samples = self.0.lock();
            if samples.len() == KEPT {
                samples.pop_front();
            }
            samples.push_back(Sample {
                at: provider_abi::Timestamp::now().0,
                queued,
                delivered,
            });
        }
    }
}
