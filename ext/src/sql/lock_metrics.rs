//! `hybrid_lock_metrics`: one row per database file this process has
//! touched, with its busy-wait counters and wait-time percentiles.

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::clock::iso8601_utc;
use crate::config::policy_to_json;
use crate::handler::ConnState;
use crate::metrics;
use crate::sql::table::{RowSource, integer, real_or_null};

/// The `hybrid_lock_metrics` table.
pub struct LockMetrics;

impl RowSource for LockMetrics {
    const NAME: &'static str = "hybrid_lock_metrics";
    const SCHEMA: &'static str = "CREATE TABLE x(
        db TEXT, connections INTEGER, handler_active INTEGER,
        busy_events INTEGER, retries INTEGER, acquired INTEGER, gave_up INTEGER,
        in_flight INTEGER, wait_total_ms REAL, wait_avg_ms REAL, wait_max_ms REAL,
        wait_p50_ms REAL, wait_p95_ms REAL, wait_p99_ms REAL, failure_rate REAL,
        last_event_at TEXT, policy TEXT)";

    fn rows(conn: &Connection, state: &ConnState) -> Result<Vec<Vec<Value>>> {
        // Our own connection can be checked now; others were checked the
        // last time they ran a hybrid function or table.
        state.refresh(conn)?;
        let own_file = state.tracker().file();
        let rows = metrics::global()
            .files()
            .into_iter()
            .map(|file| {
                let s = file.snapshot();
                let policy = if std::sync::Arc::ptr_eq(&file, own_file) {
                    policy_to_json(&state.policy())
                } else {
                    s.policy_json
                };
                vec![
                    Value::Text(s.db),
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
                    if policy.is_empty() {
                        Value::Null
                    } else {
                        Value::Text(policy)
                    },
                ]
            })
            .collect();
        Ok(rows)
    }
}
