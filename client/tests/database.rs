//! Database: open, retried writes, reads, batch helpers, health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ffi};
use sqlite_hybrid::{
    BackoffPolicy, BufferOptions, Database, Error, OptimizeOptions, RetryPolicy, Row,
};

fn open(dir: &tempfile::TempDir) -> Database {
    let db = Database::open(dir.path().join("app.db")).unwrap();
    db.write(|tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, qty INT DEFAULT 0);",
        )?;
        Ok(())
    })
    .unwrap();
    db
}

/// Holds the write lock from a plain second connection for `hold`.
fn hold_lock(
    path: std::path::PathBuf,
    hold: Duration,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>) {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    (handle, held_rx)
}

#[test]
fn database_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Database>();
    assert_send_sync::<sqlite_hybrid::WriteBuffer>();
    assert_send_sync::<sqlite_hybrid::Ticket>();
}

#[test]
fn open_applies_pragmas_and_registers_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    assert_eq!(db.reader_count(), 4);
    let health = db.health().unwrap();
    let main = &health.schemas[0];
    assert_eq!(
        (main.journal_mode.as_str(), main.synchronous.as_str()),
        ("wal", "NORMAL")
    );
    assert_eq!(
        main.busy_timeout_ms, 0,
        "the hybrid handler is in force, not busy_timeout"
    );
    let file = db.lock_metrics().unwrap();
    assert!(health.locks.contains(&file));
    assert_eq!(file.connections, Some(5), "writer + 4 readers registered");
    assert_eq!(file.handler_active, Some(5));
}

#[test]
fn write_waits_for_another_connection_then_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let (holder, held) = hold_lock(dir.path().join("app.db"), Duration::from_millis(300));
    held.recv().unwrap();
    let start = Instant::now();
    db.write(|tx| Ok(tx.execute("INSERT INTO items(sku) VALUES ('a')", [])?))
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "waited for the holder"
    );
    holder.join().unwrap();
    let file = db.lock_metrics().unwrap();
    assert!(file.busy_events >= 1 && file.acquired >= 1, "{file:?}");
}

