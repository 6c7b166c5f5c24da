//! The `tracing` bridge: a `tracing_subscriber::Layer` that sends each event
//! to the log database, its structured fields as a JSON object.

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::record::{LogLevel, LogRecord};
use super::sink::LogSink;

/// A layer writing tracing events to a [`super::LogDatabase`].
///
/// ```
/// use std::time::Duration;
/// use tracing_subscriber::layer::SubscriberExt;
/// use sqlite_hybrid::{LogDatabase, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let logs = LogDatabase::open(dir.path().join("t.db"), LogOptions::default())?;
/// let subscriber = tracing_subscriber::registry().with(logs.tracing_layer());
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(order_id = 42, total_cents = 1999, "order placed");
/// });
/// logs.flush(Duration::from_secs(5))?;
/// assert_eq!(logs.stats().written, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DbLayer {
    sink: LogSink,
}

impl DbLayer {
    pub(crate) fn new(sink: LogSink) -> DbLayer {
        DbLayer { sink }
    }
}

/// Collects an event's fields; `message` becomes the entry's message.
#[derive(Default)]
struct JsonFields {
    fields: Map<String, Value>,
    message: Option<String>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, json!(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, json!(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, json!(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, json!(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

fn level_of(level: &tracing::Level) -> LogLevel {
    match *level {
        tracing::Level::ERROR => LogLevel::Error,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::INFO => LogLevel::Info,
        tracing::Level::DEBUG => LogLevel::Debug,
        tracing::Level::TRACE => LogLevel::Trace,
    }
}

impl<S: Subscriber> Layer<S> for DbLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = JsonFields::default();
        event.record(&mut visitor);
        let mut entry = LogRecord::new(
            level_of(meta.level()),
            meta.target(),
            visitor.message.unwrap_or_default(),
        );
        entry.fields = (!visitor.fields.is_empty()).then_some(visitor.fields);
        entry.module = meta.module_path().map(str::to_string);
        entry.file = meta.file().map(str::to_string);
        entry.line = meta.line();
        self.sink.send(entry);
    }
}
