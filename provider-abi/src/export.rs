//! What a provider library exports: the [`Library`] an author describes, and the entry points
//! [`export_library!`](crate::export_library) generates around it.
//!
//! Every entry point runs inside [`guarded`], so a panicking constructor or provider method
//! becomes an [`ErrorKind::Panicked`](crate::ErrorKind::Panicked) error for the host.

use std::sync::OnceLock;

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use serde::de::DeserializeOwned;

use crate::error::ProviderError;
use crate::guard::{guarded, strings, Guarded};
use crate::hook::{Hook, HookFfi_TO, HookObject};
use crate::host::{Host, LogSink};
use crate::library::{
    Manifest, OpenArgs, ProviderInfo, ProviderKind, ProviderKindAbi, ABI_VERSION,
};
use crate::logging;
use crate::preprocessor::{Preprocessor, PreprocessorFfi_TO, PreprocessorObject};
use crate::store::{Store, StoreFfi_TO, StoreObject};
use crate::transport::{Transport, TransportFfi_TO, TransportObject};

/// What a provider's constructor gets: its instance name, its configuration and the host.
#[derive(Debug)]
pub struct OpenContext {
    name: String,
    config: String,
    host: Host,
}

impl OpenContext {
    /// The instance's name in the host's profile (`relay`, `fax-gateway`); use it in
    /// messages, so that an operator with several instances of one provider knows which
    /// one speaks.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration: the text of its TOML table (empty when the profile has none).
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Its configuration read into `T`, usually a `#[derive(Deserialize)]` struct with
    /// `#[serde(deny_unknown_fields)]`; an empty table reads as one without keys.
    ///
    /// A configuration error names the instance, the dotted key, the line and what was
    /// expected: `instance "relay": key port at line 2: invalid type: string "x", expected
    /// u16`; the host turns it into the profile's file and line by the key. See
    /// [`config`](crate::config).
    ///
    /// ```
    /// use provider_abi::{OpenContext, ProviderError};
    /// use serde::Deserialize;
    ///
    /// #[derive(Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Config {
    ///     path: std::path::PathBuf,
    ///     #[serde(default)]
    ///     sync: bool,
    /// }
    ///
    /// fn open(context: &OpenContext) -> Result<Config, ProviderError> {
    ///     let config: Config = context.config_as()?;
    ///     if !config.path.is_absolute() {
    ///         let why = format!("{} is relative; give an absolute path", config.path.display());
    ///         return Err(context.config_error("path", why));
    ///     }
    ///     Ok(config)
    /// }
    /// ```
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        crate::config::from_toml(&self.name, &self.config)
    }

    /// A configuration error about `key` worded like those of [`config_as`](Self::config_as),
    /// for what serde cannot check: `context.config_error("path", "not a folder; create
    /// it")` reads `instance "mbox": key path: not a folder; create it`. An empty `key` is a
    /// problem of the whole table. See [`config::error`](crate::config::error).
    pub fn config_error(&self, key: &str, why: impl std::fmt::Display) -> ProviderError {
        crate::config::error(&self.name, key, why)
    }

    /// The host's services for this instance.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

type Constructor<O> = Box<dyn Fn(&OpenContext) -> Result<O, ProviderError> + Send + Sync>;

enum Opener {
    Store(Constructor<StoreObject>),
    Transport(Constructor<TransportObject>),
    Preprocessor(Constructor<PreprocessorObject>),
    Hook(Constructor<HookObject>),
}

struct Entry {
    info: ProviderInfo,
    opener: Opener,
}

/// A provider library as its author describes it: a name, a version and its providers.
///
/// ```
/// # use provider_abi::{Library, Hook, HookAction, HookMessage, ProviderError};
/// struct KeepAll;
/// impl Hook for KeepAll {
///     fn run(&mut self, _: HookMessage<'_>) -> Result<HookAction, ProviderError> {
///         Ok(HookAction::Leave)
///     }
/// }
/// fn library() -> Library {
///     Library::new("keep-all", "1.0.0").hook("keep-all", |_context| Ok(KeepAll))
/// }
/// ```
pub struct Library {
    name: String,
    version: String,
    entries: Vec<Entry>,
}

