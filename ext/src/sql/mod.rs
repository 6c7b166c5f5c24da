//! Everything the extension adds to SQL: functions and eponymous tables,
//! one file each. [`register_all`] wires them to a connection.

pub mod functions;
pub mod health;
pub mod lock_events;
pub mod lock_metrics;
pub mod lock_waiters;
pub mod table;
pub mod tune;

use std::sync::Arc;

use rusqlite::{Connection, Result};

use crate::handler::ConnState;

/// Registers every function and table on `conn`, each owning a reference to
/// `state`.
pub fn register_all(conn: &Connection, state: &Arc<ConnState>) -> Result<()> {
    functions::register(conn, state)?;
    table::register::<lock_metrics::LockMetrics>(conn, state)?;
    table::register::<lock_events::LockEvents>(conn, state)?;
    table::register::<lock_waiters::LockWaiters>(conn, state)?;
    table::register::<health::Health>(conn, state)?;
    Ok(())
}
