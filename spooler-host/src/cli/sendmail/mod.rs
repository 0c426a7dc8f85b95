//! `spooler-host submit` (and the binary invoked as `sendmail`, `mailq` or `newaliases`):
//! sendmail's command line, so cron, mail programs, git send-email and scripts can use it.
//!
//! Understood: recipients as arguments (`TYPE:address`, bare SMTP addresses, or local names
//! such as `root`), `-f SENDER`, `-F NAME` (the full name in a From header added to a
//! message without one), `-t` (recipients from To, Cc and Bcc, or from Resent-To, Resent-Cc
//! and Resent-Bcc when the message has any, as sendmail does; read as RFC 5322 address
//! lists, groups included), `-i`/`-oi` (a lone `.` line does not end the message),
//! `-N never|success,failure,delay` (which reports), the modes `-bm` (deliver, the default),
//! `-bp` (list the queue), `-bs` (SMTP on standard input and output), `-bv` (verify
//! addresses), `-bi` (read the alias file again) and `-q` (flush; `-qR…`, `-qS…` and
//! `-q<interval>` flush everything), and these extensions: `--cc ADDR`, `--bcc ADDR`,
//! `--priority low|normal|high`, `--defer DURATION`, `--expire-after DURATION`,
//! `--delete-after`, and `-R full|hdrs` (what a failure report returns). Other sendmail
//! options (`-o…` such as `-oem` and `-odq`, `-B`, `-V`, `-X`, `-C`, `-L`, `-U`, `-v`) are
//! accepted and ignored, as Postfix's sendmail does:
//! delivery is always in the background and errors always come back as reports.
//!
//! This file reads the command line and builds the submission; `message` prepares the
//! message read from standard input, `modes` carries out each mode against the spooler, and
//! `mailq` prints the queue as Postfix does.

use provider_abi::headers::mailboxes;
use provider_abi::Timestamp;

use crate::base::units::parse_duration;
use crate::intake::aliases::local_name;
use crate::protocol::{KindName, PriorityName, Source, Submission, SubmittedRecipient};

pub mod mailq;
pub mod message;
pub mod modes;

/// The name this program's errors start with, as sendmail's do: the name it was invoked by
/// (`sendmail`, `mailq`, `newaliases`), else `spooler-host submit`, so that an operator who
/// typed `spooler-host submit` is not told about a `sendmail` they never ran.
pub fn program() -> String {
    match invoked_as().as_deref() {
        Some(name @ ("sendmail" | "mailq" | "newaliases")) => name.to_owned(),
        _ => "spooler-host submit".to_owned(),
    }
}

/// Where its submissions come from, for the host's metrics: `sendmail` when invoked by that
/// name, else a program on the control socket (`spooler-host submit`).
fn source() -> Source {
    match invoked_as().as_deref() {
        Some("sendmail") => Source::Sendmail,
        _ => Source::Control,
    }
}

/// The file name this program was invoked by (its `argv[0]`): `sendmail`, `mailq` and
/// `newaliases` choose a mode.
pub fn invoked_as() -> Option<String> {
    std::env::args_os().next().and_then(|arg0| {
        std::path::Path::new(&arg0)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    })
}

/// Prints an error on standard error as `PROGRAM: what` ([`program`]).
macro_rules! complain {
    ($($arg:tt)*) => {
        eprintln!("{}: {}", $crate::cli::sendmail::program(), format_args!($($arg)*))
    };
}
pub(crate) use complain;

/// sendmail's exit codes (sysexits.h).
pub mod exit {
    /// The command line is wrong.
    pub const USAGE: u8 = 64;
    /// The message is malformed.
    pub const DATA_ERROR: u8 = 65;
    /// An address is wrong.
    pub const NO_USER: u8 = 67;
    /// The spooler is not running.
    pub const UNAVAILABLE: u8 = 69;
    /// The spooler answered something this program does not understand.
    pub const SOFTWARE: u8 = 70;
    /// The spooler could not take the message now; try again.
    pub const TEMPORARY: u8 = 75;
    /// A configuration file (the alias file) cannot be read.
    pub const CONFIG: u8 = 78;
}

