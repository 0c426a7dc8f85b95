//! Starting, reloading and stopping the spooler: from a profile and a providers folder to
//! running threads, and back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use provider_abi::abi_stable::std_types::{RResult, RString, RVec};
use provider_abi::host::HostObject;
use provider_abi::library::{OpenArgs, ProviderLibraryRef};
use provider_abi::{ProviderError, ProviderKind, ProviderState};

use crate::config::{Profile, ProviderConfig};
use crate::front::control::socket::{self, Access};
use crate::front::control::{Control, Parts};
use crate::front::smtpd;
use crate::inbound::{InboundCommand, InboundManager};
use crate::intake::aliases::Aliases;
use crate::intake::{Intake, Rules};
use crate::providers::host_services::{self, ProviderNotice};
use crate::providers::isolation::{self, proxy::Isolation};
use crate::providers::loader::{self, FileOutcome, LoadedLibrary, ProviderFolder};
use crate::providers::quarantine::{self, Quarantine};
use crate::providers::routing_table::{Instance, RoutesInForce, RoutingTable};
use crate::providers::status::StatusTable;
use crate::providers::worker::{Opener, Worker};
use crate::queue::{QueueCommand, QueueManager, Setup};
use crate::store::thread::StoreClient;
use crate::store::watchers::Watchers;

/// How long a shutdown waits for the queue manager and the inbound manager.
const STOP_WAIT: Duration = Duration::from_secs(30);

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
    /// manager, the inbound manager and the control socket. Fails only when there is no
    /// store to work with or the control socket cannot be had; other providers that fail
    /// are reported in the status table and their mail waits.
    pub fn start(profile: &Profile, providers_folder: &Path) -> Result<Spooler, String> {
        socket::make_private_folder(&profile.data_dir)?;
        let quarantine = Quarantine::open(&profile.data_dir, profile.quarantine_after)?;
        quarantine::watch_for_faults();
        let folder = loader::load_folder(providers_folder).map_err(|e| e.to_string())?;
        report_folder(&folder);
        let status = StatusTable::default();
        let (notices, notices_rx) = bounded::<ProviderNotice>(1024);
        let listener = socket::bind(&profile.socket_path(), 0o600)?;
        let public = profile
            .public_socket
            .as_deref()
            .map(socket::bind_public)
            .transpose()?;

        let store_root = find(&folder, ProviderKind::Store, &profile.store.provider).ok_or_else(|| {
            format!(
                "there is no store provider `{}` in {} (`spooler-host providers` lists what is there)",
                profile.store.provider,
                providers_folder.display()
            )
        })?;
        status.register(
            &profile.store.name,
            ProviderKind::Store,
            &profile.store.provider,
        );
        let (store, _) = StoreClient::start(
            &profile.store.name,
            opener(
                store_root.0.root,
                &profile.store,
                &status,
                &notices,
                |root| root.open_store(),
                None,
            ),
            status.clone(),
        );
        let store_types = store
            .delivers_itself()
            .map_err(|e| format!("the store cannot be used: {e}"))?;
        let routes = Arc::new(build_routing_table(
            &folder,
            profile,
            &Services {
                status: &status,
                notices: &notices,
                quarantine: &quarantine,
            },
            None,
            store_types,
        ));

        let watchers = Watchers::default();
        let (inbound, _) =
            InboundManager::start(store.clone(), Arc::clone(&routes), watchers.clone());
        let (queue, _) = QueueManager::start(Setup {
            store: store.clone(),
            routes: Arc::clone(&routes),
            status: status.clone(),
            policy: profile.retry,
            max_in_flight: profile.max_in_flight,
            notices: notices_rx,
            hostname: provider_abi::host::hostname(),
            inbound: inbound.clone(),
            watchers: watchers.clone(),
            quarantine: quarantine.clone(),
        });
        let aliases = Arc::new(Aliases::new(profile.local_names.clone()));
        let routes = RoutesInForce::new(routes);
        let wake = queue.clone();
        let intake = Intake::new(
            store.clone(),
            routes.clone(),
            Rules {
                max_message_size: profile.max_message_size,
                duplicate_window: profile.duplicate_window,
                aliases: Arc::clone(&aliases),
            },
            // Never wait for the queue manager: a full queue of commands means it has
            // wake-ups waiting already, and blocking here held every concurrent submitter
            // (16 ms per SMTP message under load, see BENCHMARKS.md "issue 11").
            move |_| {
                wake.try_send(QueueCommand::Wake).ok();
            },
        );
        smtpd::start(&profile.listeners, &intake)?;
        let local_intake = intake.clone();
        let control = Control::new(Parts {
            intake: intake.clone(),
            store,
            routes: routes.clone(),
            status: status.clone(),
            queue: queue.clone(),
            inbound: inbound.clone(),
            watchers,
            quarantine: quarantine.clone(),
            smtp_session: Arc::new(move |connection| {
                smtpd::serve_local(connection, &local_intake);
            }),
        });
        socket::serve(
            listener,
            control.clone(),
            profile.socket_path(),
            Access::Owner,
        );
        if let (Some(public), Some(path)) = (public, &profile.public_socket) {
            socket::serve(public, control, path.clone(), Access::Public);
            log::info!("public submission socket {}", path.display());
        }
        log::info!(
            "spooler running; control socket {}",
            profile.socket_path().display()
        );
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
    /// The store, the retry policy and the data folder change only with a restart.
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
        // Mail waiting for a transport that was missing or misconfigured may go now.
        self.queue.send(QueueCommand::Flush(None)).ok();
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

/// The running instance of `previous` configured exactly as `config`, if there is one.
fn reuse<T>(previous: Option<&Vec<Instance<T>>>, config: &ProviderConfig) -> Option<Instance<T>> {
    previous?
        .iter()
        .find(|instance| instance.config == *config && instance.worker.is_some())
        .cloned()
}

/// What every instance is started with: where its state and notices go, and the quarantine
/// (its journal for in-process instances, its crash marks for isolated ones).
struct Services<'a> {
    status: &'a StatusTable,
    notices: &'a Sender<ProviderNotice>,
    quarantine: &'a Quarantine,
}

