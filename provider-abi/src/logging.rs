//! The bridge that carries a provider library's `log` records to the host's logger.
//!
//! A provider library has its own copy of the `log` crate and so its own global logger. The
//! host hands over a [`LogSink`] made by [`host_log_sink`] (function pointers into the host's
//! copy of this crate); [`install_in_library`] makes it the library's logger. So a provider's
//! `log::info!` reaches the host's env_logger, and `RUST_LOG` filters it by target as usual.

use abi_stable::std_types::{ROption, RStr};

use crate::host::{LogLevel, LogRecord, LogSink};

/// The sink the host passes to every library: it forwards to this binary's `log` logger.
pub fn host_log_sink() -> LogSink {
    LogSink {
        max_level: log::max_level().into(),
        enabled: host_enabled,
        log: host_log,
    }
}

extern "C" fn host_enabled(level: LogLevel, target: RStr<'_>) -> bool {
    match to_level(level) {
        Some(level) => log::logger().enabled(
            &log::Metadata::builder()
                .level(level)
                .target(target.as_str())
                .build(),
        ),
        None => false,
    }
}

extern "C" fn host_log(record: LogRecord<'_>) {
    let Some(level) = to_level(record.level) else {
        return;
    };
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(record.target.as_str())
            .args(format_args!("{}", record.message))
            .file(record.file.map(|file| file.as_str()).into_option())
            .line(record.line.into_option())
            .build(),
    );
}

fn to_level(level: LogLevel) -> Option<log::Level> {
    log::LevelFilter::from(level).to_level()
}

struct LibraryLogger(LogSink);

impl log::Log for LibraryLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        (self.0.enabled)(metadata.level().into(), metadata.target().into())
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        (self.0.log)(LogRecord {
            level: record.level().into(),
            target: record.target().into(),
            message: message.as_str().into(),
            file: record.file().map(RStr::from).into(),
            line: ROption::from(record.line()),
        });
    }

    fn flush(&self) {}
}

/// Makes `sink` this library's `log` logger, and reports the library's panics through it.
/// A second call (the library loaded again under another name) keeps the first sink, which
/// points at the same host.
///
/// A `cdylib` has its own copy of `std` and so its own panic hook: setting it here changes
/// only how this library's panics are reported (in the host's log, with their location),
/// not the host's. The panic itself is still caught at the boundary and returned as an error.
pub fn install_in_library(sink: LogSink) {
    if log::set_boxed_logger(Box::new(LibraryLogger(sink))).is_ok() {
        log::set_max_level(sink.max_level.into());
        std::panic::set_hook(Box::new(|info| log::error!(target: "panic", "{info}")));
    }
}
