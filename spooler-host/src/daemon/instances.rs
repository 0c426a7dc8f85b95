//! From the profile's provider tables to running instances: finding each one's library,
//! choosing whether it runs in this process or a child of its own, opening it behind a
//! worker, and putting the instances of every kind in a routing table, one path for all
//! kinds (`Kind` says what differs).

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use provider_abi::abi_stable::std_types::{RResult, RString, RVec};
use provider_abi::host::HostObject;
use provider_abi::library::{OpenArgs, ProviderLibraryRef};
use provider_abi::preprocessor::PreprocessorObject;
use provider_abi::transport::TransportObject;
use provider_abi::{ErrorKind, HookObject, ProviderError, ProviderKind, ProviderState};

use crate::config::{Profile, ProviderConfig};
use crate::providers::host_services::{self, ProviderNotice};
use crate::providers::isolation::{self, proxy::Isolation};
use crate::providers::loader::{FileOutcome, LoadedLibrary, ProviderFolder};
use crate::providers::quarantine::Quarantine;
use crate::providers::routing_table::{Instance, RoutingTable};
use crate::providers::status::StatusTable;
use crate::providers::unknown;
use crate::providers::worker::{Opener, Worker};

/// The running instance of `previous` configured exactly as `config`, if there is one.
fn reuse<T>(previous: Option<&Vec<Instance<T>>>, config: &ProviderConfig) -> Option<Instance<T>> {
    previous?
        .iter()
        .find(|instance| instance.config == *config && instance.worker.is_some())
        .cloned()
}

/// What every instance is started with: where its state and notices go, and the quarantine
/// (its journal for in-process instances, its crash marks for isolated ones).
pub(super) struct Services<'a> {
    pub status: &'a StatusTable,
    pub notices: &'a Sender<ProviderNotice>,
    pub quarantine: &'a Quarantine,
}

/// The routing table for `profile`, reusing the running instances of `previous` whose
/// configuration did not change.
pub(super) fn build_routing_table(
    folder: &ProviderFolder,
    profile: &Profile,
    services: &Services<'_>,
    previous: Option<&RoutingTable>,
    store_types: Vec<String>,
) -> RoutingTable {
    let routes = RoutingTable {
        transports: instances::<Transports>(folder, profile, services, previous),
        preprocessors: instances::<Preprocessors>(folder, profile, services, previous),
        hooks: instances::<Hooks>(folder, profile, services, previous),
        store_types,
    };
    for transport in &routes.transports {
        let name = &transport.name;
        match (&transport.worker, transport.address_types.is_empty()) {
            (None, _) => log::info!("transport {name} claims nothing: it did not start"),
            (Some(_), true) => {
                log::info!("transport {name} claims no address type: it sends nothing")
            }
            (Some(_), false) => log::info!(
                "transport {name} claims {}",
                transport.address_types.join(", ")
            ),
        }
    }
    routes
}

/// The instances of one kind the profile configures, in its order: running ones of
/// `previous` whose configuration did not change, new ones started.
fn instances<K: Kind>(
    folder: &ProviderFolder,
    profile: &Profile,
    services: &Services<'_>,
    previous: Option<&RoutingTable>,
) -> Vec<Instance<K::Object>> {
    K::configured(profile)
        .iter()
        .map(|config| {
            reuse(previous.map(K::running), config).unwrap_or_else(|| {
                K::opened(start_instance::<K>(
                    folder,
                    config,
                    services,
                    profile.max_in_flight,
                ))
            })
        })
        .collect()
}

/// One kind of provider the routing table holds instances of: the one path every kind takes
/// from the profile to a running instance, with what differs per kind here.
trait Kind {
    /// The object the host calls.
    type Object: 'static;
    /// The kind, as manifests and status rows name it.
    const KIND: ProviderKind;
    /// The library's entry point that opens one in this process.
    fn entry(root: ProviderLibraryRef) -> OpenFn<Self::Object>;
    /// Opens one in a child process: one of `isolation::proxy`'s constructors.
    fn isolated(
        isolation: &Arc<Isolation>,
        host: HostObject,
    ) -> Result<Self::Object, ProviderError>;
    /// The profile's tables of this kind.
    fn configured(profile: &Profile) -> &[ProviderConfig];
    /// The running instances of this kind in a routing table.
    fn running(routes: &RoutingTable) -> &Vec<Instance<Self::Object>>;
    /// What the instance says of itself once open (the address types it claims, how often
    /// to fetch its mail).
    fn opened(instance: Instance<Self::Object>) -> Instance<Self::Object>;
}

