//! The daemon: starting, reloading and stopping the spooler, from a profile and a providers
//! folder to running threads and back. It wires the layers below together (the store
//! thread, the instances in their routing table (`instances`), intake, the queue and
//! inbound managers, the front ends) and holds what a reload and a stop need. `logging` is
//! the host's log on standard error, text or JSON as the profile says.
//!
//! May call: every layer but the CLI. Only `main.rs` uses it.

mod instances;
pub mod logging;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::unix::net::UnixListener;

use crossbeam_channel::{bounded, Sender};
use provider_abi::{ErrorKind, ProviderKind};

use crate::config::{Profile, ProviderConfig};
use crate::front::control::socket::{self, Access};
use crate::front::control::{Control, Parts};
use crate::front::{http, smtpd};
use crate::inbound::{InboundCommand, InboundManager};
use crate::intake::aliases::Aliases;
use crate::intake::{Intake, Rules};
use crate::providers::host_services::ProviderNotice;
use crate::providers::loader::{self, ProviderFolder};
use crate::providers::quarantine::{self, Quarantine};
use crate::providers::routing_table::RoutesInForce;
use crate::providers::status::StatusTable;
use crate::providers::unknown::no_such_provider;
use crate::queue::board::DestinationBoard;
use crate::queue::{QueueCommand, QueueManager, Setup};
use crate::store::retention;
use crate::store::thread::StoreClient;
use crate::store::watchers::Watchers;
use instances::{build_routing_table, find, opener, report_folder, Services};

/// How long a shutdown waits for the queue manager and the inbound manager.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// How often a start that waits for its store says so again.
const STORE_WAIT_REMINDER: Duration = Duration::from_secs(60);

/// A running spooler.
pub struct Spooler {
    store_config: ProviderConfig,
    max_in_flight: usize,
    status: StatusTable,
    notices: Sender<ProviderNotice>,
    intake: Intake,
    routes: RoutesInForce,
    queue: Sender<QueueCommand>,
    inbound: Sender<InboundCommand>,
    aliases: Arc<Aliases>,
    quarantine: Quarantine,
}

impl Spooler {
    /// Loads the providers, opens the store and the other providers, and starts the queue
    /// manager, the inbound manager and the front ends. Fails only when there is no store
    /// to work with, or a socket or listener cannot be had; other providers that fail are
    /// reported in the status table and their mail waits.
    pub fn start(profile: &Profile, providers_folder: &Path) -> Result<Spooler, String> {
        socket::make_private_folder(&profile.data_dir)?;
        let quarantine = Quarantine::open(&profile.data_dir, profile.quarantine_after)?;
        quarantine::watch_for_faults();
        let folder = loader::load_folder(providers_folder).map_err(|e| e.to_string())?;
        report_folder(&folder);
        let status = StatusTable::default();
        let (notices, notices_rx) = bounded::<ProviderNotice>(1024);
        let sockets = Sockets::bind(profile)?;
        let store = start_store(&folder, profile, &status, &notices)?;
        let store_types = sockets.wait_for_store(&store, &profile.store.name)?;
        let services = Services {
            status: &status,
            notices: &notices,
            quarantine: &quarantine,
        };
        let routes = Arc::new(build_routing_table(
            &folder,
            profile,
            &services,
            None,
            store_types,
        ));
        let watchers = Watchers::default();
        let (inbound, _) =
            InboundManager::start(store.clone(), Arc::clone(&routes), watchers.clone());
        let board = DestinationBoard::default();
        let (queue, _) = QueueManager::start(Setup {
            store: store.clone(),
            routes: Arc::clone(&routes),
            status: status.clone(),
            policy: profile.retry,
            destinations: profile.destinations.clone(),
            board: board.clone(),
            max_in_flight: profile.max_in_flight,
            notices: notices_rx,
            hostname: provider_abi::host::hostname(),
            inbound: inbound.clone(),
            watchers: watchers.clone(),
            quarantine: quarantine.clone(),
            files_sent: profile.retention.files_sent(),
        });
        if let Err(error) = retention::start(store.clone(), profile.retention) {
            log::warn!("retention: cannot start its thread, nothing is removed: {error}");
        }
        let aliases = Arc::new(Aliases::new(profile.local_names.clone()));
        let routes = RoutesInForce::new(routes);
        let intake = start_intake(profile, &store, &routes, &aliases, &queue);
        let clients = smtpd::Clients::open(&profile.data_dir)?;
        smtpd::start(&profile.listeners, &intake, &clients)?;
        let local_intake = intake.clone();
        let control = Control::new(Parts {
            intake: intake.clone(),
            store: store.clone(),
            routes: routes.clone(),
            status: status.clone(),
            queue: queue.clone(),
            inbound: inbound.clone(),
            watchers,
            quarantine: quarantine.clone(),
            board,
            smtp_session: Arc::new(move |connection| {
                smtpd::serve_local(connection, &local_intake);
            }),
            smtp_bans: Arc::new(move |request| smtpd::answer_bans(&clients, request)),
        });
        if let Some(config) = &profile.http {
            let answering = control.clone();
            http::start(
                config,
                http::Parts {
                    answer: Arc::new(move |request| answering.answer_query(request)),
                    store,
                    status: status.clone(),
                },
            )?;
        }
        sockets.serve(profile, control);
        Ok(Spooler {
            store_config: profile.store.clone(),
            max_in_flight: profile.max_in_flight,
            status,
            notices,
            intake,
            routes,
            queue,
            inbound,
            aliases,
            quarantine,
        })
    }

