//! What `sendmail`, `mailq` and `newaliases` do, mode by mode, against a running spooler:
//! submit a message, list the queue as Postfix's `mailq` does, flush, verify addresses,
//! read the alias file again. Each returns sendmail's exit code (sysexits.h), which is what
//! cron, mail programs and scripts look at.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use provider_abi::Timestamp;

use crate::cli::client::{self, ClientError};
use crate::cli::sendmail::{self, exit, Mode, SubmitArgs};
use crate::cli::sendmail::{complain, mailq, message};
use crate::config::Profile;
use crate::protocol::{Failure, Request, Response};

/// What a successful submission prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Print {
    /// Nothing, as sendmail does: mail programs and cron pass its output on.
    Nothing,
    /// The queue id (`submit`).
    Id,
    /// `{"id": …}` (`submit --json`).
    Json,
}

/// Runs the command line `args` (sendmail's options) against the spooler `profile` names.
pub fn run(profile: &Profile, args: &SubmitArgs, print: Print) -> u8 {
    let socket = profile.submission_socket();
    match args.mode {
        Mode::Deliver => deliver(profile, args, print),
        Mode::ListQueue => list_queue(&socket),
        Mode::Flush => match client::request(&socket, &Request::Flush { transport: None }, None) {
            Ok(_) => 0,
            Err(error) => failure(error),
        },
        Mode::Verify => verify(&socket, args),
        Mode::RebuildAliases => rebuild_aliases(profile),
        Mode::Smtp => smtp(&socket),
    }
}

/// Reads the message from standard input and submits it.
fn deliver(profile: &Profile, args: &SubmitArgs, print: Print) -> u8 {
    // Read no more than the spooler takes: a message over the limit stops here, at once.
    let limit = profile.max_message_size;
    let mut input = Vec::new();
    let read = std::io::stdin()
        .take(limit as u64 + 1)
        .read_to_end(&mut input);
    if let Err(error) = read {
        complain!("cannot read the message: {error}");
        return exit::DATA_ERROR;
    }
    if input.len() > limit {
        complain!(
            "the message is larger than this spooler takes: at most {limit} bytes \
             (limits.max_message_size); nothing was sent"
        );
        return exit::DATA_ERROR;
    }
    let host = provider_abi::host::hostname();
    let sender = args
        .sender
        .clone()
        .unwrap_or_else(|| format!("LOCAL:{}", user_name()));
    let now = Timestamp::now();
    let from = message::from_address(
        &sender,
        profile.local_names.myorigin.as_deref().unwrap_or(&host),
    );
    let origin = message::Origin {
        host: &host,
        from: &from,
        full_name: args.full_name.as_deref(),
        now,
    };
    let content = message::with_missing_fields(
        message::message_from_input(input, args.ignore_dots),
        &origin,
    );
    let submission = match sendmail::submission(args, &sender, &content, now) {
        Ok(submission) => submission,
        Err(error) => {
            complain!("{error}");
            return exit::USAGE;
        }
    };
    let request = Request::Submit(submission);
    match client::submit(
        &profile.submission_socket(),
        &request,
        &content,
        profile.client_retry,
    ) {
        Ok(Response::Submitted { id }) => {
            match print {
                Print::Nothing => {}
                Print::Id => println!("{id}"),
                Print::Json => println!("{}", serde_json::json!({ "id": id })),
            }
            0
        }
        Ok(other) => {
            complain!("unexpected answer {other:?}");
            exit::TEMPORARY
        }
        Err(error) => {
            complain!("{error}");
            match error {
                ClientError::NotRunning(_) => exit::UNAVAILABLE,
                ClientError::Lost(_) | ClientError::Refused(Failure::Temporary, _) => {
                    exit::TEMPORARY
                }
                ClientError::Refused(Failure::BadAddress, _) => exit::NO_USER,
                ClientError::Refused(
                    Failure::BadMessage | Failure::Refused | Failure::NotFound,
                    _,
                ) => exit::DATA_ERROR,
            }
        }
    }
}

/// `-bs`: an SMTP dialogue on standard input and output, served by the host's SMTP session
/// (the listener's) over the socket: this process only carries the bytes. The host's first
/// line is its greeting, or an error answer if it refuses.
fn smtp(socket: &Path) -> u8 {
    let mut connection = match UnixStream::connect(socket) {
        Ok(connection) => connection,
        Err(error) => {
            return failure(ClientError::NotRunning(format!(
                "cannot reach the spooler at {}: {error}",
                socket.display()
            )))
        }
    };
    let mut request = serde_json::to_string(&Request::Smtp).expect("requests serialize");
    request.push('\n');
    let mut replies = match connection
        .write_all(request.as_bytes())
        .and_then(|()| connection.try_clone())
    {
        Ok(replies) => BufReader::new(replies),
        Err(error) => return failure(ClientError::Lost(error.to_string())),
    };
    let mut greeting = String::new();
    if let Err(error) = replies.read_line(&mut greeting) {
        return failure(ClientError::Lost(error.to_string()));
    }
    if !greeting.starts_with("220") {
        return match serde_json::from_str::<Response>(&greeting) {
            Ok(Response::Error {
                message,
                failure: kind,
            }) => failure(ClientError::Refused(kind, message)),
            _ => failure(ClientError::Lost(format!(
                "unexpected greeting {greeting:?}"
            ))),
        };
    }
    let mut out = std::io::stdout();
    if out
        .write_all(greeting.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return 0;
    }
    // The client's side: what it writes goes to the host until its end of input, which
    // ends the session's input too. The host's replies come back until it closes.
    std::thread::spawn(move || {
        std::io::copy(&mut std::io::stdin().lock(), &mut connection).ok();
        connection.shutdown(std::net::Shutdown::Write).ok();
    });
    let mut replies_out = LineFlushing(out);
    match std::io::copy(&mut replies, &mut replies_out) {
        Ok(_) => 0,
        Err(error) => failure(ClientError::Lost(error.to_string())),
    }
}

