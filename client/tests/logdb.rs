//! The log database: order per thread, levels/targets/fields, retention,
//! a full queue dropping instead of blocking, joins through ATTACH, and the
//! main writer never waiting for the log file's lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Log;
use rusqlite::Connection;
use sqlite_hybrid::{Database, LogDatabase, LogLevel, LogOptions, LogRecord};
use tracing_subscriber::layer::SubscriberExt;

const FLUSH: Duration = Duration::from_secs(10);

/// (level, target, message, fields, module, line) of a stored entry.
type StoredEntry = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn open(dir: &tempfile::TempDir, options: LogOptions) -> Database {
    let db = Database::builder(dir.path().join("app.db"))
        .log_database(options)
        .open()
        .unwrap();
    db.write(|tx| {
        Ok(tx
            .execute_batch("CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, name TEXT)")?)
    })
    .unwrap();
    db
}

fn log_conn(db: &Database) -> Connection {
    Connection::open(db.log().unwrap().path()).unwrap()
}

#[test]
fn log_file_sits_next_to_the_main_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, LogOptions::default());
    let logs = db.log().unwrap();
    assert_eq!(logs.path(), dir.path().join("app-logs.db"));
    let mode: String = log_conn(&db)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let indexes: Vec<String> = log_conn(&db)
        .prepare("SELECT name FROM pragma_index_list('entries') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(indexes, ["entries_level_ts", "entries_ts"]);
}

#[test]
fn records_from_many_threads_land_in_order_per_thread() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(
        &dir,
        LogOptions {
            channel_capacity: 100_000,
            ..LogOptions::default()
        },
    ));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let logger = db.log().unwrap().logger();
            std::thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn(move || {
                    for i in 0..2000 {
                        logger.log(
                            &log::Record::builder()
                                .level(log::Level::Info)
                                .target("order")
                                .args(format_args!("{i}"))
                                .build(),
                        );
                    }
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let logs = db.log().unwrap();
    logs.flush(FLUSH).unwrap();
    assert_eq!((logs.stats().written, logs.stats().dropped), (16_000, 0));
    let conn = log_conn(&db);
    for t in 0..8 {
        let seq: Vec<i64> = conn
            .prepare("SELECT CAST(message AS INTEGER) FROM entries WHERE thread = ?1 ORDER BY id")
            .unwrap()
            .query_map([format!("worker-{t}")], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            seq,
            (0..2000).collect::<Vec<i64>>(),
            "thread {t}: all records, in order"
        );
    }
}

#[test]
fn levels_targets_and_tracing_fields_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        LogOptions {
            level: log::LevelFilter::Debug,
            ..LogOptions::default()
        },
    );
    let logs = db.log().unwrap();
    let logger = logs.logger();
    for (level, message) in [
        (log::Level::Error, "e"),
        (log::Level::Warn, "w"),
        (log::Level::Debug, "d"),
        (log::Level::Trace, "t"),
    ] {
        logger.log(
            &log::Record::builder()
                .level(level)
                .target("billing")
                .module_path(Some("app::billing"))
                .file(Some("billing.rs"))
                .line(Some(7))
                .args(format_args!("{message}"))
                .build(),
        );
    }
    let subscriber = tracing_subscriber::registry().with(logs.tracing_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(target: "checkout", order_id = 42, total = 19.99, paid = true, customer = "ada", "payment slow");
    });
    logs.flush(FLUSH).unwrap();
    let conn = log_conn(&db);
    let rows: Vec<StoredEntry> = conn
        .prepare("SELECT level, target, message, fields, module, line FROM entries ORDER BY id")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let levels: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        levels,
        ["ERROR", "WARN", "DEBUG", "WARN"],
        "TRACE is below the Debug filter"
    );
    assert_eq!(
        (rows[0].1.as_str(), rows[0].4.as_deref(), rows[0].5),
        ("billing", Some("app::billing"), Some(7))
    );
    let (_, target, message, fields, _, _) = &rows[3];
    assert_eq!(
        (target.as_str(), message.as_str()),
        ("checkout", "payment slow")
    );
    let fields: serde_json::Value = serde_json::from_str(fields.as_deref().unwrap()).unwrap();
    assert_eq!(
        fields,
        serde_json::json!({"order_id": 42, "total": 19.99, "paid": true, "customer": "ada"})
    );
    let by_json: i64 = conn
        .query_row(
            "SELECT count(*) FROM entries WHERE json_extract(fields, '$.order_id') = 42",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_json, 1, "fields are queryable JSON");
}

