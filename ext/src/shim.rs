//! A thin wrapper around a connection's main database file that reports
//! every acquisition and release of the WAL write lock to `handoff.rs`,
//! and can refuse an attempt (to keep the queue's order).
//!
//! How: SQLite takes the write lock with `xShmLock(file, 0, 1,
//! SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE)` and releases it with
//! `SQLITE_SHM_UNLOCK`, through `file->pMethods`. At registration the file's
//! `pMethods` is pointed at a copy of its methods whose `xShmLock` and
//! `xClose` forward to the originals (one copy per original table, kept for
//! the life of the process). Unlike a VFS, this also covers the connection
//! that loaded the extension, which was opened before the extension existed.
//!
//! Only the write lock (slot 0, exclusive) is looked at; every other call
//! goes straight through. The observer is found by file address in
//! [`FILES`], removed in `xClose` before the original close runs, so a
//! reused address never reaches a stale observer. Observer calls are
//! wrapped in `catch_unwind`: on a panic the lock call proceeds as if the
//! wrapper were not there.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use rusqlite::ffi;

/// What the wrapper reports to (implemented by the connection state).
pub trait WriteLockObserver: Send + Sync {
    /// Before an attempt: false answers `SQLITE_BUSY` without trying.
    fn may_try_write_lock(&self) -> bool;
    /// The write lock was acquired.
    fn write_lock_acquired(&self);
    /// The write lock was released.
    fn write_lock_released(&self);
}

/// Our copy of a methods table, with the original it forwards to. The
/// methods must be the first field: `file->pMethods` points at it.
#[repr(C)]
struct Wrapper {
    methods: ffi::sqlite3_io_methods,
    original: *const ffi::sqlite3_io_methods,
}

/// Wrappers by original methods table (address); leaked, one per table.
static WRAPPERS: LazyLock<Mutex<HashMap<usize, usize>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
/// Observers by wrapped file (address).
static FILES: LazyLock<Mutex<HashMap<usize, Arc<dyn WriteLockObserver>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

thread_local! {
    /// Set when this thread's last write-lock attempt came back busy; read
    /// (and cleared) by the busy handler SQLite calls right after.
    static WRITE_LOCK_BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Whether the busy handler now running was caused by the write lock.
pub fn take_write_lock_busy() -> bool {
    WRITE_LOCK_BUSY.with(|flag| flag.replace(false))
}

const WRITE_LOCK: c_int = 0;
const LOCK_EXCLUSIVE: c_int = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
const UNLOCK_EXCLUSIVE: c_int = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;

/// Wraps the main database file of `db` and reports to `observer`.
/// Returns false (and changes nothing) when there is no file with shared
/// memory support (in-memory databases, old VFSes).
///
/// # Safety
/// `db` must be an open connection used by the calling thread.
pub unsafe fn attach(db: *mut ffi::sqlite3, observer: Arc<dyn WriteLockObserver>) -> bool {
    // SAFETY: per this function's contract.
    let Some(file) = (unsafe { main_file(db) }) else {
        return false;
    };
    // SAFETY: `file` is the open main database file of `db`.
    let methods = unsafe { (*file).pMethods };
    if methods.is_null() {
        return false;
    }
    let mut wrappers = WRAPPERS.lock();
    let already_wrapped = wrappers.values().any(|&w| w == methods as usize);
    if !already_wrapped {
        // SAFETY: `methods` points at the VFS's static methods table.
        let original = unsafe { *methods };
        if original.iVersion < 2 || original.xShmLock.is_none() || original.xClose.is_none() {
            return false;
        }
        let wrapper = *wrappers.entry(methods as usize).or_insert_with(|| {
            let mut copy = original;
            copy.xShmLock = Some(shm_lock);
            copy.xClose = Some(close);
            Box::into_raw(Box::new(Wrapper {
                methods: copy,
                original: methods,
            })) as usize
        });
        // SAFETY: a single pointer store on a file only this thread uses
        // now; the wrapper lives for the rest of the process.
        unsafe { (*file).pMethods = &(*(wrapper as *const Wrapper)).methods };
    }
    drop(wrappers);
    FILES.lock().insert(file as usize, observer);
    true
}

/// The main database file of `db` (`SQLITE_FCNTL_FILE_POINTER`).
///
/// # Safety
/// `db` must be an open connection used by the calling thread.
unsafe fn main_file(db: *mut ffi::sqlite3) -> Option<*mut ffi::sqlite3_file> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: FILE_POINTER writes the pager's sqlite3_file* into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr() as *const c_char,
            ffi::SQLITE_FCNTL_FILE_POINTER,
            &mut file as *mut _ as *mut c_void,
        )
    };
    (rc == ffi::SQLITE_OK && !file.is_null()).then_some(file)
}

/// The original methods of a wrapped file.
///
/// # Safety
/// `file->pMethods` must be one of our wrappers.
unsafe fn original(file: *mut ffi::sqlite3_file) -> *const ffi::sqlite3_io_methods {
    // SAFETY: per the contract, pMethods points at Wrapper.methods, the
    // first field of a live Wrapper.
    unsafe { (*((*file).pMethods as *const Wrapper)).original }
}

fn observer_of(file: *mut ffi::sqlite3_file) -> Option<Arc<dyn WriteLockObserver>> {
    FILES.lock().get(&(file as usize)).cloned()
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls us only through a wrapped file's pMethods.
    let Some(forward) = (unsafe { (*original(file)).xShmLock }) else {
        return ffi::SQLITE_IOERR;
    };
    if offset != WRITE_LOCK || n != 1 || (flags != LOCK_EXCLUSIVE && flags != UNLOCK_EXCLUSIVE) {
        // SAFETY: forwarding the call unchanged.
        return unsafe { forward(file, offset, n, flags) };
    }
    let observer = observer_of(file);
    if flags == LOCK_EXCLUSIVE {
        if let Some(o) = &observer {
            if !catch_unwind(AssertUnwindSafe(|| o.may_try_write_lock())).unwrap_or(true) {
                WRITE_LOCK_BUSY.with(|flag| flag.set(true));
                return ffi::SQLITE_BUSY;
            }
        }
        // SAFETY: forwarding the call unchanged.
        let rc = unsafe { forward(file, offset, n, flags) };
        match (rc, &observer) {
            (ffi::SQLITE_OK, observer) => {
                WRITE_LOCK_BUSY.with(|flag| flag.set(false));
                if let Some(o) = observer {
                    let _ = catch_unwind(AssertUnwindSafe(|| o.write_lock_acquired()));
                }
            }
            (ffi::SQLITE_BUSY, _) => WRITE_LOCK_BUSY.with(|flag| flag.set(true)),
            _ => {}
        }
        rc
    } else {
        // SAFETY: forwarding the call unchanged.
        let rc = unsafe { forward(file, offset, n, flags) };
        if let Some(o) = &observer {
            let _ = catch_unwind(AssertUnwindSafe(|| o.write_lock_released()));
        }
        rc
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    FILES.lock().remove(&(file as usize));
    // SAFETY: SQLite calls us only through a wrapped file's pMethods.
    match unsafe { (*original(file)).xClose } {
        // SAFETY: forwarding the call unchanged.
        Some(forward) => unsafe { forward(file) },
        None => ffi::SQLITE_OK,
    }
}
