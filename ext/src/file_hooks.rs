//! A thin wrapper around one connection's main database file that reports
//! every attempt at, acquisition and release of the WAL write lock.
//!
//! How: SQLite takes the write lock with `xShmLock(file, 0, 1,
//! SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE)` and releases it with
//! `SQLITE_SHM_UNLOCK`, through `file->pMethods`. [`attach`] points that
//! file's `pMethods` at a [`Wrapper`] of its own: a copy of the original
//! methods (as many as the original's `iVersion` has) whose `xShmLock` and
//! `xClose` are ours. Unlike a VFS, this also covers the connection that
//! loaded the extension, which was opened before the extension existed.
//!
//! # Rules that keep the host safe
//! * **One wrapper per file, freed with it.** A wrapper is never shared or
//!   cached by address: a VFS may allocate a methods table per file and
//!   free it in its `xClose` (SQLite's `testvfs` does), so a freed address
//!   can come back as another VFS's table.
//! * **The VFS gets its own `pMethods` back before `xClose`.** Our `xClose`
//!   restores the original pointer, then forwards, then frees the wrapper:
//!   a VFS that frees `pMethods` frees what it allocated.
//! * **Only the methods the original has are copied** (`iVersion` 1, 2 or
//!   3): reading beyond a shorter table would read someone else's memory.
//! * Only the write lock (slot 0, exclusive) is looked at; every other call
//!   goes straight through. Observer calls run under `catch_unwind`: on a
//!   panic the lock call proceeds as if the wrapper were not there.
//!
//! # Asking SQLite from inside a lock call ([`TxnProbe`])
//! The observer may ask for the owning connection's transaction state on
//! the main database (`sqlite3_txn_state`), which tells a caller-visible
//! `SQLITE_BUSY*` from one a busy handler will see. SQLite calls `xShmLock`
//! with that connection's mutex held, so the question is asked only:
//! * when the file is not shared with another connection (shared cache):
//!   a peer's lock call would be attributed to the owner, and asking could
//!   wait for the owner's mutex while the owner waits for the peer's
//!   (a deadlock). A shared file is recognised at registration
//!   (`SQLITE_DBSTATUS_CACHE_USED_SHARED` differs from `CACHE_USED` when
//!   several connections share the pager) or when a second connection
//!   registers on it; the answer is then "unknown", never a guess;
//! * with the owner's mutex taken by `sqlite3_mutex_try` (recursive: it
//!   succeeds on the thread inside the call, and fails rather than blocks
//!   anywhere else);
//! * never after the owner is gone: a file that is not shared is closed
//!   (and its wrapper freed) by its owner's `sqlite3_close`.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::{Mutex, RwLock};
use rusqlite::ffi;

/// Addresses of the wrappers alive now: how we recognise a file we wrapped
/// (an address leaves the set before its wrapper is freed, so it never
/// names a stale one).
static LIVE_WRAPPERS: LazyLock<Mutex<HashSet<usize>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// What the wrapper reports to (the connection's lock hooks).
pub(crate) trait LockObserver: Send + Sync {
    /// The file's shared memory is in use: the database is in WAL mode.
    fn wal_in_use(&self);
    /// Before an attempt at the write lock (may sleep briefly; never
    /// refuses).
    fn before_write_lock(&self);
    /// The attempt returned `rc` (`SQLITE_OK`: acquired); `probe` answers
    /// what transaction the owning connection is in.
    fn write_lock_result(&self, rc: c_int, probe: &TxnProbe<'_>);
    /// The write lock was released.
    fn write_lock_released(&self, probe: &TxnProbe<'_>);
}

/// The owning connection's transaction on its main database, as
/// `sqlite3_txn_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    None,
    Read,
    Write,
}

/// Asks the owning connection of a wrapped file for its transaction state,
/// from inside one of its lock calls (see the module's rules).
pub(crate) struct TxnProbe<'a> {
    wrapper: &'a Wrapper,
}