#[test]
fn retention_deletes_exactly_the_old_entries_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        LogOptions {
            retention_chunk: 7,
            ..LogOptions::default()
        },
    );
    let logs = db.log().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 86_400_000u64;
    {
        let conn = log_conn(&db);
        let mut insert = conn
            .prepare(
                "INSERT INTO entries(ts, level, target, message) \
                 VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch'), 'INFO', 'old', ?2)",
            )
            .unwrap();
        // 30 entries just past 7 days, 20 just inside.
        for i in 0..30u64 {
            insert
                .execute(rusqlite::params![
                    (now - 7 * day - 60_000 - i) as i64,
                    format!("old {i}")
                ])
                .unwrap();
        }
        for i in 0..20u64 {
            insert
                .execute(rusqlite::params![
                    (now - 7 * day + 60_000 + i) as i64,
                    format!("kept {i}")
                ])
                .unwrap();
        }
    }
    assert_eq!(logs.run_retention(FLUSH).unwrap(), 30);
    let left: Vec<String> = log_conn(&db)
        .prepare("SELECT message FROM entries ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(left.len(), 20);
    assert!(left.iter().all(|m| m.starts_with("kept")));
    assert_eq!(logs.stats().deleted, 30);
}

#[test]
fn max_rows_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        LogOptions {
            max_rows: Some(100),
            retention_chunk: 30,
            ..LogOptions::default()
        },
    );
    let logs = db.log().unwrap();
    for i in 0..250 {
        logs.sink()
            .send(LogRecord::new(LogLevel::Info, "app", format!("{i}")));
    }
    logs.flush(FLUSH).unwrap();
    assert_eq!(logs.run_retention(FLUSH).unwrap(), 150);
    let (n, first): (i64, i64) = log_conn(&db)
        .query_row(
            "SELECT count(*), min(CAST(message AS INT)) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, first), (100, 150));
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        LogOptions {
            channel_capacity: 100,
            batch_size: 10,
            ..LogOptions::default()
        },
    );
    let logs = db.log().unwrap();
    // Stall the writer: another connection holds the log file's write lock,
    // so no batch can commit until it is released.
    let holder = log_conn(&db);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let sink = logs.sink();
    let (done_tx, done) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let sent = (0..100_000)
            .filter(|i| sink.send(LogRecord::new(LogLevel::Info, "flood", format!("{i}"))))
            .count();
        let _ = done_tx.send(sent);
    });
    // A hang guard, not a speed limit: sends that waited for the writer
    // would wait for the lock this thread holds, and never finish.
    let sent = done
        .recv_timeout(Duration::from_secs(120))
        .expect("sends returned while the writer could not write");
    sender.join().unwrap();
    let stats = logs.stats();
    assert_eq!(
        stats.written, 0,
        "nothing could commit while the lock was held"
    );
    // Accepted at most: a full queue (100) and the batch in the writer's
    // hands (at most `max_batch_size`, 1,000).
    assert!(stats.dropped >= 100_000 - 100 - 1_000, "{stats:?}");
    assert_eq!(
        stats.dropped as usize + sent,
        100_000,
        "every record is either queued or counted"
    );
    holder.execute_batch("COMMIT").unwrap();
    logs.flush(FLUSH).unwrap();
    let written = logs.stats().written;
    assert_eq!(written as usize, sent, "everything accepted was written");
    // The drop count is visible in SQL too.
    let dropped: i64 = log_conn(&db)
        .query_row("SELECT dropped FROM writer_stats", [], |r| r.get(0))
        .unwrap();
    assert_eq!(dropped as u64, stats.dropped);
}

