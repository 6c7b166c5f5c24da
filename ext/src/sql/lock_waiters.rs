//! `hybrid_lock_waiters`: who is queued for each database's write lock
//! right now, in every process (futex mode only), in serving order.

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::handler::ConnState;
use crate::handoff::waiters;
use crate::metrics;
use crate::sidefile::SideFile;
use crate::sql::table::{RowSource, integer};

/// The `hybrid_lock_waiters` table.
pub struct LockWaiters;

impl RowSource for LockWaiters {
    const NAME: &'static str = "hybrid_lock_waiters";
    const SCHEMA: &'static str = "CREATE TABLE x(
        db TEXT, position INTEGER, pid INTEGER, priority TEXT, waited_ms REAL,
        ticket INTEGER, is_head INTEGER, stale INTEGER)";

    fn rows(conn: &Connection, state: &ConnState) -> Result<Vec<Vec<Value>>> {
        state.refresh(conn)?;
        let mut rows = Vec::new();
        for file in metrics::global().files() {
            let Some(side) = SideFile::existing(file.path()) else {
                continue;
            };
            for (position, w) in waiters(&side).into_iter().enumerate() {
                rows.push(vec![
                    Value::Text(file.path().to_string()),
                    integer(position as u64 + 1),
                    integer(u64::from(w.pid)),
                    Value::Text(w.priority.name().into()),
                    Value::Real(w.waited.as_secs_f64() * 1000.0),
                    integer(w.ticket),
                    Value::Integer(i64::from(w.is_head)),
                    Value::Integer(i64::from(w.stale)),
                ]);
            }
        }
        Ok(rows)
    }
}
