//! `spooler-host submit` (and the binary invoked as `sendmail`): sendmail's command line,
//! so cron, git send-email and scripts can submit mail.
//!
//! Understood: recipients as arguments (`TYPE:address` or bare SMTP addresses), `-f SENDER`,
//! `-t` (recipients from To, Cc and Bcc, or from Resent-To, Resent-Cc and Resent-Bcc when the
//! message has any, as sendmail does; read as RFC 5322 address lists, groups included), `-i`/`-oi` (a lone `.` line does not end the
//! message), `-N never|success,failure,delay` (which reports), and these extensions:
//! `--cc ADDR`, `--bcc ADDR`, `--priority low|normal|high`, `--defer DURATION`,
//! `--expire-after DURATION`, `--delete-after`. Other sendmail options (`-oX`, `-F`, `-B`,
//! `-bm`, `-R`, `-V`, `-X`) are accepted and ignored, as Postfix's sendmail does.

use provider_abi::headers::{header, header_block_len, mailboxes};
use provider_abi::Timestamp;

use crate::clients::protocol::{KindName, PriorityName, Submission, SubmittedRecipient};
use crate::config::parse_duration;

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
    /// The spooler could not take the message now; try again.
    pub const TEMPORARY: u8 = 75;
}

/// A parsed `submit` command line.
#[derive(Debug, Default, PartialEq)]
pub struct SubmitArgs {
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
            flag if flag.starts_with("-F")
                || flag.starts_with("-B")
                || flag.starts_with("-R")
                || flag.starts_with("-V")
                || flag.starts_with("-X") =>
            {
                if flag.len() == 2 {
                    args.next();
                }
            }
            flag if flag.starts_with("-o") || flag == "-bm" || flag == "-U" || flag == "-v" => {}
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option `{flag}`"))
            }
            address => parsed.recipients.push(recipient(address, KindName::To)),
        }
    }
    Ok(parsed)
}

fn recipient(address: &str, kind: KindName) -> SubmittedRecipient {
    SubmittedRecipient {
        address: address.to_owned(),
        kind,
    }
}

/// The message as read from standard input: without `-i`, a line holding a lone `.` ends it.
pub fn message_from_input(input: Vec<u8>, ignore_dots: bool) -> Vec<u8> {
    if ignore_dots {
        return input;
    }
    let mut end = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        if line == b".\n" || line == b".\r\n" || line == b"." {
            return input[..end].to_vec();
        }
        end += line.len();
    }
    input
}

/// The message with a Message-ID header field added at the top if it has none: the
/// Message-ID is what makes a retried submission recognisable (with the sender and the
/// recipients). The field ends its line as the message's first line does; a message that
/// starts with no header field at all gets the field and the empty line that ends headers.
pub fn with_message_id(content: Vec<u8>, host: &str) -> Vec<u8> {
    if header(&content, "Message-ID").is_some() {
        return content;
    }
    let first_line = content
        .split_inclusive(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let newline: &[u8] = if first_line.ends_with(b"\r\n") || !first_line.ends_with(b"\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let starts_with_headers = header_block_len(first_line) > 0;
    let mut out = Vec::with_capacity(content.len() + 100);
    out.extend_from_slice(format!("Message-ID: <{}@{host}>", unique_part()).as_bytes());
    out.extend_from_slice(newline);
    if !starts_with_headers {
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(&content);
    out
}

/// A part unique to this call: the time in nanoseconds, the process id and a counter.
fn unique_part() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{nanos:x}.{:x}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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
                    .map(move |mailbox| recipient(&format!("SMTP:{}", mailbox.address), kind))
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
    fn a_message_id_is_added_only_where_there_is_none() {
        let with = b"Message-ID: <a@b>\nSubject: x\n\nbody\n".to_vec();
        assert_eq!(with_message_id(with.clone(), "h"), with);
        let lf = String::from_utf8(with_message_id(b"Subject: x\n\nbody\n".to_vec(), "h")).unwrap();
        assert!(
            lf.starts_with("Message-ID: <") && lf.ends_with("@h>\nSubject: x\n\nbody\n"),
            "{lf}"
        );
        let crlf = String::from_utf8(with_message_id(b"Subject: x\r\n\r\nbody\r\n".to_vec(), "h"))
            .unwrap();
        assert!(
            crlf.ends_with("@h>\r\nSubject: x\r\n\r\nbody\r\n"),
            "{crlf}"
        );
        let body_only = String::from_utf8(with_message_id(b"just text\n".to_vec(), "h")).unwrap();
        assert!(body_only.ends_with("@h>\n\njust text\n"), "{body_only}");
        assert_ne!(unique_part(), unique_part());
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_dots_are_data() {
        let input = b"Subject: x\r\n\r\nbody\r\n.\r\nafter\r\n".to_vec();
        assert_eq!(
            message_from_input(input.clone(), false),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(message_from_input(input.clone(), true), input);
    }
}
