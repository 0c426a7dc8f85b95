//! The HTTP front end as a program and an operator use it: every admin API call, with bad
//! tokens, bad ids and oversized or slow requests; the event stream resumed after a
//! reconnect; the webhook through a receiver that fails at first; and the profile checks
//! that keep an unguarded API off the network.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use spooler_tests::{
    free_port, http, http_raw, run_host, Certificates, EventStream, Host, Receiver, Site, PROMPTLY,
};

/// A token of the length the host asks for.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// SMTP mail goes into the folder `{site}/out` (a directory transport claiming SMTP), which
/// the tests replace with a file so that mail stays queued; retries wait an hour.
const QUEUED: &str = r#"
[[transport]]
provider = "directory"
name = "out"
config = { path = "{site}/out", address_type = "SMTP" }

[retry]
min_delay = "1h"
max_delay = "1h"

[http]
address = "127.0.0.1:{port}"
token_file = "{site}/token"
"#;

/// A host whose SMTP mail cannot leave, with the HTTP server on its port.
fn start(site: &Site, extra: &str) -> (Host, u16) {
    let port = free_port();
    fs::write(site.path("token"), format!("{TOKEN}\n")).unwrap();
    let profile = QUEUED.replace("{port}", &port.to_string()) + extra;
    let host = Host::start(&site.write_config(&profile), "host.log");
    fs::remove_dir_all(site.path("out")).ok();
    fs::write(site.path("out"), "a file where the folder should be").unwrap();
    (host, port)
}

