//! The log database under bursts (issue 15): drops counted exactly and
//! matching the file, logging calls that never wait for a stalled writer,
//! recovery once a burst ends, and batches that grow with the backlog but
//! never past `max_batch_size`.
//!
//! No test here measures speed. A writer is stalled deliberately by holding
//! the log file's write lock from another connection, so "the queue is
//! full" and "nothing can commit" are facts, not timing.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::Log;
use rusqlite::Connection;
use sqlite_hybrid::{LogDatabase, LogLevel, LogOptions, LogRecord};
use tracing_subscriber::layer::SubscriberExt;

const FLUSH: Duration = Duration::from_secs(30);
/// How long a test waits for something that must happen before it calls
/// it a hang. A guard, not a speed expectation: it only fires on a bug.
const HANG: Duration = Duration::from_secs(120);

fn open(dir: &tempfile::TempDir, options: LogOptions) -> LogDatabase {
    LogDatabase::open(dir.path().join("logs.db"), options).unwrap()
}

fn conn(logs: &LogDatabase) -> Connection {
    Connection::open(logs.path()).unwrap()
}

fn count(conn: &Connection, sql: &str) -> u64 {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// Polls `done` until it holds; panics with `what` after `HANG`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `n` records, each only once the writer has taken the one before
/// (so batches form from the writer's pacing, not from a backlog).
fn send_one_at_a_time(logs: &LogDatabase, target: &str, n: usize) {
    let sink = logs.sink();
    for i in 0..n {
        assert!(sink.send(LogRecord::new(LogLevel::Info, target, format!("{i}"))));
        wait_until("the writer took the record", || {
            logs.stats().queue_depth == 0
        });
    }
}

/// Four threads flood a small queue while the writer runs; part of the time
/// it is stalled, so drops are certain. Every record is either in the file
/// or counted as dropped, and the ones in the file are exactly those whose
/// `send` returned true, in each thread's order.
#[test]
fn overload_drops_are_counted_exactly_and_match_the_file() {
    const THREADS: usize = 4;
    const PER_THREAD: u64 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            channel_capacity: 64,
            batch_size: 8,
            max_batch_size: 32,
            ..LogOptions::default()
        },
    );
    let holder = conn(&logs);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (first_drop_tx, first_drop) = mpsc::channel::<()>();
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let sink = logs.sink();
            let first_drop_tx = first_drop_tx.clone();
            std::thread::Builder::new()
                .name(format!("flood-{t}"))
                .spawn(move || {
                    let mut accepted = Vec::new();
                    for i in 0..PER_THREAD {
                        if sink.send(LogRecord::new(LogLevel::Info, "flood", i.to_string())) {
                            accepted.push(i);
                        } else {
                            let _ = first_drop_tx.send(());
                        }
                    }
                    accepted
                })
                .unwrap()
        })
        .collect();
    // The queue is full (a drop happened): let the writer run while the
    // senders are still flooding.
    first_drop
        .recv_timeout(HANG)
        .expect("a stalled writer fills the queue");
    holder.execute_batch("COMMIT").unwrap();
    let accepted: HashMap<String, Vec<u64>> = senders
        .into_iter()
        .enumerate()
        .map(|(t, s)| (format!("flood-{t}"), s.join().unwrap()))
        .collect();
    logs.flush(FLUSH).unwrap();
    // One more record (the queue is empty now), so the last batch also
    // stores the final drop count.
    assert!(
        logs.sink()
            .send(LogRecord::new(LogLevel::Info, "end", "end"))
    );
    logs.flush(FLUSH).unwrap();

    let emitted = THREADS as u64 * PER_THREAD + 1;
    let kept: u64 = accepted.values().map(|a| a.len() as u64).sum::<u64>() + 1;
    let stats = logs.stats();
    assert!(
        stats.dropped > 0,
        "the flood overflowed the queue: {stats:?}"
    );
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(stats.written + stats.dropped, emitted, "{stats:?}");
    assert_eq!(stats.written, kept, "written = sends that returned true");
    let c = conn(&logs);
    assert_eq!(count(&c, "SELECT count(*) FROM entries"), stats.written);
    assert_eq!(
        count(&c, "SELECT dropped FROM writer_stats"),
        stats.dropped,
        "the drop count in SQL is exact too"
    );
    for (thread, sent) in &accepted {
        let stored: Vec<u64> = c
            .prepare("SELECT CAST(message AS INTEGER) FROM entries WHERE thread = ?1 ORDER BY id")
            .unwrap()
            .query_map([thread], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|v| v.unwrap() as u64)
            .collect();
        assert_eq!(
            &stored, sent,
            "{thread}: exactly the accepted records, in order"
        );
    }
}

