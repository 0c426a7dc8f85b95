//! Reading one HTTP/1.1 request, bounded: the head (request line and header fields) to
//! [`MAX_HEAD`] bytes, the body to [`MAX_BODY`] bytes, the whole to [`REQUEST_TIME`]. A
//! client that sends more, or trickles, is answered with an error and closed; it never
//! makes the host hold more than these or a thread for longer.

use std::io::{self, Read};
use std::time::{Duration, Instant};

/// The longest request line and header fields together.
pub const MAX_HEAD: usize = 16 * 1024;

/// The longest body: the API takes small JSON documents, never mail.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client has to send a whole request.
pub const REQUEST_TIME: Duration = Duration::from_secs(10);

/// A request, read and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header fields, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header field of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter of that name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection before a request began.
    Closed,
    /// The request is malformed, too large or too slow: the status and why, to answer with.
    Refused(u16, String),
    /// The connection failed.
    Io(io::Error),
}

/// Reads one request from `stream`, whose read timeout the caller has set.
pub fn read(stream: &mut impl Read) -> Result<Request, ReadError> {
    let started = Instant::now();
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_length, mut request) = loop {
        let read = read_some(stream, &mut chunk, started)?;
        if read == 0 {
            return Err(if buffer.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Refused(400, "the request ended before its header did".into())
            });
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(parsed) = parse_head(&buffer)? {
            break parsed;
        }
        if buffer.len() > MAX_HEAD {
            return Err(ReadError::Refused(
                431,
                format!("the request line and header fields are longer than {MAX_HEAD} bytes"),
            ));
        }
    };
    if request.header("transfer-encoding").is_some() {
        return Err(ReadError::Refused(
            411,
            "send the body with a Content-Length, not chunked".into(),
        ));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(text) => text.trim().parse::<usize>().map_err(|_| {
            ReadError::Refused(400, format!("Content-Length `{text}` is not a number"))
        })?,
    };
    if length > MAX_BODY {
        return Err(ReadError::Refused(
            413,
            format!("the body is {length} bytes; this API takes at most {MAX_BODY}"),
        ));
    }
    let mut body = buffer.split_off(head_length);
    while body.len() < length {
        let read = read_some(stream, &mut chunk, started)?;
        if read == 0 {
            return Err(ReadError::Refused(400, "the body ended early".into()));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    body.truncate(length);
    request.body = body;
    Ok(request)
}

/// One read, refused once the request has taken longer than [`REQUEST_TIME`] in all: a
/// client sending a byte at a time is cut off, not only a silent one.
fn read_some(
    stream: &mut impl Read,
    chunk: &mut [u8],
    started: Instant,
) -> Result<usize, ReadError> {
    let too_slow = || {
        ReadError::Refused(
            408,
            format!("the request took longer than {}s", REQUEST_TIME.as_secs()),
        )
    };
    if started.elapsed() > REQUEST_TIME {
        return Err(too_slow());
    }
    match stream.read(chunk) {
        Ok(read) => Ok(read),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(too_slow())
        }
        Err(error) => Err(ReadError::Io(error)),
    }
}

/// The head's length and the request it describes, once the head is complete.
fn parse_head(buffer: &[u8]) -> Result<Option<(usize, Request)>, ReadError> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Refused(431, "more than 64 header fields".into()))
        }
        Err(error) => {
            return Err(ReadError::Refused(
                400,
                format!("not an HTTP request: {error}"),
            ))
        }
    };
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = parsed
        .headers
        .iter()
        .map(|field| {
            (
                field.name.to_ascii_lowercase(),
                String::from_utf8_lossy(field.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        length,
        Request {
            method: parsed.method.unwrap_or("GET").to_owned(),
            path: percent_decode(path),
            query: query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(name), percent_decode(value))
                })
                .collect(),
            headers,
            body: Vec::new(),
        },
    )))
}

/// `%xx` escapes and `+` (in queries, a space) decoded; invalid UTF-8 replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[at] {
            b'%' if at + 2 < bytes.len() => match (hex(bytes[at + 1]), hex(bytes[at + 2])) {
                (Some(high), Some(low)) => {
                    decoded.push((high * 16 + low) as u8);
                    at += 3;
                    continue;
                }
                _ => decoded.push(b'%'),
            },
            b'+' => decoded.push(b' '),
            byte => decoded.push(byte),
        }
        at += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_with_its_query_and_body() {
        let text = b"POST /api/queue/hold?domain=example.org&dry_run=true&x=a%20b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nAuthorization: Bearer t\r\n\r\n{}";
        let request = read(&mut &text[..]).unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/queue/hold");
        assert_eq!(request.param("domain"), Some("example.org"));
        assert_eq!(request.param("x"), Some("a b"));
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        assert_eq!(request.body, b"{}");
    }

    #[test]
    fn oversized_requests_are_refused_with_their_status() {
        let body = b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n";
        assert!(matches!(
            read(&mut &body[..]),
            Err(ReadError::Refused(413, _))
        ));
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(
            read(&mut &head[..]),
            Err(ReadError::Refused(431, _))
        ));
        assert!(matches!(
            read(&mut &b"\x16\x03\x01junk\r\n\r\n"[..]),
            Err(ReadError::Refused(400, _))
        ));
    }
}
