//! The admin API: JSON over HTTP, mirroring the command line. Each call becomes a control
//! socket request answered by the running spooler; its answer becomes JSON with the
//! `result` tag dropped, and an error becomes `{"error", "status"}` with a status that fits
//! (404 no such message, 409 not now for that message, 400 a bad request, 503 the store or
//! the host unavailable). `docs/http-api.yaml` describes every call (OpenAPI 3).
//!
//! The queue's filter (transport, state, recipient domain, age, held) is applied here, over
//! the pages the store lists: a filtered page may read several store pages, and a bulk
//! operation reads the whole Outbox once.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::reply::Reply;
use super::request::Request as HttpRequest;
use super::Parts;
use crate::base::units::parse_duration;
use crate::protocol::{Failure, MessageView, Request, Response};

/// The most messages one page of `GET /api/queue` holds.
const PAGE: usize = 1000;

/// Answers a request under `/api/` (but the event stream and samples).
pub fn answer(parts: &Parts, request: &HttpRequest) -> Reply {
    let path: Vec<&str> = request
        .path
        .trim_end_matches('/')
        .split('/')
        .skip(2)
        .collect();
    let method = request.method.as_str();
    let result = match (method, path.as_slice()) {
        ("GET", ["status"]) => Ok(reply_of((parts.answer)(Request::Status))),
        ("GET", ["queue"]) => queue_page(parts, request),
        ("GET", ["queue", "shape"]) => shape(parts, request),
        ("POST", ["queue", action]) => bulk(parts, request, action),
        ("POST", ["flush"]) => Ok(reply_of((parts.answer)(Request::Flush {
            transport: request.param("transport").map(str::to_owned),
        }))),
        ("GET", ["messages", id]) => message(parts, id, |id| Request::Show {
            id,
            content: request.param("content").is_some_and(is_true),
        }),
        ("DELETE", ["messages", id]) => message(parts, id, |id| Request::Delete { id }),
        ("POST", ["messages", id, action]) => match *action {
            "hold" => message(parts, id, |id| Request::Hold { id }),
            "release" => message(parts, id, |id| Request::Release { id }),
            "flush" => message(parts, id, |id| Request::FlushMessage { id }),
            _ => Err(Reply::error(
                404,
                format!("no action `{action}`: hold, release or flush"),
            )),
        },
        (_, ["status" | "queue" | "flush" | "messages", ..]) => Err(Reply::error(
            405,
            format!(
                "{method} {} is not an API call; see docs/http-api.yaml",
                request.path
            ),
        )),
        _ => Err(Reply::error(
            404,
            format!(
                "there is no API call at {}; see docs/http-api.yaml",
                request.path
            ),
        )),
    };
    result.unwrap_or_else(|reply| reply)
}

/// The reply to a control socket answer.
fn reply_of(response: Response) -> Reply {
    match response {
        Response::Error { message, failure } => Reply::error(status_of(failure), message),
        Response::Done => Reply::json(200, &serde_json::json!({ "done": true })),
        other => {
            let mut value = serde_json::to_value(other).expect("answers serialize");
            if let Value::Object(fields) = &mut value {
                fields.remove("result");
            }
            Reply::json(200, &value)
        }
    }
}

fn status_of(failure: Failure) -> u16 {
    match failure {
        Failure::NotFound => 404,
        Failure::Refused => 409,
        Failure::BadMessage | Failure::BadAddress => 400,
        Failure::Temporary => 503,
    }
}

/// A call about one message: the id checked, the message looked up (404 if there is none),
/// then the request made.
fn message(
    parts: &Parts,
    id: &str,
    request: impl FnOnce(String) -> Request,
) -> Result<Reply, Reply> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Reply::error(
            400,
            format!("`{id}` is not a message id (16 hex digits)"),
        ));
    }
    let request = request(id.to_owned());
    if !matches!(request, Request::Show { .. }) {
        let shown = (parts.answer)(Request::Show {
            id: id.to_owned(),
            content: false,
        });
        if let Response::Error { .. } = shown {
            return Err(reply_of(shown));
        }
    }
    Ok(reply_of((parts.answer)(request)))
}

/// What a message waiting in the Outbox is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No recipient tried yet.
    New,
    /// Tried, and waiting for the next attempt.
    Deferred,
    /// Held by an operator or the quarantine.
    Held,
}

impl State {
    fn of(view: &MessageView) -> State {
        if view.held {
            State::Held
        } else if view
            .recipients
            .iter()
            .any(|r| r.state == "pending" && r.attempts > 0)
        {
            State::Deferred
        } else {
            State::New
        }
    }
}

/// Which queued messages a call is about.
#[derive(Debug, Default)]
struct Filter {
    transport: Option<String>,
    state: Option<State>,
    domain: Option<String>,
    older_than: Option<Duration>,
    newer_than: Option<Duration>,
    held: Option<bool>,
}

impl Filter {
    /// The filter in the query; an unknown value is an error naming it.
    fn of(request: &HttpRequest) -> Result<Filter, Reply> {
        let bad = |name: &str, why: String| Reply::error(400, format!("{name}: {why}"));
        let duration = |name: &str| {
            request
                .param(name)
                .map(|text| parse_duration(text).map_err(|why| bad(name, why)))
                .transpose()
        };
        Ok(Filter {
            transport: request.param("transport").map(str::to_owned),
            state: request
                .param("state")
                .map(|state| match state {
                    "new" => Ok(State::New),
                    "deferred" => Ok(State::Deferred),
                    "held" => Ok(State::Held),
                    other => Err(bad(
                        "state",
                        format!("`{other}` is not a state: new, deferred or held"),
                    )),
                })
                .transpose()?,
            domain: request.param("domain").map(str::to_ascii_lowercase),
            older_than: duration("older_than")?,
            newer_than: duration("newer_than")?,
            held: request
                .param("held")
                .map(|held| match held {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(bad("held", format!("`{other}` is not true or false"))),
                })
                .transpose()?,
        })
    }

