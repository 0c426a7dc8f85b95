//! The provider loader: finds the provider libraries in one folder, loads and checks each
//! file on its own, and keeps a status per file. A bad file never stops the others.
//!
//! Libraries are opened with `libloading` and checked with `abi_stable` (its ABI header, the
//! root module's version and type layout), never through `abi_stable`'s cached
//! `load_from_directory`, so that every file gets its own answer. Loaded libraries are never
//! unloaded: code from them may still be running or referenced, and unloading a Rust library
//! is not safe on every platform.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use abi_stable::library::{
    AbiHeaderRef, LibraryError, RootModuleError, ROOT_MODULE_LOADER_NAME_WITH_NUL,
};
use provider_abi::address::is_address_type;
use provider_abi::library::ProviderLibraryRef;
use provider_abi::logging::host_log_sink;
use provider_abi::{ErrorKind, Manifest, ProviderError, ProviderInfo, ProviderKind, ABI_VERSION};

/// A library that loaded: its file, its manifest and its root module.
pub struct LoadedLibrary {
    /// The file it came from.
    pub path: PathBuf,
    /// What it says about itself.
    pub manifest: Manifest,
    /// Its entry points.
    pub root: ProviderLibraryRef,
}

impl LoadedLibrary {
    /// Its providers with their kinds. Kinds this host does not know were refused at load.
    pub fn providers(&self) -> impl Iterator<Item = (ProviderKind, &ProviderInfo)> {
        self.manifest
            .providers
            .iter()
            .filter_map(|info| Some((*info.kind.as_enum().ok()?, info)))
    }
}

/// Why a file in the providers folder was not loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum LibraryRefusal {
    /// The file or the folder could be changed by someone other than its owner.
    UnsafePermissions(String),
    /// The platform's loader could not load it as a shared library.
    NotLoadable(String),
    /// A shared library, but without the provider-abi root module.
    NoRootModule,
    /// Built against a provider-abi this host cannot load.
    IncompatibleAbi {
        /// The provider-abi version the library was built against.
        library: String,
    },
    /// Built with an abi_stable this host cannot load.
    IncompatibleAbiStable(String),
    /// Its provider-abi types differ from the host's although the versions agree.
    LayoutMismatch(String),
    /// Its constructor panicked; the text says so and quotes the panic.
    ConstructorPanicked(String),
    /// Its constructor returned an error.
    ConstructorFailed(ProviderError),
    /// Its manifest is not usable.
    BadManifest(String),
    /// It offers a provider name that an earlier library already offers.
    DuplicateProvider {
        /// The provider name both offer.
        name: String,
        /// The library that offered it first, and keeps it.
        first: PathBuf,
    },
}

impl fmt::Display for LibraryRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibraryRefusal::UnsafePermissions(why) => write!(f, "unsafe permissions: {why}"),
            LibraryRefusal::NotLoadable(cause) => write!(f, "not a loadable library: {cause}"),
            LibraryRefusal::NoRootModule => f.write_str(
                "a shared library, but not a spooler provider library: it does not export the \
                 provider-abi root module (build it with provider_abi::export_library!)",
            ),
            LibraryRefusal::IncompatibleAbi { library } => write!(
                f,
                "incompatible ABI: the library was built against provider-abi {library}, this \
                 host uses provider-abi {ABI_VERSION}; rebuild it against provider-abi {}",
                compatible_range()
            ),
            LibraryRefusal::IncompatibleAbiStable(detail) => write!(
                f,
                "incompatible ABI: the library was built with an abi_stable this host cannot \
                 load ({detail}); rebuild it against provider-abi {}",
                compatible_range()
            ),
            LibraryRefusal::LayoutMismatch(detail) => write!(
                f,
                "layout mismatch: the library's provider-abi types differ from this host's \
                 (provider-abi {ABI_VERSION}) although the versions agree; rebuild it against \
                 the published provider-abi. abi_stable says: {detail}"
            ),
            LibraryRefusal::ConstructorPanicked(message) => f.write_str(message),
            LibraryRefusal::ConstructorFailed(error) => {
                write!(f, "the library's constructor failed: {error}")
            }
            LibraryRefusal::BadManifest(why) => write!(f, "unusable manifest: {why}"),
            LibraryRefusal::DuplicateProvider { name, first } => write!(
                f,
                "duplicate provider: `{name}` is already offered by {}; provider names must be \
                 unique, so remove one of the two libraries",
                first.display()
            ),
        }
    }
}