    /// Applies a re-read profile and rescans the providers folder (SIGHUP). Instances
    /// whose configuration is unchanged keep running; new ones start (a library dropped
    /// into the folder since is loaded now); removed ones close once their work is done.
    /// `[destinations]` applies from now on. The store, the retry policy and the data
    /// folder change only with a restart.
    pub fn reload(&self, profile: &Profile, providers_folder: &Path) {
        let folder = match loader::load_folder(providers_folder) {
            Ok(folder) => folder,
            Err(error) => {
                log::error!("reload: {error}; keeping the running configuration");
                return;
            }
        };
        report_folder(&folder);
        self.aliases.configure(profile.local_names.clone());
        if profile.store != self.store_config || profile.max_in_flight != self.max_in_flight {
            log::warn!(
                "reload: changes to the store and to limits take effect at the next restart"
            );
        }
        let previous = self.routes.current();
        let routes = Arc::new(build_routing_table(
            &folder,
            profile,
            &Services {
                status: &self.status,
                notices: &self.notices,
                quarantine: &self.quarantine,
            },
            Some(&previous),
            previous.store_types.clone(),
        ));
        self.status.retain(|name| {
            name == self.store_config.name
                || routes.transports.iter().any(|t| t.name == name)
                || routes.preprocessors.iter().any(|p| p.name == name)
                || routes.hooks.iter().any(|h| h.name == name)
        });
        self.routes.replace(Arc::clone(&routes));
        self.queue
            .send(QueueCommand::NewRoutes(Arc::clone(&routes)))
            .ok();
        self.queue
            .send(QueueCommand::NewDestinations(profile.destinations.clone()))
            .ok();
        // Mail waiting for a transport that was missing or misconfigured may go now.
        self.queue.send(QueueCommand::Retry).ok();
        self.inbound.send(InboundCommand::NewRoutes(routes)).ok();
        log::info!("reloaded the profile and the providers folder");
    }

    /// Stops gracefully (SIGTERM): no new submissions, passes under way finish or go back
    /// to the queue, everything is stored, providers close.
    pub fn shutdown(self) {
        self.intake.stop();
        let (queue_done, queue_stopped) = bounded(1);
        if self.queue.send(QueueCommand::Shutdown(queue_done)).is_ok()
            && queue_stopped.recv_timeout(STOP_WAIT).is_err()
        {
            log::error!("the queue manager did not stop within {STOP_WAIT:?}");
        }
        let (inbound_done, inbound_stopped) = bounded(1);
        if self
            .inbound
            .send(InboundCommand::Shutdown(inbound_done))
            .is_ok()
            && inbound_stopped.recv_timeout(STOP_WAIT).is_err()
        {
            log::error!("the inbound manager did not stop within {STOP_WAIT:?}");
        }
        self.quarantine.clean_shutdown();
        log::info!("spooler stopped");
    }
}

