//! The dashboard's plots: every [`EVERY`], how many messages are in the Outbox (a count
//! query) and how many recipients were delivered since the last sample (from the metrics),
//! kept for the last hour in memory. Nothing is stored: a restart starts the plots
//! anew, as a live view should.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::observe::metrics::metrics;
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
        // Read from the metrics rather than the event stream: a subscriber woken for every
        // event cost the listener path a fifth of its rate on two cores.
        let mut last = metrics().delivered_all.get();
        loop {
            std::thread::sleep(EVERY);
            let total = metrics().delivered_all.get();
            let delivered = total - last;
            last = total;
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