    fn matches(&self, view: &MessageView, now: i64) -> bool {
        let age = Duration::from_millis(now.saturating_sub(view.submitted_at).max(0) as u64);
        let pending = || view.recipients.iter().filter(|r| r.state == "pending");
        self.held.is_none_or(|held| view.held == held)
            && self.state.is_none_or(|state| State::of(view) == state)
            && self.older_than.is_none_or(|limit| age >= limit)
            && self.newer_than.is_none_or(|limit| age < limit)
            && self
                .transport
                .as_ref()
                .is_none_or(|transport| pending().any(|r| r.transport.as_ref() == Some(transport)))
            && self.domain.as_ref().is_none_or(|domain| {
                pending().any(|r| {
                    r.address
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                })
            })
    }
}

/// Walks the Outbox from `after`, a store page at a time, calling `each` with every message
/// the filter takes until it says stop; the cursor of the last message looked at, if the
/// walk stopped before the end.
fn walk(
    parts: &Parts,
    filter: &Filter,
    mut after: Option<String>,
    mut each: impl FnMut(MessageView) -> bool,
) -> Result<Option<String>, Reply> {
    let now = provider_abi::Timestamp::now().0;
    loop {
        let page = (parts.answer)(Request::Queue {
            after: after.clone(),
            limit: Some(PAGE as u32),
        });
        let (messages, next) = match page {
            Response::Messages { messages, next } => (messages, next),
            other => return Err(reply_of(other)),
        };
        for view in messages {
            after = Some(view.id.clone());
            if filter.matches(&view, now) && !each(view) {
                return Ok(after);
            }
        }
        if next.is_none() {
            return Ok(None);
        }
    }
}

/// `GET /api/queue`: one page of the filtered Outbox, oldest id first, with the cursor of
/// the next (`after`).
fn queue_page(parts: &Parts, request: &HttpRequest) -> Result<Reply, Reply> {
    let filter = Filter::of(request)?;
    let limit = match request.param("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=PAGE).contains(limit))
            .ok_or_else(|| Reply::error(400, format!("limit: expected 1 to {PAGE}")))?,
        None => 100,
    };
    let mut messages = Vec::new();
    let next = walk(
        parts,
        &filter,
        request.param("after").map(str::to_owned),
        |view| {
            messages.push(view);
            messages.len() < limit
        },
    )?;
    #[derive(Serialize)]
    struct Page {
        messages: Vec<MessageView>,
        next: Option<String>,
    }
    Ok(Reply::json(200, &Page { messages, next }))
}

/// `GET /api/queue/shape[?top=N]`: `queue --shape`, Postfix's qshape.
fn shape(parts: &Parts, request: &HttpRequest) -> Result<Reply, Reply> {
    let top = request
        .param("top")
        .map(|text| {
            text.parse::<usize>()
                .map_err(|_| Reply::error(400, format!("top: `{text}` is not a number")))
        })
        .transpose()?;
    Ok(reply_of((parts.answer)(Request::Shape { top })))
}

/// What a bulk operation did.
#[derive(Serialize)]
struct Bulk {
    /// Messages the filter took.
    matched: usize,
    /// Whether nothing was done (`dry_run=true`).
    dry_run: bool,
    /// Messages the operation was done to.
    done: usize,
    /// Those it could not be done to, with why (being delivered right now, gone since).
    failed: Vec<BulkFailure>,
}

#[derive(Serialize)]
struct BulkFailure {
    id: String,
    error: String,
}

/// `POST /api/queue/{hold,release,flush,delete}` over the filter in the query; with
/// `dry_run=true`, only the count.
fn bulk(parts: &Parts, request: &HttpRequest, action: &str) -> Result<Reply, Reply> {
    let make: fn(String) -> Request = match action {
        "hold" => |id| Request::Hold { id },
        "release" => |id| Request::Release { id },
        "flush" => |id| Request::FlushMessage { id },
        "delete" => |id| Request::Delete { id },
        "shape" => {
            return Err(Reply::error(405, "the queue's shape is read with GET"));
        }
        _ => {
            return Err(Reply::error(
                404,
                format!("no bulk action `{action}`: hold, release, flush or delete"),
            ))
        }
    };
    let filter = Filter::of(request)?;
    let dry_run = request.param("dry_run").is_some_and(is_true);
    let mut ids = Vec::new();
    walk(parts, &filter, None, |view| {
        ids.push(view.id);
        true
    })?;
    let mut result = Bulk {
        matched: ids.len(),
        dry_run,
        done: 0,
        failed: Vec::new(),
    };
    if !dry_run {
        for id in ids {
            match (parts.answer)(make(id.clone())) {
                Response::Error { message, .. } => {
                    result.failed.push(BulkFailure { id, error: message })
                }
                _ => result.done += 1,
            }
        }
    }
    Ok(Reply::json(200, &result))
}

fn is_true(value: &str) -> bool {
    matches!(value, "true" | "1" | "yes")
}