/// What the command line asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Submit the message on standard input (`-bm`, the default).
    #[default]
    Deliver,
    /// List the queue (`-bp`, `mailq`).
    ListQueue,
    /// Try every waiting recipient now (`-q`).
    Flush,
    /// An SMTP dialogue on standard input and output (`-bs`).
    Smtp,
    /// Say what the recipients would become, without sending (`-bv`).
    Verify,
    /// Read the alias file again (`-bi`, `newaliases`).
    RebuildAliases,
}

/// A parsed `submit` command line.
#[derive(Debug, Default, PartialEq)]
pub struct SubmitArgs {
    /// What to do.
    pub mode: Mode,
    /// `-F`: the sender's full name.
    pub full_name: Option<String>,
    /// `-f`.
    pub sender: Option<String>,
    /// Recipients given as arguments or options.
    pub recipients: Vec<SubmittedRecipient>,
    /// `-t`.
    pub from_headers: bool,
    /// `-i`: dots are data.
    pub ignore_dots: bool,
    /// `-N success`.
    pub delivery_report: bool,
    /// `-N never` or without `failure`.
    pub no_non_delivery_report: bool,
    /// `--priority`.
    pub priority: PriorityName,
    /// `--defer`.
    pub defer: Option<std::time::Duration>,
    /// `--expire-after`.
    pub expire_after: Option<std::time::Duration>,
    /// `--delete-after`.
    pub delete_after: bool,
    /// `-R full`: failure reports return the whole message.
    pub return_full: bool,
}

/// Reads the command line; the error says what is wrong.
pub fn parse(args: &[String]) -> Result<SubmitArgs, String> {
    let mut parsed = SubmitArgs::default();
    let mut args = args.iter();
    let value = |name: &str,
                 attached: &str,
                 rest: &mut std::slice::Iter<'_, String>|
     -> Result<String, String> {
        if attached.is_empty() {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        } else {
            Ok(attached.to_owned())
        }
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                for address in args.by_ref() {
                    parsed.recipients.push(recipient(address, KindName::To));
                }
            }
            "--cc" => parsed
                .recipients
                .push(recipient(&value("--cc", "", &mut args)?, KindName::Cc)),
            "--bcc" => parsed
                .recipients
                .push(recipient(&value("--bcc", "", &mut args)?, KindName::Bcc)),
            "--priority" => {
                parsed.priority = match value("--priority", "", &mut args)?.as_str() {
                    "low" => PriorityName::Low,
                    "normal" => PriorityName::Normal,
                    "high" => PriorityName::High,
                    other => {
                        return Err(format!("--priority: `{other}` is not low, normal or high"))
                    }
                }
            }
            "--defer" => parsed.defer = Some(parse_duration(&value("--defer", "", &mut args)?)?),
            "--expire-after" => {
                parsed.expire_after =
                    Some(parse_duration(&value("--expire-after", "", &mut args)?)?)
            }
            "--delete-after" => parsed.delete_after = true,
            "-t" => parsed.from_headers = true,
            "-i" | "-oi" => parsed.ignore_dots = true,
            flag if flag.starts_with("-f") || flag.starts_with("-r") => {
                parsed.sender = Some(value("-f", &flag[2..], &mut args)?)
            }
            flag if flag.starts_with("-N") => {
                let notify = value("-N", &flag[2..], &mut args)?.to_ascii_lowercase();
                let wanted: Vec<&str> = notify.split(',').map(str::trim).collect();
                if let Some(bad) = wanted
                    .iter()
                    .find(|w| !["never", "success", "failure", "delay"].contains(w))
                {
                    return Err(format!(
                        "-N: `{bad}` is not never, success, failure or delay"
                    ));
                }
                parsed.delivery_report = wanted.contains(&"success");
                parsed.no_non_delivery_report = !wanted.contains(&"failure");
            }
            flag if flag.starts_with("-F") => {
                parsed.full_name = Some(value("-F", &flag[2..], &mut args)?)
            }
            flag if flag.starts_with("-q") => parsed.mode = Mode::Flush,
            flag if flag.starts_with("-b") => parsed.mode = mode(flag)?,
            flag if flag.starts_with("-R") => {
                parsed.return_full = match value("-R", &flag[2..], &mut args)?
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "full" => true,
                    "hdrs" => false,
                    other => return Err(format!("-R: `{other}` is not full or hdrs")),
                }
            }
            flag if ["-B", "-V", "-X", "-C", "-L"]
                .iter()
                .any(|option| flag.starts_with(option)) =>
            {
                if flag.len() == 2 {
                    args.next();
                }
            }
            flag if flag.starts_with("-o") || flag == "-U" || flag == "-v" => {}
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option `{flag}`"))
            }
            address => parsed.recipients.push(recipient(address, KindName::To)),
        }
    }
    Ok(parsed)
}

