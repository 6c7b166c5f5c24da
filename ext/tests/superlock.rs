//! A wait whose every retry takes the write lock and is then refused
//! something else still ends at its deadline, as SQLite's own handler's
//! does.
//!
//! The situation is SQLite's `superlock.test`: another connection holds the
//! WAL recovery lock and every read lock, and has zeroed the WAL-index
//! header. A reader must then recover the WAL index: it takes the write lock
//! (free), fails on the recovery lock, lets the write lock go and asks its
//! busy handler again. Each of those acquisitions ended the wait, so a
//! deadline measured per wait was never reached: the reader retried for ever
//! at full speed (SQLite's suite hung there with the extension loaded).

use std::ffi::{c_int, c_void};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, ffi};

/// WAL-index lock numbers (`wal.c`): the recovery lock and the first of
/// the five read locks.
const WAL_RECOVER_LOCK: c_int = 2;
const WAL_READ_LOCK_0: c_int = 3;
const WAL_NREADER: c_int = 5;

/// A plain connection (no extension) that holds WAL-index locks through its
/// file's `xShmLock`, as SQLite's `sqlite3demo_superlock` does.
struct Superlock {
    conn: Connection,
    file: *mut ffi::sqlite3_file,
}

impl Superlock {
    fn take(path: &std::path::Path) -> Superlock {
        let conn = Connection::open(path).unwrap();
        // Maps the WAL index.
        let _: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .unwrap();
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: an open connection; FILE_POINTER writes one pointer to the
        // main database's sqlite3_file, valid while the connection is open.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                &mut file as *mut _ as *mut c_void,
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        let lock = Superlock { conn, file };
        lock.shm_lock(WAL_RECOVER_LOCK, 1, ffi::SQLITE_SHM_LOCK);
        // Zero the header: every new reader has to run recovery, which
        // needs the recovery lock held above.
        let mut page: *mut c_void = std::ptr::null_mut();
        // SAFETY: the file's own method on its own open file; the mapping
        // is at least 32 KB and lives while the connection is open.
        unsafe {
            let map = (*(*lock.file).pMethods).xShmMap.unwrap();
            assert_eq!(map(lock.file, 0, 32 * 1024, 1, &mut page), ffi::SQLITE_OK);
            std::ptr::write_bytes(page as *mut u8, 0, 32);
        }
        lock.shm_lock(WAL_READ_LOCK_0, WAL_NREADER, ffi::SQLITE_SHM_LOCK);
        lock
    }

    fn shm_lock(&self, offset: c_int, n: c_int, lock_or_unlock: c_int) {
        // SAFETY: the file's own xShmLock on its own open file.
        let rc = unsafe {
            let shm_lock = (*(*self.file).pMethods).xShmLock.unwrap();
            shm_lock(
                self.file,
                offset,
                n,
                lock_or_unlock | ffi::SQLITE_SHM_EXCLUSIVE,
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
    }

    fn release(self) {
        self.shm_lock(WAL_READ_LOCK_0, WAL_NREADER, ffi::SQLITE_SHM_UNLOCK);
        self.shm_lock(WAL_RECOVER_LOCK, 1, ffi::SQLITE_SHM_UNLOCK);
        drop(self.conn);
    }
}

#[test]
fn a_reader_locked_out_of_wal_recovery_gives_up_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("superlock.db");
    let setup = Connection::open(&path).unwrap();
    setup
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)")
        .unwrap();

    // Set up (and schema read) before the lock is taken.
    let reader = Connection::open(&path).unwrap();
    hybrid::register(&reader).unwrap();
    reader
        .execute_batch("SELECT hybrid_busy_timeout(300); SELECT count(*) FROM t")
        .unwrap();

    let superlock = Superlock::take(&path);
    let (done_tx, done_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        let locked_out = reader.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0));
        let _ = done_tx.send((
            locked_out.map_err(|e| e.sqlite_error_code()),
            start.elapsed(),
        ));
        // Once the lock is gone, the same connection reads.
        reader
    });
    // The bound only catches a wait that never ends; a correct one ends
    // after its 300 ms.
    let (locked_out, waited) = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the reader was still retrying after 30 s (its deadline was 300 ms)");
    assert_eq!(locked_out, Err(Some(ErrorCode::DatabaseBusy)));
    assert!(
        waited >= Duration::from_millis(250),
        "gave up early: {waited:?}"
    );

    superlock.release();
    let reader = reader.join().unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}