#[test]
fn write_gives_up_at_the_deadline_with_lock_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let db = Database::builder(&path)
        .retry(RetryPolicy {
            deadline: Duration::from_millis(400),
            ..RetryPolicy::default()
        })
        .open()
        .unwrap();
    db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x)")?))
        .unwrap();
    let (holder, held) = hold_lock(path, Duration::from_millis(1500));
    held.recv().unwrap();
    let start = Instant::now();
    let err = db
        .write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", [])?))
        .unwrap_err();
    let elapsed = start.elapsed();
    match &err {
        Error::LockTimeout {
            attempts, waited, ..
        } => {
            assert!(*attempts >= 1);
            assert!(*waited >= Duration::from_millis(390), "{waited:?}");
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert!(err.is_lock_error());
    assert!(
        elapsed < Duration::from_millis(1400),
        "gave up near the deadline, not after the holder: {elapsed:?}"
    );
    holder.join().unwrap();
}

#[test]
fn lock_errors_rerun_the_whole_closure_and_other_errors_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let runs = AtomicU32::new(0);
    let value = db
        .write(|tx| {
            tx.execute("INSERT INTO items(sku) VALUES ('x')", [])?;
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                // What SQLite returns for a stale snapshot.
                return Err(rusqlite::Error::SqliteFailure(
                    ffi::Error::new(ffi::SQLITE_BUSY_SNAPSHOT),
                    None,
                )
                .into());
            }
            Ok(42)
        })
        .unwrap();
    assert_eq!((value, runs.load(Ordering::SeqCst)), (42, 3));
    let count: i64 = db
        .read(|c| {
            Ok(
                c.query_row("SELECT count(*) FROM items WHERE sku = 'x'", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(count, 1, "the failed attempts were rolled back");

    let runs = AtomicU32::new(0);
    let err = db
        .write(|tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            tx.execute("INSERT INTO items(sku) VALUES ('x')", [])?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, Error::Constraint(_)), "{err:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "constraint errors are not retried"
    );
}

#[test]
fn many_threads_write_without_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(&dir));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..50 {
                    db.write(|tx| {
                        Ok(tx.execute("INSERT INTO items(sku) VALUES (?1)", [format!("{t}-{i}")])?)
                    })
                    .unwrap();
                    db.read(|c| {
                        Ok(c.query_row("SELECT count(*) FROM items", [], |r| r.get::<_, i64>(0))?)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let count: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM items", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(count, 400);
}

#[test]
fn readers_do_not_wait_for_a_held_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let (holder, held) = hold_lock(dir.path().join("app.db"), Duration::from_millis(800));
    held.recv().unwrap();
    let start = Instant::now();
    let n: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM items", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let err = db
        .read(|c| Ok(c.execute("INSERT INTO items(sku) VALUES ('r')", [])?))
        .unwrap_err();
    assert!(
        matches!(err, Error::Io(_) | Error::Database(_)),
        "readers are read-only: {err:?}"
    );
    holder.join().unwrap();
}

#[test]
fn batch_helpers_chunk_validate_and_report_progress() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let rows = (0..250).map(|i| Row::new().set("sku", format!("s{i}")).set("qty", i));
    let report = db.insert_many("items", rows, 100).unwrap();
    assert_eq!((report.rows, report.chunks), (250, 3));
    let again = (0..10).map(|i| Row::new().set("sku", format!("s{i}")).set("qty", 1000));
    let report = db.upsert_many("items", &["sku"], again, 4).unwrap();
    assert_eq!((report.rows, report.chunks), (10, 3));
    let total: i64 = db
        .read(|c| Ok(c.query_row("SELECT sum(qty) FROM items", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(total, (10..250).sum::<i64>() + 10 * 1000);

    let err = db
        .upsert_many(
            "items",
            &["qty"],
            [Row::new().set("sku", "z").set("qty", 1)],
            10,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("(qty) is not the PRIMARY KEY or a UNIQUE index of items"),
        "{err}"
    );
    let err = db
        .insert_many("items", [Row::new().set("nope", 1)], 10)
        .unwrap_err();
    assert!(
        matches!(err, Error::Schema(ref m) if m.contains("no such column: items.nope")),
        "{err}"
    );
    let err = db
        .insert_many("items", [Row::new().set("qty", 1)], 10)
        .unwrap_err();
    assert!(err.to_string().contains("sku is NOT NULL"), "{err}");
    let err = db
        .insert_many("items; DROP TABLE items", [Row::new().set("sku", "q")], 10)
        .unwrap_err();
    assert!(matches!(err, Error::Schema(_)), "{err}");
    // A duplicate in the third chunk: the first two chunks stay committed.
    let rows = (0..30).map(|i| {
        Row::new().set(
            "sku",
            if i == 25 {
                "s0".to_string()
            } else {
                format!("new{i}")
            },
        )
    });
    let err = db.insert_many("items", rows, 10).unwrap_err();
    assert!(matches!(err, Error::Constraint(_)), "{err:?}");
    let added: i64 = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM items WHERE sku LIKE 'new%'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(added, 20);
}

#[test]
fn optimize_checkpoints_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.insert_many(
        "items",
        (0..500).map(|i| Row::new().set("sku", format!("s{i}"))),
        50,
    )
    .unwrap();
    let before = db.health().unwrap().schemas[0].wal_bytes.unwrap();
    assert!(before > 0);
    let report = db
        .optimize(OptimizeOptions {
            truncate_wal: true,
            incremental_vacuum_pages: Some(10),
        })
        .unwrap();
    assert!(!report.checkpoint_busy, "{report:?}");
    assert_eq!(db.health().unwrap().schemas[0].wal_bytes, Some(0));
}

#[test]
fn in_memory_database_reads_through_the_writer() {
    let db = Database::open(":memory:").unwrap();
    assert_eq!(db.reader_count(), 0);
    db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")?))
        .unwrap();
    let x: i64 = db
        .read(|c| Ok(c.query_row("SELECT x FROM t", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(x, 7);
    let err = db.write(|_tx| db.read(|_| Ok(()))).unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
}

#[test]
fn bad_options_are_rejected_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = Database::builder(dir.path().join("x.db"))
        .retry(RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        })
        .open()
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::InvalidInput(ref m) if m.contains("RetryPolicy.max_attempts")),
        "{err}"
    );
    // Every options type names the offending field the same way.
    let err = Database::builder(dir.path().join("x.db"))
        .write_buffer(BufferOptions {
            max_pending: 0,
            ..BufferOptions::default()
        })
        .open()
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::InvalidInput(ref m) if m.starts_with("BufferOptions.max_pending must")),
        "{err}"
    );
    let err = Database::builder(dir.path().join("x.db"))
        .busy_policy(BackoffPolicy {
            handoff_ms: 60_000.0,
            ..BackoffPolicy::default()
        })
        .open()
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::InvalidInput(ref m) if m.starts_with("BackoffPolicy.handoff_ms must")),
        "{err}"
    );
    let err = Database::open(dir.path().join("missing-dir/x.db"))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
}

