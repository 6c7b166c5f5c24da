//! The slow-wait log's Rust hook: a wait past the threshold is reported
//! once while it lasts and once when it ends, with the holder (a
//! connection of this process here) and the queue. Its own test binary:
//! the threshold and the hook are process-wide.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hybrid::{SlowWait, SlowWaitEvent};
use rusqlite::Connection;

#[test]
fn a_slow_wait_is_reported_while_it_lasts_and_when_it_ends() {
    assert_eq!(hybrid::log_waits(), Some(Duration::from_secs(1)), "default");
    let reports: Arc<Mutex<Vec<SlowWait>>> = Arc::default();
    let sink = Arc::clone(&reports);
    hybrid::on_slow_wait(move |w| sink.lock().unwrap().push(w.clone()));
    hybrid::set_log_waits(Some(Duration::from_millis(100)));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.db");
    let holder = Connection::open(&path).unwrap();
    hybrid::register(&holder).unwrap();
    holder
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")
        .unwrap();
    let waiter = Connection::open(&path).unwrap();
    hybrid::register(&waiter).unwrap();
    waiter
        .execute_batch("SELECT hybrid_busy_timeout(20000)")
        .unwrap();

    // A fast wait first: not reported.
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let fast = std::thread::spawn(move || {
        waiter
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
            .map(|_| waiter)
    });
    std::thread::sleep(Duration::from_millis(20));
    holder.execute_batch("COMMIT").unwrap();
    let waiter = fast.join().unwrap().unwrap();
    assert!(
        reports.lock().unwrap().is_empty(),
        "{:?}",
        reports.lock().unwrap()
    );

    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let slow = std::thread::spawn(move || {
        waiter.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT")
    });
    std::thread::sleep(Duration::from_millis(400));
    holder.execute_batch("COMMIT").unwrap();
    slow.join().unwrap().unwrap();

    let reports = reports.lock().unwrap().clone();
    let events: Vec<SlowWaitEvent> = reports.iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        vec![SlowWaitEvent::StillWaiting, SlowWaitEvent::Acquired],
        "{reports:?}"
    );
    let still = &reports[0];
    assert!(still.waited >= Duration::from_millis(100), "{still}");
    if hybrid::FUTEX_QUEUE {
        // The holder and the queue are read from the side file.
        assert_eq!(
            still.holder.map(|(pid, _)| pid),
            Some(std::process::id()),
            "{still}"
        );
        assert!(
            still.holder.unwrap().1 >= Duration::from_millis(90),
            "{still}"
        );
        assert_eq!(still.queued, 1, "{still}");
    } else {
        // Backoff mode (no side file in this build): nobody to name.
        assert_eq!((still.holder, still.queued), (None, 0), "{still}");
    }
    assert!(
        reports[1].waited >= Duration::from_millis(390),
        "{}",
        reports[1]
    );
    assert!(
        still
            .to_string()
            .contains("still waiting for the write lock")
    );

    hybrid::set_log_waits(None);
    assert_eq!(hybrid::log_waits(), None);
}
