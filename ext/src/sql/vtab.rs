//! The one piece of virtual-table glue every statistics table shares: a
//! read-only, eponymous table whose rows are computed in full when a query
//! starts (`xFilter`) and then read from memory.
//!
//! Every table here is small (one row per file, schema, waiter or event), so
//! a snapshot is cheap and gives each query a consistent view. A table is a
//! [`TableSpec`]: a name, a schema and a function computing its rows.
//!
//! Why not rusqlite's `vtab` module: its callbacks do not catch panics (a
//! panic unwinding out of an `extern "C"` callback aborts the host), and its
//! error paths allocate the message with `sqlite3_malloc` and abort the
//! process when that fails (out of memory). Here every callback runs under
//! `catch_unwind`, and a message that cannot be allocated is simply left
//! out: the error code still says what happened.

use std::ffi::{CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rusqlite::types::Value;
use rusqlite::{Connection, ffi};

use crate::conn::ConnState;
use crate::text::{c_string_with, sqlite_malloc};

/// One statistics table: its name, columns and rows.
pub(crate) struct TableSpec {
    /// The table's name in SQL.
    pub(crate) name: &'static str,
    /// `CREATE TABLE x(...)` declaring the columns (the name is ignored).
    pub(crate) schema: &'static str,
    /// All rows, each with one value per column, for a query on `conn`
    /// (called after the state's handler flag is refreshed).
    pub(crate) rows: fn(&Connection, &ConnState) -> rusqlite::Result<Vec<Vec<Value>>>,
}

/// What a module registration owns: the spec and the connection's state.
struct Aux {
    spec: &'static TableSpec,
    state: Arc<ConnState>,
}

/// The table instance SQLite holds per connection.
#[repr(C)]
struct Table {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab,
    db: *mut ffi::sqlite3,
    spec: &'static TableSpec,
    state: Arc<ConnState>,
}

/// A cursor over one snapshot.
#[repr(C)]
struct Cursor {
    /// Base class; must be first.
    base: ffi::sqlite3_vtab_cursor,
    rows: Vec<Vec<Value>>,
    row: usize,
}

/// Eponymous-only (no `xCreate`), read-only, version 1 methods.
static MODULE: ffi::sqlite3_module = ffi::sqlite3_module {
    iVersion: 1,
    xCreate: None,
    xConnect: Some(x_connect),
    xBestIndex: Some(x_best_index),
    xDisconnect: Some(x_disconnect),
    xDestroy: Some(x_disconnect),
    xOpen: Some(x_open),
    xClose: Some(x_close),
    xFilter: Some(x_filter),
    xNext: Some(x_next),
    xEof: Some(x_eof),
    xColumn: Some(x_column),
    xRowid: Some(x_rowid),
    // SAFETY: every remaining field is an optional function pointer (or
    // integer) for which all zeros means "absent".
    ..unsafe { std::mem::zeroed() }
};

/// Registers `spec` on `conn` as an eponymous-only table.
pub(crate) fn register(
    conn: &Connection,
    spec: &'static TableSpec,
    state: &Arc<ConnState>,
) -> rusqlite::Result<()> {
    let name = CString::new(spec.name).map_err(|_| rusqlite::Error::InvalidQuery)?;
    let aux = Box::into_raw(Box::new(Aux {
        spec,
        state: Arc::clone(state),
    }));
    // SAFETY: a static module; `aux` is freed by `destroy_aux`, which
    // SQLite calls when the module goes away or if this call fails.
    let rc = unsafe {
        ffi::sqlite3_create_module_v2(
            conn.handle(),
            name.as_ptr(),
            &MODULE,
            aux as *mut c_void,
            Some(destroy_aux),
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// Removes the table `name` from `conn` (its aux data is freed now).
pub(crate) fn unregister(conn: &Connection, name: &str) {
    let Ok(name) = CString::new(name) else {
        return;
    };
    // SAFETY: a null module removes the named one (SQLite's documented
    // behaviour since 3.?); ignored if it was not registered.
    unsafe {
        ffi::sqlite3_create_module_v2(
            conn.handle(),
            name.as_ptr(),
            std::ptr::null(),
            std::ptr::null_mut(),
            None,
        );
    }
}

unsafe extern "C" fn destroy_aux(aux: *mut c_void) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `aux` came from Box::into_raw in `register`.
        drop(unsafe { Box::from_raw(aux as *mut Aux) })
    }));
}

