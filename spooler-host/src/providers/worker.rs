//! A provider instance on a thread of its own.
//!
//! Every provider is called only from its worker's thread, so it needs no locking, and a slow
//! provider delays only the work queued for it. A provider that panicked, or could not be
//! opened, is faulted: it is reopened before a later job, after a backoff that doubles with
//! each fault in a row (from one second to one minute), so a provider that panics on every
//! call is not reopened in a tight loop; until then jobs get the fault as their error, so the
//! engine defers their messages instead of waiting.
//!
//! With a timeout, a watchdog looks at the running calls: one that has not returned in time
//! is abandoned. Its caller gets a timeout error at once (its messages are deferred), and a
//! fresh thread with a freshly opened provider takes its place. The stuck thread keeps its
//! provider until the call returns, if it ever does; its answer is then dropped and the
//! thread ends.

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::sync::{Arc, Weak};

use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use provider_abi::{ErrorKind, MessageId, ProviderError, ProviderState, Timestamp};

use crate::observe::metrics::{metrics, ByInstance};
use crate::providers::quarantine::{CallSlot, Quarantine};
use crate::providers::status::StatusTable;

#[cfg(test)]
mod tests;

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

type Work<T> = Box<dyn FnOnce(Result<&mut T, &ProviderError>) -> (Health, Option<Deliver>) + Send>;

/// Hands a job's result to its caller. It runs once the call has left the call journal: a
/// caller that reacts at once (the queue manager starting the message's next preprocessor)
/// must not find this call still marked, or a crash in the next call blames this one.
type Deliver = Box<dyn FnOnce() + Send>;

/// Answers an abandoned job's caller with the timeout's error.
type Abandon = Box<dyn FnOnce(ProviderError) + Send>;

struct Job<T> {
    work: Work<T>,
    /// The message the call is about, for the call journal.
    message: Option<MessageId>,
    /// `None`: the job is never abandoned.
    abandon: Option<Abandon>,
}

/// Opens the provider; called on the worker thread, again after each fault.
pub type Opener<T> = Arc<dyn Fn() -> Result<T, ProviderError> + Send + Sync>;

/// The handle to a provider's threads. Dropping every handle closes the provider.
pub struct Worker<T> {
    jobs: Sender<Job<T>>,
    /// Keeps the watchdog going while a handle exists.
    _alive: Arc<()>,
}

impl<T> Clone for Worker<T> {
    fn clone(&self) -> Self {
        Worker {
            jobs: self.jobs.clone(),
            _alive: Arc::clone(&self._alive),
        }
    }
}

/// The worker's thread has ended (the host is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerGone;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const LAST_BACKOFF: Duration = Duration::from_secs(60);

/// The call a worker thread is running, for the watchdog.
#[derive(Default)]
struct Running {
    since: Option<Instant>,
    abandon: Option<Abandon>,
    abandoned: bool,
}

type RunningSlot = Arc<Mutex<Running>>;

/// What starting a thread of an instance takes.
struct Pool<T> {
    instance: String,
    queue: Receiver<Job<T>>,
    open: Opener<T>,
    status: StatusTable,
    /// For an in-process instance: where each thread writes the call it is in, so that the
    /// host, restarted after a provider took it down, knows which message was in the call.
    journal: Option<Quarantine>,
    /// The instance's `provider_restarts` and `provider_panics` counters, looked up once.
    restarts: Counter,
    panics: Counter,
}

impl<T: 'static> Pool<T> {
    fn spawn(self: &Arc<Self>) -> (RunningSlot, JoinHandle<()>) {
        let running = RunningSlot::default();
        let (pool, slot) = (Arc::clone(self), Arc::clone(&running));
        let thread = thread::Builder::new()
            .name(format!("provider {}", self.instance))
            .spawn(move || serve(&pool, &slot))
            .expect("the system can start a thread");
        (running, thread)
    }
}

