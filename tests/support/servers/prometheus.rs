//! A private Prometheus server for a test: its configuration and time series in a temporary
//! folder, on a free loopback port, scraping the given targets every second; stopped and
//! removed when dropped. And a small HTTP GET, which is all the tests need to read a
//! metrics page or ask Prometheus a query.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, real_server, wait_until, PROMPTLY};

/// A running private Prometheus.
pub struct Prometheus {
    child: std::process::Child,
    folder: tempfile::TempDir,
    /// Its port (the web UI and the HTTP API).
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, each serving `/metrics`) every
    /// second, or says SKIPPED and returns `None` when it is not installed (a failure under
    /// `SPOOLER_REQUIRE_SERVERS=1`, which `.ci/run` sets). Waits until it is ready.
    pub fn start(targets: &[String]) -> Option<Prometheus> {
        let program = real_server("prometheus")?;
        let folder = tempfile::tempdir().expect("a temporary folder");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = folder.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: spooler\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("writing Prometheus' configuration");
        let log = folder.path().join("prometheus.log");
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                folder.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("creating Prometheus' log"))
            .spawn()
            .expect("prometheus starts");
        let mut server = Prometheus {
            child,
            folder,
            port,
        };
        wait_until(PROMPTLY, "Prometheus is ready", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", server.log());
            }
            http_get(port, "/-/ready", None).is_some_and(|(status, _)| status == 200)
        });
        Some(server)
    }

    /// The value of instant query `expression`: the `result` array of its answer.
    pub fn query(&self, expression: &str) -> serde_json::Value {
        let path = format!("/api/v1/query?query={}", percent_encoded(expression));
        let (status, body) = http_get(self.port, &path, None).expect("Prometheus answers");
        assert_eq!(status, 200, "{expression}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
        answer["data"]["result"].clone()
    }

    /// Its log, for a failure message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.folder.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `GET path` on a loopback port, with an `Accept` header if given: the status and the body,
/// or `None` if nothing answers there.
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut connection = TcpStream::connect(("127.0.0.1", port)).ok()?;
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    );
    connection.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let body = &answer[split + 4..];
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head.contains("transfer-encoding: chunked") {
        unchunked(body)
    } else {
        body.to_vec()
    };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
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

/// `text` with everything but letters, digits and `-_.~` percent-encoded, for a query string.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
