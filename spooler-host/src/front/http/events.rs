//! `GET /api/events`: the delivery events as Server-Sent Events. Each event has its id, its
//! kind as the event name, and its JSON as the data; a client that reconnects with
//! `Last-Event-ID` (browsers do it by themselves; `?last_event_id=` works too) gets the
//! events it missed first. If some were already dropped from memory, a `gap` event says
//! so before them. A comment every 15 s keeps proxies from closing an idle stream, and
//! shows a dead client, whose stream then ends.

use std::io::Write;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use super::reply::{status_line, Reply};
use super::request::Request;
use crate::observe::events::{self, Event};

/// How often an idle stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Streams events to the client until it goes away or falls too far behind.
pub fn stream(request: &Request, out: &mut impl Write) {
    let last = request
        .header("last-event-id")
        .or_else(|| request.param("last_event_id"));
    let after = match last.map(|text| text.trim().parse::<u64>()) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            let reply = Reply::error(400, "Last-Event-ID: expected an event id (a number)");
            reply.write_to(out).ok();
            return;
        }
    };
    let subscription = events::subscribe(after);
    let mut head = status_line(200);
    head.push_str(
        "Content-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 2000\n\n",
    );
    if subscription.gap {
        head.push_str("event: gap\ndata: {\"lost\":true}\n\n");
    }
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    for event in &subscription.missed {
        if send(out, event).is_err() {
            return;
        }
    }
    if out.flush().is_err() {
        return;
    }
    loop {
        let written = match subscription.events.recv_timeout(KEEP_ALIVE) {
            Ok(event) => send(out, &event).and_then(|()| out.flush()),
            Err(RecvTimeoutError::Timeout) => out
                .write_all(b": keep-alive\n\n")
                .and_then(|()| out.flush()),
            // Dropped for falling behind: the client reconnects and resumes.
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if written.is_err() {
            return;
        }
    }
}

fn send(out: &mut impl Write, event: &Event) -> std::io::Result<()> {
    let data = serde_json::to_string(event).expect("events serialize");
    let kind = serde_json::to_value(event.kind).expect("kinds serialize");
    write!(
        out,
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.id,
        kind.as_str().unwrap_or("event")
    )
}