/// The routing table for `profile`, reusing the running instances of `previous` whose
/// configuration did not change.
fn build_routing_table(
    folder: &ProviderFolder,
    profile: &Profile,
    services: &Services<'_>,
    previous: Option<&RoutingTable>,
    store_types: Vec<String>,
) -> RoutingTable {
    let capacity = profile.max_in_flight;
    let transports = profile
        .transports
        .iter()
        .map(|config| {
            reuse(previous.map(|p| &p.transports), config).unwrap_or_else(|| {
                let instance = start_instance(
                    folder,
                    ProviderKind::Transport,
                    config,
                    services,
                    capacity,
                    (|root| root.open_transport(), isolation::proxy::transport),
                );
                let instance = with_claimed_types(instance, |transport| transport.address_types());
                with_poll_interval(instance)
            })
        })
        .collect();
    let preprocessors = profile
        .preprocessors
        .iter()
        .map(|config| {
            reuse(previous.map(|p| &p.preprocessors), config).unwrap_or_else(|| {
                let instance = start_instance(
                    folder,
                    ProviderKind::Preprocessor,
                    config,
                    services,
                    capacity,
                    (
                        |root| root.open_preprocessor(),
                        isolation::proxy::preprocessor,
                    ),
                );
                with_claimed_types(instance, |preprocessor| preprocessor.address_types())
            })
        })
        .collect();
    let hooks = profile
        .hooks
        .iter()
        .map(|config| {
            reuse(previous.map(|p| &p.hooks), config).unwrap_or_else(|| {
                start_instance(
                    folder,
                    ProviderKind::Hook,
                    config,
                    services,
                    capacity,
                    (|root| root.open_hook(), isolation::proxy::hook),
                )
            })
        })
        .collect();
    let routes = RoutingTable {
        transports,
        preprocessors,
        hooks,
        store_types,
    };
    for transport in &routes.transports {
        log::info!(
            "transport {} claims {}",
            transport.name,
            transport.address_types.join(", ")
        );
    }
    routes
}

fn report_folder(folder: &ProviderFolder) {
    for file in &folder.files {
        match &file.outcome {
            FileOutcome::Loaded(library) => log::info!(
                "{}: loaded {} {}",
                file.path.display(),
                library.manifest.library,
                library.manifest.version
            ),
            FileOutcome::Refused(refusal) => {
                log::warn!("{}: refused: {refusal}", file.path.display())
            }
            FileOutcome::Skipped(why) => log::debug!("{}: skipped: {why}", file.path.display()),
        }
    }
}

/// The library offering provider `name` of `kind`, and the address types its manifest gives.
fn find<'a>(
    folder: &'a ProviderFolder,
    kind: ProviderKind,
    name: &str,
) -> Option<(&'a LoadedLibrary, Vec<String>)> {
    folder.libraries().find_map(|library| {
        library
            .providers()
            .find(|(k, info)| *k == kind && info.name == name)
            .map(|(_, info)| {
                (
                    library,
                    info.address_types.iter().map(|t| t.to_string()).collect(),
                )
            })
    })
}

type OpenFn<T> = extern "C" fn(OpenArgs) -> RResult<T, ProviderError>;

/// Opens an instance in a child process: one of `isolation::proxy`'s constructors.
type StartIsolated<T> = fn(&Arc<Isolation>, HostObject) -> Result<T, ProviderError>;

/// How instances of one kind are opened: through the library's entry point in this process,
/// or in a child process.
type Openers<T> = (fn(ProviderLibraryRef) -> OpenFn<T>, StartIsolated<T>);