/// Issue 17: `upsert_many` refuses NULL and NaN keys at the call (SQLite
/// allows NULL in a non-INTEGER PRIMARY KEY and in UNIQUE columns, and a
/// NULL never matches, so each call would insert another row).
#[test]
fn upsert_many_refuses_null_and_nan_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE tk(k TEXT PRIMARY KEY, v INT);
             CREATE TABLE tu(k REAL UNIQUE, v INT);",
        )?)
    })
    .unwrap();
    for _ in 0..2 {
        let err = db
            .upsert_many(
                "tk",
                &["k"],
                [Row::new().set("k", None::<String>).set("v", 1)],
                10,
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("NULL")),
            "{err}"
        );
        let err = db
            .upsert_many(
                "tu",
                &["k"],
                [Row::new().set("k", f64::NAN).set("v", 1)],
                10,
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref m) if m.contains("NaN")),
            "{err}"
        );
    }
    let rows: i64 = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT count(*) FROM tk) + (SELECT count(*) FROM tu)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(rows, 0, "nothing written");
}

/// Issue 17: a batch error after some chunks committed says how many rows
/// that was, whatever its kind (a constraint here), and keeps its code.
#[test]
fn insert_many_errors_say_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.write(|tx| Ok(tx.execute_batch("CREATE TABLE u(id INTEGER PRIMARY KEY, e TEXT UNIQUE)")?))
        .unwrap();
    let email = |i: i64| {
        if i == 3 {
            "dup".to_string()
        } else {
            format!("e{i}")
        }
    };
    let rows = (0..5).map(|i| Row::new().set("id", i).set("e", email(i)));
    let rows = rows.chain([Row::new().set("id", 9).set("e", "dup")]);
    let err = db.insert_many("u", rows, 2).unwrap_err();
    assert!(matches!(err, Error::Constraint(_)), "{err:?}");
    assert!(
        err.to_string().contains("the first 4 rows were committed"),
        "{err}"
    );
    assert_eq!(err.sqlite_code(), Some(ffi::SQLITE_CONSTRAINT_UNIQUE));
}

/// Lock metrics and health are read while a write runs (a write waiting
/// for the lock is exactly when they are wanted): they never wait for the
/// writer connection.
#[test]
fn metrics_and_health_do_not_wait_for_a_running_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(&dir));
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            db.write(|tx| {
                tx.execute_batch("CREATE TABLE IF NOT EXISTS t(x)")?;
                entered_tx.send(()).unwrap();
                // Holds the writer until the main thread has its answers.
                release_rx.recv().unwrap();
                Ok(())
            })
        })
    };
    entered.recv().unwrap();
    let (answer_tx, answer) = std::sync::mpsc::channel();
    {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            let metrics = db.lock_metrics().map(|m| m.scope);
            let health = db.health().map(|_| ());
            answer_tx.send((metrics, health)).unwrap();
        });
    }
    let got = answer.recv_timeout(Duration::from_secs(20));
    release.send(()).unwrap();
    writer.join().unwrap().unwrap();
    let (metrics, health) = got.expect("metrics or health waited for the running write");
    assert_eq!(metrics.unwrap(), sqlite_hybrid::LockScope::Process);
    health.unwrap();
}