struct Transports;

impl Kind for Transports {
    type Object = TransportObject;
    const KIND: ProviderKind = ProviderKind::Transport;
    fn entry(root: ProviderLibraryRef) -> OpenFn<TransportObject> {
        root.open_transport()
    }
    fn isolated(
        isolation: &Arc<Isolation>,
        host: HostObject,
    ) -> Result<TransportObject, ProviderError> {
        isolation::proxy::transport(isolation, host)
    }
    fn configured(profile: &Profile) -> &[ProviderConfig] {
        &profile.transports
    }
    fn running(routes: &RoutingTable) -> &Vec<Instance<TransportObject>> {
        &routes.transports
    }
    fn opened(instance: Instance<TransportObject>) -> Instance<TransportObject> {
        let instance =
            with_claimed_types(instance, Self::KIND, |transport| transport.address_types());
        with_per_domain(with_poll_interval(instance))
    }
}

struct Preprocessors;

impl Kind for Preprocessors {
    type Object = PreprocessorObject;
    const KIND: ProviderKind = ProviderKind::Preprocessor;
    fn entry(root: ProviderLibraryRef) -> OpenFn<PreprocessorObject> {
        root.open_preprocessor()
    }
    fn isolated(
        isolation: &Arc<Isolation>,
        host: HostObject,
    ) -> Result<PreprocessorObject, ProviderError> {
        isolation::proxy::preprocessor(isolation, host)
    }
    fn configured(profile: &Profile) -> &[ProviderConfig] {
        &profile.preprocessors
    }
    fn running(routes: &RoutingTable) -> &Vec<Instance<PreprocessorObject>> {
        &routes.preprocessors
    }
    fn opened(instance: Instance<PreprocessorObject>) -> Instance<PreprocessorObject> {
        with_claimed_types(instance, Self::KIND, |preprocessor| {
            preprocessor.address_types()
        })
    }
}

struct Hooks;

impl Kind for Hooks {
    type Object = HookObject;
    const KIND: ProviderKind = ProviderKind::Hook;
    fn entry(root: ProviderLibraryRef) -> OpenFn<HookObject> {
        root.open_hook()
    }
    fn isolated(isolation: &Arc<Isolation>, host: HostObject) -> Result<HookObject, ProviderError> {
        isolation::proxy::hook(isolation, host)
    }
    fn configured(profile: &Profile) -> &[ProviderConfig] {
        &profile.hooks
    }
    fn running(routes: &RoutingTable) -> &Vec<Instance<HookObject>> {
        &routes.hooks
    }
    fn opened(instance: Instance<HookObject>) -> Instance<HookObject> {
        instance
    }
}

/// Logs what became of each file of the providers folder.
pub(super) fn report_folder(folder: &ProviderFolder) {
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
pub(super) fn find<'a>(
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

/// A library's entry point that opens an instance in this process.
pub(super) type OpenFn<T> = extern "C" fn(OpenArgs) -> RResult<T, ProviderError>;

/// Opens an instance in a child process: one of `isolation::proxy`'s constructors.
type StartIsolated<T> = fn(&Arc<Isolation>, HostObject) -> Result<T, ProviderError>;

/// Opens the instance `config` names: through the library's entry point in this process, or,
/// with an `isolation`, in a child process of its own.
pub(super) fn opener<T: 'static>(
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
        let opened = opened.map_err(|error| in_the_profile(&config, error));
        if opened.is_ok() && status.state(&config.name) == ProviderState::Error {
            status.set(&config.name, ProviderState::Online, "");
        }
        opened
    })
}

