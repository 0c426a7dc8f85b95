//! `spooler-local-deliver`: the privileged helper of the local transport. It delivers one
//! message, read from standard input, into the mailbox of one user, and does nothing else.
//!
//! ```text
//! spooler-local-deliver --mbox|--maildir --sender ADDRESS [--limit BYTES] USER < message
//! ```
//!
//! Why a helper: the host runs unprivileged, but a mailbox belongs to its user (mode 0600;
//! an mbox in group `mail`, as Debian keeps `/var/mail`). Only root can write as any user,
//! so that right lives here, in a program small enough to read in one sitting, installed
//! setuid root and executable only by the spooler's group (see the README, "Local
//! mailboxes"). It uses root's rights for one thing: to become the recipient (and, for
//! mbox, group `mail`, which may lock files in `/var/mail`), before it opens any file. What
//! it writes, it writes as that user, so it can write nowhere the user could not.
//!
//! What it refuses, and why:
//! - a `USER` that is not a plain user name (a path, `..`, an option): exit 64;
//! - a user the system does not know: exit 67, which the transport reports as "no such
//!   user" (a non-delivery report);
//! - a system account (uid below `UID_MIN` of `/etc/login.defs`, and `nobody`): exit 77.
//!   Their mail belongs to a person, through `/etc/aliases`; and their home folders (`/bin`,
//!   `/dev`, `/nonexistent`) are no place for a Maildir. `root` is allowed: it is where
//!   cron's and the system's mail goes;
//! - a mailbox that is a symbolic link, not a regular file, owned by someone else or with
//!   more than one link: exit 75 (try again later), and the log names it for the operator;
//! - a message that would take the mailbox over `--limit`: exit 75 (the user may make
//!   room), or 65 when the message alone is larger than the limit.
//!
//! It prints one line: where it delivered (standard output), or the failure with its RFC
//! 3463 status code first (standard error). Exit codes are sendmail's (`sysexits.h`).

mod account;
mod format;
mod maildir;
mod mbox;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use account::Account;

/// Where mbox files live: fixed, so that no caller can point the helper anywhere else.
const MAIL_SPOOL: &str = "/var/mail";

/// How a delivery failed: the exit code (`sysexits.h`) and the line that says why.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    line: String,
}

impl Failure {
    /// Bad arguments: the caller's mistake, never worth a retry.
    const USAGE: u8 = 64;
    /// The message cannot fit the mailbox, ever.
    const DATA: u8 = 65;
    /// No such user.
    const NO_USER: u8 = 67;
    /// Worth another try later.
    const TEMPORARY: u8 = 75;
    /// A user the helper does not write for.
    const NOT_ALLOWED: u8 = 77;

    fn new(code: u8, line: impl Into<String>) -> Failure {
        Failure {
            code,
            line: line.into(),
        }
    }

    /// A failure that may pass: `status` is the RFC 3463 code that leads the line.
    pub fn temporary(status: &str, why: impl std::fmt::Display) -> Failure {
        Failure::new(Failure::TEMPORARY, format!("{status} {why}"))
    }

    /// A message of `bytes` that no `mailbox` of `limit` bytes can ever take.
    pub fn too_large(bytes: usize, limit: u64, mailbox: &Path) -> Failure {
        Failure::new(
            Failure::DATA,
            format!(
                "5.2.3 the message ({bytes} bytes) is larger than the mailbox size limit \
                 ({limit} bytes) of {}",
                mailbox.display()
            ),
        )
    }

    /// Writing the mailbox failed with `error`: out of space and over quota say so, with
    /// their own codes; anything else is a temporary local error.
    pub fn writing(mailbox: &Path, error: &std::io::Error) -> Failure {
        let status = match error.raw_os_error() {
            Some(libc::EDQUOT) => "4.2.2",
            Some(libc::ENOSPC) => "4.3.1",
            _ => "4.3.0",
        };
        Failure::temporary(
            status,
            format!("cannot write {}: {error}", mailbox.display()),
        )
    }
}