impl<T: 'static> Worker<T> {
    /// Starts `parallel` threads for instance `name`, each opening its own provider first
    /// and taking jobs from one queue, so jobs go to whichever is free (a transport's
    /// parallel connections). At most `capacity` jobs wait; more block the sender
    /// (back-pressure). With a `timeout`, a call running longer is abandoned (see above).
    /// With a `journal`, every call and open is written to it first (see [`Quarantine`]).
    pub fn start(
        name: &str,
        capacity: usize,
        parallel: usize,
        timeout: Option<Duration>,
        open: Opener<T>,
        status: StatusTable,
        journal: Option<Quarantine>,
    ) -> (Worker<T>, Vec<JoinHandle<()>>) {
        let (jobs, queue) = bounded::<Job<T>>(capacity);
        let instance = ByInstance {
            instance: name.to_owned(),
        };
        let pool = Arc::new(Pool {
            instance: name.to_owned(),
            queue,
            open,
            status,
            journal,
            restarts: metrics().provider_restarts.get_or_create_owned(&instance),
            panics: metrics().provider_panics.get_or_create_owned(&instance),
        });
        let (running, threads): (Vec<RunningSlot>, Vec<JoinHandle<()>>) =
            (0..parallel.max(1)).map(|_| pool.spawn()).unzip();
        let alive = Arc::new(());
        if let Some(timeout) = timeout {
            let alive = Arc::downgrade(&alive);
            thread::Builder::new()
                .name(format!("watchdog {name}"))
                .spawn(move || watch(&pool, running, timeout, &alive))
                .expect("the system can start a thread");
        }
        (
            Worker {
                jobs,
                _alive: alive,
            },
            threads,
        )
    }
}

/// The watchdog: abandons calls running longer than `timeout` and starts a thread in place of
/// each, until every handle on the worker is gone.
fn watch<T: 'static>(
    pool: &Arc<Pool<T>>,
    mut running: Vec<RunningSlot>,
    timeout: Duration,
    alive: &Weak<()>,
) {
    let tick = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    while alive.strong_count() > 0 {
        thread::sleep(tick);
        for slot in &mut running {
            let abandon = {
                let mut call = slot.lock();
                match (call.since, call.abandon.is_some()) {
                    (Some(since), true) if since.elapsed() >= timeout => {
                        call.abandoned = true;
                        call.abandon.take()
                    }
                    _ => None,
                }
            };
            let Some(abandon) = abandon else {
                continue;
            };
            let why = format!(
                "{}: a call did not return within {timeout:?} (the instance's timeout); it was \
                 abandoned and the provider is reopened on a fresh thread",
                pool.instance
            );
            log::error!("{why}");
            pool.status.set(&pool.instance, ProviderState::Error, &why);
            abandon(ProviderError::temporary(why));
            *slot = pool.spawn().0;
            pool.restarts.inc();
        }
    }
}

/// One worker thread: opens its provider, runs jobs until the queue closes, reopens after
/// a fault (after a backoff that doubles with each fault in a row). Ends early if its
/// running call was abandoned.
fn serve<T>(pool: &Pool<T>, running: &Mutex<Running>) {
    let instance = pool.instance.as_str();
    let mut journal = pool.journal.as_ref().map(|journal| journal.slot(instance));
    let mut backoff = FIRST_BACKOFF;
    let mut slot = open_now(pool, &mut journal);
    let mut reopen_at = Instant::now() + backoff;
    for job in pool.queue.iter() {
        if slot.is_err() && Instant::now() >= reopen_at {
            slot = open_now(pool, &mut journal);
            if slot.is_ok() {
                pool.restarts.inc();
            } else {
                backoff = (backoff * 2).min(LAST_BACKOFF);
            }
            reopen_at = Instant::now() + backoff;
        }
        *running.lock() = Running {
            since: Some(Instant::now()),
            abandon: job.abandon,
            abandoned: false,
        };
        // A job answered with the fault that keeps the provider closed tells nothing new.
        let called = slot.is_ok();
        let began = Timestamp::now();
        if let (Some(journal), true) = (&mut journal, called) {
            journal.enter(job.message);
        }
        let (health, deliver) = (job.work)(slot.as_mut().map_err(|error| &*error));
        if let (Some(journal), true) = (&mut journal, called) {
            journal.leave();
        }
        if let Some(deliver) = deliver {
            deliver();
        }
        if std::mem::take(&mut *running.lock()).abandoned {
            log::warn!(
                "{instance}: an abandoned call returned at last; its answer was dropped, and \
                 this copy of the provider closes"
            );
            return;
        }
        match health {
            _ if !called => {}
            Health::Faulted => {
                // An isolated instance whose process died during the job noted it there.
                let died = pool
                    .status
                    .last_fault_at(instance)
                    .is_some_and(|at| at >= began);
                let pause = backoff.as_secs();
                // A death is counted where it is seen, by the isolation's proxy.
                let text = if died {
                    format!("{instance}: its process died; a fresh one starts in {pause} s")
                } else {
                    pool.panics.inc();
                    format!("{instance} panicked; it is reopened in {pause} s")
                };
                let error = ProviderError::new(ErrorKind::Panicked, text);
                pool.status
                    .set(instance, ProviderState::Error, error.message());
                // Dropped here, on its own thread, before it is opened again.
                slot = Err(error);
                reopen_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(LAST_BACKOFF);
            }
            Health::Fine => backoff = FIRST_BACKOFF,
        }
    }
    log::debug!("{instance}: closed");
}

