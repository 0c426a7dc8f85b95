//! What the HTTP front end answers: a status, a content type and a body, written with
//! `Connection: close` (each request has a connection of its own: simple, and the page
//! makes few). Errors are JSON, `{"error": "…", "status": 404}`, so that a program reads
//! why as easily as a person does.

use std::io::{self, Write};

use serde::Serialize;

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Its media type.
    pub content_type: &'static str,
    /// Extra header fields.
    pub headers: Vec<(&'static str, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A body of some media type.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON document.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        let body = serde_json::to_vec(value).expect("answers serialize");
        Reply::new(status, "application/json", body)
    }

    /// An error, as JSON.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        #[derive(Serialize)]
        struct Error {
            error: String,
            status: u16,
        }
        Reply::json(
            status,
            &Error {
                error: message.into(),
                status,
            },
        )
    }

    /// With one more header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the whole answer.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut head = status_line(self.status);
        head.push_str(&format!(
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            self.content_type,
            self.body.len()
        ));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(COMMON_FIELDS);
        out.write_all(head.as_bytes())?;
        out.write_all(&self.body)?;
        out.flush()
    }
}

/// The header fields of every answer: no caching (everything is live), no sniffing, no
/// framing by other sites, and one request per connection.
pub const COMMON_FIELDS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
    X-Frame-Options: DENY\r\nConnection: close\r\n\r\n";

/// `HTTP/1.1 404 Not Found\r\n`.
pub fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!("HTTP/1.1 {status} {reason}\r\n")
}
