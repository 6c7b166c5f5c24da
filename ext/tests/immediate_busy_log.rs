//! The slow-wait log (and so the client's `tracing` report) names the lock
//! errors no busy handler saw, with the remedy: `BEGIN IMMEDIATE`. Its own
//! test binary: the hook and the report rate are per process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybrid::{SlowWait, SlowWaitEvent};
use rusqlite::Connection;

#[test]
fn errors_no_handler_saw_are_reported_with_the_remedy() {
    let reports: Arc<Mutex<Vec<SlowWait>>> = Arc::default();
    let sink = Arc::clone(&reports);
    hybrid::on_slow_wait(move |w| sink.lock().unwrap().push(w.clone()));
    hybrid::set_log_waits(Some(Duration::from_secs(1)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let open = || {
        let conn = Connection::open(&path).unwrap();
        hybrid::register(&conn).unwrap();
        conn
    };
    let (a, b) = (open(), open());
    a.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let read = |conn: &Connection| {
        conn.execute_batch("BEGIN").unwrap();
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .unwrap();
    };

    b.execute_batch("BEGIN IMMEDIATE").unwrap();
    read(&a);
    assert!(a.execute("UPDATE t SET x = 2", []).is_err());
    a.execute_batch("ROLLBACK").unwrap();
    b.execute_batch("COMMIT").unwrap();

    // At most one such report a second: wait that out.
    std::thread::sleep(Duration::from_millis(1100));
    read(&a);
    b.execute("UPDATE t SET x = 3", []).unwrap();
    assert!(a.execute("UPDATE t SET x = 4", []).is_err());
    a.execute_batch("ROLLBACK").unwrap();

    let reports = reports.lock().unwrap();
    let events: Vec<SlowWaitEvent> = reports.iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        vec![
            SlowWaitEvent::BusyInReadTransaction,
            SlowWaitEvent::BusySnapshot
        ]
    );
    for report in reports.iter() {
        let text = report.to_string();
        assert!(text.contains("use BEGIN IMMEDIATE"), "{text}");
        assert!(text.contains(&report.db), "{text}");
        assert_eq!(report.waited, Duration::ZERO);
    }
    assert!(reports[1].to_string().contains("SQLITE_BUSY_SNAPSHOT"));
}