fn message(subject: &str) -> String {
    format!("From: alice@example.com\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

fn api(port: u16, method: &str, path: &str) -> (u16, Value) {
    let answer = http(port, method, path, Some(TOKEN));
    (answer.status, answer.json())
}

fn ids(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[test]
fn the_admin_api_does_what_the_command_line_does() {
    let site = Site::new();
    let (host, port) = start(&site, "");
    let one = host.submit(&["bob@one.example"], &message("to one"));
    let two = host.submit(&["carol@two.example"], &message("to two"));
    spooler_tests::wait_until(PROMPTLY, "both are tried and deferred", || {
        [&one, &two]
            .iter()
            .all(|id| host.show(id)["recipients"][0]["attempts"] == 1)
    });

    let (status, body) = api(port, "GET", "/api/status");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outbox"], 2);
    assert!(body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "out"));

    let (_, page) = api(port, "GET", "/api/queue");
    assert_eq!(ids(&page), [one.as_str(), two.as_str()]);
    let (_, page) = api(port, "GET", "/api/queue?domain=TWO.example");
    assert_eq!(ids(&page), [two.as_str()]);
    let (_, page) = api(port, "GET", "/api/queue?state=deferred&transport=out");
    assert_eq!(ids(&page).len(), 2);
    let (_, page) = api(port, "GET", "/api/queue?newer_than=1h&held=false&limit=1");
    assert_eq!(ids(&page), [one.as_str()]);
    assert_eq!(page["next"], one.as_str(), "a full page has a cursor");
    let (_, page) = api(port, "GET", &format!("/api/queue?after={one}&limit=1"));
    assert_eq!(ids(&page), [two.as_str()]);
    let (_, page) = api(port, "GET", "/api/queue?older_than=1h");
    assert!(ids(&page).is_empty());

    let (status, shown) = api(port, "GET", &format!("/api/messages/{one}?content=true"));
    assert_eq!(status, 200);
    assert_eq!(shown["subject"], "to one");
    assert!(shown["content"].as_str().unwrap().contains("Hello."));
    assert_eq!(shown["recipients"][0]["address"], "SMTP:bob@one.example");

    // One message: flush, hold, release; each seen through the command line.
    assert_eq!(
        api(port, "POST", &format!("/api/messages/{one}/flush")).0,
        200
    );
    spooler_tests::wait_until(PROMPTLY, "the flush tries it again", || {
        host.show(&one)["recipients"][0]["attempts"] == 2
    });
    assert_eq!(
        host.show(&two)["recipients"][0]["attempts"],
        1,
        "only that one"
    );
    assert_eq!(
        api(port, "POST", &format!("/api/messages/{one}/hold")).0,
        200
    );
    assert_eq!(host.show(&one)["held"], true);
    let (_, page) = api(port, "GET", "/api/queue?state=held");
    assert_eq!(ids(&page), [one.as_str()]);
    let metrics = http(port, "GET", "/metrics", None).body;
    assert!(
        metrics.contains("spooler_queue_held_messages 1\n"),
        "{metrics}"
    );
    let (_, shape) = api(port, "GET", "/api/queue/shape?top=1");
    assert_eq!(shape["total"]["total"], 2, "{shape}");
    assert_eq!(shape["domains"].as_array().unwrap().len(), 1, "{shape}");
    let (status, refused) = api(port, "POST", &format!("/api/messages/{one}/flush"));
    assert_eq!(status, 409, "a held message is not flushed: {refused}");
    assert!(refused["error"].as_str().unwrap().contains("is held"));
    assert_eq!(
        api(port, "POST", &format!("/api/messages/{one}/release")).0,
        200
    );
    assert_eq!(host.show(&one)["held"], false);

    // Bulk over a filter: a dry run counts and changes nothing.
    let (_, dry) = api(
        port,
        "POST",
        "/api/queue/hold?domain=two.example&dry_run=true",
    );
    assert_eq!(
        (dry["matched"].as_u64(), dry["done"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(host.show(&two)["held"], false);
    let (_, held) = api(port, "POST", "/api/queue/hold?domain=two.example");
    assert_eq!(
        (held["matched"].as_u64(), held["done"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(host.show(&two)["held"], true);
    let (_, released) = api(port, "POST", "/api/queue/release?held=true");
    assert_eq!(released["done"], 1);
    let (_, flushed) = api(port, "POST", "/api/queue/flush");
    assert_eq!(flushed["matched"], 2);

    assert_eq!(api(port, "POST", "/api/flush").0, 200);
    let (status, unknown) = api(port, "POST", "/api/flush?transport=fax");
    assert_eq!(status, 409);
    assert!(unknown["error"]
        .as_str()
        .unwrap()
        .contains("no transport named `fax`"));

    // The flushes just made both due: a message being delivered right now answers 409,
    // and the call goes through once the attempt is over.
    let deleted = not_busy(|| api(port, "DELETE", &format!("/api/messages/{two}")));
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    assert!(host.command(&["show", &two]).code != Some(0));
    let (_, deleted) = not_busy(|| {
        let (status, body) = api(port, "POST", "/api/queue/delete");
        let busy = body["failed"].as_array().is_some_and(|f| !f.is_empty());
        (if busy { 409 } else { status }, body)
    });
    assert_eq!(deleted["done"], 1, "{deleted}");
    assert!(host.command(&["queue"]).stdout.contains("(no messages)"));
}

/// The call's answer once it is not `409` (a message being delivered right now).
fn not_busy(mut call: impl FnMut() -> (u16, Value)) -> (u16, Value) {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let answer = call();
        if answer.0 != 409 || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_tokens_ids_and_requests_get_clear_errors() {
    let site = Site::new();
    let (_host, port) = start(&site, "");

    let missing = http(port, "GET", "/api/status", None);
    assert_eq!(missing.status, 401);
    assert!(missing.head.contains("WWW-Authenticate: Bearer"));
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("token_file"));
    let wrong = http(
        port,
        "GET",
        "/api/queue",
        Some("0123456789abcdef0123456789abcdee"),
    );
    assert_eq!(wrong.status, 401);
    let metrics = http(port, "GET", "/metrics", None);
    assert_eq!(metrics.status, 200, "metrics need no token");
    assert!(metrics.body.contains("spooler_"));

    let (status, body) = api(port, "GET", "/api/messages/not-an-id");
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("16 hex digits"));
    let (status, body) = api(port, "POST", "/api/messages/00000000000000ff/hold");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["status"], 404);
    assert_eq!(api(port, "DELETE", "/api/messages/00000000000000ff").0, 404);
    assert_eq!(api(port, "GET", "/api/nothing").0, 404);
    assert_eq!(api(port, "PUT", "/api/status").0, 405);
    assert_eq!(
        api(port, "POST", "/api/messages/00000000000000ff/explode").0,
        404
    );
    let (status, body) = api(port, "GET", "/api/queue?state=lost");
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("new, deferred or held"));
    assert_eq!(api(port, "GET", "/api/queue?older_than=soon").0, 400);
    assert_eq!(api(port, "GET", "/api/queue?limit=0").0, 400);

    let big_body = format!(
        "POST /api/flush HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 10000000\r\n\r\n"
    );
    assert_eq!(http_raw(port, big_body.as_bytes()).status, 413);
    let big_head = format!(
        "GET /api/status HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(http_raw(port, big_head.as_bytes()).status, 431);
    assert_eq!(http_raw(port, b"\x16\x03\x01 not http\r\n\r\n").status, 400);

    // A client that trickles its request is cut off at the request's time, not left to
    // hold a thread: a byte a second never finishes.
    let started = Instant::now();
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    for byte in b"GET /api/status HTTP/1.1\r\nX-Slow: "
        .iter()
        .chain([b'a'; 20].iter())
    {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    std::io::Read::read_to_end(&mut slow, &mut answer).ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_event_stream_resumes_after_a_reconnect_without_a_gap() {
    let site = Site::new();
    let (host, port) = start(&site, "");
    let mut stream = EventStream::open(port, TOKEN, None);
    let id = host.submit(&["bob@one.example"], &message("watched"));
    let seen = stream.until("submitted", &id, PROMPTLY);
    let submitted = seen.last().unwrap();
    assert_eq!(submitted.data["kind"], "submitted");
    let last_id = submitted.id.expect("events have ids");
    drop(stream);

    // While nobody listens: the attempt is deferred, then an operator holds the message.
    spooler_tests::wait_until(PROMPTLY, "the attempt is deferred", || {
        host.show(&id)["recipients"][0]["attempts"] == 1
    });
    assert_eq!(host.command(&["hold", &id]).code, Some(0));

    let mut resumed = EventStream::open(port, TOKEN, Some(last_id));
    let missed = resumed.until("held", &id, PROMPTLY);
    let deferred = missed
        .iter()
        .find(|e| e.name == "deferred")
        .unwrap_or_else(|| panic!("the deferral comes back after the reconnect: {missed:#?}"));
    assert_eq!(deferred.data["recipient"], "SMTP:bob@one.example");
    assert_eq!(deferred.data["transport"], "out");
    assert!(deferred.data["detail"]
        .as_str()
        .unwrap()
        .contains("cannot write"));
    assert!(
        missed.iter().all(|e| e.id.unwrap() > last_id),
        "nothing seen before comes again: {missed:#?}"
    );
    assert!(missed.iter().all(|e| e.name != "gap"));

    // New events follow the missed ones on the same stream.
    assert_eq!(host.command(&["release", &id]).code, Some(0));
    resumed.until("released", &id, PROMPTLY);
}

#[test]
fn the_webhook_gets_every_event_in_order_even_when_it_fails_at_first() {
    let site = Site::new();
    let receiver = Receiver::start(&[503, 500]);
    let (host, _port) = start(
        &site,
        &format!("webhook = \"http://127.0.0.1:{}/events\"\n", receiver.port),
    );
    let id = host.submit(&["bob@one.example"], &message("hooked"));
    spooler_tests::wait_until(PROMPTLY, "the attempt is deferred", || {
        host.show(&id)["recipients"][0]["attempts"] == 1
    });
    assert_eq!(host.command(&["delete", &id]).code, Some(0));
    spooler_tests::wait_until(
        Duration::from_secs(30),
        "the webhook takes the events after two failures",
        || {
            receiver
                .taken()
                .iter()
                .any(|e| e["kind"] == "deleted" && e["message"] == id.as_str())
        },
    );
    let ours: Vec<String> = receiver
        .taken()
        .iter()
        .filter(|e| e["message"] == id.as_str())
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ours, ["submitted", "deferred", "deleted"]);
    assert!(host.log().contains("not taken"), "the failures are logged");
}

#[test]
fn an_unguarded_api_on_a_network_address_is_refused_at_start() {
    let site = Site::new();
    let config = site.write_config("[http]\naddress = \"0.0.0.0:8025\"\n");
    let run = run_host(
        &["run", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("not a loopback address")
            && run.stderr.contains("token_file")
            && run.stderr.contains("spooler.toml"),
        "{}",
        run.stderr
    );
    fs::write(site.path("token"), "short\n").unwrap();
    let config = site.write_config(&format!(
        "[http]\naddress = \"127.0.0.1:{}\"\ntoken_file = \"{{site}}/token\"\n",
        free_port()
    ));
    let run = run_host(
        &["run", "--config", config.to_str().unwrap()],
        &[],
        Duration::from_secs(20),
    );
    assert!(
        run.stderr.contains("at least 16 characters"),
        "{}",
        run.stderr
    );
}

#[test]
fn over_tls_the_api_answers_a_client_that_trusts_the_certificate() {
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("certs"), &["127.0.0.1", "localhost"]);
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_key = \"{}\"\n",
        certificates.cert_file.display(),
        certificates.key_file.display()
    );
    let (_host, port) = start(&site, &tls);
    // Python's urllib: a client nobody here wrote, checking the chain and the name.
    let fetch = |url: String, ca: &std::path::Path| {
        Command::new("python3")
            .args([
                "-c",
                "import ssl, sys, urllib.request\n\
                 context = ssl.create_default_context(cafile=sys.argv[2])\n\
                 request = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[3]})\n\
                 print(urllib.request.urlopen(request, context=context, timeout=20).read().decode())",
                &url,
                ca.to_str().unwrap(),
                TOKEN,
            ])
            .output()
            .expect("python3 runs")
    };
    let answer = fetch(
        format!("https://127.0.0.1:{port}/api/status"),
        &certificates.ca_file,
    );
    let text = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success() && text.contains("\"providers\""),
        "{text}{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let other = Certificates::issue(&site.path("other"), &["127.0.0.1"]);
    let untrusted = fetch(
        format!("https://127.0.0.1:{port}/api/status"),
        &other.ca_file,
    );
    assert!(!untrusted.status.success());
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("CERTIFICATE_VERIFY_FAILED"));
    // Clear text on the TLS port gets no answer an HTTP client could take for one.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /api/status HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut plain, &mut answer).ok();
    assert!(!answer.starts_with(b"HTTP/1.1 200"));
}