fn open_now<T>(pool: &Pool<T>, journal: &mut Option<CallSlot>) -> Result<T, ProviderError> {
    let instance = pool.instance.as_str();
    if let Some(journal) = journal {
        journal.enter(None);
    }
    let opened = (pool.open)();
    if let Some(journal) = journal {
        journal.leave();
    }
    match opened {
        Ok(provider) => {
            log::info!("{instance}: opened");
            // A failed open set it to error; opened now, it works (a provider reports
            // another state itself).
            if pool.status.state(instance) == ProviderState::Error {
                pool.status.set(instance, ProviderState::Online, "");
            }
            Ok(provider)
        }
        Err(error) => {
            let error = ProviderError::new(
                error.kind(),
                format!("{instance} cannot be opened: {}", error.message()),
            );
            pool.status
                .set(instance, ProviderState::Error, error.message());
            log::error!("{}", error.message());
            Err(error)
        }
    }
}

impl<T> Worker<T> {
    /// Queues `job`; it runs on the worker's thread with the provider, or with the fault
    /// that keeps it closed. It is never abandoned.
    pub fn run(
        &self,
        job: impl FnOnce(Result<&mut T, &ProviderError>) -> Health + Send + 'static,
    ) -> Result<(), WorkerGone> {
        let job = Job {
            work: Box::new(move |slot| (job(slot), None)),
            message: None,
            abandon: None,
        };
        self.jobs.send(job).map_err(|_| WorkerGone)
    }

    /// Queues `work` about `message` (if it is about one) and hands its result to `answer`:
    /// made when the work returns, or, if the instance has a timeout and the work outlives
    /// it, made at once with the timeout's error (the work is abandoned and its result, if it
    /// ever comes, dropped).
    pub fn ask<R: Send + 'static>(
        &self,
        message: Option<MessageId>,
        work: impl FnOnce(Result<&mut T, &ProviderError>) -> (Health, R) + Send + 'static,
        answer: impl FnOnce(Result<R, ProviderError>) + Send + 'static,
    ) -> Result<(), WorkerGone> {
        let once = Arc::new(Mutex::new(Some(answer)));
        let abandoned = Arc::clone(&once);
        let job = Job {
            work: Box::new(move |slot| {
                let (health, result) = work(slot);
                let deliver: Deliver = Box::new(move || {
                    if let Some(answer) = once.lock().take() {
                        answer(Ok(result));
                    }
                });
                (health, Some(deliver))
            }),
            message,
            abandon: Some(Box::new(move |error| {
                if let Some(answer) = abandoned.lock().take() {
                    answer(Err(error));
                }
            })),
        };
        self.jobs.send(job).map_err(|_| WorkerGone)
    }

    /// Queues one provider `call` about `message` (if it is about one), whose health is its
    /// result's, and hands the result to `answer`: the call's, or the fault that keeps the
    /// instance closed, or the timeout's.
    pub fn ask_call<R: Send + 'static>(
        &self,
        message: Option<MessageId>,
        call: impl FnOnce(&mut T) -> Result<R, ProviderError> + Send + 'static,
        answer: impl FnOnce(Result<R, ProviderError>) + Send + 'static,
    ) -> Result<(), WorkerGone> {
        self.ask(
            message,
            move |slot| {
                let result = slot.map_err(Clone::clone).and_then(call);
                (Health::of(&result), result)
            },
            move |result| answer(result.and_then(|result| result)),
        )
    }

    /// Runs `call` on the worker's thread and waits for its answer (at most the timeout).
    pub fn call<R: Send + 'static>(
        &self,
        call: impl FnOnce(&mut T) -> Result<R, ProviderError> + Send + 'static,
    ) -> Result<R, ProviderError> {
        let (answer, answered) = bounded(1);
        self.ask_call(None, call, move |result| {
            answer.send(result).ok();
        })
        .map_err(|_| ProviderError::temporary("the host is shutting down"))?;
        answered
            .recv()
            .unwrap_or_else(|_| Err(ProviderError::temporary("the host is shutting down")))
    }
}
