//! How the command line shows the host's answers: as tables for people, or as JSON lines
//! for scripts.

use std::collections::BTreeMap;

use provider_abi::Timestamp;

use crate::base::mail::utc_time;
use crate::protocol::{MessageView, Response, ShapeView, TroubleView};

/// JSON for scripts: one object per message for listings, one object otherwise. `status`
/// gives one per provider row, then one per destination backing off (with `until`) and one
/// per troubled destination (with `deferred` and `failed`), each with its `domain`.
pub fn as_json(response: &Response) -> String {
    let line = |value: &dyn erased::Json| format!("{}\n", value.json());
    match response {
        Response::Messages { messages, .. } => messages.iter().map(|m| line(m)).collect(),
        Response::Message(message) => line(message),
        Response::Shape(shape) => line(shape),
        Response::Folders { folders } => folders.iter().map(|f| line(f)).collect(),
        Response::Status {
            providers,
            backing_off,
            troubles,
            ..
        } => providers
            .iter()
            .map(|p| line(p))
            .chain(backing_off.iter().map(|b| line(b)))
            .chain(troubles.iter().map(|t| line(t)))
            .collect(),
        Response::Submitted { id } => format!("{}\n", serde_json::json!({ "id": id })),
        Response::Event(event) => line(event),
        Response::Verified { verdicts } => verdicts.iter().map(|v| line(v)).collect(),
        Response::Bans { bans } => line(&serde_json::json!({ "bans": bans })),
        Response::AliasesRead { aliases, problems } => format!(
            "{}\n",
            serde_json::json!({ "aliases": aliases, "problems": problems })
        ),
        Response::Done | Response::Watching | Response::Error { .. } => String::new(),
    }
}

mod erased {
    /// Serializes any of the views to one JSON line.
    pub trait Json {
        fn json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("views serialize")
        }
    }
}

/// The table a person reads: one block per message, one line per provider or folder.
pub fn as_table(response: &Response) -> String {
    match response {
        Response::Messages { messages, .. } if messages.is_empty() => "(no messages)\n".into(),
        Response::Messages { messages, .. } => messages.iter().map(message_lines).collect(),
        Response::Message(message) => {
            message_lines(message)
                + &message
                    .content
                    .clone()
                    .map(|c| format!("\n{c}"))
                    .unwrap_or_default()
        }
        Response::Folders { folders } => folders
            .iter()
            .map(|f| format!("{:>6}  {}\n", f.messages, f.name))
            .collect(),
        Response::Shape(shape) => shape_table(shape),
        Response::Bans { bans } if bans.is_empty() => "(no bans)\n".into(),
        Response::Bans { bans } => bans
            .iter()
            .map(|ban| {
                format!(
                    "{}  until {}  after {} failed logins  users tried: {}\n",
                    ban.address,
                    utc_time(Timestamp(ban.until)),
                    ban.failures,
                    ban.users.join(", ")
                )
            })
            .collect(),
        Response::Status {
            providers,
            outbox,
            quarantined,
            hosts,
            store_bytes,
            backing_off,
            troubles,
        } => providers
            .iter()
            .map(|p| {
                let queued = p
                    .queued
                    .map(|n| format!("  {n} queued"))
                    .unwrap_or_default();
                // An outage's or a fault's start; an online row's is only when it opened.
                let since = match p.since {
                    Some(since) if p.state != "online" => {
                        format!(" since {}", utc_time(Timestamp(since)))
                    }
                    _ => String::new(),
                };
                let text = if p.text.is_empty() {
                    String::new()
                } else {
                    format!("  {}", p.text)
                };
                let isolated = p.isolated.as_ref().map_or(String::new(), |processes| {
                    let pids: Vec<String> = processes.pids.iter().map(u32::to_string).collect();
                    let fault = processes
                        .last_fault
                        .as_ref()
                        .map(|fault| format!("; last fault: {fault}"))
                        .unwrap_or_default();
                    format!(
                        "\n{:<20} isolated: pid {}, {} restart(s){fault}",
                        "",
                        if pids.is_empty() { "-".into() } else { pids.join(",") },
                        processes.restarts
                    )
                });
                format!(
                    "{:<20} {:<12} {:<20} {}{since}{queued}{text}{isolated}\n",
                    p.name, p.kind, p.provider, p.state
                )
            })
            .chain(backing_off.iter().map(|b| {
                format!(
                    "{:<20} {:<12} {:<20} backing off until {}  {}\n",
                    b.domain,
                    "destination",
                    b.transport,
                    utc_time(Timestamp(b.until)),
                    b.reason
                )
            }))
            .chain(troubles.iter().map(|t| {
                format!(
                    "{:<20} {:<12} {:<20} since {}: {}\n",
                    t.domain,
                    "destination",
                    t.transport,
                    utc_time(Timestamp(t.since)),
                    trouble_counts(t)
                )
            }))
            .chain(std::iter::once(format!("Outbox: {outbox} message(s)\n")))
            .chain(store_bytes.map(|bytes| {
                format!("Store: {:.1} MB on disk\n", bytes as f64 / 1_000_000.0)
            }))
            .chain((*quarantined > 0).then(|| {
                format!("Quarantined: {quarantined} message(s) suspected of crashing a provider (`queue` shows them, `release ID` lets one go)\n")
            }))
            .chain(hosts.iter().map(|h| {
                format!(
                    "Host {:<15} {:<6} seen {}s ago  {} lease(s)\n",
                    h.name,
                    if h.alive { "alive" } else { "gone" },
                    h.seen_seconds_ago,
                    h.leases
                )
            }))
            .collect(),
        Response::Submitted { id } => format!("{id}\n"),
        Response::Verified { verdicts } => verdicts
            .iter()
            .map(|v| {
                let verdict = if v.deliverable {
                    "deliverable"
                } else {
                    "undeliverable"
                };
                format!("{}... {verdict}: {}\n", v.given, v.detail)
            })
            .collect(),
        Response::AliasesRead { aliases, problems } => problems
            .iter()
            .map(|problem| format!("{problem}\n"))
            .chain(std::iter::once(format!("{aliases} alias(es)\n")))
            .collect(),
        Response::Done => "done\n".into(),
        Response::Watching => String::new(),
        Response::Event(event) => format!(
            "{} in {}: {} from {}: {}\n",
            event.kind.as_str(), event.folder, event.id, event.sender, event.subject
        ),
        Response::Error { message, .. } => format!("error: {message}\n"),
    }
}

