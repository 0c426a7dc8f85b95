//! Running the host as a user does: one-shot commands (`providers`, `submit`, …) and a
//! `spooler-host run` with its clients (`show`, `list`, `watch`), its signals and its log.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{host_binary, wait_until, PROMPTLY};

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

/// A `spooler-host run` started on a site's profile, killed when dropped.
pub struct Host {
    child: std::process::Child,
    config: PathBuf,
    log: PathBuf,
}

impl Host {
    /// Starts the host on `config` and waits until its control socket answers. Its log goes
    /// to `<log_name>` beside the profile.
    pub fn start(config: &Path, log_name: &str) -> Host {
        Host::launch(config, log_name).answering()
    }

    /// Starts `binary` (a copy of the host where that user can reach it) as user
    /// `uid`:`gid`, without supplementary groups, on `config`, as [`start`](Host::start)
    /// does: a host that runs unprivileged, as a service runs it.
    pub fn start_as(binary: &Path, uid: u32, gid: u32, config: &Path, log_name: &str) -> Host {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .arg(binary);
        Host::spawn(command, config, log_name).answering()
    }

    /// Waits until its control socket answers.
    fn answering(mut self) -> Host {
        let host = &mut self;
        let deadline = Instant::now() + PROMPTLY;
        loop {
            if host.command(&["status"]).code == Some(0) {
                return self;
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

    /// Starts the host on `config` without waiting for it to answer (for a host that waits
    /// for its store). Its log goes to `<log_name>` beside the profile.
    pub fn launch(config: &Path, log_name: &str) -> Host {
        Host::spawn(Command::new(host_binary()), config, log_name)
    }

    /// Runs `command` (the host's binary, or a wrapper that runs it) with `run --config`.
    fn spawn(mut command: Command, config: &Path, log_name: &str) -> Host {
        let log = config.with_file_name(log_name);
        let log_file = fs::File::create(&log).expect("creating the host log");
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the host starts");
        Host {
            child,
            config: config.to_owned(),
            log,
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

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_hard();
        // A failed test's temporary folder goes with it: keep the end of the host's log
        // in the test's output, where a CI failure can be read.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
            eprintln!(
                "--- the last {} lines of the host's log ({}) ---\n{}",
                tail.len(),
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// How many lines of a host's log a failed test prints.
const LOG_TAIL_ON_FAILURE: usize = 80;

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