impl Library {
    /// A library with no providers yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Library {
            name: name.into(),
            version: version.into(),
            entries: Vec::new(),
        }
    }

    /// Adds a store; `delivers_itself` are the address types it delivers without a transport.
    ///
    /// They are the defaults `spooler-host providers` shows; the host acts on what the open
    /// store's [`Store::delivers_itself`] answers.
    pub fn store<S: Store>(
        self,
        name: &str,
        delivers_itself: &[&str],
        open: impl Fn(&OpenContext) -> Result<S, ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.with(ProviderKind::Store, name, delivers_itself, {
            Opener::Store(Box::new(move |context| {
                open(context).map(|store| StoreFfi_TO::from_value(Guarded(store), TD_Opaque))
            }))
        })
    }

    /// Adds a transport claiming `address_types` by default.
    ///
    /// These are the library's defaults, what `spooler-host providers` shows before any
    /// instance is open. The host routes by what each open instance's
    /// [`Transport::address_types`] answers, which wins; the
    /// defaults stand only for an instance that did not open (mail of those types then waits
    /// for it). Declare here what an instance claims without configuration: the host logs a
    /// warning naming the instance and both lists when an instance opened without a `config`
    /// table claims others.
    pub fn transport<T: Transport>(
        self,
        name: &str,
        address_types: &[&str],
        open: impl Fn(&OpenContext) -> Result<T, ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.with(ProviderKind::Transport, name, address_types, {
            Opener::Transport(Box::new(move |context| {
                open(context)
                    .map(|transport| TransportFfi_TO::from_value(Guarded(transport), TD_Opaque))
            }))
        })
    }

    /// Adds a preprocessor for messages with recipients of `address_types` (empty: all).
    ///
    /// As for [`transport`](Self::transport), these are the library's defaults, shown by
    /// `spooler-host providers`; the host chooses the messages an instance sees by what its
    /// [`Preprocessor::address_types`] answers once open,
    /// and warns when an instance opened without a `config` table answers otherwise.
    pub fn preprocessor<P: Preprocessor>(
        self,
        name: &str,
        address_types: &[&str],
        open: impl Fn(&OpenContext) -> Result<P, ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.with(ProviderKind::Preprocessor, name, address_types, {
            Opener::Preprocessor(Box::new(move |context| {
                open(context).map(|preprocessor| {
                    PreprocessorFfi_TO::from_value(Guarded(preprocessor), TD_Opaque)
                })
            }))
        })
    }

    /// Adds a hook.
    pub fn hook<H: Hook>(
        self,
        name: &str,
        open: impl Fn(&OpenContext) -> Result<H, ProviderError> + Send + Sync + 'static,
    ) -> Self {
        self.with(ProviderKind::Hook, name, &[], {
            Opener::Hook(Box::new(move |context| {
                open(context).map(|hook| HookFfi_TO::from_value(Guarded(hook), TD_Opaque))
            }))
        })
    }

    fn with(mut self, kind: ProviderKind, name: &str, types: &[&str], opener: Opener) -> Self {
        self.entries.push(Entry {
            info: ProviderInfo {
                kind: ProviderKindAbi::new(kind),
                name: name.into(),
                address_types: strings(types.iter().map(|t| t.to_ascii_uppercase()).collect()),
            },
            opener,
        });
        self
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            library: self.name.as_str().into(),
            version: self.version.as_str().into(),
            abi_version: ABI_VERSION.into(),
            providers: self.entries.iter().map(|e| e.info.clone()).collect(),
        }
    }

    fn open<O>(
        &self,
        kind: ProviderKind,
        args: OpenArgs,
        pick: impl Fn(&Opener) -> Option<&Constructor<O>>,
    ) -> Result<O, ProviderError> {
        let constructor = self
            .entries
            .iter()
            .filter(|entry| entry.info.name == args.name)
            .find_map(|entry| pick(&entry.opener))
            .ok_or_else(|| {
                ProviderError::configuration(format!(
                    "library `{}` has no {kind} named `{}`",
                    self.name, args.name
                ))
            })?;
        constructor(&OpenContext {
            name: args.instance.into_string(),
            config: args.config.into_string(),
            host: Host::from_object(args.host),
        })
    }
}