impl TxnProbe<'_> {
    /// The owner's transaction state on `main`; `None` when it cannot be
    /// known safely (a shared file, the owner's mutex held elsewhere, an
    /// error).
    pub(crate) fn main_txn_state(&self) -> Option<TxnState> {
        if self.wrapper.shared.load(Ordering::Relaxed) {
            return None;
        }
        let mutex = self.wrapper.db_mutex as *mut ffi::sqlite3_mutex;
        // SAFETY: the owner's mutex (or null: no mutexes, and try answers
        // SQLITE_OK); the owner is open while its unshared file is.
        if unsafe { ffi::sqlite3_mutex_try(mutex) } != ffi::SQLITE_OK {
            return None;
        }
        // SAFETY: the owner is open (above) and its mutex is ours now.
        let state = unsafe {
            ffi::sqlite3_txn_state(
                self.wrapper.owner as *mut ffi::sqlite3,
                c"main".as_ptr() as *const c_char,
            )
        };
        // SAFETY: taken by sqlite3_mutex_try above.
        unsafe { ffi::sqlite3_mutex_leave(mutex) };
        match state {
            ffi::SQLITE_TXN_NONE => Some(TxnState::None),
            ffi::SQLITE_TXN_READ => Some(TxnState::Read),
            ffi::SQLITE_TXN_WRITE => Some(TxnState::Write),
            _ => None,
        }
    }
}

/// Our methods table for one file, with what it forwards to. The methods
/// must be the first field: `file->pMethods` points at it.
#[repr(C)]
struct Wrapper {
    methods: ffi::sqlite3_io_methods,
    original: *const ffi::sqlite3_io_methods,
    /// The connection that attached it: registering that connection again
    /// replaces the observer, a shared-cache peer leaves it alone.
    owner: usize,
    /// Behind a lock only so a re-registration can swap it; every reader
    /// is a shared (uncontended) read.
    observer: RwLock<Arc<dyn LockObserver>>,
    /// The owner's `sqlite3_db_mutex` (null without mutexes).
    db_mutex: usize,
    /// Another connection uses this file (shared cache): [`TxnProbe`]
    /// answers nothing.
    shared: AtomicBool,
}

const WRITE_LOCK: c_int = 0;
const LOCK_EXCLUSIVE: c_int = ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE;
const UNLOCK_EXCLUSIVE: c_int = ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE;

/// Wraps the main database file of `db` and reports to `observer`; if
/// `db` wrapped it already (the connection is registered again), the new
/// observer replaces the old one. Returns false (and changes nothing) when
/// there is no file with shared memory support (in-memory databases, VFSes
/// without `xShmLock`), or when another connection wrapped the file (a
/// shared-cache connection shares its peer's file).
///
/// # Safety
/// `db` must be an open connection used by the calling thread.
pub(crate) unsafe fn attach(db: *mut ffi::sqlite3, observer: Arc<dyn LockObserver>) -> bool {
    // SAFETY: per this function's contract.
    let Some((file, wrapped)) = (unsafe { main_file_and_wrapper(db) }) else {
        return false;
    };
    if let Some(wrapper) = wrapped {
        if wrapper.owner != db as usize {
            // A shared-cache peer's: from now on the owner's transaction
            // state says nothing about who calls.
            wrapper.shared.store(true, Ordering::Relaxed);
            return false;
        }
        *wrapper.observer.write() = observer;
        return true;
    }
    // SAFETY: `file` is the open main database file of `db`.
    let methods = unsafe { (*file).pMethods };
    if methods.is_null() {
        return false;
    }
    // SAFETY: `iVersion` exists in every table.
    let version = unsafe { (*methods).iVersion };
    if version < 2 {
        return false;
    }
    // SAFETY: version >= 2, so the table has the shared-memory methods.
    if unsafe { (*methods).xShmLock }.is_none() {
        return false;
    }
    // SAFETY: copies exactly the fields a table of this version has.
    let mut copy = unsafe { copy_methods(methods, version) };
    copy.xShmLock = Some(shm_lock);
    copy.xClose = Some(close);
    // SAFETY: per this function's contract.
    let (db_mutex, shared) = unsafe { (ffi::sqlite3_db_mutex(db), shares_pager(db)) };
    let wrapper = Box::into_raw(Box::new(Wrapper {
        methods: copy,
        original: methods,
        owner: db as usize,
        observer: RwLock::new(observer),
        db_mutex: db_mutex as usize,
        shared: AtomicBool::new(shared),
    }));
    LIVE_WRAPPERS.lock().insert(wrapper as usize);
    // SAFETY: a single pointer store on a file only this thread uses now;
    // the wrapper lives until our xClose (or `detach`) frees it.
    unsafe { (*file).pMethods = &(*wrapper).methods };
    true
}