#[test]
fn joins_with_app_data_work_through_the_attach() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, LogOptions::default());
    db.write(|tx| Ok(tx.execute_batch("INSERT INTO users VALUES (1, 'ada'), (2, 'bob')")?))
        .unwrap();
    let logs = db.log().unwrap();
    let subscriber = tracing_subscriber::registry().with(logs.tracing_layer());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(user_id = 1, "login");
        tracing::info!(user_id = 1, "logout");
        tracing::info!(user_id = 2, "login");
    });
    logs.flush(FLUSH).unwrap();
    let rows: Vec<(String, i64)> = db
        .read(|c| {
            let mut stmt = c.prepare(
                "SELECT u.name, count(*) FROM log.entries e JOIN users u ON u.id = json_extract(e.fields, '$.user_id') \
                 GROUP BY u.name ORDER BY u.name",
            )?;
            Ok(stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(rows, [("ada".to_string(), 2), ("bob".to_string(), 1)]);
}

/// The point of a separate file: the app's writer never waits for the log
/// file's lock. (Were the log file ATTACHed on the writer connection,
/// BEGIN IMMEDIATE would take its write lock too, and this would wait.)
#[test]
fn app_writes_never_wait_for_the_log_file_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, LogOptions::default());
    let holder = log_conn(&db);
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let start = Instant::now();
    for i in 0..20 {
        db.write(|tx| Ok(tx.execute("INSERT INTO users(name) VALUES (?1)", [format!("u{i}")])?))
            .unwrap();
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "app writes waited for the log lock: {took:?}"
    );
    holder.execute_batch("COMMIT").unwrap();
    // Readers (which do attach it) see both.
    let n: i64 = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM users, (SELECT count(*) FROM log.entries)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(n, 20);
}

#[test]
fn close_flushes_and_later_records_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogDatabase::open(
        dir.path().join("l.db"),
        LogOptions {
            flush_interval: Duration::from_secs(600),
            ..LogOptions::default()
        },
    )
    .unwrap();
    let sink = logs.sink();
    for i in 0..123 {
        sink.send(LogRecord::new(LogLevel::Info, "app", format!("{i}")));
    }
    logs.close().unwrap();
    assert!(
        !sink.send(LogRecord::new(LogLevel::Info, "app", "late")),
        "closed: not accepted"
    );
    assert_eq!(logs.stats().dropped, 1);
    let n: i64 = Connection::open(dir.path().join("l.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 123, "everything sent before close was written");
    assert!(matches!(
        sink.flush(Duration::from_secs(1)),
        Err(sqlite_hybrid::Error::Closed)
    ));
}

#[test]
fn stats_report_queue_batches_and_file_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(
        &dir,
        LogOptions {
            batch_size: 10,
            // Below batch_size: batch_size is the bound, so the count of
            // batches is exact whatever the writer's timing.
            max_batch_size: 1,
            ..LogOptions::default()
        },
    );
    let logs = db.log().unwrap();
    for i in 0..95 {
        logs.sink()
            .send(LogRecord::new(LogLevel::Info, "app", format!("{i}")));
    }
    logs.flush(FLUSH).unwrap();
    let stats = logs.stats();
    assert_eq!(
        (stats.written, stats.batches, stats.queue_depth),
        (95, 10, 0)
    );
    assert!(
        stats.last_flush_at.is_some() && stats.file_bytes > 0,
        "{stats:?}"
    );
    let (written, batches): (i64, i64) = log_conn(&db)
        .query_row("SELECT written, batches FROM writer_stats", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((written, batches), (95, 10));
}

/// A record's timestamp is public and may be anything: one past year 9999
/// is stored as its last millisecond, and its batch is written like any
/// other (a formatting error must not cost the batch or the writer).
#[test]
fn a_timestamp_past_year_9999_is_clamped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, LogOptions::default());
    let logs = db.log().unwrap();
    let mut far = LogRecord::new(LogLevel::Info, "app", "far");
    far.ts_unix_ms = u64::MAX;
    logs.sink().send(far);
    logs.sink()
        .send(LogRecord::new(LogLevel::Info, "app", "next"));
    logs.flush(FLUSH).unwrap();
    let stored: Vec<(String, String)> = log_conn(&db)
        .prepare("SELECT message, ts FROM entries ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], ("far".into(), "9999-12-31T23:59:59.999Z".into()));
    assert_eq!(stored[1].0, "next");
}