/// Where a library keeps its [`Library`] once loaded. Used by [`export_library!`](crate::export_library).
#[doc(hidden)]
pub type LibraryCell = OnceLock<Library>;

/// The `load` entry point. Used by [`export_library!`](crate::export_library).
#[doc(hidden)]
pub fn load(
    cell: &LibraryCell,
    sink: LogSink,
    build: fn() -> Library,
) -> RResult<Manifest, ProviderError> {
    logging::install_in_library(sink);
    guarded("the library constructor", || {
        if let Some(library) = cell.get() {
            return Ok(library.manifest());
        }
        Ok(cell.get_or_init(build).manifest())
    })
}

fn loaded(cell: &LibraryCell) -> Result<&Library, ProviderError> {
    cell.get().ok_or_else(|| {
        ProviderError::configuration("the host opened a provider before loading its library")
    })
}

macro_rules! open_entry_point {
    ($function:ident, $kind:ident, $object:ty) => {
        #[doc = concat!("The `", stringify!($function), "` entry point. Used by [`export_library!`](crate::export_library).")]
        #[doc(hidden)]
        pub fn $function(cell: &LibraryCell, args: OpenArgs) -> RResult<$object, ProviderError> {
            let operation = format!("opening {} `{}`", ProviderKind::$kind, args.name);
            guarded(&operation, || {
                loaded(cell)?.open(ProviderKind::$kind, args, |opener| match opener {
                    Opener::$kind(constructor) => Some(constructor),
                    _ => None,
                })
            })
        }
    };
}

open_entry_point!(open_store, Store, StoreObject);
open_entry_point!(open_transport, Transport, TransportObject);
open_entry_point!(open_preprocessor, Preprocessor, PreprocessorObject);
open_entry_point!(open_hook, Hook, HookObject);

/// Exports a provider library: pass a function that returns its [`Library`].
///
/// It defines the library's root module, the symbol the host looks for, and entry points
/// that catch panics and route the library's `log` records to the host. Use it once, in the
/// crate root of a `cdylib`.
#[macro_export]
macro_rules! export_library {
    ($build:path) => {
        const _: () = {
            use $crate::__private::{
                LibHeader, OpenArgs, ProviderError, ProviderLibrary, ProviderLibraryRef, RResult,
                RootModuleResult,
            };

            static LIBRARY: $crate::export::LibraryCell = $crate::export::LibraryCell::new();

            extern "C" fn load(sink: $crate::LogSink) -> RResult<$crate::Manifest, ProviderError> {
                $crate::export::load(&LIBRARY, sink, $build)
            }
            extern "C" fn open_store(
                args: OpenArgs,
            ) -> RResult<$crate::store::StoreObject, ProviderError> {
                $crate::export::open_store(&LIBRARY, args)
            }
            extern "C" fn open_transport(
                args: OpenArgs,
            ) -> RResult<$crate::transport::TransportObject, ProviderError> {
                $crate::export::open_transport(&LIBRARY, args)
            }
            extern "C" fn open_preprocessor(
                args: OpenArgs,
            ) -> RResult<$crate::preprocessor::PreprocessorObject, ProviderError> {
                $crate::export::open_preprocessor(&LIBRARY, args)
            }
            extern "C" fn open_hook(
                args: OpenArgs,
            ) -> RResult<$crate::hook::HookObject, ProviderError> {
                $crate::export::open_hook(&LIBRARY, args)
            }
            fn root_module() -> ProviderLibraryRef {
                $crate::__private::PrefixTypeTrait::leak_into_prefix(ProviderLibrary {
                    load,
                    open_store,
                    open_transport,
                    open_preprocessor,
                    open_hook,
                })
            }
            extern "C" fn construct_root_module() -> RootModuleResult {
                $crate::__private::call_root_module_loader(root_module)
            }

            // The name abi_stable looks up; checked against abi_stable's own constant in
            // provider-abi's tests.
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            pub static ROOT_MODULE_LOADER: LibHeader = unsafe {
                LibHeader::from_constructor::<ProviderLibraryRef>(
                    construct_root_module,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            };
        };
    };
}
