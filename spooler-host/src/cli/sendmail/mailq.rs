//! `mailq` and `sendmail -bp`: the queue as Postfix's `mailq` shows it, so that an operator
//! used to Postfix reads it at a glance: the queue id (with `!` when held), the size, the
//! arrival time (UTC), the sender, why the quarantine holds it (if it does), and each
//! recipient still waiting, after the last answer about it in parentheses.
//!
//! ```text
//! -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
//! 0000000000000007!      339 Sun Nov 29 09:31:08  LOCAL:root
//! (deferred by smtp: connect to mx.example.org: Connection refused)
//!                                          ann@example.org
//!
//! -- 1 Kbytes in 1 Request.
//! ```

use mail_parser::DateTime;
use provider_abi::Timestamp;

use crate::protocol::MessageView;

/// The heading line.
pub const HEADING: &str = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";

/// What `mailq` prints for an empty queue.
pub const EMPTY: &str = "Mail queue is empty\n";

/// How far recipients are indented: under the sender column.
const RECIPIENT_COLUMN: usize = 41;

/// The lines of one queued message; only recipients still waiting are shown.
pub fn entry(message: &MessageView) -> String {
    let mark = if message.held { '!' } else { ' ' };
    let mut out = format!(
        "{}{mark} {:>8} {}  {}\n",
        message.id,
        message.size,
        asctime(Timestamp(message.submitted_at)),
        shown_address(&message.sender)
    );
    if let Some(why) = &message.held_because {
        out += &format!("(held: {why})\n");
    }
    let mut last_reason = "";
    for recipient in message.recipients.iter().filter(|r| r.state == "pending") {
        if !recipient.last_answer.is_empty() && recipient.last_answer != last_reason {
            out += &format!("({})\n", recipient.last_answer);
            last_reason = &recipient.last_answer;
        }
        out += &format!(
            "{:RECIPIENT_COLUMN$}{}\n",
            "",
            shown_address(&recipient.address)
        );
    }
    out.push('\n');
    out
}

/// The closing line: the queue's size in kilobytes and its number of messages.
pub fn total(bytes: u64, messages: usize) -> String {
    format!(
        "-- {} Kbytes in {messages} Request{}.\n",
        bytes.div_ceil(1024),
        if messages == 1 { "" } else { "s" }
    )
}

/// `Sun Nov 29 09:31:08`, as `mailq` shows arrival times (UTC).
fn asctime(time: Timestamp) -> String {
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let time = DateTime::from_timestamp(time.0.div_euclid(1000));
    format!(
        "{} {} {:2} {:02}:{:02}:{:02}",
        WEEKDAYS[usize::from(time.day_of_week())],
        MONTHS[usize::from(time.month.clamp(1, 12) - 1)],
        time.day,
        time.hour,
        time.minute,
        time.second
    )
}

/// SMTP addresses as mail programs write them; other types keep their `TYPE:`.
fn shown_address(address: &str) -> &str {
    match address.split_once(':') {
        Some((kind, rest)) if kind.eq_ignore_ascii_case("SMTP") => rest,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{KindName, RecipientView};

    fn recipient(address: &str, state: &str, answer: &str) -> RecipientView {
        RecipientView {
            address: address.into(),
            kind: KindName::To,
            state: state.into(),
            transport: None,
            attempts: 1,
            next_attempt: None,
            last_answer: answer.into(),
            status_code: String::new(),
            class: None,
        }
    }

    #[test]
    fn an_entry_reads_like_postfix() {
        let message = MessageView {
            id: "0000000000000007".into(),
            folder: "Outbox".into(),
            sender: "LOCAL:root".into(),
            subject: "Cron <root@host> backup".into(),
            size: 339,
            submitted_at: 1_795_457_702_000,
            held: true,
            held_because: None,
            is_report: false,
            recipients: vec![
                recipient(
                    "SMTP:ann@example.org",
                    "pending",
                    "deferred by smtp: refused",
                ),
                recipient(
                    "SMTP:bob@example.org",
                    "pending",
                    "deferred by smtp: refused",
                ),
                recipient("SMTP:carol@example.org", "delivered", "250 ok"),
            ],
            content: None,
        };
        assert_eq!(
            entry(&message),
            "0000000000000007!      339 Mon Nov 23 18:15:02  LOCAL:root\n\
             (deferred by smtp: refused)\n\
             \x20                                        ann@example.org\n\
             \x20                                        bob@example.org\n\n"
        );
        let quarantined = MessageView {
            held_because: Some("suspected of crashing provider relay (3 times)".into()),
            ..message
        };
        assert!(entry(&quarantined).contains(
            "LOCAL:root\n(held: suspected of crashing provider relay (3 times))\n(deferred by smtp"
        ));
        assert_eq!(total(339, 1), "-- 1 Kbytes in 1 Request.\n");
        assert_eq!(total(4096, 3), "-- 4 Kbytes in 3 Requests.\n");
    }
}