/// Opens the instance `config` names: through the library's entry point in this process, or,
/// with an `isolation`, in a child process of its own.
fn opener<T: 'static>(
    root: ProviderLibraryRef,
    config: &ProviderConfig,
    status: &StatusTable,
    notices: &Sender<ProviderNotice>,
    entry: fn(ProviderLibraryRef) -> OpenFn<T>,
    isolation: Option<(Arc<Isolation>, StartIsolated<T>)>,
) -> Opener<T> {
    let config = config.clone();
    let status = status.clone();
    let notices = notices.clone();
    Arc::new(move || {
        let host = host_services::for_instance(&config.name, &status, &notices);
        let opened = match &isolation {
            Some((isolation, start)) => start(isolation, host),
            None => entry(root)(OpenArgs {
                name: config.provider.as_str().into(),
                instance: config.name.as_str().into(),
                config: config.config.as_str().into(),
                host,
            })
            .into_result(),
        };
        if opened.is_ok() && status.state(&config.name) == ProviderState::Error {
            status.set(&config.name, ProviderState::Online, "");
        }
        opened
    })
}

/// Whether instance `config` of a provider in `library` runs in a process of its own: as the
/// profile says, else as the library's default; and always once it took the host down
/// `quarantine_after` times outside any message's call.
fn isolated(config: &ProviderConfig, library: &LoadedLibrary, quarantine: &Quarantine) -> bool {
    let chosen = config
        .isolate
        .unwrap_or_else(|| !isolation::is_bundled(&library.manifest.library));
    if !chosen && quarantine.must_isolate(&config.name) {
        log::warn!(
            "{}: runs isolated although the profile or its library says otherwise: it took the \
             host down {} times outside a message's call (crash-marks in the data folder)",
            config.name,
            quarantine.threshold()
        );
        return true;
    }
    chosen
}

fn start_instance<T: 'static>(
    folder: &ProviderFolder,
    kind: ProviderKind,
    config: &ProviderConfig,
    services: &Services<'_>,
    capacity: usize,
    (entry, start_isolated): Openers<T>,
) -> Instance<T> {
    let status = services.status;
    status.register(&config.name, kind, &config.provider);
    let (address_types, worker) = match find(folder, kind, &config.provider) {
        Some((library, types)) => {
            let isolation = isolated(config, library, services.quarantine).then(|| {
                let isolation = Arc::new(Isolation {
                    library: library.path.clone(),
                    kind,
                    provider: config.provider.clone(),
                    instance: config.name.clone(),
                    config: config.config.clone(),
                    memory_limit: config.memory_limit,
                    timeout: config.timeout,
                    status: status.clone(),
                    quarantine: services.quarantine.clone(),
                });
                (isolation, start_isolated)
            });
            // An isolated instance marks its own crashes; the journal is for those that
            // would take the host down with them.
            let journal = isolation.is_none().then(|| services.quarantine.clone());
            let open = opener(
                library.root,
                config,
                status,
                services.notices,
                entry,
                isolation,
            );
            let (worker, _) = Worker::start(
                &config.name,
                capacity,
                config.parallel,
                config.timeout,
                open,
                status.clone(),
                journal,
            );
            (types, Some(worker))
        }
        None => {
            let why = format!(
                "there is no {kind} provider `{}` in the providers folder",
                config.provider
            );
            log::error!("{}: {why}", config.name);
            status.set(&config.name, ProviderState::Error, &why);
            (Vec::new(), None)
        }
    };
    Instance {
        name: config.name.clone(),
        config: config.clone(),
        address_types,
        poll_interval: None,
        worker,
    }
}

/// The instance with the address types it claims now that it is open (its configuration may
/// change them), asked on its own thread; the manifest's defaults if it cannot say.
fn with_claimed_types<T: 'static>(
    instance: Instance<T>,
    ask: fn(&mut T) -> RResult<RVec<RString>, ProviderError>,
) -> Instance<T> {
    let claimed = instance.worker.as_ref().and_then(|worker| {
        worker
            .call(move |object| ask(object).into_result())
            .map(|types| types.into_iter().map(RString::into_string).collect())
            .ok()
    });
    Instance {
        address_types: claimed.unwrap_or(instance.address_types),
        ..instance
    }
}

/// The transport with the interval at which it wants its inbound mail fetched.
fn with_poll_interval(
    instance: Instance<provider_abi::transport::TransportObject>,
) -> Instance<provider_abi::transport::TransportObject> {
    let interval = instance.worker.as_ref().and_then(|worker| {
        worker
            .call(|transport| transport.poll_interval_secs().into_result())
            .ok()
            .and_then(|secs| secs.into_option())
            .map(|secs| Duration::from_secs(secs.max(1).into()))
    });
    Instance {
        poll_interval: interval,
        ..instance
    }
}