fn compatible_range() -> String {
    match ABI_VERSION.split('.').next() {
        Some("0") => format!("0.{}.x", ABI_VERSION.split('.').nth(1).unwrap_or("0")),
        Some(major) => format!("{major}.x"),
        None => ABI_VERSION.to_owned(),
    }
}

/// What became of one entry of the providers folder.
pub enum FileOutcome {
    /// Loaded; its providers are available.
    Loaded(LoadedLibrary),
    /// A library file that was not loaded, and why.
    Refused(LibraryRefusal),
    /// Not a library file (another extension, or a folder); not looked at.
    Skipped(&'static str),
}

/// One entry of the providers folder and what became of it.
pub struct FileStatus {
    /// The entry.
    pub path: PathBuf,
    /// What became of it.
    pub outcome: FileOutcome,
}

/// The providers folder after loading: a status for every entry, in file-name order.
pub struct ProviderFolder {
    /// The folder.
    pub path: PathBuf,
    /// Every entry with its status.
    pub files: Vec<FileStatus>,
}

impl ProviderFolder {
    /// The libraries that loaded.
    pub fn libraries(&self) -> impl Iterator<Item = &LoadedLibrary> {
        self.files.iter().filter_map(|file| match &file.outcome {
            FileOutcome::Loaded(library) => Some(library),
            _ => None,
        })
    }
}

/// The providers folder cannot be read at all.
#[derive(Debug)]
pub struct FolderError {
    path: PathBuf,
    cause: io::Error,
}

impl fmt::Display for FolderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read the providers folder {}: {} (name another one with --providers DIR)",
            self.path.display(),
            self.cause
        )
    }
}

impl std::error::Error for FolderError {}

/// Loads every provider library in `folder` (not recursively), in file-name order, so that
/// which of two libraries offering the same provider name wins does not depend on the file
/// system.
pub fn load_folder(folder: &Path) -> Result<ProviderFolder, FolderError> {
    let folder_error = |cause| FolderError {
        path: folder.to_owned(),
        cause,
    };
    let mut paths = fs::read_dir(folder)
        .map_err(folder_error)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(folder_error)?;
    paths.sort();
    let folder_permissions = check_permissions(folder, "the providers folder");

    let mut owners: HashMap<String, PathBuf> = HashMap::new();
    let files = paths
        .into_iter()
        .map(|path| {
            let outcome = if path.is_dir() {
                FileOutcome::Skipped("a folder; the providers folder is not searched recursively")
            } else if path.extension().and_then(|e| e.to_str())
                != Some(std::env::consts::DLL_EXTENSION)
            {
                FileOutcome::Skipped(SKIPPED_EXTENSION)
            } else {
                match folder_permissions
                    .clone()
                    .and_then(|()| check_permissions(&path, "the file"))
                    .and_then(|()| load_library(&path))
                    .and_then(|library| claim_names(library, &mut owners))
                {
                    Ok(library) => FileOutcome::Loaded(library),
                    Err(refusal) => FileOutcome::Refused(refusal),
                }
            };
            FileStatus { path, outcome }
        })
        .collect();
    Ok(ProviderFolder {
        path: folder.to_owned(),
        files,
    })
}

/// Loads one library file with the same checks as [`load_folder`] gives each file: the child
/// process of an isolated instance loads its library this way.
pub fn load_file(path: &Path) -> Result<LoadedLibrary, LibraryRefusal> {
    let folder = path.parent().unwrap_or(Path::new("."));
    check_permissions(folder, "the providers folder")
        .and_then(|()| check_permissions(path, "the file"))
        .and_then(|()| load_library(path))
}

