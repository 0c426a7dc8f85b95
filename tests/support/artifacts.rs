//! The built host and provider libraries: the tests build them themselves (`cargo build -p …`,
//! once per test process), since cargo does not build `cdylib` artifacts for tests on its
//! own; and a provider as an older commit of the repository built it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The bundled provider libraries, by crate name.
pub const BUNDLED: [&str; 9] = [
    "store-embedded",
    "store-postgres",
    "transport-directory",
    "transport-local",
    "transport-smtp",
    "transport-pop3",
    "preprocessor-distlist",
    "preprocessor-dkim",
    "hook-rules",
];

/// The test fixtures, by crate name.
pub const FIXTURES: [&str; 8] = [
    "fixture-chatty",
    "fixture-flaky-transport",
    "fixture-misbehaving-transport",
    "fixture-crashing",
    "fixture-panicking",
    "fixture-incompatible-abi",
    "fixture-layout-mismatch",
    "fixture-no-root-module",
];

/// The folder cargo builds into for this test's profile (`target/debug`).
pub fn build_folder() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // A test binary lives in target/<profile>/deps, the benchmark in target/<profile>.
        let exe = std::env::current_exe().expect("the running binary knows its path");
        let folder = exe.parent().expect("the binary is in a folder");
        let profile_folder = if folder.ends_with("deps") {
            folder.parent().expect("target/<profile>/deps has a parent")
        } else {
            folder
        }
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

/// The library of crate `package` as the repository built it at commit `revision`: how a
/// provider built against an older provider-abi looks to this host. The source comes from
/// the repository's history (`git archive`) and is built in `target/at-<revision>`, which
/// is kept, so later runs only check it.
pub fn library_at_revision(revision: &str, package: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace");
    let folder = build_folder()
        .parent()
        .expect("target/<profile> has a parent")
        .join(format!("at-{revision}"));
    let source = folder.join("source");
    if !source.join("Cargo.toml").exists() {
        fs::create_dir_all(&source).expect("creating the folder for the old source");
        let mut archive = Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(["archive", "--format=tar", revision])
            .stdout(Stdio::piped())
            .spawn()
            .expect("git runs");
        let unpacked = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&source)
            .stdin(archive.stdout.take().expect("git's output"))
            .status()
            .expect("tar runs");
        let archived = archive.wait().expect("git ends");
        assert!(
            archived.success() && unpacked.success(),
            "this test builds a provider from commit {revision} of the repository's history; \
             run it in a clone with its history"
        );
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", package])
        .env("CARGO_TARGET_DIR", folder.join("target"))
        .current_dir(&source)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {package} at {revision} failed");
    folder.join("target/debug").join(library_file_name(package))
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
