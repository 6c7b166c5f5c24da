//! The `log` crate bridge: a `log::Log` that sends records to the log
//! database without ever blocking the caller.

use std::time::Duration;

use super::record::{LogLevel, LogRecord};
use super::sink::LogSink;

/// A `log::Log` writing to a [`super::LogDatabase`]. Install it with
/// [`super::LogDatabase::install_logger`], or use it directly.
///
/// ```
/// use std::time::Duration;
/// use log::Log;
/// use sqlite_hybrid::{LogDatabase, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let logs = LogDatabase::open(dir.path().join("l.db"), LogOptions::default())?;
/// let logger = logs.logger();
/// logger.log(&log::Record::builder().level(log::Level::Warn).target("app").args(format_args!("disk at 91%")).build());
/// logs.flush(Duration::from_secs(5))?;
/// assert_eq!(logs.stats().written, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DbLogger {
    sink: LogSink,
    level: log::LevelFilter,
}

impl DbLogger {
    pub(crate) fn new(sink: LogSink, level: log::LevelFilter) -> DbLogger {
        DbLogger { sink, level }
    }
}

fn level_of(level: log::Level) -> LogLevel {
    match level {
        log::Level::Error => LogLevel::Error,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Info => LogLevel::Info,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Trace => LogLevel::Trace,
    }
}

impl log::Log for DbLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut entry = LogRecord::new(
            level_of(record.level()),
            record.target(),
            record.args().to_string(),
        );
        entry.module = record.module_path().map(str::to_string);
        entry.file = record.file().map(str::to_string);
        entry.line = record.line();
        self.sink.send(entry);
    }

    /// Writes what is queued (waits up to 5 s; `log`'s flush has no way to
    /// report an error).
    fn flush(&self) {
        let _ = self.sink.flush(Duration::from_secs(5));
    }
}