/// Standard output flushed after every write, so each SMTP reply reaches the client at once.
struct LineFlushing(std::io::Stdout);

impl Write for LineFlushing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.0.write(bytes)?;
        self.0.flush()?;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Prints the Outbox page by page as `mailq` does; a reader that stops early ends it.
fn list_queue(socket: &Path) -> u8 {
    let mut out = std::io::stdout().lock();
    let mut after = None;
    let (mut bytes, mut messages) = (0, 0);
    loop {
        let request = Request::Queue { after, limit: None };
        let (page, next) = match client::request(socket, &request, None) {
            Ok(Response::Messages { messages, next }) => (messages, next),
            Ok(other) => {
                eprintln!("mailq: unexpected answer {other:?}");
                return exit::TEMPORARY;
            }
            Err(error) => return failure(error),
        };
        let mut text = String::new();
        if messages == 0 && !page.is_empty() {
            text += mailq::HEADING;
        }
        for message in &page {
            bytes += message.size;
            messages += 1;
            text += &mailq::entry(message);
        }
        if next.is_none() {
            text += &if messages == 0 {
                mailq::EMPTY.to_owned()
            } else {
                mailq::total(bytes, messages)
            };
        }
        if out.write_all(text.as_bytes()).is_err() {
            return 0;
        }
        match next {
            Some(next) => after = Some(next),
            None => return 0,
        }
    }
}

/// Prints what each recipient would become; EX_NOUSER when one is undeliverable.
fn verify(socket: &Path, args: &SubmitArgs) -> u8 {
    let addresses: Vec<String> = args.recipients.iter().map(|r| r.address.clone()).collect();
    if addresses.is_empty() {
        complain!("-bv: name the addresses to verify");
        return exit::USAGE;
    }
    match client::request(socket, &Request::Verify { addresses }, None) {
        Ok(Response::Verified { verdicts }) => {
            for verdict in &verdicts {
                let what = if verdict.deliverable {
                    "deliverable"
                } else {
                    "undeliverable"
                };
                println!("{}... {what}: {}", verdict.given, verdict.detail);
            }
            if verdicts.iter().all(|v| v.deliverable) {
                0
            } else {
                exit::NO_USER
            }
        }
        Ok(other) => {
            complain!("unexpected answer {other:?}");
            exit::TEMPORARY
        }
        Err(error) => failure(error),
    }
}

/// Has the running spooler read the alias file again and says what it found; with no
/// spooler running, checks the file itself (the spooler reads it when it starts).
fn rebuild_aliases(profile: &Profile) -> u8 {
    let Some(file) = &profile.local_names.aliases else {
        eprintln!("newaliases: no alias file (the profile's `aliases` key names none)");
        return 0;
    };
    let (aliases, problems) =
        match client::request(&profile.socket_path(), &Request::ReloadAliases, None) {
            Ok(Response::AliasesRead { aliases, problems }) => (aliases, problems),
            Err(ClientError::NotRunning(_)) => match crate::intake::aliases::Table::read(file) {
                Ok(table) => (table.len(), table.problems),
                Err(error) => {
                    eprintln!("newaliases: {error}");
                    return exit::CONFIG;
                }
            },
            Ok(other) => {
                eprintln!("newaliases: unexpected answer {other:?}");
                return exit::TEMPORARY;
            }
            Err(error) => {
                eprintln!("newaliases: {error}");
                return exit::CONFIG;
            }
        };
    for problem in &problems {
        eprintln!("newaliases: {problem}; ignored");
    }
    println!("{}: {aliases} aliases", file.display());
    0
}

/// The name of the user this process runs as (from the password database, so that a
/// changed `$USER` does not change the sender), else `$USER` or `$LOGNAME`.
fn user_name() -> String {
    // SAFETY: getpwuid returns null or a pointer to a static entry that stays valid until
    // the next call; the name is copied at once, and this program makes no other call.
    let from_database = unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        (!entry.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    from_database
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "root".into())
}

/// Says why the spooler could not be asked; EX_UNAVAILABLE when none answers.
fn failure(error: ClientError) -> u8 {
    complain!("{error}");
    match error {
        ClientError::NotRunning(_) | ClientError::Lost(_) => exit::UNAVAILABLE,
        ClientError::Refused(Failure::Temporary, _) => exit::TEMPORARY,
        ClientError::Refused(..) => exit::SOFTWARE,
    }
}
