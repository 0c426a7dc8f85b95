//! Debian's `chromium`, headless, driven through the Chrome DevTools Protocol for the
//! dashboard's tests: the page loaded as an operator's browser loads it, its script run,
//! clicked and photographed.
//!
//! The protocol goes over `--remote-debugging-pipe`: JSON messages ended by a NUL byte,
//! commands written to the browser's file descriptor 3 and answers read from its 4, so no
//! WebSocket is needed. Every wait is bounded; the browser (a process group of its own:
//! it starts a zygote, renderers, a GPU process) is killed when the guard is dropped, also
//! when a test fails.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long one protocol command may take.
const CALL_TIME: Duration = Duration::from_secs(20);

/// A headless Chromium, killed when dropped.
pub struct Chromium {
    child: Child,
    commands: File,
    answers: Receiver<Value>,
    next_id: u64,
    /// The protocol's events received so far (`Runtime.exceptionThrown`, `Log.entryAdded`, …).
    events: Vec<Value>,
    log: PathBuf,
    // Last: removed after the browser is gone.
    _profile: tempfile::TempDir,
}

/// Where Debian's chromium is, if it is here. Without it a test is skipped, loudly; under
/// `.ci/run` (`SPOOLER_REQUIRE_SERVERS=1`) its absence is a failure.
pub fn chromium_program() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "chromium is missing, and SPOOLER_REQUIRE_SERVERS=1 says it must be here (.ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: chromium is not installed; `bash .ci/run` installs it (apt-get install chromium)"
        );
    }
    found
}

/// A pipe whose two ends close on exec (the browser gets its copies through `dup2`).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Chromium {
    /// Starts `program` (from [`chromium_program`]) headless, with a profile of its own in a
    /// temporary folder, and waits until it answers.
    pub fn start(program: &Path) -> Chromium {
        let profile = tempfile::tempdir().expect("a temporary folder");
        let log = profile.path().join("chromium.log");
        let log_file = File::create(&log).expect("creating chromium's log");
        let (commands_in, commands) = pipe();
        let (answers, answers_out) = pipe();
        let (fd_in, fd_out) = (commands_in.as_raw_fd(), answers_out.as_raw_fd());
        let mut command = Command::new(program);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("chromium's log"))
            .stderr(log_file)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. Both ends
        // are first copied above 10, so that neither is overwritten by the other's dup2
        // when the pipes happen to be descriptors 3 or 4; dup2's copies do not close on exec.
        unsafe {
            command.pre_exec(move || {
                let high_in = libc::fcntl(fd_in, libc::F_DUPFD_CLOEXEC, 10);
                let high_out = libc::fcntl(fd_out, libc::F_DUPFD_CLOEXEC, 10);
                if high_in < 0
                    || high_out < 0
                    || libc::dup2(high_in, 3) < 0
                    || libc::dup2(high_out, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("chromium starts");
        // The browser holds its own copies now; with ours closed, its death ends our reads.
        drop(commands_in);
        drop(answers_out);
        let (sender, answers_received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(File::from(answers));
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if sender.send(value).is_err() {
                    return;
                }
            }
        });
        let mut browser = Chromium {
            child,
            commands: File::from(commands),
            answers: answers_received,
            next_id: 0,
            events: Vec::new(),
            log,
            _profile: profile,
        };
        let version = browser.call(None, "Browser.getVersion", json!({}));
        eprintln!(
            "chromium: {} (protocol {})",
            version["product"], version["protocolVersion"]
        );
        browser
    }

    /// Chromium's own output so far (its log), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one command (to a page's `session`, or to the browser) and waits at most
    /// `CALL_TIME` (20 s) for its result; a failure says what the browser answered.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).expect("commands serialize");
        bytes.push(0);
        if let Err(error) = self.commands.write_all(&bytes) {
            panic!(
                "cannot send {method} to chromium ({error}); its log:\n{}",
                self.log()
            );
        }
        let deadline = Instant::now() + CALL_TIME;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.answers.recv_timeout(left) {
                Ok(answer) => answer,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chromium did not answer {method} within {CALL_TIME:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "chromium went away during {method}; its log:\n{}",
                        self.log()
                    )
                }
            };
            if answer["id"] != id {
                if answer.get("method").is_some() {
                    self.events.push(answer);
                }
                continue;
            }
            if let Some(error) = answer.get("error") {
                panic!("chromium refused {method} {message}: {error}");
            }
            return answer["result"].clone();
        }
    }

    /// Opens a tab on `url` with a viewport of `width` × `height` CSS pixels, its script's
    /// errors and the console's messages recorded.
    pub fn open(&mut self, url: &str, width: u32, height: u32) -> Page<'_> {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let mut page = Page {
            browser: self,
            session,
        };
        page.call("Runtime.enable", json!({}));
        page.call("Log.enable", json!({}));
        page.call("Page.enable", json!({}));
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        let navigated = page.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = navigated.get("errorText") {
            panic!("chromium could not open {url}: {error}");
        }
        page
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The whole group: the browser and the processes it started.
        // SAFETY: kill has no memory-safety preconditions; the group is our child's.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// One tab of a [`Chromium`].
