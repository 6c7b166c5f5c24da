//! What travels from a logging call to the writer: one [`LogRecord`] and
//! its [`LogLevel`]. A leaf of the log database.

use crate::clock::now_unix_ms;

/// Severity, as stored in `entries.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `ERROR`
    Error,
    /// `WARN`
    Warn,
    /// `INFO`
    Info,
    /// `DEBUG`
    Debug,
    /// `TRACE`
    Trace,
}

impl LogLevel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

/// One log entry on its way to the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When it was logged (Unix ms).
    pub ts_unix_ms: u64,
    /// Severity.
    pub level: LogLevel,
    /// The `log`/`tracing` target (usually the module path).
    pub target: String,
    /// The message.
    pub message: String,
    /// Structured fields, stored as a JSON object.
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Module path, source file and line, if known.
    pub module: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// The logging thread's name (or id).
    pub thread: String,
}

impl LogRecord {
    /// A record of `level` and `message` from the current thread, now.
    pub fn new(level: LogLevel, target: &str, message: impl Into<String>) -> LogRecord {
        LogRecord {
            ts_unix_ms: now_unix_ms(),
            level,
            target: target.to_string(),
            message: message.into(),
            fields: None,
            module: None,
            file: None,
            line: None,
            thread: current_thread(),
        }
    }
}

/// The calling thread's name, or its id when it has none.
fn current_thread() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => name.to_string(),
        None => format!("{:?}", thread.id()),
    }
}