/// `message` as an `sqlite3_malloc`ed string, or null when out of memory.
fn sqlite_string(message: &str) -> *mut c_char {
    // SAFETY: SQLite frees these messages with sqlite3_free.
    unsafe { c_string_with(sqlite_malloc, message) }
}

/// The SQLite code for an error (`SQLITE_NOMEM` kept, the rest ERROR).
fn code_of(error: &rusqlite::Error) -> c_int {
    crate::conn::error_code(error)
}

/// Sets `vtab`'s error message (best effort) and returns the error's code.
///
/// # Safety
/// `vtab` must be a live table.
unsafe fn fail(vtab: *mut ffi::sqlite3_vtab, error: &rusqlite::Error, what: &str) -> c_int {
    // SAFETY: per the contract; the previous message belongs to SQLite.
    unsafe {
        ffi::sqlite3_free((*vtab).zErrMsg as *mut c_void);
        (*vtab).zErrMsg = sqlite_string(&format!("{what}: {error}"));
    }
    code_of(error)
}

unsafe extern "C" fn x_connect(
    db: *mut ffi::sqlite3,
    aux: *mut c_void,
    _argc: c_int,
    _argv: *const *const c_char,
    pp_vtab: *mut *mut ffi::sqlite3_vtab,
    pz_err: *mut *mut c_char,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: SQLite passes the aux pointer given at registration.
        let aux = unsafe { &*(aux as *const Aux) };
        let Ok(schema) = CString::new(aux.spec.schema) else {
            return ffi::SQLITE_ERROR;
        };
        // SAFETY: declaring the schema of the table being connected.
        let rc = unsafe { ffi::sqlite3_declare_vtab(db, schema.as_ptr()) };
        if rc != ffi::SQLITE_OK {
            if !pz_err.is_null() {
                // SAFETY: pz_err is SQLite's out-pointer for a message.
                unsafe { *pz_err = sqlite_string(&format!("{}: bad schema", aux.spec.name)) };
            }
            return rc;
        }
        let table = Box::new(Table {
            // SAFETY: all zeros is the documented initial sqlite3_vtab.
            base: unsafe { std::mem::zeroed() },
            db,
            spec: aux.spec,
            state: Arc::clone(&aux.state),
        });
        // SAFETY: SQLite's out-pointer; freed in x_disconnect.
        unsafe { *pp_vtab = Box::into_raw(table) as *mut ffi::sqlite3_vtab };
        ffi::SQLITE_OK
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

unsafe extern "C" fn x_best_index(
    _vtab: *mut ffi::sqlite3_vtab,
    info: *mut ffi::sqlite3_index_info,
) -> c_int {
    // Full scan of a small in-memory snapshot; SQLite filters the rest.
    // SAFETY: SQLite passes a valid index-info struct.
    unsafe { (*info).estimatedCost = 1000.0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_disconnect(vtab: *mut ffi::sqlite3_vtab) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in x_connect.
        drop(unsafe { Box::from_raw(vtab as *mut Table) })
    }));
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_open(
    _vtab: *mut ffi::sqlite3_vtab,
    pp_cursor: *mut *mut ffi::sqlite3_vtab_cursor,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        let cursor = Box::new(Cursor {
            // SAFETY: all zeros is the documented initial cursor.
            base: unsafe { std::mem::zeroed() },
            rows: Vec::new(),
            row: 0,
        });
        // SAFETY: SQLite's out-pointer; freed in x_close.
        unsafe { *pp_cursor = Box::into_raw(cursor) as *mut ffi::sqlite3_vtab_cursor };
        ffi::SQLITE_OK
    }))
    .unwrap_or(ffi::SQLITE_NOMEM)
}

