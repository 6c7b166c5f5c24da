//! `hybrid_lock_metrics`: per database file, this process's waits
//! (`scope = 'process'`) and, in futex mode, every process's waits on that
//! file from the shared side file (`scope = 'file'`).

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::clock::iso8601_utc;
use crate::config::policy_to_json;
use crate::handler::ConnState;
use crate::metrics::{self, FileSnapshot};
use crate::sidefile::{FileWideSnapshot, SideFile};
use crate::sql::table::{RowSource, integer, real_or_null};

/// The `hybrid_lock_metrics` table.
pub struct LockMetrics;

impl RowSource for LockMetrics {
    const NAME: &'static str = "hybrid_lock_metrics";
    const SCHEMA: &'static str = "CREATE TABLE x(
        db TEXT, scope TEXT, mode TEXT, connections INTEGER, handler_active INTEGER,
        busy_events INTEGER, retries INTEGER, acquired INTEGER, gave_up INTEGER,
        in_flight INTEGER, wait_total_ms REAL, wait_avg_ms REAL, wait_max_ms REAL,
        wait_p50_ms REAL, wait_p95_ms REAL, wait_p99_ms REAL, failure_rate REAL,
        last_event_at TEXT, policy TEXT)";

    fn rows(conn: &Connection, state: &ConnState) -> Result<Vec<Vec<Value>>> {
        // Our own connection can be checked now; others were checked the
        // last time they ran a hybrid function or table.
        state.refresh(conn)?;
        let own_file = state.tracker().file();
        let mut rows = Vec::new();
        for file in metrics::global().files() {
            let side = SideFile::existing(file.path());
            let s = file.snapshot();
            let policy = if std::sync::Arc::ptr_eq(&file, own_file) {
                policy_to_json(&state.policy())
            } else {
                s.policy_json.clone()
            };
            rows.push(process_row(
                &s,
                if side.is_some() { "futex" } else { "backoff" },
                policy,
            ));
            if let Some(side) = side {
                rows.push(file_row(file.path(), &side.snapshot()));
            }
        }
        Ok(rows)
    }
}

fn text_or_null(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::Text(text)
    }
}

fn process_row(s: &FileSnapshot, mode: &str, policy: String) -> Vec<Value> {
    vec![
        Value::Text(s.db.clone()),
        Value::Text("process".into()),
        Value::Text(mode.into()),
        integer(s.connections),
        integer(s.handler_active),
        integer(s.busy_events),
        integer(s.handler_calls),
        integer(s.acquired),
        integer(s.gave_up),
        integer(s.in_flight),
        Value::Real(s.wait_total_ms),
        real_or_null(s.wait_avg_ms),
        Value::Real(s.wait_max_ms),
        real_or_null(s.wait_p50_ms),
        real_or_null(s.wait_p95_ms),
        real_or_null(s.wait_p99_ms),
        real_or_null(s.failure_rate),
        s.last_event_unix_ms
            .map_or(Value::Null, |ms| Value::Text(iso8601_utc(ms))),
        text_or_null(policy),
    ]
}

fn file_row(db: &str, s: &FileWideSnapshot) -> Vec<Value> {
    let finished = s.acquired + s.gave_up;
    let max_ms = s.wait_max_us as f64 / 1000.0;
    let quantile = |q| {
        s.histogram
            .quantile_us(q)
            .map(|us| us.min(s.wait_max_us as f64) / 1000.0)
    };
    vec![
        Value::Text(db.to_string()),
        Value::Text("file".into()),
        Value::Text("futex".into()),
        Value::Null, // connections: not tracked across processes
        Value::Null,
        integer(s.busy_events),
        integer(s.handler_calls),
        integer(s.acquired),
        integer(s.gave_up),
        integer(s.in_flight),
        Value::Real(s.wait_total_us as f64 / 1000.0),
        real_or_null((finished > 0).then(|| s.wait_total_us as f64 / 1000.0 / finished as f64)),
        Value::Real(max_ms),
        real_or_null(quantile(0.50)),
        real_or_null(quantile(0.95)),
        real_or_null(quantile(0.99)),
        real_or_null((finished > 0).then(|| s.gave_up as f64 / finished as f64)),
        s.last_event_unix_ms
            .map_or(Value::Null, |ms| Value::Text(iso8601_utc(ms))),
        Value::Null,
    ]
}
