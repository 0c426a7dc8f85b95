//! The webhook: every delivery event POSTed as JSON to the `webhook` URL of `[http]`, one
//! request per event, in order, by a thread of its own. A failed POST (no connection, a
//! status other than 2xx) is tried again after a pause that doubles from 1 s to 1 min;
//! meanwhile the events wait in the event stream's memory, so delivery is never slowed.
//! If the receiver stays away longer than that memory lasts, the loss is logged with its
//! count, and the hook goes on from the oldest event kept.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;

use crate::config::http::Webhook;
use crate::observe::events::{self, Event};

/// How long one POST may take.
const POST_TIME: Duration = Duration::from_secs(10);

/// The longest pause between tries.
const MAX_PAUSE: Duration = Duration::from_secs(60);

/// Starts POSTing events to `hook`.
pub fn start(hook: Webhook) {
    let url = hook.url.clone();
    let started = std::thread::Builder::new()
        .name("http webhook".into())
        .spawn(move || run(&hook));
    match started {
        Ok(_) => log::info!("http: delivery events go to the webhook {url}"),
        Err(error) => log::error!("http: the webhook {url} cannot start: {error}"),
    }
}

fn run(hook: &Webhook) {
    let mut subscription = events::subscribe(None);
    let mut waiting: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let mut last_sent: Option<u64> = None;
    let mut pause = Duration::from_secs(1);
    loop {
        if waiting.is_empty() {
            match subscription.events.recv_timeout(MAX_PAUSE) {
                Ok(event) => waiting.push_back(event),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    subscription = resubscribe(hook, last_sent, &mut waiting);
                    continue;
                }
            }
        }
        let Some(event) = waiting.front() else {
            continue;
        };
        match post(hook, event) {
            Ok(()) => {
                last_sent = Some(event.id);
                waiting.pop_front();
                pause = Duration::from_secs(1);
            }
            Err(why) => {
                log::warn!(
                    "http: webhook {}: event {} not taken ({why}); trying again in {}s",
                    hook.url,
                    event.id,
                    pause.as_secs()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
        // Take what arrived meanwhile, so that the subscription never falls behind while
        // the receiver is slow; the ring is the backstop when it is away for long.
        while let Ok(event) = subscription.events.try_recv() {
            waiting.push_back(event);
            if waiting.len() > events::KEPT {
                waiting.pop_front();
            }
        }
    }
}

/// A new subscription after falling behind, with the events missed since `last_sent`.
fn resubscribe(
    hook: &Webhook,
    last_sent: Option<u64>,
    waiting: &mut std::collections::VecDeque<Event>,
) -> events::Subscription {
    let after = waiting.back().map(|e| e.id).or(last_sent);
    let subscription = events::subscribe(after);
    if subscription.gap {
        log::warn!(
            "http: webhook {}: some events were lost while it was not taking them",
            hook.url
        );
    }
    waiting.extend(subscription.missed.iter().cloned());
    subscription
}

/// One POST; `Err` says why it was not taken.
fn post(hook: &Webhook, event: &Event) -> Result<(), String> {
    let body = serde_json::to_vec(event).expect("events serialize");
    let address = hook
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", hook.authority))?
        .next()
        .ok_or_else(|| format!("{} has no address", hook.authority))?;
    let mut socket = TcpStream::connect_timeout(&address, POST_TIME)
        .map_err(|e| format!("cannot connect to {}: {e}", hook.authority))?;
    socket.set_read_timeout(Some(POST_TIME)).ok();
    socket.set_write_timeout(Some(POST_TIME)).ok();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Spooler-Event-Id: {}\r\nConnection: close\r\n\r\n",
        hook.path,
        hook.authority,
        body.len(),
        event.id
    );
    socket
        .write_all(head.as_bytes())
        .and_then(|()| socket.write_all(&body))
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut status = [0u8; 12];
    socket
        .read_exact(&mut status)
        .map_err(|e| format!("no answer: {e}"))?;
    match &status[..] {
        [b'H', b'T', b'T', b'P', b'/', _, _, _, b' ', b'2', _, _] => Ok(()),
        _ => Err(format!(
            "answered `{}`",
            String::from_utf8_lossy(&status).trim()
        )),
    }
}
