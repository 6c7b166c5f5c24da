//! The extension in Debian's python3 (SQLite 3.40.1), with real lock
//! contention between processes on one WAL file.

use std::time::Duration;

use sqlite_hybrid_tests::{LineProcess, last_json};

/// A holder keeps BEGIN IMMEDIATE; a waiter with the extension waits; once
/// the waiter's wait is visibly in flight, the holder commits. The waiter
/// then commits, and its metrics show the wait as acquired.
#[test]
fn waiter_acquires_after_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("contended.db");
    let db = db.to_str().unwrap();

    let mut holder = LineProcess::python("holder.py", &[db]);
    holder.expect_line("held");
    let mut waiter = LineProcess::python("waiter.py", &[db, r#"{"timeout_ms": 60000}"#]);
    waiter.expect_line("waiting");
    std::thread::sleep(Duration::from_millis(50));
    holder.send_line("release");
    holder.expect_line("released");

    let (status, rest) = waiter.finish();
    assert!(status.success(), "waiter failed: {status:?}\n{rest}");
    let report = last_json(&rest);
    assert_eq!(report["outcome"], "committed", "{report}");
    let m = &report["metrics"];
    assert!(m["busy_events"].as_i64().unwrap() >= 1, "{m}");
    assert!(m["acquired"].as_i64().unwrap() >= 1, "{m}");
    assert_eq!(m["gave_up"], 0, "{m}");
    assert_eq!(m["in_flight"], 0, "{m}");
    assert!(
        m["retries"].as_i64().unwrap() >= m["busy_events"].as_i64().unwrap(),
        "{m}"
    );
    assert!(
        m["wait_max_ms"].as_f64().unwrap() >= 50.0,
        "the wait spanned the 50 ms pause: {m}"
    );
    assert_eq!(m["handler_active"], 1, "{m}");
    drop(holder);

    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<String> = conn
        .prepare("SELECT who FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec!["holder", "waiter"]);
}

/// With the holder never releasing, the waiter gets SQLITE_BUSY after about
/// timeout_ms, and the metrics count a give-up.
#[test]
fn waiter_gives_up_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stuck.db");
    let db = db.to_str().unwrap();

    let mut holder = LineProcess::python("holder.py", &[db]);
    holder.expect_line("held");
    let waiter = LineProcess::python("waiter.py", &[db, r#"{"timeout_ms": 400}"#]);
    let (status, rest) = waiter.finish();
    assert!(status.success(), "{rest}");
    let report = last_json(&rest);
    assert_eq!(report["outcome"], "database is locked", "{report}");
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    // Never early; late only by scheduling noise on a busy 2-core machine.
    assert!(
        (0.39..3.0).contains(&elapsed),
        "gave up after {elapsed} s, deadline 0.4 s"
    );
    let m = &report["metrics"];
    assert_eq!(
        (m["gave_up"].as_i64(), m["acquired"].as_i64()),
        (Some(1), Some(0)),
        "{m}"
    );
    assert_eq!(m["failure_rate"], 1.0, "{m}");
    assert!(m["wait_max_ms"].as_f64().unwrap() >= 399.0, "{m}");
}

/// Python-specific gotcha, documented in docs/hosts.md: connect(timeout=...)
/// calls sqlite3_busy_timeout, replacing the handler the auto-extension
/// installed; hybrid_busy_timeout() puts it back.
#[test]
fn python_connect_timeout_replaces_handler_until_reinstalled() {
    let out = sqlite_hybrid_tests::run_python("python_gotcha.py", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = last_json(&stdout);
    assert_eq!(report["loading_connection_active"], 1, "{report}");
    assert_eq!(
        report["later_connection_active_after_connect"], 0,
        "{report}"
    );
    assert_eq!(
        report["later_connection_active_after_reinstall"], 1,
        "{report}"
    );
    assert_eq!(report["later_connection_has_functions"], true, "{report}");
}

/// A pre-forking server: the parent has the database open (so this process
/// has the side file mapped) and then forks workers that open connections
/// of their own. Each worker takes part in the queue as itself: the tables
/// name the child that holds the lock, not the parent whose mapping it
/// inherited, and both children's writes land.
#[test]
fn connections_opened_after_fork_queue_as_their_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("forked.db");
    let output = sqlite_hybrid_tests::run_python("forked.py", &[db.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let report = last_json(&stdout);
    let (holder, waiter) = (report["holder"].clone(), report["waiter"].clone());
    assert_eq!(
        report["holder_table"],
        serde_json::json!([holder]),
        "{report}"
    );
    assert_eq!(
        report["waiters_table"],
        serde_json::json!([waiter]),
        "{report}"
    );
    assert_eq!(report["exit_codes"], serde_json::json!([0, 0]), "{report}");
    assert_eq!(
        report["rows"],
        serde_json::json!([holder, waiter]),
        "{report}"
    );
}

/// Every `SQLITE_BUSY*` a Python caller sees is counted exactly once, per
/// process and file-wide: two processes in turn on one WAL file, each with
/// two connections, make lock errors of the three kinds (read then write
/// under a held lock, a stale snapshot, a wait that gives up; see
/// `tests/py/busy_errors.py`), recognise them by `sqlite_errorcode`, roll
/// back and retry with `BEGIN IMMEDIATE`, reporting each retry with
/// `hybrid_note_retry()`.
#[test]
fn every_lock_error_python_sees_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("errors.db");
    let db = db.to_str().unwrap();
    let mut file_totals = [0i64; 3];
    for rounds in [3, 2] {
        let out = sqlite_hybrid_tests::run_python("busy_errors.py", &[db, &rounds.to_string()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let report = last_json(&stdout);
        let seen = |code: &str| report["errors"][code].as_i64().unwrap_or(0);
        let (busy, snapshot) = (seen("5"), seen("517"));
        // Nothing but the two codes: every error was a lock error.
        assert_eq!(report["errors"].as_object().unwrap().len(), 2, "{report}");
        assert_eq!((busy, snapshot), (2 * rounds, rounds), "{report}");
        let p = &report["process"];
        let counted = |row: &serde_json::Value, column: &str| row[column].as_i64().unwrap();
        // Every error of this process, exactly once, in the right column.
        assert_eq!(
            counted(p, "busy_in_read_tx") + counted(p, "gave_up"),
            busy,
            "{report}"
        );
        assert_eq!(counted(p, "busy_snapshot"), snapshot, "{report}");
        assert_eq!(counted(p, "busy_in_read_tx"), rounds, "{report}");
        assert_eq!(counted(p, "busy_events"), counted(p, "gave_up"), "{report}");
        assert_eq!(counted(p, "app_retries"), busy + snapshot, "{report}");
        assert_eq!(report["retries"], busy + snapshot, "{report}");
        assert_eq!(
            report["outcomes"].as_array().unwrap().len() as i64,
            busy + snapshot,
            "one event per error: {report}"
        );
        // File-wide: this process's errors plus the earlier process's.
        for (total, column) in
            file_totals
                .iter_mut()
                .zip(["busy_in_read_tx", "busy_snapshot", "gave_up"])
        {
            *total += counted(p, column);
            assert_eq!(
                counted(&report["file"], column),
                *total,
                "{column}: {report}"
            );
        }
        assert_eq!(
            counted(&report["file"], "app_retries"),
            file_totals.iter().sum::<i64>(),
            "{report}"
        );
    }
}