/// Whether another connection shares `db`'s pager (shared cache): the
/// cache memory SQLite charges to `db` is then divided among them, and
/// `SQLITE_DBSTATUS_CACHE_USED_SHARED` differs from `CACHE_USED` (the pager
/// itself is always counted, so it never reads 0 for an open file). When
/// the answer cannot be had, the file counts as shared (nothing guessed).
///
/// # Safety
/// `db` must be an open connection used by the calling thread.
unsafe fn shares_pager(db: *mut ffi::sqlite3) -> bool {
    let status = |op: c_int| {
        let (mut current, mut highwater) = (0, 0);
        // SAFETY: per this function's contract; both out-pointers are ours.
        let rc = unsafe { ffi::sqlite3_db_status(db, op, &mut current, &mut highwater, 0) };
        (rc == ffi::SQLITE_OK).then_some(current)
    };
    match (
        status(ffi::SQLITE_DBSTATUS_CACHE_USED),
        status(ffi::SQLITE_DBSTATUS_CACHE_USED_SHARED),
    ) {
        (Some(used), Some(shared)) => used != shared,
        _ => true,
    }
}

/// Whether `db`'s main file is wrapped by `db` itself and reports to
/// `observer` (the same object, not an equal one).
///
/// # Safety
/// `db` must be an open connection used by the calling thread.
pub(crate) unsafe fn observed_by(db: *mut ffi::sqlite3, observer: &Arc<dyn LockObserver>) -> bool {
    // SAFETY: per this function's contract.
    let Some((_, Some(wrapper))) = (unsafe { main_file_and_wrapper(db) }) else {
        return false;
    };
    let current = Arc::as_ptr(&wrapper.observer.read()) as *const ();
    wrapper.owner == db as usize && current == Arc::as_ptr(observer) as *const ()
}

/// Undoes [`attach`] on `db`'s main file, if it is wrapped (used when
/// loading the extension fails after the wrapper went in).
///
/// # Safety
/// `db` must be an open connection used by the calling thread, with no
/// statement running.
#[cfg_attr(not(feature = "loadable"), allow(dead_code))]
pub(crate) unsafe fn detach(db: *mut ffi::sqlite3) {
    // SAFETY: per this function's contract.
    let Some(file) = (unsafe { main_file(db) }) else {
        return;
    };
    // SAFETY: an open file.
    let methods = unsafe { (*file).pMethods };
    if !LIVE_WRAPPERS.lock().remove(&(methods as usize)) {
        return; // not ours
    }
    // SAFETY: one of our live wrappers, made by Box::into_raw in `attach`.
    unsafe {
        let wrapper = methods as *mut Wrapper;
        (*file).pMethods = (*wrapper).original;
        drop(Box::from_raw(wrapper));
    }
}

