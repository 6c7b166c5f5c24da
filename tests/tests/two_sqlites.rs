//! One process, two SQLite libraries: rusqlite's bundled 3.51 (static) and
//! Debian's libsqlite3.so.0 (3.40, dlopen'ed). The extension loads into the
//! first and refuses the second with an error instead of sending the first
//! library's calls through the second's API table.
//!
//! Kept in its own test binary: it loads the extension into this process.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use sqlite_hybrid_tests::ext_path;

type Open = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type EnableLoad = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type LoadExt =
    unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char, *mut *mut c_char) -> c_int;
type Close = unsafe extern "C" fn(*mut c_void) -> c_int;
type Free = unsafe extern "C" fn(*mut c_void);

#[test]
fn loads_into_newer_sqlite_and_refuses_a_second_library() {
    // 1. Into rusqlite's bundled SQLite (newer than the 3.34 bindings).
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let version: String = conn
        .query_row("SELECT sqlite_version()", [], |r| r.get(0))
        .unwrap();
    assert!(version.as_str() > "3.50", "bundled SQLite is {version}");
    // SAFETY: loading our own extension into our own connection.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(&conn).unwrap();
        conn.load_extension(ext_path().with_extension(""), None::<&str>)
            .unwrap();
    }
    let (name, policy): (String, String) = conn
        .query_row("SELECT hybrid_version(), hybrid_busy_config()", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(name, env!("CARGO_PKG_VERSION"));
    assert!(policy.contains("\"jitter\":\"full\""), "{policy}");
    // Connections opened later are registered by the auto-extension.
    let later = rusqlite::Connection::open_in_memory().unwrap();
    let n: i64 = later
        .query_row("SELECT count(*) FROM hybrid_lock_metrics", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 1);

    // 2. Into Debian's libsqlite3.so.0 in the same process: refused.
    // SAFETY: symbols looked up by their documented C signatures.
    unsafe {
        let lib = libloading::Library::new("libsqlite3.so.0").expect("Debian libsqlite3.so.0");
        let open: libloading::Symbol<Open> = lib.get(b"sqlite3_open\0").unwrap();
        let enable: libloading::Symbol<EnableLoad> =
            lib.get(b"sqlite3_enable_load_extension\0").unwrap();
        let load: libloading::Symbol<LoadExt> = lib.get(b"sqlite3_load_extension\0").unwrap();
        let close: libloading::Symbol<Close> = lib.get(b"sqlite3_close\0").unwrap();
        let free: libloading::Symbol<Free> = lib.get(b"sqlite3_free\0").unwrap();
        let mut db = std::ptr::null_mut();
        assert_eq!(open(c":memory:".as_ptr(), &mut db), 0);
        assert_eq!(enable(db, 1), 0);
        let path = CString::new(ext_path().to_str().unwrap()).unwrap();
        let mut err: *mut c_char = std::ptr::null_mut();
        let rc = load(db, path.as_ptr(), std::ptr::null(), &mut err);
        assert_ne!(rc, 0, "a second SQLite library must be refused");
        let message = CStr::from_ptr(err).to_string_lossy().into_owned();
        free(err as *mut c_void);
        assert!(message.contains("different SQLite library"), "{message}");
        assert_eq!(close(db), 0);
    }

    // 3. The first library still works after the refusal.
    let n: i64 = conn
        .query_row("SELECT count(*) FROM hybrid_lock_metrics", [], |r| r.get(0))
        .unwrap();
    assert!(n >= 1);
}
