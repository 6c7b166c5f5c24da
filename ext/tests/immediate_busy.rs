//! Every `SQLITE_BUSY*` a caller sees is counted exactly once: as
//! `gave_up` (a wait the busy handler gave up), or, for the errors SQLite
//! returns without calling any busy handler, as `busy_in_read_tx` (a
//! transaction that had read asks for the write lock another connection
//! holds) or `busy_snapshot` (it asks after another connection committed:
//! `SQLITE_BUSY_SNAPSHOT`). Two connections on a real WAL file; each test
//! its own file, so the counts are exact.

use std::sync::Arc;
use std::time::Duration;

use hybrid::{ConnState, LockSnapshot, LockStats};
use rusqlite::Connection;

const SQLITE_BUSY: i32 = 5;
const SQLITE_BUSY_SNAPSHOT: i32 = 517;

struct Db {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("immediate.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        Db { _dir: dir, path }
    }

    fn open(&self) -> (Connection, Arc<ConnState>) {
        let conn = Connection::open(&self.path).unwrap();
        let state = hybrid::register(&conn).unwrap();
        (conn, state)
    }
}

/// The extended result code of a failed statement.
fn error_code(result: rusqlite::Result<usize>) -> i32 {
    match result {
        Err(rusqlite::Error::SqliteFailure(e, _)) => e.extended_code,
        other => panic!("expected an SQLite error, got {other:?}"),
    }
}

/// (busy_in_read_tx, busy_snapshot, gave_up, busy_events) of a row.
fn counts(row: &LockStats) -> (u64, u64, u64, u64) {
    (
        row.busy_in_read_tx,
        row.busy_snapshot,
        row.gave_up,
        row.busy_events,
    )
}

/// Checks the file-wide row's counts. A build without the futex queue
/// (`hybrid::FUTEX_QUEUE` false: every target but Linux, or `--cfg
/// hybrid_portable`) has no side file, so no file-wide row.
fn assert_file_counts(snapshot: &LockSnapshot, expected: (u64, u64, u64, u64)) {
    if hybrid::FUTEX_QUEUE {
        let file = snapshot.file.as_ref().expect("a file-wide row");
        assert_eq!(counts(file), expected);
    } else {
        assert!(snapshot.file.is_none(), "{:?}", snapshot.file);
    }
}

/// The rows `sql_counts` should return, without the file-wide one in a
/// build without the futex queue.
fn expected_rows(rows: Vec<(&str, i64, i64, i64, i64)>) -> Vec<(String, i64, i64, i64, i64)> {
    rows.into_iter()
        .filter(|row| hybrid::FUTEX_QUEUE || row.0 != "file")
        .map(|(scope, a, b, c, d)| (scope.to_string(), a, b, c, d))
        .collect()
}