#[cfg(target_os = "macos")]
const SKIPPED_EXTENSION: &str = "not a shared library (.dylib)";
#[cfg(windows)]
const SKIPPED_EXTENSION: &str = "not a shared library (.dll)";
#[cfg(not(any(target_os = "macos", windows)))]
const SKIPPED_EXTENSION: &str = "not a shared library (.so)";

/// Refuses what others could change, like sshd's StrictModes: whoever can write a provider
/// library or its folder can run code inside the spooler.
#[cfg(unix)]
fn check_permissions(path: &Path, what: &str) -> Result<(), LibraryRefusal> {
    use std::os::unix::fs::MetadataExt;

    let metadata = fs::metadata(path).map_err(|error| {
        LibraryRefusal::UnsafePermissions(format!(
            "cannot inspect {what} {}: {error}",
            path.display()
        ))
    })?;
    let mode = metadata.mode() & 0o7777;
    let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    if let Some(writers) = writers {
        return Err(LibraryRefusal::UnsafePermissions(format!(
            "{what} {} is writable by {writers} (mode {mode:o}); fix it with `chmod go-w {}`",
            path.display(),
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if metadata.uid() != user && metadata.uid() != 0 {
        return Err(LibraryRefusal::UnsafePermissions(format!(
            "{what} {} belongs to uid {}, neither the spooler's user (uid {user}) nor root",
            path.display(),
            metadata.uid()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _what: &str) -> Result<(), LibraryRefusal> {
    Ok(())
}

fn load_library(path: &Path) -> Result<LoadedLibrary, LibraryRefusal> {
    // SAFETY: loading a library runs its initialisers; that is what dropping a file into the
    // providers folder asks for, and the permission check above limits who can do it.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|error| LibraryRefusal::NotLoadable(error.to_string()))?;
    // Never unloaded; see the module documentation.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol abi_stable exports is a `LibHeader` static, read as a reference to
    // it; the library stays loaded for the life of the process.
    let header: AbiHeaderRef = unsafe {
        library
            .get::<AbiHeaderRef>(ROOT_MODULE_LOADER_NAME_WITH_NUL.as_bytes())
            .map(|symbol| *symbol)
    }
    .map_err(|_| LibraryRefusal::NoRootModule)?;
    let header = header.upgrade().map_err(classify)?;
    let root = match header.init_root_module::<ProviderLibraryRef>() {
        Err(LibraryError::AbiInstability(strict)) => init_older_library(header, strict)?,
        other => other.map_err(classify)?,
    };
    let manifest = root.load()(host_log_sink())
        .into_result()
        .map_err(|error| match error.kind() {
            ErrorKind::Panicked => LibraryRefusal::ConstructorPanicked(error.message().to_owned()),
            _ => LibraryRefusal::ConstructorFailed(error),
        })?;
    check_manifest(&manifest)?;
    Ok(LoadedLibrary {
        path: path.to_owned(),
        manifest,
        root,
    })
}

/// Initialises a library built against an older 1.x provider-abi, whose provider vtables
/// have fewer methods than this host's.
///
/// abi_stable only loads libraries whose types are at least as new as their user's (its
/// checker refuses a user prefix type with more fields than the library's), so it refuses
/// these. Using them is sound when this host's layout extends the library's: the same check
/// run the other way round, with the library as the interface and the host as the
/// implementation, proves exactly that. At run time the methods the library lacks are
/// absent from its vtables, and the host gets their default implementations (`sabi_trait`
/// methods after `last_prefix_field`). Anything else keeps abi_stable's refusal.
fn init_older_library(
    header: &'static abi_stable::library::LibHeader,
    strict: abi_stable::std_types::RBoxError,
) -> Result<ProviderLibraryRef, LibraryRefusal> {
    let strict = strict.to_string();
    let refusal = || layout_mismatch(&strict);
    let host = abi_stable::sabi_types::VersionNumber::new(
        <ProviderLibraryRef as abi_stable::library::RootModule>::VERSION_STRINGS,
    );
    let library = abi_stable::sabi_types::VersionNumber::new(header.version_strings());
    let older = matches!((host, library), (Ok(host), Ok(library))
        if host.major == library.major && host.major > 0 && library.minor < host.minor);
    let library_layout = header.layout().filter(|_| older).ok_or_else(refusal)?;
    let host_layout = <ProviderLibraryRef as abi_stable::StableAbi>::LAYOUT;
    // With checking state of its own: abi_stable's global state merges every checked prefix
    // type into one view, and this library's shorter vtables must not become the view the
    // next, current library is checked against.
    use abi_stable::abi_stability::abi_checking::{
        check_layout_compatibility_with_globals, CheckingGlobals,
    };
    check_layout_compatibility_with_globals(library_layout, host_layout, &CheckingGlobals::new())
        .map_err(|_| refusal())?;
    // SAFETY: the check above proved that this host's root module type extends the
    // library's: every field the library has, the host reads with the same layout, and the
    // fields it lacks are prefix-type fields that the host's accessors find missing.
    unsafe { header.init_root_module_with_unchecked_layout::<ProviderLibraryRef>() }
        .map_err(classify)
}

fn classify(error: LibraryError) -> LibraryRefusal {
    match error {
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            LibraryRefusal::IncompatibleAbi {
                library: actual_version.to_string(),
            }
        }
        LibraryError::InvalidAbiHeader(header) => {
            LibraryRefusal::IncompatibleAbiStable(format!("its abi_stable header is {header:?}"))
        }
        LibraryError::AbiInstability(detail) => layout_mismatch(&detail.to_string()),
        LibraryError::RootModule {
            err: RootModuleError::Unwound,
            ..
        } => LibraryRefusal::ConstructorPanicked("the root module constructor panicked".into()),
        other => LibraryRefusal::BadManifest(first_lines(&other.to_string())),
    }
}

/// A layout mismatch named by the first lines of abi_stable's report; the whole report goes
/// to the debug log (`RUST_LOG=debug`).
fn layout_mismatch(report: &str) -> LibraryRefusal {
    log::debug!("abi_stable's whole layout report: {report}");
    LibraryRefusal::LayoutMismatch(first_lines(report))
}

/// abi_stable's layout reports run to hundreds of lines; the first few say what differs.
fn first_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut summary = lines.iter().take(6).copied().collect::<Vec<_>>().join(" ");
    if lines.len() > 6 {
        summary.push_str(" …");
    }
    summary
}

fn check_manifest(manifest: &Manifest) -> Result<(), LibraryRefusal> {
    if manifest.providers.is_empty() {
        return Err(LibraryRefusal::BadManifest(
            "the library offers no providers".into(),
        ));
    }
    for info in &manifest.providers {
        let name = info.name.as_str();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(LibraryRefusal::BadManifest(format!(
                "provider name `{name}` must be non-empty and without spaces"
            )));
        }
        if info.kind.as_enum().is_err() {
            return Err(LibraryRefusal::BadManifest(format!(
                "provider `{name}` is of a kind this host does not know; it was built against \
                 a newer provider-abi than this host's {ABI_VERSION}"
            )));
        }
        if let Some(bad) = info.address_types.iter().find(|t| !is_address_type(t)) {
            return Err(LibraryRefusal::BadManifest(format!(
                "provider `{name}` claims `{bad}`, which is not an address type"
            )));
        }
        if manifest
            .providers
            .iter()
            .filter(|other| other.name == info.name)
            .count()
            > 1
        {
            return Err(LibraryRefusal::BadManifest(format!(
                "the library offers two providers named `{name}`"
            )));
        }
    }
    Ok(())
}

/// Records the library's provider names, or refuses it if an earlier library has one.
fn claim_names(
    library: LoadedLibrary,
    owners: &mut HashMap<String, PathBuf>,
) -> Result<LoadedLibrary, LibraryRefusal> {
    if let Some((name, first)) = library
        .manifest
        .providers
        .iter()
        .find_map(|info| Some((info.name.to_string(), owners.get(info.name.as_str())?)))
    {
        return Err(LibraryRefusal::DuplicateProvider {
            name,
            first: first.clone(),
        });
    }
    for info in &library.manifest.providers {
        owners.insert(info.name.to_string(), library.path.clone());
    }
    Ok(library)
}
