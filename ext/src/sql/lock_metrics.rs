//! `hybrid_lock_metrics`: per database file, this process's waits
//! (`scope = 'process'`) and, when the side file exists, every process's
//! waits on that file (`scope = 'file'`). Both rows are [`LockStats`].
//! Besides waits, each row counts the lock errors no busy handler saw
//! (`busy_in_read_tx`, `busy_snapshot`) and the application's retries
//! (`app_retries`, from `hybrid_note_retry()`).

use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::clock::iso8601_utc;
use crate::conn::{ConnState, file_row, process_row};
use crate::policy::json::policy_to_json;
use crate::shared::SideFile;
use crate::sql::vtab::{TableSpec, integer, real_or_null};
use crate::stats::lock_stats::LockStats;
use crate::stats::registry as stats_registry;

/// The `hybrid_lock_metrics` table.
pub(crate) const TABLE: TableSpec = TableSpec {
    name: "hybrid_lock_metrics",
    schema: "CREATE TABLE x(
        db TEXT, scope TEXT, mode TEXT, connections INTEGER, handler_active INTEGER,
        busy_events INTEGER, retries INTEGER, acquired INTEGER, gave_up INTEGER,
        in_flight INTEGER, wait_total_ms REAL, wait_avg_ms REAL, wait_max_ms REAL,
        wait_p50_ms REAL, wait_p95_ms REAL, wait_p99_ms REAL, failure_rate REAL,
        last_event_at TEXT, policy TEXT, handoffs INTEGER,
        busy_in_read_tx INTEGER, busy_snapshot INTEGER, app_retries INTEGER)",
    rows,
};

fn rows(_conn: &Connection, state: &ConnState) -> Result<Vec<Vec<Value>>> {
    // Our own connection was checked as this query began (`vtab.rs`);
    // others were checked the last time they ran a hybrid function or table.
    let own_file = state.tracker.file();
    let mut rows = Vec::new();
    for file in stats_registry::global().files() {
        let policy = Arc::ptr_eq(&file, own_file).then(|| policy_to_json(&state.policy()));
        rows.push(row(&process_row(&file, policy)));
        if let Some(side) = SideFile::observe(file.path()) {
            rows.push(row(&file_row(file.path(), &side)));
        }
    }
    Ok(rows)
}

fn row(s: &LockStats) -> Vec<Value> {
    let optional = |v: Option<u64>| v.map_or(Value::Null, integer);
    vec![
        Value::Text(s.db.clone()),
        Value::Text(s.scope.as_str().into()),
        Value::Text(s.mode.as_str().into()),
        optional(s.connections),
        optional(s.handler_active),
        integer(s.busy_events),
        integer(s.retries),
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
        s.policy.clone().map_or(Value::Null, Value::Text),
        integer(s.handoffs),
        integer(s.busy_in_read_tx),
        integer(s.busy_snapshot),
        integer(s.app_retries),
    ]
}
