//! `hybrid_lock_waiters`: who is queued for each database's write lock
//! right now, in every process (futex mode only), in serving order.

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::conn::ConnState;
use crate::queue::waiters::waiters;
use crate::sql::side_files::observed_side_files;
use crate::sql::vtab::{TableSpec, integer};

/// The `hybrid_lock_waiters` table.
pub(crate) const TABLE: TableSpec = TableSpec {
    name: "hybrid_lock_waiters",
    schema: "CREATE TABLE x(
        db TEXT, position INTEGER, pid INTEGER, priority TEXT, waited_ms REAL,
        ticket INTEGER, is_head INTEGER, stale INTEGER)",
    rows,
};

fn rows(_conn: &Connection, _state: &ConnState) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::new();
    for (file, side) in observed_side_files() {
        for (position, w) in waiters(&side).into_iter().enumerate() {
            rows.push(vec![
                Value::Text(file.path().to_string()),
                integer(position as u64 + 1),
                integer(u64::from(w.pid)),
                Value::Text(w.priority.name().into()),
                Value::Real(w.waited_ms),
                integer(w.ticket),
                Value::Integer(i64::from(w.is_head)),
                Value::Integer(i64::from(w.stale)),
            ]);
        }
    }
    Ok(rows)
}
