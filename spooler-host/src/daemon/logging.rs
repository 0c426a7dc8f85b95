//! The host's log on standard error, through env_logger (`RUST_LOG` filters it): its usual
//! text lines, or, with the profile's `log_format = "json"`, one JSON object per line for a
//! log collector (Loki, Elastic, journald).
//!
//! The logger is installed at start, before the profile is read (so that nothing logged
//! while reading it is lost), writing text; [`set_format`] switches it once `run` has read
//! the profile, and again at a reload. Everything on the host's standard error goes through
//! it: the host's records, the records of provider libraries (bridged by `export_library!`,
//! with the provider's module path as target), and what isolated children send or write
//! (`providers/isolation/proxy.rs` logs both).
//!
//! A JSON line has `time` (RFC 3339, UTC, milliseconds), `level` (lower case), `target`,
//! `message` (the text of the text format), and the record's key-values as fields of their
//! own: the queue manager's lines about a recipient's answer carry `id`, `transport`,
//! `recipient` and `outcome`. A line whose text starts with a queue id (`0123456789abcdef: …`)
//! and carries no `id` gets it from there.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use env_logger::fmt::{ConfigurableFormat, Formatter};
use log::kv::{self, VisitSource, VisitValue};
use serde::ser::{SerializeMap, Serializer};

use crate::config::LogFormat;

/// Whether the installed logger writes JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the host's logger, writing text until [`set_format`] says otherwise. The filter
/// is `RUST_LOG`'s, `info` without it.
pub fn start() {
    builder(|| {
        if JSON.load(Ordering::Relaxed) {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    })
    .init();
}

/// Switches the installed logger to `format`. While it writes JSON, the host's own panics
/// are logged too (as `error`, target `panic`), instead of the text Rust's hook writes.
pub fn set_format(format: LogFormat) {
    let json = format == LogFormat::Json;
    JSON.store(json, Ordering::Relaxed);
    static PANICS: std::sync::Once = std::sync::Once::new();
    if json {
        PANICS.call_once(|| {
            let text = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !is_json() {
                    return text(info);
                }
                let thread = std::thread::current();
                let thread = thread.name().unwrap_or("<unnamed>");
                log::error!(target: "panic", "thread '{thread}' {info}");
            }));
        });
    }
}

/// Whether the installed logger writes JSON: then a line meant for the operator goes through
/// the log rather than straight to standard error.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// env_logger's builder as `RUST_LOG` configures it, with a format that asks `format` which
/// one to write.
fn builder(format: impl Fn() -> LogFormat + Send + Sync + 'static) -> env_logger::Builder {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // env_logger's default format, unchanged: the text lines are what they always were.
    let text = ConfigurableFormat::default();
    builder.format(move |buf, record| match format() {
        LogFormat::Text => text.format(buf, record),
        LogFormat::Json => write_json(buf, record),
    });
    builder
}

/// The fields every JSON line has; a key-value of the same name is left out.
const FIXED: [&str; 4] = ["time", "level", "target", "message"];

fn write_json(buf: &mut Formatter, record: &log::Record<'_>) -> io::Result<()> {
    let time = buf.timestamp_millis().to_string();
    let line = json_line(&time, record).map_err(io::Error::other)?;
    buf.write_all(line.as_bytes())
}

/// `record` as one JSON object and a newline.
fn json_line(time: &str, record: &log::Record<'_>) -> Result<String, serde_json::Error> {
    let message = record.args().to_string();
    let mut fields = Fields(Vec::new());
    // A visitor that never fails: every pair is kept.
    let _ = record.key_values().visit(&mut fields);
    let fields = fields.0;
    let prefix_id = (!fields.iter().any(|(key, _)| key == "id"))
        .then(|| queue_id_prefix(&message))
        .flatten();
    let mut out = Vec::with_capacity(128 + message.len());
    let mut serializer = serde_json::Serializer::new(&mut out);
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("time", time)?;
    map.serialize_entry("level", &record.level().as_str().to_ascii_lowercase())?;
    map.serialize_entry("target", record.target())?;
    if let Some(id) = prefix_id {
        map.serialize_entry("id", id)?;
    }
    for (key, value) in &fields {
        if !FIXED.contains(&key.as_str()) && !value.is_null() {
            map.serialize_entry(key, value)?;
        }
    }
    map.serialize_entry("message", &message)?;
    map.end()?;
    let mut line = String::from_utf8(out).expect("serde_json writes UTF-8");
    line.push('\n');
    Ok(line)
}

/// The queue id a line starts with (`0123456789abcdef: …`), as the log writes them.
fn queue_id_prefix(message: &str) -> Option<&str> {
    let id = message.get(..16)?;
    let hex = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && message[16..].starts_with(':')).then_some(id)
}

