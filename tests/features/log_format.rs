//! The log as JSON (`log_format = "json"`): every line on standard error one object, the
//! host's, a provider library's (in the host and in an isolated child) alike, with the
//! message's fields apart; and a `log_format` the host does not know refused at start.

use serde_json::{Map, Value};
use spooler_tests::{run_host, wait_until, Host, Site, PROMPTLY};

use crate::common::MESSAGE;

/// A directory transport isolated in a child process, and the chatty fixture's hook (which
/// logs as its library loads) isolated too: their records reach the host over the child's
/// events socket.
const ISOLATED: &str = r#"
log_format = "json"

[[transport]]
provider = "directory"
name = "files"
isolate = true
config = { path = "{site}/files" }

[[hook]]
provider = "chatty"
isolate = true
"#;

/// Each line of `log` as a JSON object with `time`, `level`, `target` and `message`; a
/// failure naming the first line that is not one.
fn json_lines(log: &str) -> Vec<Map<String, Value>> {
    log.lines()
        .map(|line| {
            let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) else {
                panic!("not a JSON object: {line:?} in:\n{log}");
            };
            for key in ["time", "level", "target", "message"] {
                assert!(fields[key].is_string(), "no {key} in {line}");
            }
            fields
        })
        .collect()
}

#[test]
fn every_line_is_a_json_object_and_the_delivery_has_its_fields() {
    let site = Site::new();
    site.providers().add_library("fixture-chatty");
    let mut host = Host::start(&site.write_config(ISOLATED), "host.log");
    let id = host.submit(&["FILE:bob"], MESSAGE);
    wait_until(PROMPTLY, "the message is in Sent Items", || {
        host.list("Sent Items").len() == 1
    });
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(PROMPTLY), Some(0), "{}", host.log());

    let log = host.log();
    let lines = json_lines(&log);
    let time = lines[0]["time"].as_str().unwrap();
    // 2026-12-05T05:07:41.123Z
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[19] == b'.',
        "{time}"
    );
    assert!(lines.iter().all(|l| l["level"] == "info"
        || l["level"] == "warn"
        || l["level"] == "error"
        || l["level"] == "debug"
        || l["level"] == "trace"));
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("profile: "),
        "{log}"
    );

    let delivered: Vec<_> = lines
        .iter()
        .filter(|l| l.get("outcome").is_some_and(|o| o == "delivered"))
        .collect();
    assert_eq!(delivered.len(), 1, "one recipient delivered:\n{log}");
    let line = delivered[0];
    assert_eq!(line["id"], id.as_str(), "{log}");
    assert_eq!(line["transport"], "files", "{log}");
    assert_eq!(line["recipient"], "FILE:bob", "{log}");
    assert_eq!(line["level"], "info");
    assert_eq!(line["target"], "spooler_host::queue::commit");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}: to=FILE:bob ")),
        "the text is the text format's: {log}"
    );

    // Lines that start with the queue id carry it as a field too.
    for text in [": submitted by a client", ": finished; moved to Sent Items"] {
        let line = lines
            .iter()
            .find(|l| l["message"] == format!("{id}{text}"))
            .unwrap_or_else(|| panic!("no line {text:?}:\n{log}"));
        assert_eq!(line["id"], id.as_str(), "{log}");
    }

    // The chatty library logs as it loads: once in the host (the folder is scanned), once in
    // the isolated hook's child; both under its own target.
    let chatty: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "chatty fixture: hello from inside the provider library")
        .collect();
    assert!(chatty.len() >= 2, "in the host and in the child:\n{log}");
    assert!(
        chatty.iter().all(|l| l["target"] == "fixture_chatty"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with("files: runs isolated in process")),
        "{log}"
    );
}

#[test]
fn a_log_format_the_host_does_not_know_is_refused_at_its_line() {
    let site = Site::with_providers(&["store-embedded"]);
    let config = site.write_config("log_format = \"xml\"\n");
    let path = config.to_string_lossy().into_owned();
    let finished = run_host(&["run", "--config", &path], &[], PROMPTLY);
    assert_eq!(finished.code, Some(64), "{}", finished.stderr);
    let error = &finished.stderr;
    assert!(error.contains(&path), "names the file: {error}");
    // write_config puts data_dir and providers on lines 1 and 2.
    assert!(error.contains("line 3"), "names the line: {error}");
    assert!(error.contains("log_format = \"xml\""), "{error}");
    assert!(
        error.contains("unknown variant `xml`, expected `text` or `json`"),
        "{error}"
    );
}
