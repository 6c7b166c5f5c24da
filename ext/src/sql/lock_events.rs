//! `hybrid_lock_events`: the most recent finished waits of this process,
//! and the lock errors no busy handler saw (outcomes `busy_in_read_tx` and
//! `busy_snapshot`, 0 ms), oldest first: a ring of
//! `hybrid_lock_events_capacity()` entries, default 256.

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::clock::iso8601_utc;
use crate::conn::ConnState;
use crate::sql::vtab::{TableSpec, integer};
use crate::stats::registry as stats_registry;

/// The `hybrid_lock_events` table.
pub(crate) const TABLE: TableSpec = TableSpec {
    name: "hybrid_lock_events",
    schema: "CREATE TABLE x(
        at TEXT, db TEXT, outcome TEXT, wait_ms REAL, retries INTEGER, pid INTEGER)",
    rows,
};

fn rows(_conn: &Connection, _state: &ConnState) -> Result<Vec<Vec<Value>>> {
    Ok(stats_registry::global()
        .events()
        .into_iter()
        .map(|e| {
            vec![
                Value::Text(iso8601_utc(e.at_unix_ms)),
                Value::Text(e.db.to_string()),
                Value::Text(e.outcome.name().to_string()),
                Value::Real(e.wait_us as f64 / 1000.0),
                integer(u64::from(e.retries)),
                integer(u64::from(e.pid)),
            ]
        })
        .collect())
}
