//! Everything the extension adds to SQL: functions (one declarative table in
//! `functions.rs`) and eponymous tables (one file each, sharing the glue in
//! `vtab.rs`). [`register_all`] wires them to a connection, all or nothing.

pub(crate) mod functions;
pub(crate) mod health;
pub(crate) mod lock_events;
pub(crate) mod lock_holder;
pub(crate) mod lock_metrics;
pub(crate) mod lock_waiters;
pub(crate) mod side_files;
pub(crate) mod tune;
pub(crate) mod vtab;

use std::sync::Arc;

use rusqlite::{Connection, Result};

use crate::conn::ConnState;
use vtab::TableSpec;

/// Every table the extension adds.
const TABLES: [&TableSpec; 5] = [
    &lock_metrics::TABLE,
    &lock_events::TABLE,
    &lock_waiters::TABLE,
    &lock_holder::TABLE,
    &health::TABLE,
];

/// Registers every function and table on `conn`, each owning a reference to
/// `state`. All or nothing: on failure, what this call registered is
/// removed again (its destructors run now, while the library is certainly
/// loaded) and the error is returned. Functions of the same names that were
/// there before and were not replaced stay.
pub(crate) fn register_all(conn: &Connection, state: &Arc<ConnState>) -> Result<()> {
    let mut functions_done: Vec<(&str, i32)> = Vec::new();
    let mut tables_done: Vec<&str> = Vec::new();
    let result = (|| {
        for spec in functions::FUNCTIONS {
            for &arity in spec.arities {
                functions::register(conn, spec, arity, state)?;
                functions_done.push((spec.name, arity));
            }
        }
        for spec in TABLES {
            vtab::register(conn, spec, state)?;
            tables_done.push(spec.name);
        }
        Ok(())
    })();
    if result.is_err() {
        for (name, arity) in functions_done {
            let _ = conn.remove_function(name, arity);
        }
        for name in tables_done {
            vtab::unregister(conn, name);
        }
    }
    result
}

/// Removes every function and table of the extension from `conn` (a load
/// that failed after registering all of them).
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
