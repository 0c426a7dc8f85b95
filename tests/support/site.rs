//! A spooler site as an operator lays it out, in a temporary folder: a providers folder
//! holding built libraries, the profile, a data folder, and the folders the directory
//! transports read and write.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{library, library_file_name, BUNDLED};

/// A temporary providers folder, as an operator would make one.
pub struct ProviderFolder {
    folder: tempfile::TempDir,
}

impl ProviderFolder {
    /// An empty folder, not writable by group or others.
    pub fn new() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        set_mode(folder.path(), 0o755);
        ProviderFolder { folder }
    }

    /// A folder holding the given built libraries.
    pub fn with(packages: &[&str]) -> Self {
        let folder = ProviderFolder::new();
        for package in packages {
            folder.add_library(package);
        }
        folder
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.folder.path()
    }

    /// Copies the built library of `package` in under its own name; returns its path.
    pub fn add_library(&self, package: &str) -> PathBuf {
        self.add_library_as(package, &library_file_name(package))
    }

    /// Copies the built library of `package` in as `file_name`; returns its path.
    pub fn add_library_as(&self, package: &str, file_name: &str) -> PathBuf {
        let target = self.path().join(file_name);
        fs::copy(library(package), &target).expect("copying a built library");
        set_mode(&target, 0o644);
        target
    }

    /// Writes a file with `content`; returns its path.
    pub fn add_file(&self, file_name: &str, content: &[u8]) -> PathBuf {
        let target = self.path().join(file_name);
        fs::write(&target, content).expect("writing a file into the providers folder");
        set_mode(&target, 0o644);
        target
    }
}

impl Default for ProviderFolder {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// A spooler site in a temporary folder: a providers folder with the bundled libraries, a
/// data folder, and folders for the directory transports to write into.
pub struct Site {
    root: tempfile::TempDir,
    providers: ProviderFolder,
}

impl Site {
    /// A new site with every bundled provider.
    pub fn new() -> Site {
        Site::with_providers(&BUNDLED)
    }

    /// A new site whose providers folder holds only `packages`.
    pub fn with_providers(packages: &[&str]) -> Site {
        let root = tempfile::tempdir().expect("a temporary folder");
        set_mode(root.path(), 0o755);
        Site {
            root,
            providers: ProviderFolder::with(packages),
        }
    }

    /// Drops a message file into `folder` the way a well-behaved writer does: written under
    /// a hidden name, then renamed.
    pub fn drop_message(&self, folder: &str, name: &str, content: &str) -> PathBuf {
        let folder = self.path(folder);
        fs::create_dir_all(&folder).expect("creating the pickup folder");
        let hidden = folder.join(format!(".{name}.part"));
        fs::write(&hidden, content).expect("writing the message");
        let target = folder.join(name);
        fs::rename(&hidden, &target).expect("renaming the message into place");
        target
    }

    /// A folder under the site (not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// The providers folder.
    pub fn providers(&self) -> &ProviderFolder {
        &self.providers
    }

    /// Writes the profile: `data_dir` and `providers` are filled in, then `body`.
    /// `{site}` in `body` stands for the site's folder.
    pub fn write_config(&self, body: &str) -> PathBuf {
        let config = format!(
            "data_dir = \"{}\"\nproviders = \"{}\"\n{}",
            self.path("data").display(),
            self.providers.path().display(),
            body.replace("{site}", &self.root.path().display().to_string())
        );
        let file = self.path("spooler.toml");
        fs::write(&file, config).expect("writing the profile");
        file
    }

    /// The `.eml` files a directory transport wrote into `folder`, sorted by name.
    pub fn delivered_files(&self, folder: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.path(folder))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|e| e == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Default for Site {
    fn default() -> Self {
        Self::new()
    }
}
