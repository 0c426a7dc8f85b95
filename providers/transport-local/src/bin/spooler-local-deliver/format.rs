//! How a message looks in a mailbox: Unix line ends, the envelope as `Return-Path` and
//! `Delivered-To` headers in front (as Postfix's `local` writes them), and for mbox the
//! `From ` line that separates messages, with body lines that could be taken for one quoted.

use std::time::Duration;

/// The envelope sender as given, refused if it could break a header or the `From ` line
/// (a control character); empty (a report's null sender) becomes `MAILER-DAEMON`.
pub fn checked_sender(sender: &str) -> Result<String, String> {
    if sender.chars().any(char::is_control) {
        return Err("the sender holds a control character".into());
    }
    Ok(if sender.is_empty() {
        "MAILER-DAEMON".into()
    } else {
        sender.to_owned()
    })
}

/// The headers the delivery adds in front of the message.
pub fn envelope_headers(sender: &str, user: &str) -> String {
    format!("Return-Path: <{sender}>\nDelivered-To: {user}\n")
}

/// The mbox separator line: `From sender Sun Dec  6 05:17:09 2026`, in UTC.
pub fn from_line(sender: &str, now: Duration) -> String {
    // A space would end the address early for readers that split the line.
    format!(
        "From {} {}\n",
        sender.replace(' ', "_"),
        asctime(now.as_secs())
    )
}

/// `message` with CRLF line ends as LF, ending in a line end; with `quote_from`, every line
/// that starts with `From ` after any number of `>` gets one more `>` (mboxrd), so that no
/// reader takes it for the start of the next message.
pub fn unix_lines(message: &[u8], quote_from: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 1);
    for line in message.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if quote_from
            && body
                .iter()
                .position(|&b| b != b'>')
                .is_some_and(|start| body[start..].starts_with(b"From "))
        {
            out.push(b'>');
        }
        out.extend_from_slice(body);
        out.push(b'\n');
    }
    out
}

/// `secs` since the epoch as C's `asctime` writes it, in UTC.
fn asctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let time = secs % 86_400;
    format!(
        "{} {} {day:>2} {:02}:{:02}:{:02} {year}",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_line_has_asctimes_date() {
        assert_eq!(
            from_line("ann@example.com", Duration::from_secs(1_796_533_029)),
            "From ann@example.com Sun Dec  6 04:57:09 2026\n"
        );
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn lines_become_unix_lines_and_from_lines_are_quoted() {
        let message = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nFromage\r\n From\r\nend";
        assert_eq!(
            String::from_utf8(unix_lines(message, true)).unwrap(),
            "Subject: x\n\n>From here\n>>From there\nFromage\n From\nend\n"
        );
        assert_eq!(
            String::from_utf8(unix_lines(message, false)).unwrap(),
            "Subject: x\n\nFrom here\n>From there\nFromage\n From\nend\n"
        );
    }

    #[test]
    fn a_sender_cannot_add_a_header() {
        assert!(checked_sender("a@b\nX-Evil: 1").is_err());
        assert_eq!(checked_sender("").unwrap(), "MAILER-DAEMON");
    }
}
