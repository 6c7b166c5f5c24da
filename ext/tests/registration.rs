//! Registering a connection that is registered already (Python's
//! `load_extension` on a connection the auto-extension registered at open,
//! better-sqlite3's `loadExtension` on every connection, `.load` twice)
//! keeps its registration: the same state and policy, the handler back in
//! force, and its waits still going through the file's queue.

use std::time::{Duration, Instant};

use rusqlite::Connection;

fn queued_waiters(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM hybrid_lock_waiters WHERE stale = 0",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

/// Waits of this process in progress (backoff mode has no queue to show).
fn waits_in_flight(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT in_flight FROM hybrid_lock_metrics WHERE scope = 'process'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

/// In futex mode the connection queues in the side file; in a build without
/// it (`hybrid::FUTEX_QUEUE` false) it waits in the jittered handler, which
/// is in force again after the second registration.
#[test]
fn a_connection_registered_twice_still_waits_in_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.db");
    let holder = Connection::open(&path).unwrap();
    hybrid::register(&holder).unwrap();
    holder
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
        .unwrap();

    let waiter = Connection::open(&path).unwrap();
    let first = hybrid::register(&waiter).unwrap();
    waiter
        .execute_batch("SELECT hybrid_busy_timeout(20000); SELECT count(*) FROM t")
        .unwrap();
    // A host that sets its own busy timeout, then loads the library again.
    waiter.busy_timeout(Duration::from_millis(100)).unwrap();
    let state = hybrid::register(&waiter).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &state),
        "a second registration"
    );
    assert_eq!(state.policy().timeout_ms, 20000.0, "the policy was kept");
    let (connections, active): (i64, i64) = waiter
        .query_row(
            "SELECT connections, handler_active FROM hybrid_lock_metrics WHERE scope = 'process'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((connections, active), (2, 2), "counted once, handler back");

    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let waiting = std::thread::spawn(move || {
        waiter.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        seen = if hybrid::FUTEX_QUEUE {
            queued_waiters(&holder)
        } else {
            waits_in_flight(&holder)
        };
    }
    holder.execute_batch("COMMIT").unwrap();
    waiting.join().unwrap().unwrap();
    assert_eq!(seen, 1, "the twice-registered connection never waited");
    let rows: i64 = holder
        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}