/// A copy of `methods` holding only the fields of its `version` (1 to 3),
/// the rest zero.
///
/// # Safety
/// `methods` must point at a methods table of at least `version`.
unsafe fn copy_methods(
    methods: *const ffi::sqlite3_io_methods,
    version: c_int,
) -> ffi::sqlite3_io_methods {
    // SAFETY: all-zero is a valid methods table (every method None).
    let mut copy: ffi::sqlite3_io_methods = unsafe { std::mem::zeroed() };
    // SAFETY: fields read only up to `version`, per the contract.
    unsafe {
        let m = &*methods;
        copy.iVersion = version.min(3);
        copy.xClose = m.xClose;
        copy.xRead = m.xRead;
        copy.xWrite = m.xWrite;
        copy.xTruncate = m.xTruncate;
        copy.xSync = m.xSync;
        copy.xFileSize = m.xFileSize;
        copy.xLock = m.xLock;
        copy.xUnlock = m.xUnlock;
        copy.xCheckReservedLock = m.xCheckReservedLock;
        copy.xFileControl = m.xFileControl;
        copy.xSectorSize = m.xSectorSize;
        copy.xDeviceCharacteristics = m.xDeviceCharacteristics;
        if version >= 2 {
            copy.xShmMap = m.xShmMap;
            copy.xShmLock = m.xShmLock;
            copy.xShmBarrier = m.xShmBarrier;
            copy.xShmUnmap = m.xShmUnmap;
        }
        if version >= 3 {
            copy.xFetch = m.xFetch;
            copy.xUnfetch = m.xUnfetch;
        }
    }
    copy
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

/// `db`'s main database file and, if we wrapped it, our wrapper on it.
///
/// # Safety
/// `db` must be an open connection used by the calling thread; the wrapper
/// may be used only while that file stays open (our xClose frees it).
unsafe fn main_file_and_wrapper<'a>(
    db: *mut ffi::sqlite3,
) -> Option<(*mut ffi::sqlite3_file, Option<&'a Wrapper>)> {
    // SAFETY: per this function's contract.
    let file = unsafe { main_file(db) }?;
    // SAFETY: an open file.
    let methods = unsafe { (*file).pMethods };
    // SAFETY: a live wrapper's pMethods is its own: this file is wrapped.
    let wrapped = LIVE_WRAPPERS
        .lock()
        .contains(&(methods as usize))
        .then(|| unsafe { wrapper_of(file) });
    Some((file, wrapped))
}

/// The wrapper of a wrapped file.
///
/// # Safety
/// `file->pMethods` must be one of our wrappers (SQLite calls our methods
/// only through it).
unsafe fn wrapper_of<'a>(file: *mut ffi::sqlite3_file) -> &'a Wrapper {
    // SAFETY: per the contract, pMethods points at Wrapper.methods, the
    // first field of a live Wrapper.
    unsafe { &*((*file).pMethods as *const Wrapper) }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls us only through a wrapped file's pMethods.
    let wrapper = unsafe { wrapper_of(file) };
    // SAFETY: the original table has xShmLock (checked in `attach`).
    let Some(forward) = (unsafe { (*wrapper.original).xShmLock }) else {
        return ffi::SQLITE_IOERR;
    };
    // A shared read for the whole call: only the owning connection (never
    // inside this call) replaces the observer.
    let observer = wrapper.observer.read();
    let _ = catch_unwind(AssertUnwindSafe(|| observer.wal_in_use()));
    if offset != WRITE_LOCK || n != 1 || (flags != LOCK_EXCLUSIVE && flags != UNLOCK_EXCLUSIVE) {
        // SAFETY: forwarding the call unchanged.
        return unsafe { forward(file, offset, n, flags) };
    }
    if flags == LOCK_EXCLUSIVE {
        let _ = catch_unwind(AssertUnwindSafe(|| observer.before_write_lock()));
        // SAFETY: forwarding the call unchanged.
        let rc = unsafe { forward(file, offset, n, flags) };
        let probe = TxnProbe { wrapper };
        let _ = catch_unwind(AssertUnwindSafe(|| observer.write_lock_result(rc, &probe)));
        rc
    } else {
        // SAFETY: forwarding the call unchanged.
        let rc = unsafe { forward(file, offset, n, flags) };
        let probe = TxnProbe { wrapper };
        let _ = catch_unwind(AssertUnwindSafe(|| observer.write_lock_released(&probe)));
        rc
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls us only through a wrapped file's pMethods; the
    // wrapper was made by Box::into_raw in `attach`.
    unsafe {
        let wrapper = (*file).pMethods as *mut Wrapper;
        let original = (*wrapper).original;
        // The VFS must see its own table: it may free it in xClose.
        (*file).pMethods = original;
        let rc = match (*original).xClose {
            Some(forward) => forward(file),
            None => ffi::SQLITE_OK,
        };
        LIVE_WRAPPERS.lock().remove(&(wrapper as usize));
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(wrapper))));
        rc
    }
}