/// The control sockets, bound before anything starts, so that a second host on the same
/// data folder fails at once instead of opening the store twice.
struct Sockets {
    owner: UnixListener,
    public: Option<UnixListener>,
}

impl Sockets {
    fn bind(profile: &Profile) -> Result<Sockets, String> {
        Ok(Sockets {
            owner: socket::bind(&profile.socket_path(), 0o600)?,
            public: profile
                .public_socket
                .as_deref()
                .map(socket::bind_public)
                .transpose()?,
        })
    }

    /// The address types the store delivers itself, once it answers. A store that fails
    /// for a reason that may pass (its database server is down) is waited for, as long as
    /// it takes: the log says so, and clients are told to try again later meanwhile. A
    /// store that cannot work at all ends the start.
    fn wait_for_store(&self, store: &StoreClient, name: &str) -> Result<Vec<String>, String> {
        /// How often the store is asked again (its worker reopens it after its own backoff).
        const RETRY: Duration = Duration::from_secs(1);
        let started = Instant::now();
        let mut told: Option<Instant> = None;
        loop {
            let error = match store.delivers_itself() {
                Ok(types) => {
                    if told.is_some() {
                        log::info!(
                            "the store `{name}` answers, after {} s; starting",
                            started.elapsed().as_secs()
                        );
                    }
                    return Ok(types);
                }
                Err(error) if matches!(error.kind(), ErrorKind::Temporary | ErrorKind::Full) => {
                    error
                }
                Err(error) => return Err(format!("the store cannot be used: {error}")),
            };
            if told.is_none_or(|at| at.elapsed() >= STORE_WAIT_REMINDER) {
                log::warn!(
                    "waiting for the store `{name}` (for {} s so far): {error}; clients are \
                     told to try again later until it answers",
                    started.elapsed().as_secs()
                );
                told = Some(Instant::now());
            }
            let why = format!(
                "the spooler is waiting for its store `{name}`, which is not available: \
                 {error}; try again later"
            );
            let listeners: Vec<&UnixListener> =
                std::iter::once(&self.owner).chain(&self.public).collect();
            socket::turn_away(&listeners, RETRY, &why);
        }
    }

    /// Answers on them from now on.
    fn serve(self, profile: &Profile, control: Control) {
        socket::serve(
            self.owner,
            control.clone(),
            profile.socket_path(),
            Access::Owner,
        );
        if let (Some(public), Some(path)) = (self.public, &profile.public_socket) {
            socket::serve(public, control, path.clone(), Access::Public);
            log::info!("public submission socket {}", path.display());
        }
        log::info!(
            "spooler running; control socket {}",
            profile.socket_path().display()
        );
    }
}

/// The store thread over the profile's store provider.
fn start_store(
    folder: &ProviderFolder,
    profile: &Profile,
    status: &StatusTable,
    notices: &Sender<ProviderNotice>,
) -> Result<StoreClient, String> {
    let (library, _) = find(folder, ProviderKind::Store, &profile.store.provider)
        .ok_or_else(|| no_such_provider(folder, ProviderKind::Store, &profile.store.provider))?;
    status.register(
        &profile.store.name,
        ProviderKind::Store,
        &profile.store.provider,
    );
    let open = opener(
        library.root,
        &profile.store,
        status,
        notices,
        |root| root.open_store(),
        None,
    );
    let (store, _) = StoreClient::start(&profile.store.name, open, status.clone());
    Ok(store)
}

/// Intake under the profile's rules, waking the queue manager for each new message.
fn start_intake(
    profile: &Profile,
    store: &StoreClient,
    routes: &RoutesInForce,
    aliases: &Arc<Aliases>,
    queue: &Sender<QueueCommand>,
) -> Intake {
    let rules = Rules {
        max_message_size: profile.max_message_size,
        duplicate_window: profile.duplicate_window,
        aliases: Arc::clone(aliases),
    };
    let queue = queue.clone();
    Intake::new(store.clone(), routes.clone(), rules, move |_| {
        // Never wait for the queue manager: a full queue of commands means it has wake-ups
        // waiting already, and blocking here held every concurrent submitter (16 ms per
        // SMTP message under load, see BENCHMARKS.md "issue 11").
        queue.try_send(QueueCommand::Wake).ok();
    })
}
