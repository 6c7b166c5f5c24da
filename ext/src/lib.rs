//! `sqlite-hybrid-ext`: a SQLite extension that gives every connection a
//! busy handler with jittered exponential backoff, and lock metrics tables.
//!
//! Two ways in, one code path:
//! * As a loadable extension (`make ext` → `dist/libhybrid.so`, built with
//!   the `loadable` feature): SQLite calls [`sqlite3_hybrid_init`], which
//!   registers the loading connection and every connection the process
//!   opens later (an auto-extension).
//! * As a Rust library: call [`register`] on a `rusqlite::Connection` (the
//!   `sqlite-hybrid` client crate does this for you).
//!
//! This file holds only the entry points and [`register`]; see `backoff.rs`
//! (policy), `metrics.rs` (counters), `handler.rs` (the busy callback) and
//! `sql/` (functions and tables).

pub mod backoff;
pub mod clock;
pub mod config;
pub mod handler;
pub mod handoff;
pub mod metrics;
pub mod shim;
pub mod sidefile;
pub mod sql;

use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use rusqlite::{Connection, ffi};

pub use backoff::{BackoffPolicy, Jitter};
pub use handler::ConnState;

/// Registers the extension on `conn`: installs the hybrid busy handler
/// (replacing any busy handler or `busy_timeout`) and adds the SQL functions
/// and tables. Calling it again on the same connection starts it afresh
/// with the default policy.
///
/// Returns the connection's state, through which Rust code can read and
/// change the policy and metrics without SQL.
///
/// ```
/// let conn = rusqlite::Connection::open_in_memory()?;
/// hybrid::register(&conn)?;
/// let version: String = conn.query_row("SELECT hybrid_version()", [], |r| r.get(0))?;
/// assert_eq!(version, env!("CARGO_PKG_VERSION"));
/// # Ok::<(), rusqlite::Error>(())
/// ```
pub fn register(conn: &Connection) -> rusqlite::Result<Arc<ConnState>> {
    let path = match conn.path() {
        Some(path) if !path.is_empty() => path.to_string(),
        _ => ":memory:".to_string(),
    };
    let state = ConnState::new(&path);
    // Functions first: they own the state. The handler goes in last, so a
    // failure half-way never leaves it pointing at a state nobody owns.
    sql::register_all(conn, &state)?;
    state.install(conn)?;
    // Futex mode where possible; backoff mode otherwise (never an error).
    state.enable_handoff(conn);
    Ok(state)
}

