//! Everything the extension adds to SQL: functions (one declarative table in
//! `functions.rs`) and eponymous tables (one file each, sharing the glue in
//! `vtab.rs`). [`register_all`] wires them to a connection, all or nothing.

pub(crate) mod functions;
pub(crate) mod health;
pub(crate) mod lock_events;
pub(crate) mod lock_metrics;
pub(crate) mod lock_waiters;
pub(crate) mod tune;
pub(crate) mod vtab;

use std::sync::Arc;

use rusqlite::{Connection, Result};

use crate::conn::ConnState;
use vtab::TableSpec;

/// Every table the extension adds.
const TABLES: [&TableSpec; 4] = [
    &lock_metrics::TABLE,
    &lock_events::TABLE,
    &lock_waiters::TABLE,
    &health::TABLE,
];

/// Registers every function and table on `conn`, each owning a reference to
/// `state`. On failure, whatever was registered is removed again (its
/// destructors run now, while the library is certainly loaded), and the
/// error is returned.
pub(crate) fn register_all(conn: &Connection, state: &Arc<ConnState>) -> Result<()> {
    let result = functions::FUNCTIONS
        .iter()
        .try_for_each(|spec| functions::register(conn, spec, state))
        .and_then(|()| {
            TABLES
                .iter()
                .try_for_each(|spec| vtab::register(conn, spec, state))
        });
    if result.is_err() {
        unregister_all(conn);
    }
    result
}

/// Removes every function and table of the extension from `conn`
/// (those not registered are skipped).
pub(crate) fn unregister_all(conn: &Connection) {
    for spec in functions::FUNCTIONS {
        for &arity in spec.arities {
            let _ = conn.remove_function(spec.name, arity);
        }
    }
    for spec in TABLES {
        vtab::unregister(conn, spec.name);
    }
}
