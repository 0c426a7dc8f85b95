//! The root module every provider library exports, and the manifest it describes itself with.
//!
//! The root module is an `abi_stable` prefix type: fields can be added after the
//! `#[sabi(last_prefix_field)]` one in later minor versions, and a host built against a
//! newer `provider-abi` still loads libraries built against an older compatible one.

use std::fmt;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RString, RVec},
    StableAbi,
};

use crate::error::ProviderError;
use crate::hook::HookObject;
use crate::host::{HostObject, LogSink};
use crate::preprocessor::PreprocessorObject;
use crate::store::StoreObject;
use crate::transport::TransportObject;

/// The version of this crate, which is the ABI version: libraries load into a host whose
/// `provider-abi` has the same major version (same minor, for 0.x) and is at least as new.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The four kinds of provider.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[sabi(kind(WithNonExhaustive(size = 8, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ProviderKind {
    /// The message store.
    Store,
    /// A transport for some address types.
    Transport,
    /// A preprocessor of outbound messages.
    Preprocessor,
    /// A hook on inbound and finished outbound messages.
    Hook,
}

/// The ABI-stable wrapper of [`ProviderKind`].
pub type ProviderKindAbi = ProviderKind_NE;

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ProviderKind::Store => "store",
            ProviderKind::Transport => "transport",
            ProviderKind::Preprocessor => "preprocessor",
            ProviderKind::Hook => "hook",
        })
    }
}

/// One provider a library offers.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    /// Its kind.
    pub kind: ProviderKindAbi,
    /// Its name, unique among all loaded libraries; the configuration refers to it by name.
    pub name: RString,
    /// The address types it claims by default: a transport's, a preprocessor's filter, the
    /// types a store delivers itself; what `spooler-host providers` shows. Its configuration
    /// may change them: the host goes by what an open instance answers (`address_types`,
    /// `delivers_itself`), and uses these only for an instance that did not open.
    pub address_types: RVec<RString>,
}

/// What a library says about itself when it is loaded.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The library's name, usually its crate name.
    pub library: RString,
    /// The library's own version.
    pub version: RString,
    /// The `provider-abi` version it was built against.
    pub abi_version: RString,
    /// The providers it offers.
    pub providers: RVec<ProviderInfo>,
}

/// What the host passes to open one provider instance.
#[repr(C)]
#[derive(StableAbi)]
pub struct OpenArgs {
    /// The provider's name, from the manifest.
    pub name: RString,
    /// The instance's name in the profile (several instances may share a provider), for
    /// the provider's own messages.
    pub instance: RString,
    /// Its configuration: the text of its TOML table in the host's configuration (empty when
    /// there is none). The provider parses it and reports errors naming the key.
    pub config: RString,
    /// The host's services for this instance.
    pub host: HostObject,
}

/// A library's root module. Provider authors never build one by hand:
/// [`export_library!`](crate::export_library) does.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ProviderLibraryRef)))]
#[sabi(missing_field(panic))]
pub struct ProviderLibrary {
    /// Installs the host's log sink and returns the manifest; the host calls it first, once.
    pub load: extern "C" fn(log: LogSink) -> RResult<Manifest, ProviderError>,
    /// Opens the store named in the arguments.
    pub open_store: extern "C" fn(args: OpenArgs) -> RResult<StoreObject, ProviderError>,
    /// Opens the transport named in the arguments.
    pub open_transport: extern "C" fn(args: OpenArgs) -> RResult<TransportObject, ProviderError>,
    /// Opens the preprocessor named in the arguments.
    pub open_preprocessor:
        extern "C" fn(args: OpenArgs) -> RResult<PreprocessorObject, ProviderError>,
    /// Opens the hook named in the arguments.
    #[sabi(last_prefix_field)]
    pub open_hook: extern "C" fn(args: OpenArgs) -> RResult<HookObject, ProviderError>,
}

impl RootModule for ProviderLibraryRef {
    declare_root_module_statics! {ProviderLibraryRef}
    const BASE_NAME: &'static str = "spooler_provider";
    const NAME: &'static str = "spooler provider library";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
