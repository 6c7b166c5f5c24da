//! Issue 19, item 3: a load that fails half-way leaves nothing behind
//! (SQLite unloads the library, so nothing may point into it), and out of
//! memory inside the extension is `SQLITE_NOMEM`, never an abort.
//!
//! Kept in its own test binary: it replaces SQLite's allocator (before
//! SQLite initialises) and loads the extension into this process.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use rusqlite::{Connection, ErrorCode, ffi};
use sqlite_hybrid_tests::{ext_load_arg, run_python};

#[test]
fn a_load_that_fails_half_way_leaves_nothing_behind() {
    let out = run_python("failed_load.py", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the host survived: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("load failed:"), "{stdout}");
    assert!(stdout.contains("mine still mine"), "{stdout}");
    assert!(
        stdout.contains("no hybrid_version:")
            || stdout.contains(&format!("hybrid_version {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("closed"), "{stdout}");
}

/// Allocations until the next one fails (negative: never fail).
static FAIL_IN: AtomicI64 = AtomicI64::new(-1);
/// Failures injected so far.
static INJECTED: AtomicU64 = AtomicU64::new(0);

// SQLite's allocator contract: xMalloc/xRealloc may return null; xSize
// reports the size of a live allocation. A size header before each block
// serves xSize.
const HEADER: usize = 16;

fn should_fail() -> bool {
    match FAIL_IN.load(Ordering::SeqCst) {
        n if n < 0 => false,
        0 => {
            FAIL_IN.store(-1, Ordering::SeqCst); // fail once
            INJECTED.fetch_add(1, Ordering::SeqCst);
            true
        }
        n => {
            FAIL_IN.store(n - 1, Ordering::SeqCst);
            false
        }
    }
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    if should_fail() || n < 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: a plain allocation with room for the size header.
    unsafe {
        let p = libc::malloc(n as usize + HEADER) as *mut u8;
        if p.is_null() {
            return p as *mut c_void;
        }
        *(p as *mut usize) = n as usize;
        p.add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` came from x_malloc/x_realloc.
        unsafe { libc::free((p as *mut u8).sub(HEADER) as *mut c_void) };
    }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    if should_fail() || n < 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` came from x_malloc/x_realloc (SQLite never passes null).
    unsafe {
        let base = libc::realloc(
            (p as *mut u8).sub(HEADER) as *mut c_void,
            n as usize + HEADER,
        ) as *mut u8;
        if base.is_null() {
            return std::ptr::null_mut();
        }
        *(base as *mut usize) = n as usize;
        base.add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    // SAFETY: `p` came from x_malloc/x_realloc.
    unsafe { *((p as *mut u8).sub(HEADER) as *const usize) as c_int }
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    (n + 7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

fn code_of(error: &rusqlite::Error) -> Option<ErrorCode> {
    match error {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.code),
        _ => None,
    }
}

/// Loads the extension with the C API directly: rusqlite's
/// `load_extension` reads the error message without checking for null,
/// which SQLite returns when it is itself out of memory.
fn load(conn: &Connection) -> rusqlite::Result<()> {
    let path = std::ffi::CString::new(ext_load_arg()).unwrap();
    let mut message: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: our own open connection; SQLite allocates `message` (or not).
    let rc = unsafe {
        ffi::sqlite3_enable_load_extension(conn.handle(), 1);
        let rc = ffi::sqlite3_load_extension(
            conn.handle(),
            path.as_ptr(),
            std::ptr::null(),
            &mut message,
        );
        ffi::sqlite3_enable_load_extension(conn.handle(), 0);
        ffi::sqlite3_free(message as *mut c_void);
        rc
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

#[test]
fn out_of_memory_is_sqlite_nomem_never_an_abort() {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(x_malloc),
        xFree: Some(x_free),
        xRealloc: Some(x_realloc),
        xSize: Some(x_size),
        xRoundup: Some(x_roundup),
        xInit: Some(x_init),
        xShutdown: Some(x_shutdown),
        pAppData: std::ptr::null_mut(),
    };
    // SAFETY: before SQLite is initialised in this process (this binary's
    // only test that touches SQLite); SQLite copies the struct.
    unsafe {
        assert_eq!(
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods),
            ffi::SQLITE_OK
        );
        assert_eq!(ffi::sqlite3_initialize(), ffi::SQLITE_OK);
    }
    // 1. Fail each allocation of open + load + first use in turn.
    let mut loaded = false;
    for n in 0..4000 {
        FAIL_IN.store(n, Ordering::SeqCst);
        let before = INJECTED.load(Ordering::SeqCst);
        let result = Connection::open_in_memory().and_then(|conn| {
            load(&conn)?;
            conn.query_row("SELECT count(*) FROM hybrid_lock_metrics", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(conn)
        });
        FAIL_IN.store(-1, Ordering::SeqCst);
        match result {
            Ok(_) if INJECTED.load(Ordering::SeqCst) == before => {
                loaded = true; // no allocation left to fail: done
                break;
            }
            Ok(_) => {}
            Err(error) => {
                let code = code_of(&error);
                assert!(
                    matches!(
                        code,
                        Some(ErrorCode::OutOfMemory) | Some(ErrorCode::Unknown)
                    ),
                    "allocation {n}: {error:?}"
                );
            }
        }
    }
    assert!(loaded, "the load succeeded once nothing failed");
    // 2. Now the auto-extension registers every new connection: an
    //    allocation failure while it does must fail the open with NOMEM.
    let mut saw_nomem = false;
    for n in 0..400 {
        FAIL_IN.store(n, Ordering::SeqCst);
        let before = INJECTED.load(Ordering::SeqCst);
        let result = Connection::open_in_memory();
        FAIL_IN.store(-1, Ordering::SeqCst);
        match result {
            Ok(conn) => {
                if INJECTED.load(Ordering::SeqCst) == before {
                    break;
                }
                // Registered or not, it works and closes cleanly.
                let _ = conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0));
            }
            Err(error) => {
                assert_eq!(
                    code_of(&error),
                    Some(ErrorCode::OutOfMemory),
                    "open with allocation {n} failing: {error:?}"
                );
                saw_nomem = true;
            }
        }
    }
    assert!(saw_nomem, "some opens failed under fault injection");
    let conn = Connection::open_in_memory().unwrap();
    let version: String = conn
        .query_row("SELECT hybrid_version()", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}
