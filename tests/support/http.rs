//! Plain HTTP/1.1 for the tests of the host's HTTP front end and of Prometheus: one request
//! per connection (as the host serves them), an event stream read line by line, and a tiny server that
//! stands in for a webhook's receiver, answering with the statuses a test scripts.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// An answer: its status, head and body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The status line and header fields.
    pub head: String,
    /// The body, as text.
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON; a failure naming the answer if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, self.body))
    }
}

/// Sends `request` (a whole request, as bytes) to the loopback `port` and reads the answer.
pub fn http_raw(port: u16, request: &[u8]) -> HttpAnswer {
    exchange(port, request).expect("the host answers over HTTP")
}

/// `GET path` on a loopback port, with an `Accept` header if given: the status and the body,
/// or `None` if nothing answers there (for waiting until a server is up).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    );
    exchange(port, request.as_bytes()).map(|answer| (answer.status, answer.body))
}

/// One request and its whole answer (the server closes the connection), or `None` if
/// nothing answers an HTTP answer.
fn exchange(port: u16, request: &[u8]) -> Option<HttpAnswer> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    // A server may answer and close before reading everything (413): a failed write is
    // not the test's failure, the answer is what counts.
    socket.write_all(request).ok();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).ok();
    parse(&answer)
}

/// `METHOD path` with the bearer `token`, if any, and no body.
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> HttpAnswer {
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Length: 0\r\n\r\n"
    );
    http_raw(port, request.as_bytes())
}

fn parse(answer: &[u8]) -> Option<HttpAnswer> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &answer[split + 4..];
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunked(body)
    } else {
        body.to_vec()
    };
    Some(HttpAnswer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A chunked body's content.
fn unchunked(mut body: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .unwrap_or(0);
        let rest = &body[end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        content.extend_from_slice(&rest[..size]);
        body = rest[size..].strip_prefix(b"\r\n").unwrap_or(&rest[size..]);
    }
    content
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// Its id.
    pub id: Option<u64>,
    /// Its name (`event:`).
    pub name: String,
    /// Its data, as JSON.
    pub data: Value,
}

/// An open `GET /api/events` stream.
pub struct EventStream {
    reader: BufReader<TcpStream>,
}

impl EventStream {
    /// Opens the stream with the token, resuming after `last_id` if given.
    pub fn open(port: u16, token: &str, last_id: Option<u64>) -> EventStream {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the host");
        let resume = last_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            socket,
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{resume}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(socket);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        EventStream { reader }
    }

    /// The next event, waiting at most `limit`; `None` if none came.
    pub fn next(&mut self, limit: Duration) -> Option<ServerEvent> {
        self.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if !data.is_empty() {
                    return Some(ServerEvent {
                        id,
                        name,
                        data: serde_json::from_str(&data).expect("event data is JSON"),
                    });
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse().ok();
            } else if let Some(value) = line.strip_prefix("event: ") {
                name = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
    }

    /// Events until one of `name` about `message`, waiting at most `limit` in all.
    pub fn until(&mut self, name: &str, message: &str, limit: Duration) -> Vec<ServerEvent> {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let event = self
                .next(left.max(Duration::from_millis(1)))
                .unwrap_or_else(|| {
                    panic!("no `{name}` event for {message} within {limit:?}; saw {seen:#?}")
                });
            let done = event.name == name && event.data["message"] == message;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

/// A webhook's receiver on a loopback port: answers each POST with the next scripted
/// status (200 once the script is used up) and keeps the bodies of those it answered 2xx.
pub struct Receiver {
    /// Its port.
    pub port: u16,
    taken: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts it; `statuses` are the answers to the first POSTs.
    pub fn start(statuses: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().unwrap().port();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        let kept = Arc::clone(&taken);
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                if let Some(body) = answer_post(socket, status) {
                    if (200..300).contains(&status) {
                        kept.lock().unwrap().push(body);
                    }
                }
            }
        });
        Receiver { port, taken }
    }

    /// The bodies taken so far.
    pub fn taken(&self) -> Vec<Value> {
        self.taken.lock().unwrap().clone()
    }
}

fn answer_post(socket: TcpStream, status: u16) -> Option<Value> {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(socket);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut socket = reader.into_inner();
    write!(
        socket,
        "HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    serde_json::from_slice(&body).ok()
}
