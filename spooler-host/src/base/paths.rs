//! Where the host looks for things when the command line does not say.

use std::path::PathBuf;

/// The default providers folder: `providers/` beside the executable if it exists, otherwise
/// the executable's own folder (where `cargo build` puts the bundled provider libraries).
pub fn default_providers_folder() -> PathBuf {
    let exe_folder = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let beside = exe_folder.join("providers");
    if beside.is_dir() {
        beside
    } else {
        exe_folder
    }
}