/// A configuration error of instance `config` pointing at the profile's file and line: the
/// provider counts lines in the text the host handed it, which the operator never sees.
fn in_the_profile(config: &ProviderConfig, error: ProviderError) -> ProviderError {
    match &config.origin {
        Some(origin) if error.kind() == ErrorKind::Configuration => {
            ProviderError::new(error.kind(), origin.explain(&config.name, error.message()))
        }
        _ => error,
    }
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

/// Starts the instance `config` names, with a worker, or without one (and an error in its
/// status row) if no library in the folder offers its provider.
fn start_instance<K: Kind>(
    folder: &ProviderFolder,
    config: &ProviderConfig,
    services: &Services<'_>,
    capacity: usize,
) -> Instance<K::Object> {
    let kind = K::KIND;
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
                (isolation, K::isolated as StartIsolated<K::Object>)
            });
            // An isolated instance marks its own crashes; the journal is for those that
            // would take the host down with them.
            let journal = isolation.is_none().then(|| services.quarantine.clone());
            let open = opener(
                library.root,
                config,
                status,
                services.notices,
                K::entry,
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
            let why = unknown::no_such_provider(folder, kind, &config.provider);
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
        per_domain: false,
        worker,
    }
}

/// The instance with the address types it claims now that it is open, asked on its own
/// thread: the instance's claim is what the host routes by (its configuration may change the
/// types). The library's manifest declares defaults too (`spooler-host providers` shows
/// them); they stand only for an instance that did not open, whose mail of those types then
/// waits for it. When the two differ, the log says so, naming both.
fn with_claimed_types<T: 'static>(
    instance: Instance<T>,
    kind: ProviderKind,
    ask: fn(&mut T) -> RResult<RVec<RString>, ProviderError>,
) -> Instance<T> {
    let Some(worker) = &instance.worker else {
        return instance;
    };
    match worker.call(move |object| ask(object).into_result()) {
        Ok(types) => {
            let claimed: Vec<String> = types.into_iter().map(RString::into_string).collect();
            compare_claims(kind, &instance.config, &instance.address_types, &claimed);
            Instance {
                address_types: claimed,
                ..instance
            }
        }
        Err(_) => {
            log::info!(
                "{kind} {} is not open; it holds the address types its library declares ({}) \
                 until it is reloaded",
                instance.name,
                listed(&instance.address_types)
            );
            instance
        }
    }
}

/// Logs an instance of `config` claiming other address types than its library `declared`.
/// With a `config` table that is expected (the table chose them), and said once; without
/// one, the library's two declarations disagree, which its author should hear of.
fn compare_claims(
    kind: ProviderKind,
    config: &ProviderConfig,
    declared: &[String],
    claimed: &[String],
) {
    let sorted = |types: &[String]| {
        let mut types = types.to_vec();
        types.sort_unstable();
        types.dedup();
        types
    };
    if sorted(declared) == sorted(claimed) {
        return;
    }
    let (name, provider) = (&config.name, &config.provider);
    let (declared, claimed) = (listed(declared), listed(claimed));
    if config.config.trim().is_empty() {
        log::warn!(
            "{kind} {name}: provider `{provider}` claims {claimed}, but its library declares \
             {declared} (what `spooler-host providers` shows) without any configuration; the \
             instance's claim is what the host routes by. Its author should make the two agree"
        );
    } else {
        log::info!(
            "{kind} {name}: provider `{provider}` claims {claimed} as configured, not its \
             library's default {declared}; the instance's claim is what the host routes by"
        );
    }
}

/// Address types as the log shows them: `[SMTP, LOCAL]`.
fn listed(types: &[String]) -> String {
    format!("[{}]", types.join(", "))
}

/// The instance, knowing whether it delivers per domain (a transport that cannot say, or
/// built before provider-abi 1.5, does not).
fn with_per_domain(
    instance: Instance<provider_abi::transport::TransportObject>,
) -> Instance<provider_abi::transport::TransportObject> {
    let per_domain = instance.worker.as_ref().is_some_and(|worker| {
        worker
            .call(|transport| transport.delivers_per_domain().into_result())
            .unwrap_or(false)
    });
    if per_domain {
        log::info!(
            "transport {}: delivers per domain; each domain is scheduled as a destination of \
             its own ([destinations])",
            instance.name
        );
    }
    Instance {
        per_domain,
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