/// The parsed command line.
#[derive(Debug, PartialEq)]
struct Request {
    maildir: bool,
    sender: String,
    limit: u64,
    user: String,
}

/// Postfix's default `mailbox_size_limit`: 50 MB.
const DEFAULT_LIMIT: u64 = 51_200_000;

fn parse(args: &[String]) -> Result<Request, Failure> {
    let usage = |why: &str| {
        Failure::new(
            Failure::USAGE,
            format!(
                "5.3.5 {why}; usage: spooler-local-deliver --mbox|--maildir --sender ADDRESS \
                 [--limit BYTES] USER < message"
            ),
        )
    };
    let mut format = None;
    let mut sender = None;
    let mut limit = DEFAULT_LIMIT;
    let mut user = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--mbox" | "--maildir" if format.is_none() => format = Some(arg == "--maildir"),
            "--sender" if sender.is_none() => {
                let value = rest.next().ok_or_else(|| usage("--sender needs a value"))?;
                sender = Some(format::checked_sender(value).map_err(|why| usage(&why))?);
            }
            "--limit" => {
                let value = rest.next().ok_or_else(|| usage("--limit needs a value"))?;
                limit = value
                    .parse()
                    .map_err(|_| usage("--limit takes a number of bytes"))?;
            }
            name if user.is_none() && !name.starts_with('-') => {
                account::check_name(name).map_err(|why| usage(&why))?;
                user = Some(name.to_owned());
            }
            other => return Err(usage(&format!("unexpected argument `{other}`"))),
        }
    }
    Ok(Request {
        maildir: format.ok_or_else(|| usage("say --mbox or --maildir"))?,
        sender: sender.ok_or_else(|| usage("--sender is required"))?,
        limit,
        user: user.ok_or_else(|| usage("name the user"))?,
    })
}

fn deliver(request: &Request) -> Result<String, Failure> {
    let account = Account::look_up(&request.user)?;
    account.check_allowed()?;
    // Files it creates are the user's alone, whatever umask the caller had.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let mut message = Vec::new();
    std::io::stdin()
        .read_to_end(&mut message)
        .map_err(|e| Failure::temporary("4.3.0", format!("cannot read the message: {e}")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    if request.maildir {
        account.become_for_maildir()?;
        let path = maildir::deliver(&account, &request.sender, &message, request.limit, now)?;
        Ok(format!("delivered to {}", path.display()))
    } else {
        account.become_for_mbox()?;
        let mailbox = Path::new(MAIL_SPOOL).join(&account.name);
        mbox::deliver(
            &mailbox,
            &account,
            &request.sender,
            &message,
            request.limit,
            now,
        )?;
        Ok(format!("delivered to {}", mailbox.display()))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args).and_then(|request| deliver(&request)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{}", failure.line);
            ExitCode::from(failure.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn a_request_names_a_format_a_sender_and_a_user() {
        assert_eq!(
            parse(&args(
                "--maildir --sender ann@example.com --limit 100 alice"
            ))
            .unwrap(),
            Request {
                maildir: true,
                sender: "ann@example.com".into(),
                limit: 100,
                user: "alice".into()
            }
        );
        let request = parse(&args("--mbox --sender root root")).unwrap();
        assert_eq!(request.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn paths_options_and_missing_parts_are_refused_as_usage_errors() {
        for line in [
            "--mbox --sender a /etc/passwd",
            "--mbox --sender a ../root",
            "--mbox --sender a alice/..",
            "--mbox --sender a .profile",
            "--mbox --sender a alice bob",
            "--mbox --sender a --unknown alice",
            "--mbox --maildir --sender a alice",
            "--sender a alice",
            "--mbox alice",
            "--mbox --sender a",
            "--mbox --sender a --limit lots alice",
        ] {
            let failure = parse(&args(line)).expect_err(line);
            assert_eq!(failure.code, Failure::USAGE, "{line}");
            assert!(failure.line.starts_with("5.3.5 "), "{}", failure.line);
        }
    }
}
