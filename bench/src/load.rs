//! The load: messages of about 2 KiB, submitted by several clients side by side, either over
//! the control socket (as a program linking the client would) or one process per message
//! through a `sendmail` binary (as cron and mail programs do).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use spooler_host::cli::client;
use spooler_host::protocol::{Request, Response, Submission};

/// How many clients submit side by side.
pub const SUBMITTERS: usize = 8;

/// The size the benchmark's messages are padded to.
const MESSAGE_SIZE: usize = 2048;

/// Message `n` of a run: headers and a body of filler lines, about [`MESSAGE_SIZE`] bytes.
pub fn message(n: usize, recipient: &str) -> Vec<u8> {
    let mut text = format!(
        "From: Bench <bench@example.com>\r\nTo: {recipient}\r\nSubject: benchmark message {n}\r\n\
         Message-ID: <{n}.{}@bench.example.com>\r\n\r\n",
        std::process::id()
    );
    let line = "The quick brown fox jumps over the lazy dog, once more for the benchmark.\r\n";
    while text.len() + line.len() <= MESSAGE_SIZE {
        text.push_str(line);
    }
    text.into_bytes()
}

/// The recipient of message `n`: a hundred different mailboxes at one domain.
pub fn recipient(n: usize) -> String {
    format!("rcpt{}@example.net", n % 100)
}

/// Submits `count` messages (numbered from `first`) over the control socket at `socket`,
/// [`SUBMITTERS`] clients side by side; returns when the last one was acknowledged.
pub fn submit_over_socket(socket: &Path, first: usize, count: usize) -> Instant {
    let next = AtomicUsize::new(first);
    let end = first + count;
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..SUBMITTERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut last = Instant::now();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= end {
                            return last;
                        }
                        submit_one(socket, &[recipient(n)], &message(n, &recipient(n)));
                        last = Instant::now();
                    }
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().expect("a submitting client"))
            .max()
            .unwrap_or_else(Instant::now)
    })
}

/// Submits one message to `recipients` over the socket; its queue id.
pub fn submit_one(socket: &Path, recipients: &[String], content: &[u8]) -> String {
    let submission = Submission::new("bench@example.com", recipients.to_vec(), content.len());
    match client::request(socket, &Request::Submit(submission), Some(content)) {
        Ok(Response::Submitted { id }) => id,
        other => panic!("a submission was not acknowledged: {other:?}"),
    }
}

/// Submits `count` messages, one `sendmail`-style process per message, [`SUBMITTERS`]
/// processes side by side. `command` makes the process for a recipient. Returns how long
/// the processes took on average, from start to exit.
pub fn submit_by_processes(count: usize, command: impl Fn(&str) -> Command + Sync) -> Duration {
    let next = AtomicUsize::new(0);
    let total: Duration = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut spent = Duration::ZERO;
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= count {
                            return spent;
                        }
                        let started = Instant::now();
                        run_submitter(command(&recipient(n)), &message(n, &recipient(n)));
                        spent += started.elapsed();
                    }
                })
            })
            .collect();
        submitters
            .into_iter()
            .map(|submitter| submitter.join().expect("a submitting thread"))
            .sum()
    });
    total / count.max(1) as u32
}

fn run_submitter(mut command: Command, content: &[u8]) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the submitting program starts");
    child
        .stdin
        .take()
        .expect("its standard input")
        .write_all(content)
        .expect("writing the message to the submitting program");
    let output = child
        .wait_with_output()
        .expect("the submitting program ends");
    assert!(
        output.status.success(),
        "a submission failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The mean time a program takes from start to exit, over `runs` runs one after another.
pub fn start_up(runs: u32, command: impl Fn() -> Command) -> Duration {
    let started = Instant::now();
    for _ in 0..runs {
        let status = command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the program starts");
        assert!(status.success(), "the program failed: {status}");
    }
    started.elapsed() / runs
}