/// The mode of a `-b` option.
fn mode(flag: &str) -> Result<Mode, String> {
    Ok(match flag {
        "-bm" => Mode::Deliver,
        "-bp" => Mode::ListQueue,
        "-bs" => Mode::Smtp,
        "-bv" => Mode::Verify,
        "-bi" => Mode::RebuildAliases,
        other => {
            return Err(format!(
                "`{other}`: this mode is not supported (-bm, -bp, -bs, -bv and -bi are)"
            ))
        }
    })
}

fn recipient(address: &str, kind: KindName) -> SubmittedRecipient {
    SubmittedRecipient {
        address: address.to_owned(),
        kind,
    }
}

/// The header fields `-t` takes recipients from, with the kind each gives: the Resent-
/// fields if the message has any (it is being resent; its original recipients have had it),
/// else To, Cc and Bcc.
const RESENT_FIELDS: [(&str, KindName); 3] = [
    ("Resent-To", KindName::To),
    ("Resent-Cc", KindName::Cc),
    ("Resent-Bcc", KindName::Bcc),
];
const FIELDS: [(&str, KindName); 3] = [
    ("To", KindName::To),
    ("Cc", KindName::Cc),
    ("Bcc", KindName::Bcc),
];

/// The recipients `-t` reads from `content`'s headers: each mailbox as an SMTP address
/// (whatever its text, a header address is never the spooler's `TYPE:address`), group
/// members included, empty groups (`undisclosed-recipients:;`) giving none.
pub fn header_recipients(content: &[u8]) -> Vec<SubmittedRecipient> {
    let from = |fields: &[(&str, KindName)]| -> Vec<SubmittedRecipient> {
        fields
            .iter()
            .flat_map(|&(name, kind)| {
                mailboxes(content, name)
                    .into_iter()
                    .map(move |mailbox| recipient(&header_address(&mailbox.address), kind))
            })
            .collect()
    };
    let resent = from(&RESENT_FIELDS);
    if resent.is_empty() {
        from(&FIELDS)
    } else {
        resent
    }
}

/// A header's mailbox as a recipient: an SMTP address, or a bare local name (`To: root`),
/// which the host qualifies and looks up in the alias table. Never one of the spooler's own
/// `TYPE:` addresses: in a header, `name:` starts a group.
fn header_address(address: &str) -> String {
    if local_name(address).is_some() {
        address.to_owned()
    } else {
        format!("SMTP:{address}")
    }
}

