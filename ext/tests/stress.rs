//! Concurrency: many threads, each with its own connection, on several
//! files in one process, with short deadlines so waits really give up. The
//! metrics must agree with what the threads saw themselves (every
//! SQLITE_BUSY they got is exactly one `gave_up`), the snapshot invariant
//! `busy_events = acquired + gave_up + in_flight` must hold in every read
//! taken while they run, and policy changes racing with waits must leave
//! valid policies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

const FILES: usize = 3;
const THREADS_PER_FILE: usize = 5;
const TRANSACTIONS: usize = 150;

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    hybrid::register(&conn).unwrap();
    conn
}

#[test]
fn metrics_agree_with_what_threads_saw() {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..FILES)
        .map(|i| dir.path().join(format!("s{i}.db")))
        .collect();
    for path in &paths {
        open(path)
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
            .unwrap();
    }
    let busy_seen: Arc<Vec<AtomicU64>> = Arc::new((0..FILES).map(|_| AtomicU64::new(0)).collect());
    let committed: Arc<Vec<AtomicU64>> = Arc::new((0..FILES).map(|_| AtomicU64::new(0)).collect());
    let running = Arc::new(AtomicBool::new(true));

    // Reads metrics while everything runs and checks the invariant.
    let checker = {
        let (path, running) = (paths[0].clone(), Arc::clone(&running));
        std::thread::spawn(move || {
            let conn = open(&path);
            let mut checks = 0;
            while running.load(Ordering::Relaxed) {
                let mut stmt = conn
                    .prepare("SELECT busy_events, acquired, gave_up, in_flight FROM hybrid_lock_metrics WHERE scope = 'process'")
                    .unwrap();
                let rows: Vec<(i64, i64, i64, i64)> = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                for (busy, acquired, gave_up, in_flight) in rows {
                    assert_eq!(busy, acquired + gave_up + in_flight, "snapshot invariant");
                }
                checks += 1;
            }
            checks
        })
    };
    // Rewrites policies of its own connection on every file while others wait.
    let reconfigurer = {
        let (paths, running) = (paths.clone(), Arc::clone(&running));
        std::thread::spawn(move || {
            let conns: Vec<Connection> = paths.iter().map(|p| open(p)).collect();
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                let conn = &conns[(i % FILES as u64) as usize];
                let jitter = ["full", "equal", "decorrelated", "none"][(i % 4) as usize];
                let patch = format!(
                    r#"{{"jitter":"{jitter}","cap_ms":{},"handoff_ms":{}}}"#,
                    1 + i % 9,
                    i % 5
                );
                let _: String = conn
                    .query_row("SELECT hybrid_busy_config(?1)", [patch], |r| r.get(0))
                    .unwrap();
                i += 1;
            }
        })
    };

    let workers: Vec<_> = (0..FILES * THREADS_PER_FILE)
        .map(|t| {
            let file = t % FILES;
            let path = paths[file].clone();
            let (busy_seen, committed) = (Arc::clone(&busy_seen), Arc::clone(&committed));
            std::thread::spawn(move || {
                let conn = open(&path);
                // Short deadlines: some waits give up (that is the point).
                let timeout = 5 + (t % 4) * 10;
                conn.query_row(
                    "SELECT hybrid_busy_config(?1)",
                    [format!(r#"{{"timeout_ms":{timeout}}}"#)],
                    |r| r.get::<_, String>(0),
                )
                .unwrap();
                for i in 0..TRANSACTIONS {
                    match conn.execute_batch("BEGIN IMMEDIATE") {
                        Ok(()) => {
                            conn.execute("INSERT INTO t VALUES (?1)", [i as i64])
                                .unwrap();
                            if i % 3 == 0 {
                                std::thread::sleep(Duration::from_micros(500));
                            }
                            conn.execute_batch("COMMIT").unwrap();
                            committed[file].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(rusqlite::Error::SqliteFailure(e, _))
                            if e.code == ErrorCode::DatabaseBusy =>
                        {
                            busy_seen[file].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    running.store(false, Ordering::Relaxed);
    reconfigurer.join().unwrap();
    let checks = checker.join().unwrap();
    assert!(checks > 10, "the checker ran {checks} times");

    let total_busy: u64 = busy_seen.iter().map(|b| b.load(Ordering::Relaxed)).sum();
    assert!(
        total_busy > 0,
        "the test did not create give-ups; make the deadlines shorter"
    );
    let conn = Connection::open_in_memory().unwrap();
    hybrid::register(&conn).unwrap();
    for (file, path) in paths.iter().enumerate() {
        let real = std::fs::canonicalize(path).unwrap();
        let (connections, busy, acquired, gave_up, in_flight): (i64, i64, i64, i64, i64) = conn
            .query_row(
                "SELECT connections, busy_events, acquired, gave_up, in_flight FROM hybrid_lock_metrics \
                 WHERE scope = 'process' AND db = ?1",
                [real.to_str().unwrap()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(connections, 0, "file {file}: every connection closed");
        assert_eq!(in_flight, 0, "file {file}");
        assert_eq!(
            gave_up as u64,
            busy_seen[file].load(Ordering::Relaxed),
            "file {file}: give-ups"
        );
        assert_eq!(busy, acquired + gave_up, "file {file}");
        let rows: i64 = open(path)
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows as u64,
            committed[file].load(Ordering::Relaxed),
            "file {file}: rows"
        );
        // The file-wide view counts the same waits (only this process used
        // it); a build without the futex queue has no file-wide view.
        if !hybrid::FUTEX_QUEUE {
            let file_rows: i64 = conn
                .query_row(
                    "SELECT count(*) FROM hybrid_lock_metrics WHERE scope = 'file'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(file_rows, 0, "file {file}: no side file, no file row");
            continue;
        }
        let (file_busy, file_gave_up): (i64, i64) = conn
            .query_row(
                "SELECT busy_events, gave_up FROM hybrid_lock_metrics WHERE scope = 'file' AND db = ?1",
                [real.to_str().unwrap()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (file_busy, file_gave_up),
            (busy, gave_up),
            "file {file}: file-wide view"
        );
    }
}
