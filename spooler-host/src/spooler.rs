//! Starting the spooler: from a profile and a providers folder to running threads.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};
use provider_abi::abi_stable::std_types::{RResult, RString, RVec};
use provider_abi::library::{OpenArgs, ProviderLibraryRef};
use provider_abi::{ProviderError, ProviderKind, ProviderState};

use crate::config::{Profile, ProviderConfig};
use crate::control::{self, Control};
use crate::engine::{QueueManager, Setup};
use crate::host_services::{self, ProviderNotice};
use crate::loader::{self, FileOutcome, ProviderFolder};
use crate::registry::{Instance, Registry};
use crate::status::StatusTable;
use crate::store_thread::StoreClient;
use crate::worker::{Opener, Worker};

/// A running spooler.
pub struct Spooler {
    threads: Vec<JoinHandle<()>>,
}

impl Spooler {
    /// Loads the providers, opens the store and the other providers, and starts the queue
    /// manager and the control socket. Fails only when there is no store to work with or
    /// the control socket cannot be had; other providers that fail are reported in the
    /// status table and their mail waits.
    pub fn start(profile: &Profile, providers_folder: &Path) -> Result<Spooler, String> {
        control::make_private_folder(&profile.data_dir)?;
        let folder = loader::load_folder(providers_folder).map_err(|e| e.to_string())?;
        report_folder(&folder);
        let status = StatusTable::default();
        let (notices, notices_rx) = bounded::<ProviderNotice>(1024);
        let listener = control::bind(&profile.socket_path())?;

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
        let (store, mut threads) = StoreClient::start(
            &profile.store.name,
            opener(store_root, &profile.store, &status, &notices, |root| {
                root.open_store()
            }),
            status.clone(),
        );
        let store_types = store
            .delivers_itself()
            .map_err(|e| format!("the store cannot be used: {e}"))?;

        let capacity = profile.max_in_flight;
        let transports = profile
            .transports
            .iter()
            .map(|config| {
                let instance = start_instance(
                    &folder,
                    ProviderKind::Transport,
                    config,
                    &status,
                    &notices,
                    capacity,
                    &mut threads,
                    |root| root.open_transport(),
                );
                with_claimed_types(instance, |transport| transport.address_types())
            })
            .collect();
        let preprocessors = profile
            .preprocessors
            .iter()
            .map(|config| {
                let instance = start_instance(
                    &folder,
                    ProviderKind::Preprocessor,
                    config,
                    &status,
                    &notices,
                    capacity,
                    &mut threads,
                    |root| root.open_preprocessor(),
                );
                with_claimed_types(instance, |preprocessor| preprocessor.address_types())
            })
            .collect();
        let hooks = profile
            .hooks
            .iter()
            .map(|config| {
                start_instance(
                    &folder,
                    ProviderKind::Hook,
                    config,
                    &status,
                    &notices,
                    capacity,
                    &mut threads,
                    |root| root.open_hook(),
                )
            })
            .collect();
        let registry = Arc::new(Registry {
            transports,
            preprocessors,
            hooks,
            store_types,
        });
        for transport in &registry.transports {
            log::info!(
                "transport {} claims {}",
                transport.name,
                transport.address_types.join(", ")
            );
        }

        let (engine, engine_thread) = QueueManager::start(Setup {
            store: store.clone(),
            registry: Arc::clone(&registry),
            status: status.clone(),
            policy: profile.retry,
            max_in_flight: profile.max_in_flight,
            notices: notices_rx,
            hostname: hostname(),
        });
        threads.push(engine_thread);
        control::serve(
            listener,
            Control {
                store,
                registry,
                status,
                engine,
            },
            profile.socket_path(),
        );
        log::info!(
            "spooler running; control socket {}",
            profile.socket_path().display()
        );
        Ok(Spooler { threads })
    }

    /// Waits for the spooler's threads (until the process is stopped).
    pub fn wait(self) {
        for thread in self.threads {
            thread.join().ok();
        }
    }
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

/// The root module of the library offering provider `name` of `kind`.
fn find(
    folder: &ProviderFolder,
    kind: ProviderKind,
    name: &str,
) -> Option<(ProviderLibraryRef, Vec<String>)> {
    folder.libraries().find_map(|library| {
        library
            .providers()
            .find(|(k, info)| *k == kind && info.name == name)
            .map(|(_, info)| {
                (
                    library.root,
                    info.address_types.iter().map(|t| t.to_string()).collect(),
                )
            })
    })
}

type OpenFn<T> = extern "C" fn(OpenArgs) -> RResult<T, ProviderError>;

fn opener<T: 'static>(
    (root, _): (ProviderLibraryRef, Vec<String>),
    config: &ProviderConfig,
    status: &StatusTable,
    notices: &Sender<ProviderNotice>,
    entry: fn(ProviderLibraryRef) -> OpenFn<T>,
) -> Opener<T> {
    let config = config.clone();
    let status = status.clone();
    let notices = notices.clone();
    Box::new(move || {
        let opened = entry(root)(OpenArgs {
            name: config.provider.as_str().into(),
            config: config.config.as_str().into(),
            host: host_services::for_instance(&config.name, &status, &notices),
        })
        .into_result();
        if opened.is_ok() && status.state(&config.name) == ProviderState::Error {
            status.set(&config.name, ProviderState::Online, "");
        }
        opened
    })
}

#[allow(clippy::too_many_arguments)]
fn start_instance<T: 'static>(
    folder: &ProviderFolder,
    kind: ProviderKind,
    config: &ProviderConfig,
    status: &StatusTable,
    notices: &Sender<ProviderNotice>,
    capacity: usize,
    threads: &mut Vec<JoinHandle<()>>,
    entry: fn(ProviderLibraryRef) -> OpenFn<T>,
) -> Instance<T> {
    status.register(&config.name, kind, &config.provider);
    match find(folder, kind, &config.provider) {
        Some(found) => {
            let types = found.1.clone();
            let (worker, thread) = Worker::start(
                &config.name,
                capacity,
                opener(found, config, status, notices, entry),
                status.clone(),
            );
            threads.push(thread);
            Instance {
                name: config.name.clone(),
                address_types: types,
                worker: Some(worker),
            }
        }
        None => {
            let why = format!(
                "there is no {kind} provider `{}` in the providers folder",
                config.provider
            );
            log::error!("{}: {why}", config.name);
            status.set(&config.name, ProviderState::Error, &why);
            Instance {
                name: config.name.clone(),
                address_types: Vec::new(),
                worker: None,
            }
        }
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

/// This machine's name, for reports.
pub fn hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match (done, std::str::from_utf8(&buffer[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_owned(),
        _ => "localhost".into(),
    }
}
