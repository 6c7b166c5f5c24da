//! `hybrid_lock_holder`: who holds each database's write lock right now, for
//! how long, and within what tenure, as every process sharing the side file
//! sees it (futex mode only): the question every "database is locked"
//! report asks.

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::conn::ConnState;
use crate::queue::waiters::{holder, waiters};
use crate::sql::side_files::observed_side_files;
use crate::sql::vtab::{TableSpec, integer};

/// The `hybrid_lock_holder` table.
pub(crate) const TABLE: TableSpec = TableSpec {
    name: "hybrid_lock_holder",
    schema: "CREATE TABLE x(
        db TEXT, pid INTEGER, held_ms REAL, tenure_ms REAL, tenure_elapsed_ms REAL,
        queued INTEGER)",
    rows,
};

/// One row per file with a side file: the holder's columns are NULL when
/// no process with the extension holds the lock (it is free, or a
/// connection without the extension holds it).
fn rows(_conn: &Connection, _state: &ConnState) -> Result<Vec<Vec<Value>>> {
    let mut rows = Vec::new();
    for (file, side) in observed_side_files() {
        let queued = integer(waiters(&side).len() as u64);
        let db = Value::Text(file.path().to_string());
        rows.push(match holder(&side) {
            Some(h) => vec![
                db,
                integer(u64::from(h.pid)),
                Value::Real(h.held_ms),
                Value::Real(h.tenure_ms),
                Value::Real(h.tenure_elapsed_ms),
                queued,
            ],
            None => vec![
                db,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                queued,
            ],
        });
    }
    Ok(rows)
}