/// The process and file-wide rows, read through `hybrid_lock_metrics`.
fn sql_counts(conn: &Connection) -> Vec<(String, i64, i64, i64, i64)> {
    let db = conn.path().unwrap().to_string();
    let mut stmt = conn
        .prepare(
            "SELECT scope, busy_in_read_tx, busy_snapshot, gave_up, app_retries
             FROM hybrid_lock_metrics WHERE db = ?1 ORDER BY scope",
        )
        .unwrap();
    stmt.query_map([db], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

/// This process's events on the file, by outcome.
fn outcomes(conn: &Connection) -> Vec<String> {
    let db = conn.path().unwrap().to_string();
    let mut stmt = conn
        .prepare("SELECT outcome FROM hybrid_lock_events WHERE db = ?1")
        .unwrap();
    stmt.query_map([db], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn read_then_write_while_the_lock_is_held_counts_once_per_error() {
    let db = Db::new();
    let (holder, _) = db.open();
    let (reader, state) = db.open();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    reader.execute_batch("BEGIN").unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let update = "UPDATE t SET x = x + 1";
    assert_eq!(error_code(reader.execute(update, [])), SQLITE_BUSY);
    let snapshot = state.snapshot();
    assert_eq!(counts(&snapshot.process), (1, 0, 0, 0));
    assert_file_counts(&snapshot, (1, 0, 0, 0));

    // The caller tries again in the same transaction: a second error, a
    // second count.
    assert_eq!(error_code(reader.execute(update, [])), SQLITE_BUSY);
    reader.execute_batch("ROLLBACK").unwrap();
    holder.execute_batch("COMMIT").unwrap();
    let snapshot = state.snapshot();
    assert_eq!(counts(&snapshot.process), (2, 0, 0, 0));
    assert_file_counts(&snapshot, (2, 0, 0, 0));
    assert_eq!(
        sql_counts(&reader),
        expected_rows(vec![("file", 2, 0, 0, 0), ("process", 2, 0, 0, 0)])
    );
    assert_eq!(outcomes(&reader), vec!["busy_in_read_tx"; 2]);
}

#[test]
fn a_stale_snapshot_counts_once_in_its_own_column() {
    let db = Db::new();
    let (writer, _) = db.open();
    let (reader, state) = db.open();

    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    // Another connection commits: the reader's snapshot is now stale.
    writer.execute("UPDATE t SET x = 10", []).unwrap();
    assert_eq!(
        error_code(reader.execute("UPDATE t SET x = x + 1", [])),
        SQLITE_BUSY_SNAPSHOT
    );
    reader.execute_batch("ROLLBACK").unwrap();

    let snapshot = state.snapshot();
    assert_eq!(counts(&snapshot.process), (0, 1, 0, 0));
    assert_file_counts(&snapshot, (0, 1, 0, 0));
    assert_eq!(outcomes(&reader), vec!["busy_snapshot"]);

    // After the rollback the same work succeeds, and counts nothing.
    reader.execute_batch("BEGIN IMMEDIATE").unwrap();
    reader.execute("UPDATE t SET x = x + 1", []).unwrap();
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(counts(&state.snapshot().process), (0, 1, 0, 0));
}

#[test]
fn the_wait_path_is_unchanged() {
    let db = Db::new();
    let (holder, _) = db.open();
    let (waiter, state) = db.open();
    waiter
        .query_row("SELECT hybrid_busy_timeout(100)", [], |r| {
            r.get::<_, f64>(0)
        })
        .unwrap();

    // From no transaction the busy handler is called: one wait, given up.
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(
        error_code(waiter.execute("UPDATE t SET x = x + 1", [])),
        SQLITE_BUSY
    );
    assert_eq!(
        error_code(waiter.execute_batch("BEGIN IMMEDIATE").map(|_| 0)),
        SQLITE_BUSY
    );
    let snapshot = state.snapshot();
    assert_eq!(counts(&snapshot.process), (0, 0, 2, 2));
    assert_file_counts(&snapshot, (0, 0, 2, 2));

    // A wait that gets the lock: acquired, nothing else.
    waiter
        .query_row("SELECT hybrid_busy_timeout(20000)", [], |r| {
            r.get::<_, f64>(0)
        })
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            holder.execute_batch("COMMIT").unwrap();
        });
        waiter.execute("UPDATE t SET x = x + 1", []).unwrap();
    });
    let process = state.snapshot().process;
    assert_eq!(counts(&process), (0, 0, 2, 3));
    assert_eq!(process.acquired, 1);
    assert_eq!(outcomes(&waiter), vec!["gave_up", "gave_up", "acquired"]);
}

#[test]
fn transactions_that_succeed_or_close_count_nothing() {
    let db = Db::new();
    let (a, state) = db.open();
    let (b, _) = db.open();
    // Read then write without contention; commit, rollback, empty upgrade.
    for end in ["COMMIT", "ROLLBACK"] {
        a.execute_batch("BEGIN").unwrap();
        let _: i64 = a
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        a.execute("UPDATE t SET x = x + 1", []).unwrap();
        a.execute_batch(end).unwrap();
    }
    a.execute_batch("BEGIN IMMEDIATE; COMMIT; BEGIN EXCLUSIVE; ROLLBACK;")
        .unwrap();
    b.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT;")
        .unwrap();
    a.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    // A connection closed inside a write transaction that began by reading.
    let (c, _) = db.open();
    c.execute_batch("BEGIN").unwrap();
    let _: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    c.execute("UPDATE t SET x = 0", []).unwrap();
    drop(c);
    b.execute("UPDATE t SET x = 1", []).unwrap();

    let snapshot = state.snapshot();
    assert_eq!(counts(&snapshot.process), (0, 0, 0, 0));
    assert_file_counts(&snapshot, (0, 0, 0, 0));
    assert!(outcomes(&a).is_empty());
}

#[test]
fn note_retry_counts_per_process_and_file_wide() {
    let db = Db::new();
    let (a, state) = db.open();
    let (b, _) = db.open();
    let first: i64 = a
        .query_row("SELECT hybrid_note_retry()", [], |r| r.get(0))
        .unwrap();
    let second: i64 = b
        .query_row("SELECT hybrid_note_retry()", [], |r| r.get(0))
        .unwrap();
    assert_eq!((first, second), (1, 2));
    let snapshot = state.snapshot();
    assert_eq!(snapshot.process.app_retries, 2);
    if hybrid::FUTEX_QUEUE {
        assert_eq!(snapshot.file.as_ref().map(|f| f.app_retries), Some(2));
    }
    // Not a lock error, not a wait.
    assert_eq!(counts(&snapshot.process), (0, 0, 0, 0));
}
