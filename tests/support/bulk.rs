//! Mail in bulk: many messages submitted straight over the control socket, and what a run
//! delivered, read from the host's log and a directory transport's folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::PROMPTLY;

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
/// subject `message <n>` and the Message-ID `<message-<n>@numbered.test>` to
/// `recipient(n)`. Returns each acknowledged number with its queue id, in order, and why it
/// stopped early, if it did (e.g. the host went away, or refused with a temporary failure).
/// The Message-ID makes a resubmission after a lost answer safe: the host finds the first.
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
            format!("From: load@example.com\r\nMessage-ID: <message-{n}@numbered.test>\r\nSubject: message {n}\r\n\r\nNumber {n}.\r\n");
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