/// A message's line (id, size, age, sender, subject) and one line per recipient.
fn message_lines(message: &MessageView) -> String {
    let age = Timestamp::now()
        .since(Timestamp(message.submitted_at))
        .as_secs();
    let mut out = format!(
        "{}  {:>8}  {:>6}s  {}{}  {}\n",
        message.id,
        message.size,
        age,
        message.sender,
        match (&message.held_because, message.held) {
            (Some(why), _) => format!(" (held: {why})"),
            (None, true) => " (held)".into(),
            (None, false) => String::new(),
        },
        message.subject
    );
    for recipient in &message.recipients {
        out += &format!(
            "    {:<40} {:<4} {:<9} {:<3} {} {}\n",
            recipient.address,
            format!("{:?}", recipient.kind).to_lowercase(),
            recipient.state,
            recipient.attempts,
            recipient.transport.as_deref().unwrap_or("-"),
            match &recipient.class {
                Some(class) => format!("[{class}] {}", recipient.last_answer),
                None => recipient.last_answer.clone(),
            }
        );
    }
    out
}

/// The queue's shape as Postfix's `qshape` prints it: a header of bucket bounds in minutes
/// (`T` for the total, the last `1280+` for older), the `TOTAL` row, then one row per domain;
/// names right-aligned, each column as wide as its widest entry.
fn shape_table(shape: &ShapeView) -> String {
    let header: Vec<String> = std::iter::once("T".to_owned())
        .chain(shape.bucket_minutes.iter().map(u64::to_string))
        .chain(shape.bucket_minutes.last().map(|last| format!("{last}+")))
        .collect();
    let rows: Vec<(&str, Vec<String>, String)> = std::iter::once(&shape.total)
        .chain(&shape.domains)
        .map(|row| {
            let counts = std::iter::once(row.total).chain(row.buckets.iter().copied());
            let note = row
                .backing_off_until
                .map(|until| format!("  backing off until {}", utc_time(Timestamp(until))))
                .unwrap_or_default();
            (
                row.domain.as_str(),
                counts.map(|n| n.to_string()).collect(),
                note,
            )
        })
        .collect();
    let name_width = rows.iter().map(|(name, ..)| name.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            let counts = rows.iter().filter_map(|(_, counts, _)| counts.get(column));
            counts
                .chain([&header[column]])
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(("", header, String::new()))
        .chain(rows)
        .map(|(name, cells, note)| {
            let cells: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:>width$}"))
                .collect();
            format!("{name:>name_width$} {}{note}\n", cells.join(" "))
        })
        .collect()
}

/// `3 deferred (tls-failure 2, connection-failure 1), 1 failed (bad-mailbox 1)`.
fn trouble_counts(trouble: &TroubleView) -> String {
    let part = |what: &str, counts: &BTreeMap<String, u64>| {
        let total: u64 = counts.values().sum();
        (total > 0).then(|| {
            let classes: Vec<String> = counts
                .iter()
                .map(|(class, count)| format!("{class} {count}"))
                .collect();
            format!("{total} {what} ({})", classes.join(", "))
        })
    };
    [
        part("deferred", &trouble.deferred),
        part("failed", &trouble.failed),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use provider_abi::store::ShapeCell;

    use super::*;

    #[test]
    fn the_shape_prints_as_qshape_does() {
        let cells = [
            ShapeCell::new("example.org", 0, 2),
            ShapeCell::new("example.net", 0, 1),
            ShapeCell::new("example.net", 9, 2),
            ShapeCell::new("FAX", 3, 1),
        ];
        let shape = ShapeView::new(&ShapeView::QSHAPE_MINUTES, &cells, None);
        assert_eq!(
            shape_table(&shape),
            "            T 5 10 20 40 80 160 320 640 1280 1280+\n\
             \x20     TOTAL 6 3  0  0  1  0   0   0   0    0     2\n\
             example.net 3 1  0  0  0  0   0   0   0    0     2\n\
             example.org 2 2  0  0  0  0   0   0   0    0     0\n\
             \x20       FAX 1 0  0  0  1  0   0   0   0    0     0\n"
        );
    }
}
