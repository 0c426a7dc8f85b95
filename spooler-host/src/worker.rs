//! A provider instance on a thread of its own.
//!
//! Every provider is called only from its worker's thread, so it needs no locking, and a slow
//! provider delays only the work queued for it. A provider that panicked, or could not be
//! opened, is faulted: it is reopened before the next job, at most once per backoff period
//! (doubling from one second to one minute); until then jobs get the fault as their error,
//! so the engine defers their messages instead of waiting.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use provider_abi::{ErrorKind, ProviderError};

use crate::status::StatusTable;

/// What a job reports about the provider after using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Keep it.
    Fine,
    /// It failed in a way that may have left it broken (it panicked): reopen it.
    Faulted,
}

impl Health {
    /// Faulted for a panic; fine for any other result.
    pub fn of<T>(result: &Result<T, ProviderError>) -> Health {
        match result {
            Err(error) if error.kind() == ErrorKind::Panicked => Health::Faulted,
            _ => Health::Fine,
        }
    }
}

type Job<T> = Box<dyn FnOnce(Result<&mut T, &ProviderError>) -> Health + Send>;

/// Opens the provider; called on the worker thread, again after each fault.
pub type Opener<T> = Arc<dyn Fn() -> Result<T, ProviderError> + Send + Sync>;

/// The handle to a provider's thread. Dropping every handle closes the provider.
pub struct Worker<T> {
    jobs: Sender<Job<T>>,
}

impl<T> Clone for Worker<T> {
    fn clone(&self) -> Self {
        Worker {
            jobs: self.jobs.clone(),
        }
    }
}

/// The worker's thread has ended (the host is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerGone;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LAST_BACKOFF: Duration = Duration::from_secs(60);

impl<T: 'static> Worker<T> {
    /// Starts `parallel` threads for instance `name`, each opening its own provider first
    /// and taking jobs from one queue, so jobs go to whichever is free (a transport's
    /// parallel connections). At most `capacity` jobs wait; more block the sender
    /// (back-pressure).
    pub fn start(
        name: &str,
        capacity: usize,
        parallel: usize,
        open: Opener<T>,
        status: StatusTable,
    ) -> (Worker<T>, Vec<JoinHandle<()>>) {
        let (jobs, queue) = bounded::<Job<T>>(capacity);
        let threads = (0..parallel.max(1))
            .map(|_| {
                let (queue, open, status) = (queue.clone(), Arc::clone(&open), status.clone());
                let instance = name.to_owned();
                thread::Builder::new()
                    .name(format!("provider {name}"))
                    .spawn(move || serve(&instance, queue, &open, &status))
                    .expect("the system can start a thread")
            })
            .collect();
        (Worker { jobs }, threads)
    }
}

/// One worker thread: opens its provider, runs jobs until the queue closes, reopens after
/// a fault.
fn serve<T>(instance: &str, queue: Receiver<Job<T>>, open: &Opener<T>, status: &StatusTable) {
    let mut backoff = FIRST_BACKOFF;
    let mut slot = open_now(instance, open, status);
    let mut reopen_at = Instant::now() + backoff;
    for job in queue {
        if slot.is_err() && Instant::now() >= reopen_at {
            slot = open_now(instance, open, status);
            backoff = if slot.is_ok() {
                FIRST_BACKOFF
            } else {
                (backoff * 2).min(LAST_BACKOFF)
            };
            reopen_at = Instant::now() + backoff;
        }
        let health = job(slot.as_mut().map_err(|error| &*error));
        if health == Health::Faulted {
            let error = ProviderError::new(
                ErrorKind::Panicked,
                format!("{instance} panicked and is being reopened"),
            );
            status.set(
                instance,
                provider_abi::ProviderState::Error,
                error.message(),
            );
            // Dropped here, on its own thread, before it is opened again.
            slot = Err(error);
            reopen_at = Instant::now();
        }
    }
    log::debug!("{instance}: closed");
}

fn open_now<T>(instance: &str, open: &Opener<T>, status: &StatusTable) -> Result<T, ProviderError> {
    match open() {
        Ok(provider) => {
            log::info!("{instance}: opened");
            Ok(provider)
        }
        Err(error) => {
            let error = ProviderError::new(
                error.kind(),
                format!("{instance} cannot be opened: {}", error.message()),
            );
            status.set(
                instance,
                provider_abi::ProviderState::Error,
                error.message(),
            );
            log::error!("{}", error.message());
            Err(error)
        }
    }
}

impl<T> Worker<T> {
    /// Queues `job`; it runs on the worker's thread with the provider, or with the fault
    /// that keeps it closed.
    pub fn run(
        &self,
        job: impl FnOnce(Result<&mut T, &ProviderError>) -> Health + Send + 'static,
    ) -> Result<(), WorkerGone> {
        self.jobs.send(Box::new(job)).map_err(|_| WorkerGone)
    }

    /// Runs `call` on the worker's thread and waits for its answer.
    pub fn call<R: Send + 'static>(
        &self,
        call: impl FnOnce(&mut T) -> Result<R, ProviderError> + Send + 'static,
    ) -> Result<R, ProviderError> {
        let (answer, answered) = bounded(1);
        self.run(move |slot| {
            let result = slot.map_err(Clone::clone).and_then(call);
            let health = Health::of(&result);
            answer.send(result).ok();
            health
        })
        .map_err(|_| ProviderError::temporary("the host is shutting down"))?;
        answered
            .recv()
            .unwrap_or_else(|_| Err(ProviderError::temporary("the host is shutting down")))
    }
}
