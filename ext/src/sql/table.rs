//! A read-only, eponymous virtual table whose rows are computed in full when
//! a query starts (`xFilter`) and then read from memory.
//!
//! Every metrics table is small (one row per file, schema or event), so a
//! snapshot is cheap and gives each query a consistent view. Each table is a
//! [`RowSource`]; this file holds the one piece of vtab glue they share.
//!
//! rusqlite's vtab callbacks do not catch panics, and a panic unwinding out
//! of an `extern "C"` callback aborts the host process. So every method that
//! runs our code goes through [`guarded`], which turns a panic into an
//! SQLite error.

use std::ffi::c_int;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::vtab::{
    Context, Filters, IndexInfo, VTab, VTabConnection, VTabCursor, eponymous_only_module,
};
use rusqlite::{Connection, Error, Result, ffi};

use crate::handler::ConnState;

/// One metrics table: its columns and how to compute its rows.
pub trait RowSource: 'static {
    /// The table's name in SQL.
    const NAME: &'static str;
    /// `CREATE TABLE x(...)` declaring the columns (the name is ignored).
    const SCHEMA: &'static str;
    /// All rows, each with one value per column, for a query on `conn`.
    fn rows(conn: &Connection, state: &ConnState) -> Result<Vec<Vec<Value>>>;
}

/// Registers `S` on `conn` as an eponymous-only table named `S::NAME`.
pub fn register<S: RowSource>(conn: &Connection, state: &Arc<ConnState>) -> Result<()> {
    conn.create_module(
        S::NAME,
        eponymous_only_module::<SnapshotTable<S>>(),
        Some(Arc::clone(state)),
    )
}

/// Runs `body`, turning a panic into an SQLite error that names `what`.
pub fn guarded<T>(what: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::ModuleError(format!(
            "hybrid: internal error in {what}: {detail}"
        )))
    })
}

/// The table instance SQLite holds per connection.
#[repr(C)]
pub struct SnapshotTable<S: RowSource> {
    /// Base class; must be first (rusqlite's vtab contract).
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    state: Arc<ConnState>,
    source: PhantomData<S>,
}

// SAFETY: `SnapshotTable` is #[repr(C)] with `sqlite3_vtab` first, as the
// trait requires.
unsafe impl<'vtab, S: RowSource> VTab<'vtab> for SnapshotTable<S> {
    type Aux = Arc<ConnState>;
    type Cursor = SnapshotCursor<S>;

    fn connect(
        db: &mut VTabConnection,
        aux: Option<&Arc<ConnState>>,
        _args: &[&[u8]],
    ) -> Result<(String, Self)> {
        guarded(S::NAME, || {
            let state = aux.cloned().ok_or_else(|| {
                Error::ModuleError(format!("{}: registered without connection state", S::NAME))
            })?;
            // SAFETY: the handle of the connection declaring this table; it
            // outlives the table, which SQLite drops before closing.
            let db = unsafe { db.handle() };
            let table = SnapshotTable {
                base: ffi::sqlite3_vtab::default(),
                db,
                state,
                source: PhantomData,
            };
            Ok((S::SCHEMA.to_string(), table))
        })
    }

    fn best_index(&self, info: &mut IndexInfo) -> Result<()> {
        // Full scan of a small in-memory snapshot; SQLite filters the rest.
        info.set_estimated_cost(1000.0);
        Ok(())
    }

    fn open(&'vtab mut self) -> Result<SnapshotCursor<S>> {
        Ok(SnapshotCursor {
            base: ffi::sqlite3_vtab_cursor::default(),
            db: self.db,
            state: Arc::clone(&self.state),
            rows: Vec::new(),
            row: 0,
            source: PhantomData,
        })
    }
}

/// A cursor over one snapshot.
#[repr(C)]
pub struct SnapshotCursor<S: RowSource> {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab_cursor,
    db: *mut ffi::sqlite3,
    state: Arc<ConnState>,
    rows: Vec<Vec<Value>>,
    row: usize,
    source: PhantomData<S>,
}

// SAFETY: #[repr(C)] with `sqlite3_vtab_cursor` first.
unsafe impl<S: RowSource> VTabCursor for SnapshotCursor<S> {
    fn filter(
        &mut self,
        _idx_num: c_int,
        _idx_str: Option<&str>,
        _args: &Filters<'_>,
    ) -> Result<()> {
        guarded(S::NAME, || {
            // SAFETY: the table's own connection, used on its own thread
            // during this query; the wrapper does not close it on drop.
            let conn = unsafe { Connection::from_handle(self.db) }?;
            self.rows = S::rows(&conn, &self.state)?;
            self.row = 0;
            Ok(())
        })
    }

    fn next(&mut self) -> Result<()> {
        self.row += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.row >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, column: c_int) -> Result<()> {
        let value = usize::try_from(column)
            .ok()
            .and_then(|c| self.rows.get(self.row)?.get(c))
            .unwrap_or(&Value::Null);
        ctx.set_result(value)
    }

    fn rowid(&self) -> Result<i64> {
        Ok(self.row as i64 + 1)
    }
}

/// `Some(x)` as a real, `None` as NULL.
pub fn real_or_null(value: Option<f64>) -> Value {
    value.map_or(Value::Null, Value::Real)
}

/// A u64 counter as an SQLite integer (saturating at i64::MAX).
pub fn integer(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}
