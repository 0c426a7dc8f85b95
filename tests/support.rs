//! What the integration tests share: the built host and provider libraries, a providers
//! folder to drop them into, and running the host as a user would.
//!
//! The tests build what they need themselves (`cargo build -p …`, once per test process), so
//! `cargo test --workspace` alone runs the whole suite: cargo does not build `cdylib`
//! artifacts for tests on its own.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "support/crash.rs"]
pub mod crash;
#[path = "support/disk.rs"]
pub mod disk;
pub use disk::SmallDisk;
#[path = "support/postgres.rs"]
pub mod postgres;
pub use postgres::Postgres;

#[path = "support/tls.rs"]
pub mod tls;
pub use tls::Certificates;

/// The bundled provider libraries, by crate name.
pub const BUNDLED: [&str; 7] = [
    "store-embedded",
    "store-postgres",
    "transport-directory",
    "transport-smtp",
    "transport-pop3",
    "preprocessor-distlist",
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
    run_host_with(args, env, None, limit)
}

/// Runs the host with `args` and `input` on standard input.
pub fn run_host_with_input(args: &[&str], input: &[u8], limit: Duration) -> Finished {
    run_host_with(args, &[], Some(input), limit)
}

fn run_host_with(
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
    limit: Duration,
) -> Finished {
    let mut command = Command::new(host_binary());
    command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the host starts");
    // Read both pipes while waiting, so a chatty host never blocks on a full pipe.
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        use std::io::Write;
        // A client may stop reading early (a message over the size limit), as a pipe's
        // reader may; that is its answer, not the test's failure.
        match stdin.write_all(input) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("writing standard input: {error}")
            }
            _ => {}
        }
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the host") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "`spooler-host {}` did not finish within {limit:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// A `spooler-host run` started on a site's profile, killed when dropped.
pub struct Host {
    child: std::process::Child,
    config: PathBuf,
    log: PathBuf,
}

/// How long the tests wait for anything the host should do promptly.
pub const PROMPTLY: Duration = Duration::from_secs(20);

impl Host {
    /// Starts the host on `config` and waits until its control socket answers. Its log goes
    /// to `<log_name>` beside the profile.
    pub fn start(config: &Path, log_name: &str) -> Host {
        let log = config.with_file_name(log_name);
        let log_file = fs::File::create(&log).expect("creating the host log");
        let child = Command::new(host_binary())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the host starts");
        let mut host = Host {
            child,
            config: config.to_owned(),
            log,
        };
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if host.command(&["status"]).code == Some(0) {
                return host;
            }
            if let Ok(Some(status)) = host.child.try_wait() {
                panic!("the host exited with {status} at start:\n{}", host.log());
            }
            assert!(
                Instant::now() < deadline,
                "the host did not answer within {PROMPTLY:?}:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file its log goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `spooler-host <args> --config <profile>` as a client.
    pub fn command(&self, args: &[&str]) -> Finished {
        let config = self.config.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.as_str()]);
        run_host(&all, &[], PROMPTLY)
    }

    /// Submits `message` with `submit` and its arguments; returns the queue id.
    pub fn submit(&self, args: &[&str], message: &str) -> String {
        let finished = self.submit_with_status(args, message);
        assert_eq!(finished.code, Some(0), "submit failed: {}", finished.stderr);
        finished.stdout.trim().to_owned()
    }

    /// Submits and returns what `submit` printed and its exit code.
    pub fn submit_with_status(&self, args: &[&str], message: &str) -> Finished {
        let config = self.config.to_string_lossy().into_owned();
        let mut all = vec!["submit", "--config", config.as_str()];
        all.extend_from_slice(args);
        run_host_with_input(&all, message.as_bytes(), PROMPTLY)
    }

    /// `show ID --json`.
    pub fn show(&self, id: &str) -> serde_json::Value {
        let finished = self.command(&["show", id, "--json", "--content"]);
        assert_eq!(finished.code, Some(0), "show failed: {}", finished.stderr);
        serde_json::from_str(&finished.stdout).expect("show prints JSON")
    }

    /// `list FOLDER --json`: one JSON object per message.
    pub fn list(&self, folder: &str) -> Vec<serde_json::Value> {
        let finished = self.command(&["list", folder, "--json"]);
        assert_eq!(finished.code, Some(0), "list failed: {}", finished.stderr);
        finished
            .stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("list prints JSON lines"))
            .collect()
    }

    /// Waits until the Inbox holds `count` messages (the reports), and returns their contents.
    pub fn reports(&self, count: usize) -> Vec<String> {
        wait_until(
            PROMPTLY,
            &format!("{count} report(s) are in the Inbox"),
            || self.list("Inbox").len() >= count,
        );
        let reports = self.contents("Inbox");
        assert_eq!(
            reports.len(),
            count,
            "more reports than expected: {reports:#?}"
        );
        reports
    }

    /// The content of every message in `folder`.
    pub fn contents(&self, folder: &str) -> Vec<String> {
        self.list(folder)
            .iter()
            .map(|message| {
                self.show(message["id"].as_str().expect("an id"))["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Kills the host with SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Sends the host a signal (`libc::SIGTERM`, `libc::SIGHUP`, …).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        let sent = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(sent, 0, "signalling the host");
    }

    /// Waits at most `limit` for the host to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the host") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The profile it runs on.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Starts `spooler-host watch --json`; its events arrive on the returned watcher.
    pub fn watch(&self) -> Watcher {
        let mut child = Command::new(host_binary())
            .args(["watch", "--json", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watch client starts");
        let stdout = child.stdout.take().expect("the watch client's output");
        let (events, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        // It is watching once the host has registered it; give the connection a moment.
        std::thread::sleep(Duration::from_millis(300));
        Watcher { child, received }
    }
}

/// A running `watch` client.
pub struct Watcher {
    child: std::process::Child,
    received: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Watcher {
    /// The next event, waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> serde_json::Value {
        self.received
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no event within {limit:?}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Submits `count` messages over the control socket directly (fast), each to
/// `FILE:sink<n % 7>`; returns the queue ids.
pub fn submit_many(socket: &Path, count: usize) -> Vec<String> {
    let (acknowledged, failure) =
        submit_numbered(socket, 0..count, |n| format!("FILE:sink{}", n % 7));
    if let Some(failure) = failure {
        panic!("submission {} failed: {failure}", acknowledged.len());
    }
    acknowledged.into_iter().map(|(_, id)| id).collect()
}

/// Submits messages `numbers` over the control socket directly (fast), message `n` with the
/// subject `message <n>` to `recipient(n)`. Returns each acknowledged number with its queue
/// id, in order, and why it stopped early, if it did (e.g. the host went away).
pub fn submit_numbered(
    socket: &Path,
    numbers: std::ops::Range<usize>,
    recipient: impl Fn(usize) -> String,
) -> (Vec<(usize, String)>, Option<String>) {
    use std::io::{BufRead, Write};
    let mut acknowledged = Vec::new();
    let stream = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(error) => return (acknowledged, Some(format!("cannot connect: {error}"))),
    };
    stream.set_read_timeout(Some(PROMPTLY)).ok();
    let mut writer = stream.try_clone().expect("a second handle on the socket");
    let mut reader = std::io::BufReader::new(stream);
    for n in numbers {
        let content =
            format!("From: load@example.com\r\nSubject: message {n}\r\n\r\nNumber {n}.\r\n");
        let request = serde_json::json!({
            "command": "submit",
            "sender": "LOCAL:load",
            "recipients": [{ "address": recipient(n), "kind": "to" }],
            "content_length": content.len(),
        });
        if let Err(error) = writer.write_all(format!("{request}\n{content}").as_bytes()) {
            return (acknowledged, Some(format!("cannot send: {error}")));
        }
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) => return (acknowledged, Some("the host closed the connection".into())),
            Err(error) => return (acknowledged, Some(format!("no answer: {error}"))),
            Ok(_) => {}
        }
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
        match answer["id"].as_str() {
            Some(id) => acknowledged.push((n, id.to_owned())),
            None => return (acknowledged, Some(format!("not submitted: {answer}"))),
        }
    }
    (acknowledged, None)
}

/// The message ids whose delivery a host log records (logged only after the commit).
pub fn recorded_deliveries(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|line| line.contains("state=Delivered"))
        .filter_map(|line| {
            line.split_once("] ")?
                .1
                .split(':')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// How many files per message id a directory transport wrote (`<id>-….eml`, repeats too).
pub fn files_per_message(files: &[PathBuf]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for file in files {
        let name = file
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        *counts.entry(name[..16].to_owned()).or_default() += 1;
    }
    counts
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Waits until `condition` holds, checking every 50 ms, for at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where a real server program is, if it is here to test against. Without it a test is
/// skipped, loudly; under `.ci/run` (`SPOOLER_REQUIRE_SERVERS=1`) its absence is a failure.
pub fn real_server(program: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|folder| Path::new(folder).join(program))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "{program} is missing, and SPOOLER_REQUIRE_SERVERS=1 says the real servers must be here (.ci/run installs them)"
        );
        eprintln!("SKIPPED: {program} is not installed; `bash .ci/run` installs it (apt-get install postfix dovecot-pop3d)");
    }
    found
}

/// A free TCP port on the loopback address, never the same twice in one test process.
///
/// The kernel hands a port that was just released to the next `bind(0)`, and the tests in one
/// binary run in parallel. A test that leaves its port closed for a while on purpose (a smart
/// host that is down) would otherwise find another test's server answering on it, and its
/// mail "delivered" there.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Postfix's `smtp-sink` on a loopback port, dumping every transaction into a folder of a
/// site (or, for the benchmark, discarding them).
///
/// It borrows the site it dumps into: a site dropped while its sink runs deletes the folder,
/// and with it whatever the sink dumped until then (smtp-sink makes the folder again at its
/// next dump, so only the first few go missing: a flaky "acknowledged but never received").
pub struct SmtpSink<'site> {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    dump: Option<PathBuf>,
    site: PhantomData<&'site Site>,
}

impl<'site> SmtpSink<'site> {
    /// Starts `smtp-sink` with `options` (e.g. `["-f", "RCPT"]`) on `port`, dumping into
    /// `site/<name>`. Waits until it accepts connections.
    pub fn start(site: &'site Site, name: &str, port: u16, options: &[&str]) -> SmtpSink<'site> {
        let dump = site.path(name);
        fs::create_dir_all(&dump).expect("creating the sink's folder");
        // smtp-sink drops to `nobody` when started as root; it must be able to write there.
        set_mode(&dump, 0o777);
        let template = format!("{}/%H%M%S.", dump.display());
        let mut arguments = vec!["-d", &template];
        arguments.extend_from_slice(options);
        SmtpSink::spawn(port, &arguments, Some(dump.clone()))
    }

    /// Starts `smtp-sink` with `options` on `port`, keeping nothing of what it receives.
    pub fn discarding(port: u16, options: &[&str]) -> SmtpSink<'static> {
        SmtpSink::spawn(port, options, None)
    }

    fn spawn(port: u16, options: &[&str], dump: Option<PathBuf>) -> SmtpSink<'site> {
        let program = real_server("smtp-sink").expect("the caller checked for smtp-sink");
        let mut command = Command::new(program);
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(options)
            .args([&format!("127.0.0.1:{port}"), "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink starts");
        wait_until(PROMPTLY, "smtp-sink listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        SmtpSink {
            child,
            port,
            dump,
            site: PhantomData,
        }
    }

    /// Every transaction it took, as dumped (`X-Mail-Args`, `X-Rcpt-Args`, then the message).
    pub fn transactions(&self) -> Vec<String> {
        self.transactions_with_times()
            .into_iter()
            .map(|(text, _)| text)
            .collect()
    }

    /// Every transaction it took, with when it was dumped.
    pub fn transactions_with_times(&self) -> Vec<(String, std::time::SystemTime)> {
        let mut files = self.dumped();
        files.sort();
        files
            .iter()
            .filter_map(|f| {
                let modified = fs::metadata(f).and_then(|m| m.modified()).ok()?;
                Some((fs::read_to_string(f).ok()?, modified))
            })
            .collect()
    }

    /// How many transactions it took, without reading them.
    pub fn transactions_count(&self) -> usize {
        self.dumped().len()
    }

    fn dumped(&self) -> Vec<PathBuf> {
        let Some(dump) = &self.dump else {
            return Vec::new();
        };
        fs::read_dir(dump)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink<'_> {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A private Dovecot serving one POP3 mailbox on a loopback port, its mail in a Maildir
/// under the site.
pub struct Dovecot {
    child: std::process::Child,
    /// Its POP3 port.
    pub port: u16,
    /// Its POP3S port (TLS from the first byte), when started with TLS.
    pub tls_port: Option<u16>,
    maildir: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot for user `test` (password `secret`) with an empty mailbox.
    pub fn start(site: &Site) -> Dovecot {
        Dovecot::launch(site, None)
    }

    /// Starts it with TLS from `certificates`: STLS offered on `port`, POP3S on `tls_port`.
    pub fn start_tls(site: &Site, certificates: &Certificates) -> Dovecot {
        Dovecot::launch(site, Some(certificates))
    }

    fn launch(site: &Site, certificates: Option<&Certificates>) -> Dovecot {
        let root = site.path("dovecot");
        let maildir = root.join("home/test/Maildir");
        for folder in ["new", "cur", "tmp"] {
            fs::create_dir_all(maildir.join(folder)).expect("creating the Maildir");
        }
        fs::write(root.join("users"), "test:{PLAIN}secret\n").expect("writing the users file");
        let port = free_port();
        let tls_port = certificates.map(|_| free_port());
        let (ssl, pop3s) = match (certificates, tls_port) {
            (Some(certificates), Some(tls_port)) => (
                format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                    certificates.cert_file.display(),
                    certificates.key_file.display()
                ),
                format!(
                    "inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}"
                ),
            ),
            _ => ("ssl = no".to_owned(), String::new()),
        };
        let config = format!(
            r#"protocols = pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  {pop3s}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
pop3_uidl_format = %08Xu%08Xv
"#,
            root = root.display()
        );
        let config_file = root.join("dovecot.conf");
        fs::write(&config_file, config).expect("writing the Dovecot configuration");
        let chown = Command::new("/bin/chown")
            .args(["-R", "nobody:nogroup"])
            .arg(root.join("home"))
            .status()
            .expect("chown runs");
        assert!(chown.success(), "the mailbox must belong to the mail user");
        let program = real_server("dovecot").expect("the test checked for dovecot");
        let child = Command::new(program)
            .args(["-F", "-c"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot starts");
        wait_until(PROMPTLY, "Dovecot listens", || {
            [Some(port), tls_port]
                .into_iter()
                .flatten()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        Dovecot {
            child,
            port,
            tls_port,
            maildir,
        }
    }

    /// Delivers a message into the mailbox, as the server's own delivery agent would
    /// (written in `tmp`, moved to `new`, owned by the mail user).
    pub fn deliver(&self, name: &str, message: &str) {
        let hidden = self.maildir.join("tmp").join(name);
        fs::write(&hidden, message).expect("writing a message");
        let chown = Command::new("/bin/chown")
            .arg("nobody:nogroup")
            .arg(&hidden)
            .status()
            .expect("chown runs");
        assert!(chown.success());
        fs::rename(&hidden, self.maildir.join("new").join(name))
            .expect("moving the message into new");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        let root = self
            .maildir
            .ancestors()
            .nth(3)
            .expect("the Maildir is <root>/home/test/Maildir");
        fs::read_to_string(root.join("dovecot.log")).unwrap_or_default()
    }

    /// How many messages are still in the mailbox on the server.
    pub fn messages_on_server(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|folder| {
                fs::read_dir(self.maildir.join(folder))
                    .map(|e| e.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A private Postfix on a loopback port that rejects chosen recipients at RCPT (with
/// `check_recipient_access`) and relays everything else to `relay_port`.
pub struct Postfix {
    config: PathBuf,
    /// Its SMTP port.
    pub port: u16,
    /// Its SMTPS port (TLS from the first byte), when started with TLS.
    pub tls_port: Option<u16>,
}

impl Postfix {
    /// Starts it; `rejects` are `(address, "550 5.1.1 User unknown")` pairs.
    pub fn start(site: &Site, relay_port: u16, rejects: &[(&str, &str)]) -> Postfix {
        Postfix::launch(site, relay_port, rejects, None)
    }

    /// Starts it with TLS from `certificates`: STARTTLS offered on `port`, and SMTPS
    /// (`smtpd_tls_wrappermode`) on `tls_port`.
    pub fn start_tls(site: &Site, relay_port: u16, certificates: &Certificates) -> Postfix {
        Postfix::launch(site, relay_port, &[], Some(certificates))
    }

    fn launch(
        site: &Site,
        relay_port: u16,
        rejects: &[(&str, &str)],
        certificates: Option<&Certificates>,
    ) -> Postfix {
        let root = site.path("postfix");
        let (config, queue, data) = (root.join("conf"), root.join("queue"), root.join("data"));
        for folder in [&config, &queue, &data] {
            fs::create_dir_all(folder).expect("creating Postfix's folders");
        }
        let port = free_port();
        let tls_port = certificates.map(|_| free_port());
        let master = fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .expect("Postfix's master.cf template");
        // Our own smtpd port, and no chroot (the queue is in a test folder).
        let master: String = master
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with("smtp ") && fields.get(1) == Some(&"inet") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd")
                } else if fields.len() >= 8
                    && !line.starts_with('#')
                    && !line.starts_with(' ')
                    && fields[4] == "y"
                {
                    let mut fields = fields;
                    fields[4] = "n";
                    fields.join(" ")
                } else {
                    line.to_owned()
                }
            })
            .map(|line| line + "\n")
            .collect();
        let master = match tls_port {
            Some(tls_port) => format!(
                "{master}127.0.0.1:{tls_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt\n"
            ),
            None => master,
        };
        fs::write(config.join("master.cf"), master).expect("writing master.cf");
        let rejects: Vec<String> = rejects
            .iter()
            .map(|(address, reply)| format!("{address} = {reply}"))
            .collect();
        // An empty inline table is a configuration error that Postfix answers with 451.
        let access = if rejects.is_empty() {
            String::new()
        } else {
            format!(
                "check_recipient_access inline:{{ {{ {} }} }}, ",
                rejects.join(" }, { ")
            )
        };
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\nmail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = relay.spooler-test\nmydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{relay_port}\nsmtpd_recipient_restrictions = {access}permit_mynetworks, reject\n\
             maillog_file = {root}/maillog\nmaillog_file_prefixes = {root}\nalias_maps =\nalias_database =\n",
            queue = queue.display(),
            data = data.display(),
            root = root.display(),
        );
        let main = match certificates {
            Some(certificates) => format!(
                "{main}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = may\nsmtpd_tls_loglevel = 1\n",
                certificates.cert_file.display(),
                certificates.key_file.display()
            ),
            None => main,
        };
        fs::write(config.join("main.cf"), main).expect("writing main.cf");
        let postfix = |args: &[&str]| {
            Command::new("/usr/sbin/postfix")
                .arg("-c")
                .arg(&config)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("postfix runs")
        };
        let owned = Command::new("/bin/chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .expect("chown runs");
        assert!(owned.success());
        postfix(&["set-permissions"]);
        assert!(
            postfix(&["start"]).success(),
            "Postfix starts (see {}/maillog)",
            root.display()
        );
        wait_until(PROMPTLY, "Postfix listens", || {
            [Some(port), tls_port]
                .into_iter()
                .flatten()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        Postfix {
            config,
            port,
            tls_port,
        }
    }

    /// Postfix's own `sendmail`, set to submit to this instance.
    pub fn sendmail(&self) -> Command {
        let mut command = Command::new("/usr/sbin/sendmail");
        command.arg("-C").arg(&self.config);
        command
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.config.with_file_name("maillog")).unwrap_or_default()
    }

    /// How many deliveries its log records as sent.
    pub fn sent(&self) -> usize {
        let log = self.config.with_file_name("maillog");
        fs::read_to_string(log)
            .map(|log| log.lines().filter(|l| l.contains(" status=sent ")).count())
            .unwrap_or(0)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}