/// A record's key-values, each as JSON.
struct Fields(Vec<(String, serde_json::Value)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let mut json = Json(serde_json::Value::Null);
        value.visit(&mut json)?;
        self.0.push((key.as_str().to_owned(), json.0));
        Ok(())
    }
}

/// One key-value's value as JSON: numbers and booleans as such, anything else as its text.
struct Json(serde_json::Value);

impl<'v> VisitValue<'v> for Json {
    fn visit_any(&mut self, value: kv::Value<'_>) -> Result<(), kv::Error> {
        self.0 = value.to_string().into();
        Ok(())
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.0 = serde_json::Value::Null;
        Ok(())
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.0 = value.into();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a logger of `format` writes for `log`, a function that logs into it.
    fn written(format: LogFormat, log: impl FnOnce(&dyn log::Log)) -> String {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Arc::new(Mutex::new(Vec::new())));
        let logger = builder(move || format)
            .filter_level(log::LevelFilter::Trace)
            .write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(sink.clone())))
            .build();
        log(&logger);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn record<'a>(args: std::fmt::Arguments<'a>, kvs: &'a dyn kv::Source) -> log::Record<'a> {
        log::Record::builder()
            .level(log::Level::Info)
            .target("spooler_host::queue::commit")
            .args(args)
            .key_values(kvs)
            .build()
    }

    const NO_FIELDS: [(&str, &str); 0] = [];

    fn parsed(line: &str) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        }
    }

    #[test]
    fn text_is_env_loggers_default_format_and_leaves_key_values_out() {
        let kvs = [("id", "00000000000004d2"), ("outcome", "delivered")];
        let with = written(LogFormat::Text, |logger| {
            logger.log(&record(format_args!("00000000000004d2: to=a@b"), &kvs))
        });
        let without = written(LogFormat::Text, |logger| {
            logger.log(&record(
                format_args!("00000000000004d2: to=a@b"),
                &NO_FIELDS,
            ))
        });
        // `[2026-01-01T00:00:00Z INFO  spooler_host::queue::commit] 00000000000004d2: to=a@b`
        let tail = " INFO  spooler_host::queue::commit] 00000000000004d2: to=a@b\n";
        for line in [&with, &without] {
            assert!(line.starts_with('[') && line.ends_with(tail), "{line:?}");
            assert_eq!(
                line.len(),
                "[2026-01-01T00:00:00Z".len() + tail.len(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn json_has_the_fixed_fields_and_the_key_values() {
        let id = provider_abi::MessageId(0x4d2);
        let line = written(LogFormat::Json, |logger| {
            let kvs: [(&str, kv::Value<'_>); 5] = [
                ("id", kv::Value::from_display(&id)),
                ("transport", "smarthost".into()),
                ("recipient", "SMTP:ann@example.com".into()),
                ("outcome", "delivered".into()),
                ("attempts", 2u64.into()),
            ];
            logger.log(&record(
                format_args!("{id}: to=ann \"quoted\"\nand a second line"),
                &kvs,
            ))
        });
        assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
        let fields = parsed(&line);
        let time = fields["time"].as_str().unwrap();
        // 2026-01-01T00:00:00.123Z
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        assert_eq!(fields["level"], "info");
        assert_eq!(fields["target"], "spooler_host::queue::commit");
        assert_eq!(fields["id"], "00000000000004d2");
        assert_eq!(fields["transport"], "smarthost");
        assert_eq!(fields["recipient"], "SMTP:ann@example.com");
        assert_eq!(fields["outcome"], "delivered");
        assert_eq!(fields["attempts"], 2);
        assert_eq!(
            fields["message"],
            "00000000000004d2: to=ann \"quoted\"\nand a second line"
        );
    }

    #[test]
    fn json_takes_the_id_a_line_starts_with_and_leaves_out_null_and_clashing_fields() {
        let none: Option<&str> = None;
        let line = written(LogFormat::Json, |logger| {
            let kvs: [(&str, kv::Value<'_>); 2] = [
                ("transport", kv::ToValue::to_value(&none)),
                ("message", "not this".into()),
            ];
            logger.log(&record(
                format_args!("00000000000004d2: deleted by an operator"),
                &kvs,
            ))
        });
        let fields = parsed(&line);
        assert_eq!(fields["id"], "00000000000004d2");
        assert_eq!(
            fields["message"],
            "00000000000004d2: deleted by an operator"
        );
        assert!(!fields.contains_key("transport"), "{line}");

        for text in [
            "routing through the reloaded profile",
            "00000000000004d2 no colon",
            "0000000000000XYZ: x",
        ] {
            let line = written(LogFormat::Json, |logger| {
                logger.log(&record(format_args!("{text}"), &NO_FIELDS))
            });
            assert!(!parsed(&line).contains_key("id"), "{line}");
        }
    }
}