/// Builds the submission; `-t` adds the recipients of the message's headers.
pub fn submission(
    args: &SubmitArgs,
    default_sender: &str,
    content: &[u8],
    now: Timestamp,
) -> Result<Submission, String> {
    let mut recipients = args.recipients.clone();
    if args.from_headers {
        recipients.extend(header_recipients(content));
    }
    if recipients.is_empty() {
        return Err("no recipients: name them as arguments, or use -t to take them from the To, Cc and Bcc headers".into());
    }
    Ok(Submission {
        sender: args
            .sender
            .clone()
            .unwrap_or_else(|| default_sender.to_owned()),
        recipients,
        delivery_report: args.delivery_report,
        no_non_delivery_report: args.no_non_delivery_report,
        priority: args.priority,
        deferred_until: args.defer.map(|d| now.plus(d).0),
        expires_at: args.expire_after.map(|d| now.plus(d).0),
        delete_after_submission: args.delete_after,
        return_full: args.return_full,
        source: source(),
        content_length: content.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sendmail_options() {
        let args = parse(&strings(&[
            "-oi",
            "-f",
            "alice@x",
            "-N",
            "success,failure",
            "-odi",
            "FAX:+49301",
            "bob@y",
        ]))
        .unwrap();
        assert!(args.ignore_dots && args.delivery_report && !args.no_non_delivery_report);
        assert_eq!(args.sender.as_deref(), Some("alice@x"));
        assert_eq!(args.recipients.len(), 2);
        assert!(parse(&strings(&["-Q"]))
            .unwrap_err()
            .contains("unknown option"));
    }

    fn header_addresses(content: &str) -> Vec<(String, KindName)> {
        header_recipients(content.as_bytes())
            .into_iter()
            .map(|r| (r.address, r.kind))
            .collect()
    }

    #[test]
    fn header_address_lists_are_rfc5322_with_groups() {
        let message = "To: \"Doe, John\" <john@example.net>, =?utf-8?q?J=C3=BCrgen?= <j@example.net> (work),\r\n\
            \tfriends: ann@example.net, bob@example.net;\r\n\
            Cc: undisclosed-recipients:;\r\n\
            Bcc: secret@example.net\r\n\r\nbody\r\n";
        let to = |a: &str| (format!("SMTP:{a}"), KindName::To);
        assert_eq!(
            header_addresses(message),
            [
                to("john@example.net"),
                to("j@example.net"),
                to("ann@example.net"),
                to("bob@example.net"),
                ("SMTP:secret@example.net".into(), KindName::Bcc),
            ]
        );
        assert!(header_addresses("Cc: undisclosed-recipients:;\n\nhi\n").is_empty());
        // In a header, `FAX:` starts a group: never an address type.
        assert_eq!(
            header_addresses("To: FAX:123@x.example;\n\n")[0].0,
            "SMTP:123@x.example"
        );
    }

    #[test]
    fn resent_fields_replace_the_original_recipients() {
        let message = "To: old@example.net\nResent-To: new@example.net\nResent-Bcc: hidden@example.net\n\nbody\n";
        assert_eq!(
            header_addresses(message),
            [
                ("SMTP:new@example.net".into(), KindName::To),
                ("SMTP:hidden@example.net".into(), KindName::Bcc),
            ]
        );
    }

    #[test]
    fn a_bare_name_in_a_header_stays_a_local_name() {
        let addresses: Vec<String> = header_recipients(
            b"To: root, Ann <ann@example.org>\nCc: undisclosed-recipients:;\n\nhi\n",
        )
        .into_iter()
        .map(|r| r.address)
        .collect();
        assert_eq!(addresses, ["root", "SMTP:ann@example.org"]);
    }

    #[test]
    fn modes_and_names() {
        assert_eq!(parse(&strings(&["-bp"])).unwrap().mode, Mode::ListQueue);
        assert_eq!(
            parse(&strings(&["-qRexample.org"])).unwrap().mode,
            Mode::Flush
        );
        assert_eq!(
            parse(&strings(&["-bv", "root"])).unwrap().mode,
            Mode::Verify
        );
        let cron = parse(&strings(&[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "root",
        ]))
        .unwrap();
        assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(cron.recipients.len(), 1);
        assert!(parse(&strings(&["-bd"]))
            .unwrap_err()
            .contains("not supported"));
    }
}
