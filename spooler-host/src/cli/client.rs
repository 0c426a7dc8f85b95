//! The client side of the control socket, used by the command line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::protocol::{Failure, Request, Response};

/// Why a request got no answer.
#[derive(Debug)]
pub enum ClientError {
    /// No host answers on the socket.
    NotRunning(String),
    /// The connection broke before the answer came: the request may or may not be done.
    Lost(String),
    /// The host answered with an error.
    Refused(Failure, String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(why)
            | ClientError::Lost(why)
            | ClientError::Refused(_, why) => f.write_str(why),
        }
    }
}

/// How long a client waits to hand over a request or for its answer before it gives up: a
/// host that hangs does not hang its clients (a cron job, a mail program).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends `request` (and `content`, for a submission) and returns the host's answer.
pub fn request(
    socket: &Path,
    request: &Request,
    content: Option<&[u8]>,
) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|error| {
        ClientError::NotRunning(format!(
            "cannot reach the spooler at {}: {error} (is `spooler-host run` running with this data folder?)",
            socket.display()
        ))
    })?;
    let lost = |error: std::io::Error| {
        ClientError::Lost(format!(
            "lost the connection to the spooler at {}: {error}",
            socket.display()
        ))
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(lost)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    let sent = (&stream)
        .write_all(line.as_bytes())
        .and_then(|()| content.map_or(Ok(()), |content| (&stream).write_all(content)));
    // A host that refuses a request before reading all of it (a message over its size
    // limit) answers and closes: the answer is still there to read after a failed write.
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(error), _) | (Ok(()), Err(error)) => return Err(lost(error)),
        (Ok(()), Ok(_)) => {}
    }
    match serde_json::from_str::<Response>(answer.trim_end()) {
        Ok(Response::Error { message, failure }) => Err(ClientError::Refused(failure, message)),
        Ok(response) => Ok(response),
        Err(_) if answer.is_empty() => Err(ClientError::Lost(
            "the spooler closed the connection without answering".into(),
        )),
        Err(error) => Err(ClientError::Refused(
            Failure::Refused,
            format!("an answer this client does not understand: {error}"),
        )),
    }
}

/// Submits a message, and submits it again while the connection was lost or the host could
/// not take it now, for up to `retry_for` after the first failure (pausing a little longer
/// each time). Each try carries the same message: a try the host did take (it stored the
/// message, then died before answering) is recognised by its Message-ID, sender and
/// recipients, and answered with the first id instead of being stored again.
///
/// A host that is not running at the first try is not waited for.
pub fn submit(
    socket: &Path,
    submission: &Request,
    content: &[u8],
    retry_for: Duration,
) -> Result<Response, ClientError> {
    let mut first_failure = None;
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match request(socket, submission, Some(content)) {
            Err(error @ (ClientError::Lost(_) | ClientError::Refused(Failure::Temporary, _))) => {
                error
            }
            Err(error @ ClientError::NotRunning(_)) if first_failure.is_some() => error,
            answer => return answer,
        };
        let since = *first_failure.get_or_insert_with(Instant::now);
        if since.elapsed() + pause > retry_for {
            return Err(error);
        }
        log::debug!("{error}; trying again in {pause:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Sends `watch` and calls `on_event` for every event until the host goes away.
pub fn watch(
    socket: &Path,
    mut on_event: impl FnMut(&crate::store::watchers::MailEvent),
) -> Result<(), ClientError> {
    let not_running = |error: std::io::Error| {
        ClientError::NotRunning(format!(
            "cannot reach the spooler at {}: {error}",
            socket.display()
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(not_running)?;
    let mut line = serde_json::to_string(&Request::Watch).expect("requests serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(not_running)?;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(not_running)?;
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Event(event)) => on_event(&event),
            Ok(Response::Watching) => {}
            Ok(Response::Error { message, failure }) => {
                return Err(ClientError::Refused(failure, message))
            }
            Ok(other) => {
                return Err(ClientError::Refused(
                    Failure::Refused,
                    format!("an unexpected answer: {other:?}"),
                ))
            }
            Err(error) => {
                return Err(ClientError::Refused(
                    Failure::Refused,
                    format!("an answer this client does not understand: {error}"),
                ))
            }
        }
    }
    Err(ClientError::Lost(
        "the spooler closed the connection".into(),
    ))
}