unsafe extern "C" fn x_close(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by Box::into_raw in x_open.
        drop(unsafe { Box::from_raw(cursor as *mut Cursor) })
    }));
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_filter(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    _idx_num: c_int,
    _idx_str: *const c_char,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) -> c_int {
    // SAFETY: SQLite passes one of our cursors, whose pVtab is our table.
    let (cursor, vtab) = unsafe { (&mut *(cursor as *mut Cursor), (*cursor).pVtab) };
    // SAFETY: as above.
    let table = unsafe { &*(vtab as *const Table) };
    let computed = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the table's own connection, used on its own thread during
        // this query; the wrapper does not close it on drop.
        let conn = unsafe { Connection::from_handle(table.db) }?;
        // Every table shows our own connection's handler as it is now.
        table.state.refresh(&conn)?;
        (table.spec.rows)(&conn, &table.state)
    }));
    match computed {
        Ok(Ok(rows)) => {
            cursor.rows = rows;
            cursor.row = 0;
            ffi::SQLITE_OK
        }
        // SAFETY: `vtab` is live while its cursor is.
        Ok(Err(error)) => unsafe { fail(vtab, &error, table.spec.name) },
        Err(_) => {
            let error = rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some("internal error".into()),
            );
            // SAFETY: as above.
            unsafe { fail(vtab, &error, table.spec.name) }
        }
    }
}

unsafe extern "C" fn x_next(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: one of our cursors.
    let cursor = unsafe { &mut *(cursor as *mut Cursor) };
    cursor.row += 1;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_eof(cursor: *mut ffi::sqlite3_vtab_cursor) -> c_int {
    // SAFETY: one of our cursors.
    let cursor = unsafe { &*(cursor as *const Cursor) };
    c_int::from(cursor.row >= cursor.rows.len())
}

unsafe extern "C" fn x_column(
    cursor: *mut ffi::sqlite3_vtab_cursor,
    ctx: *mut ffi::sqlite3_context,
    column: c_int,
) -> c_int {
    // SAFETY: one of our cursors.
    let cursor = unsafe { &*(cursor as *const Cursor) };
    let value = usize::try_from(column)
        .ok()
        .and_then(|c| cursor.rows.get(cursor.row)?.get(c))
        .unwrap_or(&Value::Null);
    // SAFETY: `ctx` is SQLite's result context for this column; text and
    // blobs are copied (SQLITE_TRANSIENT), and an allocation failure is
    // recorded by SQLite as SQLITE_NOMEM on the context.
    unsafe {
        match value {
            Value::Null => ffi::sqlite3_result_null(ctx),
            Value::Integer(i) => ffi::sqlite3_result_int64(ctx, *i),
            Value::Real(r) => ffi::sqlite3_result_double(ctx, *r),
            Value::Text(t) => ffi::sqlite3_result_text64(
                ctx,
                t.as_ptr() as *const c_char,
                t.len() as ffi::sqlite3_uint64,
                ffi::SQLITE_TRANSIENT(),
                ffi::SQLITE_UTF8 as u8,
            ),
            Value::Blob(b) => ffi::sqlite3_result_blob64(
                ctx,
                b.as_ptr() as *const c_void,
                b.len() as ffi::sqlite3_uint64,
                ffi::SQLITE_TRANSIENT(),
            ),
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_rowid(cursor: *mut ffi::sqlite3_vtab_cursor, rowid: *mut i64) -> c_int {
    // SAFETY: one of our cursors; `rowid` is SQLite's out-pointer.
    unsafe { *rowid = (*(cursor as *const Cursor)).row as i64 + 1 };
    ffi::SQLITE_OK
}

/// `Some(x)` as a real, `None` as NULL.
pub(crate) fn real_or_null(value: Option<f64>) -> Value {
    value.map_or(Value::Null, Value::Real)
}

/// A u64 counter as an SQLite integer (saturating at i64::MAX).
pub(crate) fn integer(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}