/// With the writer unable to commit, `log` and `tracing` calls still
/// return: the ones that fit are queued, the rest dropped and counted.
#[test]
fn logging_calls_return_while_the_writer_is_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            channel_capacity: 50,
            batch_size: 5,
            max_batch_size: 20,
            ..LogOptions::default()
        },
    );
    let holder = conn(&logs);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let logger = logs.logger();
    let layer = logs.tracing_layer();
    let (done_tx, done) = mpsc::channel();
    let app = std::thread::spawn(move || {
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..2_000 {
                logger.log(
                    &log::Record::builder()
                        .level(log::Level::Warn)
                        .target("app")
                        .args(format_args!("log {i}"))
                        .build(),
                );
                tracing::warn!(i, "tracing {i}");
            }
        });
        let _ = done_tx.send(());
    });
    // Calls that waited for the writer would wait for the lock this thread
    // holds, so they could not finish before it is released.
    done.recv_timeout(HANG)
        .expect("logging calls returned while the writer was stalled");
    app.join().unwrap();
    let stats = logs.stats();
    assert_eq!(
        stats.written, 0,
        "nothing committed: the writer was stalled"
    );
    assert!(
        stats.dropped >= 4_000 - 50 - 20,
        "at most the queue and one batch were taken: {stats:?}"
    );
    holder.execute_batch("COMMIT").unwrap();
    logs.flush(FLUSH).unwrap();
    let stats = logs.stats();
    assert_eq!(stats.written + stats.dropped, 4_000, "{stats:?}");
    assert_eq!(
        count(&conn(&logs), "SELECT count(*) FROM entries"),
        stats.written
    );
}

/// At the defaults, the writer stalled for a whole second of a 100,000
/// lines/s burst (here: 100,000 lines sent while another connection holds
/// the log file's write lock, so nothing can commit) loses no line: the
/// queue holds them all, and the writer writes them once the lock is free.
#[test]
fn at_the_defaults_a_one_second_stall_of_a_100k_burst_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(&dir, LogOptions::default());
    let sink = logs.sink();
    let holder = conn(&logs);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let burst = 100_000u64;
    for i in 0..burst {
        assert!(
            sink.send(LogRecord::new(LogLevel::Info, "burst", i.to_string())),
            "line {i} of the burst was dropped"
        );
    }
    let stats = logs.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.written, 0, "the writer was stalled: {stats:?}");
    holder.execute_batch("COMMIT").unwrap();
    logs.flush(FLUSH).unwrap();
    let stats = logs.stats();
    assert_eq!((stats.written, stats.dropped), (burst, 0), "{stats:?}");
    assert_eq!(
        count(
            &conn(&logs),
            "SELECT count(*) FROM entries WHERE target = 'burst'"
        ),
        burst
    );
}

/// After a burst the writer writes its backlog on its own (no `flush()`, and
/// a `flush_interval` far away), and lines logged afterwards are all kept.
#[test]
fn the_writer_recovers_when_a_burst_ends() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            channel_capacity: 100,
            batch_size: 10,
            max_batch_size: 40,
            flush_interval: Duration::from_secs(3_600),
            ..LogOptions::default()
        },
    );
    let sink = logs.sink();
    let holder = conn(&logs);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let burst = 10_000u64;
    let accepted = (0..burst)
        .filter(|i| sink.send(LogRecord::new(LogLevel::Info, "burst", i.to_string())))
        .count() as u64;
    let dropped_in_burst = logs.stats().dropped;
    assert_eq!(accepted + dropped_in_burst, burst);
    assert!(dropped_in_burst > 0, "the burst overflowed the queue");
    holder.execute_batch("COMMIT").unwrap();

    // The backlog goes out without flush(): all of it but, at most, a last
    // batch smaller than batch_size, which waits for company or the timer.
    wait_until("the backlog was written", || {
        logs.stats().written + 10 > accepted && logs.stats().queue_depth == 0
    });
    // After the burst: lines at a pace the queue holds (half of it at a
    // time, waiting for the writer to take them) are all accepted.
    let mut after = 0u64;
    for _ in 0..20 {
        for _ in 0..50 {
            assert!(
                sink.send(LogRecord::new(LogLevel::Info, "after", after.to_string())),
                "line {after} after the burst was dropped"
            );
            after += 1;
        }
        wait_until("the writer took the lines", || {
            logs.stats().queue_depth == 0
        });
    }
    wait_until("lines after the burst were written without flush()", || {
        logs.stats().written + 10 > accepted + after
    });
    logs.flush(FLUSH).unwrap();
    let stats = logs.stats();
    assert_eq!(stats.dropped, dropped_in_burst, "no drop after the burst");
    assert_eq!(stats.written, accepted + after, "{stats:?}");
    let c = conn(&logs);
    let stored: Vec<u64> = c
        .prepare("SELECT CAST(message AS INTEGER) FROM entries WHERE target = 'after' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect();
    assert_eq!(stored, (0..after).collect::<Vec<_>>());
}