/// Makes SQLite call [`register`] on every connection this process opens
/// from now on (`sqlite3_auto_extension`). The loadable entry point does
/// this itself; Rust programs that open connections outside the client crate
/// can call it once at start-up.
pub fn register_auto_extension() -> rusqlite::Result<()> {
    // SAFETY: `auto_init` has the entry-point signature SQLite calls
    // auto-extensions with. The bundled bindings declare exactly that type;
    // the loadable bindings erase it to `void(*)(void)`, as sqlite3ext.h
    // does, so the transmute is to the same or to the erased type.
    #[allow(clippy::useless_transmute, clippy::missing_transmute_annotations)]
    let rc = unsafe {
        let entry: RawEntryPoint = auto_init;
        ffi::sqlite3_auto_extension(Some(std::mem::transmute(entry)))
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// The C signature of an extension entry point.
type RawEntryPoint = unsafe extern "C" fn(
    *mut ffi::sqlite3,
    *mut *mut c_char,
    *const ffi::sqlite3_api_routines,
) -> c_int;

/// The auto-extension: registers a newly opened connection.
unsafe extern "C" fn auto_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    _p_api: *const ffi::sqlite3_api_routines,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: SQLite passes the connection being opened; the wrapper
        // does not own it.
        match unsafe { Connection::from_handle(db) }.and_then(|conn| register(&conn)) {
            Ok(_) => ffi::SQLITE_OK,
            Err(err) => {
                // SAFETY: pz_err_msg comes from SQLite; the message is
                // allocated with sqlite3_malloc as SQLite requires.
                unsafe { set_error_message(pz_err_msg, &format!("hybrid: {err}")) };
                ffi::SQLITE_ERROR
            }
        }
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

/// Writes `message` into `*pz_err_msg` with `sqlite3_malloc`, as SQLite
/// expects of an extension entry point.
///
/// # Safety
/// `pz_err_msg` must be null or point to writable storage for one pointer;
/// the SQLite API must be usable (static build, or API table set).
unsafe fn set_error_message(pz_err_msg: *mut *mut c_char, message: &str) {
    if pz_err_msg.is_null() {
        return;
    }
    let bytes = message.as_bytes();
    // SAFETY: a fresh allocation of len + 1 bytes, filled and NUL-ended.
    unsafe {
        let buf = ffi::sqlite3_malloc(bytes.len() as c_int + 1) as *mut u8;
        if buf.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
        *buf.add(bytes.len()) = 0;
        *pz_err_msg = buf as *mut c_char;
    }
}

#[cfg(feature = "loadable")]
mod loadable {
    //! The loadable-extension entry point (only with the `loadable` feature).

    use std::ffi::{c_char, c_int};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicPtr, Ordering};

    use rusqlite::{Connection, ffi};

    /// The API table of the SQLite library that loaded us first. All SQLite
    /// calls of a loadable extension go through one process-wide table, so
    /// a second, different SQLite library in the same process (say Python's
    /// sqlite3 and apsw's own copy) must not replace it: the first
    /// library's connections would then call into the second.
    static HOST_API: AtomicPtr<ffi::sqlite3_api_routines> = AtomicPtr::new(std::ptr::null_mut());

    /// The entry point SQLite looks up for `libhybrid.so`
    /// (`sqlite3_` + `hybrid` + `_init`).
    ///
    /// Registers the loading connection, installs the auto-extension for
    /// every later connection, and returns `SQLITE_OK_LOAD_PERMANENTLY` so
    /// the library stays mapped while those callbacks exist.
    ///
    /// # Safety
    /// Called by SQLite with a valid connection and API table.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn sqlite3_hybrid_init(
        db: *mut ffi::sqlite3,
        pz_err_msg: *mut *mut c_char,
        p_api: *mut ffi::sqlite3_api_routines,
    ) -> c_int {
        catch_unwind(AssertUnwindSafe(|| {
            if p_api.is_null() {
                return ffi::SQLITE_ERROR;
            }
            if let Err(first) = HOST_API.compare_exchange(
                std::ptr::null_mut(),
                p_api,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                if first != p_api {
                    // SAFETY: p_api is the caller's valid API table; use its
                    // own malloc, since ours points at the other library.
                    unsafe {
                        set_error_with(
                            p_api,
                            pz_err_msg,
                            "libhybrid is already loaded into a different SQLite library in this \
                             process; load it into only one",
                        )
                    };
                    return ffi::SQLITE_ERROR;
                }
            }
            // SAFETY: arguments as SQLite passed them; `init` only registers.
            unsafe { Connection::extension_init2(db, pz_err_msg, p_api, init) }
        }))
        .unwrap_or(ffi::SQLITE_ERROR)
    }

    fn init(conn: Connection) -> rusqlite::Result<bool> {
        crate::register(&conn)?;
        crate::register_auto_extension()?;
        Ok(true)
    }

    /// Sets the error message using the API table's own `malloc`.
    ///
    /// # Safety
    /// `p_api` must be a valid API table; `pz_err_msg` null or writable.
    unsafe fn set_error_with(
        p_api: *mut ffi::sqlite3_api_routines,
        pz_err_msg: *mut *mut c_char,
        message: &str,
    ) {
        // SAFETY: per the function contract.
        let Some(malloc) = (unsafe { (*p_api).malloc }) else {
            return;
        };
        if pz_err_msg.is_null() {
            return;
        }
        let bytes = message.as_bytes();
        // SAFETY: a fresh allocation of len + 1 bytes, filled and NUL-ended.
        unsafe {
            let buf = malloc(bytes.len() as c_int + 1) as *mut u8;
            if buf.is_null() {
                return;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
            *buf.add(bytes.len()) = 0;
            *pz_err_msg = buf as *mut c_char;
        }
    }

    // The non-loadable stub below finds `malloc` by index; prove the index.
    const _: () = assert!(
        std::mem::offset_of!(ffi::sqlite3_api_routines, malloc)
            == super::API_MALLOC_INDEX * std::mem::size_of::<usize>()
    );
}

#[cfg(feature = "loadable")]
pub use loadable::sqlite3_hybrid_init;

/// Index of `malloc` in `sqlite3_api_routines` (stable: SQLite only appends
/// to that struct). Checked at compile time by the loadable build.
#[allow(dead_code)]
const API_MALLOC_INDEX: usize = 68;

/// Entry point of a build WITHOUT the `loadable` feature (what a plain
/// `cargo build` leaves in `target/`): it cannot work, because its SQLite
/// calls would go to the SQLite compiled into this library, not the host's.
/// It refuses with a message saying how to build the right one, instead of
/// SQLite's bare "undefined symbol".
///
/// # Safety
/// Called by SQLite with a valid API table.
#[cfg(not(feature = "loadable"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_hybrid_init(
    _db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *const ffi::sqlite3_api_routines,
) -> c_int {
    const MESSAGE: &str = "this libhybrid was built without the `loadable` feature and cannot be \
                           loaded; run `make ext` and load dist/libhybrid.so";
    if p_api.is_null() || pz_err_msg.is_null() {
        return ffi::SQLITE_ERROR;
    }
    type Malloc = Option<unsafe extern "C" fn(c_int) -> *mut std::ffi::c_void>;
    // SAFETY: the API table is an array of function pointers; entry
    // API_MALLOC_INDEX is `malloc` in every SQLite since 3.0.
    unsafe {
        let malloc = *(p_api as *const Malloc).add(API_MALLOC_INDEX);
        if let Some(malloc) = malloc {
            let buf = malloc(MESSAGE.len() as c_int + 1) as *mut u8;
            if !buf.is_null() {
                std::ptr::copy_nonoverlapping(MESSAGE.as_ptr(), buf, MESSAGE.len());
                *buf.add(MESSAGE.len()) = 0;
                *pz_err_msg = buf as *mut c_char;
            }
        }
    }
    ffi::SQLITE_ERROR
}
