//! How SQLite gets in: the loadable entry point `sqlite3_hybrid_init` (only
//! in the loadable build, `loadable/Cargo.toml`) and the auto-extension
//! that registers every later connection.
//!
//! # Rules (someone else's process)
//! * Nothing unwinds into SQLite: every entry runs under `catch_unwind`.
//! * A failed load leaves nothing that points into an unloaded library.
//!   SQLite unloads the library when the entry point fails, so every
//!   function, table, busy handler, file wrapper and auto-extension we put
//!   in is removed first. SQLite refuses to remove a function while any
//!   statement of the connection runs, so the library is also pinned in
//!   memory first (`RTLD_NODELETE`, as a successful load keeps it anyway):
//!   whatever could not be removed keeps working.
//! * Out of memory is reported as `SQLITE_NOMEM`, never as an abort: error
//!   messages are allocated with the host's `malloc` and simply left out
//!   when that fails (rusqlite's own entry glue aborts there).

use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::{Connection, ffi};

use crate::registration::register;
use crate::text::{Malloc, c_string_with, sqlite_malloc};

/// The C signature of an extension entry point.
type RawEntryPoint = unsafe extern "C" fn(
    *mut ffi::sqlite3,
    *mut *mut c_char,
    *const ffi::sqlite3_api_routines,
) -> c_int;

/// Writes `message` into `*pz_err_msg` with `malloc` (the host's), as
/// SQLite expects of an entry point. Out of memory: no message.
///
/// # Safety
/// `pz_err_msg` must be null or point to writable storage for one pointer;
/// `malloc` must be the host SQLite's allocator.
unsafe fn write_error(malloc: Malloc, pz_err_msg: *mut *mut c_char, message: &str) {
    if !pz_err_msg.is_null() {
        // SAFETY: per this function's contract.
        unsafe { *pz_err_msg = c_string_with(malloc, message) };
    }
}

/// Makes SQLite call [`register`] on every connection this process opens
/// from now on (`sqlite3_auto_extension`). The loadable entry point does
/// this itself; Rust programs that open connections outside the client
/// crate can call it once at start-up.
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

/// Removes the auto-extension (a load that failed after installing it).
#[cfg_attr(not(feature = "loadable"), allow(dead_code))]
fn cancel_auto_extension() {
    // SAFETY: as in `register_auto_extension`; cancelling an entry that is
    // not installed is a no-op.
    #[allow(clippy::useless_transmute, clippy::missing_transmute_annotations)]
    unsafe {
        let entry: RawEntryPoint = auto_init;
        ffi::sqlite3_cancel_auto_extension(Some(std::mem::transmute(entry)));
    }
}

/// The auto-extension: registers a newly opened connection. A failure fails
/// the open with its code (`SQLITE_NOMEM` when out of memory).
unsafe extern "C" fn auto_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    _p_api: *const ffi::sqlite3_api_routines,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: SQLite passes the connection being opened; the wrapper
        // does not own it.
        let registered = unsafe { Connection::from_handle(db) }.and_then(|conn| register(&conn));
        match registered {
            Ok(_) => ffi::SQLITE_OK,
            Err(error) => {
                // SAFETY: pz_err_msg comes from SQLite; allocated with its malloc.
                unsafe { write_error(sqlite_malloc, pz_err_msg, &format!("hybrid: {error}")) };
                crate::conn::error_code(&error)
            }
        }
    }))
    .unwrap_or(ffi::SQLITE_ERROR)
}

#[cfg(feature = "loadable")]
mod loadable {
    //! The loadable-extension entry point (only in the loadable build).

    use std::ffi::{c_char, c_int};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicPtr, Ordering};

    use rusqlite::{Connection, ffi};

    use super::{cancel_auto_extension, register_auto_extension, write_error};
    use crate::registration::{register, unregister};
    use crate::text::sqlite_malloc;

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
        if p_api.is_null() {
            return ffi::SQLITE_ERROR;
        }
        // SAFETY: p_api is the caller's valid API table.
        let Some(host_malloc) = (unsafe { (*p_api).malloc }) else {
            return ffi::SQLITE_ERROR;
        };
        catch_unwind(AssertUnwindSafe(|| {
            let first_api = HOST_API
                .compare_exchange(
                    std::ptr::null_mut(),
                    p_api,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .err();
            if first_api.is_some_and(|first| first != p_api) {
                // SAFETY: the caller's own malloc; ours points elsewhere.
                unsafe {
                    write_error(
                        host_malloc,
                        pz_err_msg,
                        "libhybrid is already loaded into a different SQLite library in this \
                         process; load it into only one",
                    )
                };
                return ffi::SQLITE_ERROR;
            }
            // SAFETY: p_api is valid; this sets the table every call uses.
            if let Err(error) = unsafe { ffi::rusqlite_extension_init2(p_api) } {
                // SAFETY: as above.
                unsafe {
                    write_error(
                        host_malloc,
                        pz_err_msg,
                        &format!("libhybrid cannot use this SQLite: {error}"),
                    )
                };
                return ffi::SQLITE_ERROR;
            }
            pin_library();
            // SAFETY: SQLite passes the loading connection; not owned.
            let conn = match unsafe { Connection::from_handle(db) } {
                Ok(conn) => conn,
                Err(_) => return ffi::SQLITE_ERROR,
            };
            init(&conn, pz_err_msg)
        }))
        .unwrap_or(ffi::SQLITE_ERROR)
    }

    /// Keeps this library mapped for the rest of the process, whatever
    /// SQLite does with its handle (`RTLD_NOLOAD | RTLD_NODELETE` on our own
    /// file, found through `dladdr`). Best effort: without it, a failed load
    /// is still cleaned up as far as SQLite allows. (Unix only: elsewhere
    /// the library stays loaded as long as SQLite keeps it.)
    #[cfg(unix)]
    fn pin_library() {
        // SAFETY: dladdr fills a Dl_info we own from the address of one of
        // our own functions; dlopen with RTLD_NOLOAD only looks up an
        // already loaded object (ours) and marks it never to be unloaded.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let here = sqlite3_hybrid_init as *const std::ffi::c_void;
            if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
                libc::dlopen(
                    info.dli_fname,
                    libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                );
            }
        }
    }

    #[cfg(not(unix))]
    fn pin_library() {}

    /// Registers `conn` and the auto-extension, all or nothing.
    fn init(conn: &Connection, pz_err_msg: *mut *mut c_char) -> c_int {
        let failed = |error: &rusqlite::Error| {
            // SAFETY: the API table is set; pz_err_msg is SQLite's.
            unsafe {
                write_error(sqlite_malloc, pz_err_msg, &format!("hybrid: {error}"));
            }
            crate::conn::error_code(error)
        };
        if let Err(error) = register(conn) {
            return failed(&error);
        }
        if let Err(error) = register_auto_extension() {
            cancel_auto_extension();
            unregister(conn);
            return failed(&error);
        }
        ffi::SQLITE_OK_LOAD_PERMANENTLY
    }
}

#[cfg(feature = "loadable")]
pub use loadable::sqlite3_hybrid_init;
