//! The host's metrics as Prometheus sees them: mail submitted every way the host takes it
//! (the control socket, an SMTP listener, sendmail and `sendmail -bs`) and delivered to
//! `smtp-sink`; the `/metrics` page checked by `promtool` and read for each family the host
//! promises; and a private Prometheus scraping it every second until it has the count.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::{SmtpTransport, Transport};
use spooler_tests::{
    free_port, host_binary, http_get, real_server, wait_until, Host, Prometheus, Site, SmtpSink,
    PROMPTLY,
};

const MESSAGE: &str =
    "From: app@example.com\r\nTo: someone@example.net\r\nSubject: counted\r\n\r\nCount me.\r\n";

/// A profile with the HTTP front end on `http`, a listener on `smtp`, and the SMTP transport
/// `relay` to `sink`.
fn profile(http: u16, smtp: u16, sink: u16) -> String {
    format!(
        "[http]\naddress = \"127.0.0.1:{http}\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:{smtp}\"\n\n\
         [[transport]]\nprovider = \"smtp\"\nname = \"relay\"\n\
         config = {{ host = \"127.0.0.1\", port = {sink}, tls = \"none\", helo = \"spooler.test\", timeout_secs = 10 }}\n"
    )
}

/// Runs the host's binary as `sendmail` with `args`, `input` on its standard input.
fn sendmail(site: &Site, host: &Host, args: &[&str], input: &str) {
    let link = site.path("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(host_binary(), &link).unwrap();
    }
    let mut child = Command::new(&link)
        .args(args)
        .env("SPOOLER_CONFIG", host.config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "sendmail {args:?}: {}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
}

/// The metrics page in the classic text format (no `Accept`, as `promtool` and curl ask).
fn page(http: u16) -> String {
    let (status, body) = http_get(http, "/metrics", None).expect("the host serves /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn prometheus_scrapes_what_was_submitted_and_delivered_and_promtool_accepts_the_page() {
    if real_server("smtp-sink").is_none() || real_server("promtool").is_none() {
        return;
    }
    let site = Site::new();
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let (http, smtp) = (free_port(), free_port());
    let host = Host::start(
        &site.write_config(&profile(http, smtp, sink.port)),
        "host.log",
    );

    host.submit(&["-f", "app@example.com", "bob@example.net"], MESSAGE);
    host.submit(&["-f", "app@example.com", "carol@example.net"], MESSAGE);
    let listener = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(smtp)
        .build();
    let envelope = Envelope::new(
        Some("app@example.com".parse().unwrap()),
        vec!["dave@example.net".parse().unwrap()],
    )
    .unwrap();
    listener
        .send_raw(&envelope, MESSAGE.as_bytes())
        .expect("the listener takes the message");
    sendmail(
        &site,
        &host,
        &["-f", "app@example.com", "erin@example.net"],
        MESSAGE,
    );
    let dialogue = format!(
        "EHLO client.example\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<frank@example.net>\r\n\
         DATA\r\n{MESSAGE}.\r\nQUIT\r\n"
    );
    sendmail(&site, &host, &["-bs"], &dialogue);

    let delivered = "spooler_recipients_delivered_total{transport=\"relay\"} 5\n";
    wait_until(PROMPTLY, "five recipients counted as delivered", || {
        page(http).contains(delivered)
    });
    wait_until(PROMPTLY, "the listener's session counted as closed", || {
        page(http).contains("\nspooler_listener_sessions_open 0\n")
    });
    let text = page(http);
    for line in [
        "spooler_messages_submitted_total{source=\"control\"} 2\n",
        "spooler_messages_submitted_total{source=\"listener\"} 1\n",
        "spooler_messages_submitted_total{source=\"sendmail\"} 2\n",
        delivered,
        "spooler_delivery_duration_seconds_count 5\n",
        "spooler_delivery_duration_seconds_bucket{le=\"+Inf\"} 5\n",
        "spooler_store_commit_duration_seconds_bucket{le=\"+Inf\"} ",
        "spooler_store_commit_batch_size_bucket{le=\"+Inf\"} ",
        "spooler_listener_sessions_refused_total 0\n",
        "spooler_provider_state{instance=\"relay\",state=\"online\"} 1\n",
        "spooler_provider_state{instance=\"relay\",state=\"error\"} 0\n",
        "spooler_provider_restarts_total{instance=\"relay\"} 0\n",
        "spooler_provider_panics_total{instance=\"relay\"} 0\n",
        "spooler_queue_messages 0\n",
        "spooler_queue_oldest_message_age_seconds 0\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    let store_size = text
        .lines()
        .find_map(|line| line.strip_prefix("spooler_store_size_bytes "))
        .and_then(|bytes| bytes.parse::<u64>().ok());
    assert!(
        store_size.is_some_and(|bytes| bytes > 0),
        "the store's size is a number of bytes: {store_size:?} in:\n{text}"
    );

    let mut promtool = Command::new(real_server("promtool").unwrap())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Prometheus asks for OpenMetrics first, and gets it.
    let (_, openmetrics) = http_get(
        http,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .unwrap();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE spooler_recipients_delivered counter\n"));

    let Some(prometheus) = Prometheus::start(&[format!("127.0.0.1:{http}")]) else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = prometheus.query("sum(spooler_recipients_delivered_total)");
        if answer[0]["value"][1] == "5" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus did not have the 5 deliveries within 30 s: {answer}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let up = prometheus.query("up{job=\"spooler\"}");
    assert_eq!(up[0]["value"][1], "1", "{up}\n{}", prometheus.log());
}
