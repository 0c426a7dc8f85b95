//! What the integration tests share: the built host and provider libraries, a providers
//! folder to drop them into, and running the host as a user would.
//!
//! The tests build what they need themselves (`cargo build -p …`, once per test process), so
//! `cargo test --workspace` alone runs the whole suite: cargo does not build `cdylib`
//! artifacts for tests on its own.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The bundled provider libraries, by crate name.
pub const BUNDLED: [&str; 4] = [
    "store-embedded",
    "transport-directory",
    "preprocessor-distlist",
    "hook-rules",
];

/// The test fixtures, by crate name.
pub const FIXTURES: [&str; 5] = [
    "fixture-chatty",
    "fixture-panicking",
    "fixture-incompatible-abi",
    "fixture-layout-mismatch",
    "fixture-no-root-module",
];

/// The folder cargo builds into for this test's profile (`target/debug`).
pub fn build_folder() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The test binary lives in target/<profile>/deps.
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let profile_folder = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in target/<profile>/deps")
            .to_path_buf();
        let target_folder = profile_folder
            .parent()
            .expect("target/<profile> has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--quiet", "-p", "spooler-host"])
            .env("CARGO_TARGET_DIR", target_folder)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        for package in BUNDLED.iter().chain(FIXTURES.iter()) {
            command.args(["-p", package]);
        }
        if profile_folder
            .file_name()
            .is_some_and(|name| name == "release")
        {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building the host and providers failed");
        profile_folder
    })
}

/// The built library of crate `package` (`transport-directory` → `libtransport_directory.so`).
pub fn library(package: &str) -> PathBuf {
    build_folder().join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ))
}

/// The file name a library of `package` gets in a providers folder.
pub fn library_file_name(package: &str) -> String {
    library(package)
        .file_name()
        .expect("a library path has a file name")
        .to_string_lossy()
        .into_owned()
}

/// The built host binary.
pub fn host_binary() -> PathBuf {
    build_folder().join(format!("spooler-host{}", std::env::consts::EXE_SUFFIX))
}

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

/// What a finished host command printed.
pub struct Finished {
    /// Its exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (the log).
    pub stderr: String,
}

impl Finished {
    /// The line of standard output that starts with `prefix`, or a failure that shows them all.
    pub fn line_starting(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starts with {prefix:?} in:\n{}", self.stdout))
    }
}

/// Runs the host with `args` and extra environment, and waits at most `limit` for it.
pub fn run_host(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
    let mut command = Command::new(host_binary());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the host starts");
    // Read both pipes while waiting, so a chatty host never blocks on a full pipe.
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the host") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "the host did not finish `{}` within {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: stdout.join().expect("reading stdout"),
        stderr: stderr.join().expect("reading stderr"),
    }
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut text).ok();
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}