pub struct Page<'browser> {
    browser: &'browser mut Chromium,
    session: String,
}

impl Page<'_> {
    /// Sends a command to this tab.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.browser.call(Some(&session), method, params)
    }

    /// The value of a JavaScript `expression` in the page (promises awaited); a failure if
    /// it throws.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        self.try_evaluate(expression)
            .unwrap_or_else(|exception| panic!("`{expression}` threw in the page: {exception}"))
    }

    /// The value of `expression`, or what it threw.
    fn try_evaluate(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception["exception"]["description"]
                .as_str()
                .map_or_else(|| exception.to_string(), str::to_owned)),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Waits at most `limit` until `expression` is true in the page (an expression that
    /// throws, as one reading a document still loading does, is not true yet); a failure
    /// naming `what` and what the page showed (its body's text and its script's errors) if
    /// it is not.
    pub fn wait_for(&mut self, limit: Duration, what: &str, expression: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let outcome = self.try_evaluate(&format!("!!({expression})"));
            if outcome == Ok(json!(true)) {
                return;
            }
            if Instant::now() > deadline {
                let text = self.evaluate("document.body ? document.body.innerText : ''");
                panic!(
                    "gave up after {limit:?} waiting until {what} (last: {outcome:?}); the page's \
                     errors: {:#?}\nthe page shows:\n{}",
                    self.problems(),
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        decode_base64(shot["data"].as_str().expect("the screenshot's data"))
    }

    /// What went wrong in the page so far: uncaught exceptions, and the console's errors
    /// and security messages (a Content-Security-Policy violation).
    pub fn problems(&self) -> Vec<String> {
        let session = json!(self.session);
        self.browser
            .events
            .iter()
            .filter(|event| event["sessionId"] == session)
            .filter_map(|event| match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    let details = &event["params"]["exceptionDetails"];
                    Some(format!(
                        "exception: {} {}",
                        details["text"], details["exception"]["description"]
                    ))
                }
                Some("Log.entryAdded") => {
                    let entry = &event["params"]["entry"];
                    (entry["level"] == "error" || entry["source"] == "security")
                        .then(|| format!("console ({}): {}", entry["source"], entry["text"]))
                }
                _ => None,
            })
            .collect()
    }
}

/// Standard base64 (the protocol's binary data), padding optional.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut bits = 0u32;
        for (i, digit) in chunk.iter().enumerate() {
            bits |= u32::from(*digit) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(super::decode_base64("aGVsbG8="), b"hello");
        assert_eq!(super::decode_base64("aGVsbG8"), b"hello");
        assert_eq!(super::decode_base64("aGk/Pz8+"), b"hi???>");
        assert_eq!(super::decode_base64(""), b"");
    }
}