/// Counts the rows of each of the writer's transactions from inside them:
/// a trigger counts inserted entries, and the stats row, written last in
/// every batch, files the count away. Returns (rows per commit).
fn rows_per_commit(c: &Connection) -> Vec<u64> {
    c.prepare("SELECT rows FROM commits ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|v| v.unwrap() as u64)
        .collect()
}

fn watch_commits(c: &Connection) {
    c.execute_batch(
        "CREATE TABLE tx_rows(n INTEGER NOT NULL);
         INSERT INTO tx_rows VALUES (0);
         CREATE TABLE commits(rows INTEGER NOT NULL);
         CREATE TRIGGER count_entry AFTER INSERT ON entries
             BEGIN UPDATE tx_rows SET n = n + 1; END;
         CREATE TRIGGER first_batch AFTER INSERT ON writer_stats
             BEGIN INSERT INTO commits SELECT n FROM tx_rows; UPDATE tx_rows SET n = 0; END;
         CREATE TRIGGER next_batch AFTER UPDATE ON writer_stats
             BEGIN INSERT INTO commits SELECT n FROM tx_rows; UPDATE tx_rows SET n = 0; END;",
    )
    .unwrap();
}

/// A backlog is written in batches larger than `batch_size` (fewer commits
/// to catch up), but no transaction holds more than `max_batch_size`.
#[test]
fn a_backlog_is_written_in_batches_of_at_most_max_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            channel_capacity: 2_000,
            batch_size: 10,
            max_batch_size: 64,
            ..LogOptions::default()
        },
    );
    let c = conn(&logs);
    watch_commits(&c);
    let sink = logs.sink();
    // A backlog: 1,500 records queued while the writer cannot commit.
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..1_500 {
        assert!(sink.send(LogRecord::new(LogLevel::Info, "backlog", format!("{i}"))));
    }
    c.execute_batch("COMMIT").unwrap();
    logs.flush(FLUSH).unwrap();
    let stats = logs.stats();
    let rows = rows_per_commit(&c);
    // The instrument itself: one entry per commit, adding up to the total.
    assert_eq!(rows.len() as u64, stats.batches, "{rows:?}");
    assert_eq!(rows.iter().sum::<u64>(), 1_500);
    assert_eq!(stats.written, 1_500);
    let largest = rows.iter().copied().max().unwrap();
    assert!(largest <= 64, "a transaction of {largest} rows: {rows:?}");
    assert_eq!(
        largest, 64,
        "the backlog was taken in full batches: {rows:?}"
    );
    assert!(
        rows.len() <= 1_500 / 64 + 2,
        "a backlog needs few commits, not 1,500 / batch_size: {rows:?}"
    );
}

/// Without a backlog and without pacing (`min_commit_interval` zero) a
/// batch is `batch_size`: records trickling in one at a time are committed
/// in batches of exactly that size.
#[test]
fn without_a_backlog_batches_are_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            batch_size: 10,
            max_batch_size: 64,
            min_commit_interval: Duration::ZERO,
            flush_interval: Duration::from_secs(3_600),
            ..LogOptions::default()
        },
    );
    let c = conn(&logs);
    watch_commits(&c);
    send_one_at_a_time(&logs, "trickle", 50);
    wait_until("five batches committed", || logs.stats().written == 50);
    assert_eq!(rows_per_commit(&c), [10; 5]);
}

/// Commits are paced: a `batch_size` batch waits for `min_commit_interval`
/// since the last commit and takes in what arrives meanwhile, but a batch
/// that reaches `max_batch_size` is committed at once.
#[test]
fn commits_wait_for_the_commit_interval_unless_the_batch_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(
        &dir,
        LogOptions {
            batch_size: 10,
            max_batch_size: 64,
            min_commit_interval: Duration::from_secs(3_600),
            flush_interval: Duration::from_secs(3_600),
            ..LogOptions::default()
        },
    );
    let c = conn(&logs);
    watch_commits(&c);
    send_one_at_a_time(&logs, "paced", 100);
    // The first 64 filled a batch and committed without waiting an hour;
    // the other 36 wait for the interval (or a flush).
    wait_until("the full batch committed", || logs.stats().written == 64);
    assert_eq!(logs.stats().batches, 1);
    logs.flush(FLUSH).unwrap();
    assert_eq!(rows_per_commit(&c), [64, 36]);
    assert_eq!(count(&c, "SELECT count(*) FROM entries"), 100);
}

/// The writer checkpoints the log file itself (at most once a second,
/// after a commit) instead of leaving it to SQLite's automatic checkpoint,
/// which now only fires at 10,000 WAL pages: 1 MB of log lines, far below
/// either automatic threshold, still reaches the main file while the
/// writer's connection stays open.
#[test]
fn the_writer_checkpoints_the_log_file_itself() {
    let dir = tempfile::tempdir().unwrap();
    let logs = open(&dir, LogOptions::default());
    let sink = logs.sink();
    let line = "x".repeat(10_000);
    for _ in 0..100 {
        assert!(sink.send(LogRecord::new(LogLevel::Info, "big", line.clone())));
    }
    logs.flush(FLUSH).unwrap();
    let main_file_bytes = || std::fs::metadata(logs.path()).unwrap().len();
    // Each commit after the interval checkpoints; keep committing until one
    // has (no test connection is opened meanwhile, so closing one cannot
    // checkpoint instead).
    wait_until("a checkpoint copied the lines into the main file", || {
        sink.send(LogRecord::new(LogLevel::Info, "tick", "tick"));
        logs.flush(FLUSH).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        main_file_bytes() >= 1_000_000
    });
    assert_eq!(logs.stats().dropped, 0);
}
