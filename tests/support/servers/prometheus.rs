//! A private Prometheus server for a test: its configuration and time series in a temporary
//! folder, on a free loopback port, scraping the given targets every second; stopped and
//! removed when dropped.

use std::fs;
use std::process::{Command, Stdio};

use crate::{free_port, http_get, real_server, wait_until, PROMPTLY};

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
