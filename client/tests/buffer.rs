//! The write buffer against real files and threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use sqlite_hybrid::{
    Backpressure, BufferOptions, Database, Error, FailedOp, PendingRow, RetryPolicy, Row,
    TicketStatus,
};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS stock(sku TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0, note TEXT);
    CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, kind TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT);
    CREATE TABLE IF NOT EXISTS strict_t(k INTEGER PRIMARY KEY, n INTEGER, b BLOB) STRICT;";

fn open_with(dir: &tempfile::TempDir, options: BufferOptions) -> Database {
    open_with_retry(dir, options, RetryPolicy::default())
}

fn open_with_retry(
    dir: &tempfile::TempDir,
    options: BufferOptions,
    retry: RetryPolicy,
) -> Database {
    let db = Database::builder(dir.path().join("buf.db"))
        .retry(retry)
        .write_buffer(options)
        .open()
        .unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).unwrap();
    db
}

/// A long interval: flushes happen only when asked, so tests see pending state.
fn manual_flush() -> BufferOptions {
    BufferOptions {
        flush_interval: Duration::from_secs(600),
        ..BufferOptions::default()
    }
}

fn open(dir: &tempfile::TempDir) -> Database {
    open_with(dir, manual_flush())
}

/// Like [`open`], with write retries (and so flush attempts) ending after `deadline`.
fn open_retrying_for(dir: &tempfile::TempDir, deadline: Duration) -> Database {
    open_with_retry(
        dir,
        manual_flush(),
        RetryPolicy {
            deadline,
            ..RetryPolicy::default()
        },
    )
}

fn stock(db: &Database) -> Vec<(String, i64, Option<String>)> {
    db.read(|c| {
        let mut s = c.prepare("SELECT sku, qty, note FROM stock ORDER BY sku")?;
        let rows = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    })
    .unwrap()
}

fn row(sku: &str, qty: i64) -> Row {
    Row::new().set("sku", sku).set("qty", qty)
}

#[test]
fn upserts_coalesce_last_write_wins_per_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    b.upsert("stock", row("a", 1).set("note", "first"), &["sku"])
        .unwrap();
    b.upsert("stock", row("a", 2), &["sku"]).unwrap();
    b.upsert(
        "stock",
        Row::new().set("SKU", "a").set("Note", "last"),
        &["sku"],
    )
    .unwrap();
    assert_eq!(b.stats().pending, 1);
    assert_eq!(b.stats().coalesced, 2);
    b.force_flush().unwrap();
    assert_eq!(stock(&db), vec![("a".into(), 2, Some("last".into()))]);
    let stats = b.stats();
    assert_eq!(
        (stats.flushed_entries, stats.flushed_batches, stats.pending),
        (1, 1, 0)
    );
}

#[test]
fn delete_after_upsert_cancels_it_and_deletes_the_committed_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    b.upsert("stock", row("b", 1), &["sku"]).unwrap();
    b.force_flush().unwrap();
    b.upsert("stock", row("a", 50), &["sku"]).unwrap();
    b.delete("stock", Row::new().set("sku", "a")).unwrap();
    b.upsert("stock", row("c", 3), &["sku"]).unwrap();
    b.delete("stock", Row::new().set("sku", "c")).unwrap();
    assert_eq!(
        b.get("stock", &Row::new().set("sku", "a")).unwrap(),
        Some(PendingRow::Deleted)
    );
    b.force_flush().unwrap();
    assert_eq!(stock(&db), vec![("b".into(), 1, None)]);
}

#[test]
fn upsert_after_delete_replaces_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    b.upsert("stock", row("a", 1).set("note", "old"), &["sku"])
        .unwrap();
    b.force_flush().unwrap();
    b.delete("stock", Row::new().set("sku", "a")).unwrap();
    b.upsert("stock", row("a", 9), &["sku"]).unwrap();
    match b.get("stock", &Row::new().set("sku", "a")).unwrap() {
        Some(PendingRow::Replaced(r)) => assert_eq!(r.get("qty"), Some(&Value::Integer(9))),
        other => panic!("{other:?}"),
    }
    b.force_flush().unwrap();
    assert_eq!(
        stock(&db),
        vec![("a".into(), 9, None)],
        "note is gone: the row was replaced"
    );
}

#[test]
fn update_on_missing_row_does_nothing_and_update_after_upsert_merges() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    b.update(
        "stock",
        Row::new().set("sku", "ghost"),
        Row::new().set("qty", 5),
    )
    .unwrap();
    b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    b.update(
        "stock",
        Row::new().set("sku", "a"),
        Row::new().set("note", "n"),
    )
    .unwrap();
    match b.get("stock", &Row::new().set("sku", "a")).unwrap() {
        Some(PendingRow::Upserted(r)) => assert_eq!(r.get("note"), Some(&Value::Text("n".into()))),
        other => panic!("{other:?}"),
    }
    b.force_flush().unwrap();
    assert_eq!(stock(&db), vec![("a".into(), 1, Some("n".into()))]);
}

#[test]
fn per_key_order_holds_under_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open_with(
        &dir,
        BufferOptions {
            batch_size: 10,
            ..BufferOptions::default()
        },
    ));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                // Each thread owns its keys; its last write per key must win.
                for i in 0..500i64 {
                    let sku = format!("t{t}-k{}", i % 7);
                    db.buffer().upsert("stock", row(&sku, i), &["sku"]).unwrap();
                    if i % 50 == 49 {
                        db.buffer()
                            .delete("stock", Row::new().set("sku", format!("t{t}-k0")))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    db.buffer().force_flush().unwrap();
    let rows = stock(&db);
    for t in 0..4 {
        for k in 1..7i64 {
            let last = (0..500i64).filter(|i| i % 7 == k).max().unwrap();
            assert!(
                rows.contains(&(format!("t{t}-k{k}"), last, None)),
                "t{t}-k{k} should be {last}"
            );
        }
        // k0's last write (i = 497) came after the last delete (i = 499)? No:
        // 497 < 499, so the delete wins.
        assert!(
            !rows.iter().any(|r| r.0 == format!("t{t}-k0")),
            "delete after the last upsert wins"
        );
    }
    assert_eq!(rows.len(), 24);
}

#[test]
fn backpressure_reject_and_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buf.db");
    let options = BufferOptions {
        max_pending: 3,
        batch_size: 100,
        backpressure: Backpressure::Reject,
        ..manual_flush()
    };
    let db = open_with(&dir, options.clone());
    let b = db.buffer();
    for sku in ["a", "b", "c"] {
        b.upsert("stock", row(sku, 1), &["sku"]).unwrap();
    }
    b.upsert("stock", row("a", 2), &["sku"])
        .expect("merging into a queued entry needs no room");
    let err = b.upsert("stock", row("d", 1), &["sku"]).unwrap_err();
    assert!(matches!(err, Error::BufferFull { capacity: 3 }), "{err:?}");
    assert_eq!(b.stats().rejected, 1);
    // The rejection started a flush: room comes back without waiting for the interval.
    let start = Instant::now();
    while b.upsert("stock", row("d", 1), &["sku"]).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the buffer never drained"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    b.force_flush().unwrap();
    assert_eq!(stock(&db)[0], ("a".into(), 2, None));
    db.write(|tx| Ok(tx.execute("DELETE FROM stock WHERE sku = 'd'", [])?))
        .unwrap();
    drop(db);

    // Block: with the buffer full and its flush stuck behind a lock held
    // elsewhere, an enqueue waits. (1) The lock frees within the timeout:
    // the flush completes and the waiting call is admitted. (2) It does
    // not: the call fails with BufferFull at the timeout.
    let blocking = BufferOptions {
        backpressure: Backpressure::Block {
            timeout: Duration::from_millis(1500),
        },
        ..options
    };
    let db = Database::builder(&path)
        .write_buffer(blocking)
        .retry(RetryPolicy {
            deadline: Duration::from_secs(30),
            ..RetryPolicy::default()
        })
        .open()
        .unwrap();
    let b = db.buffer();
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    for sku in ["e", "f", "g"] {
        b.upsert("stock", row(sku, 1), &["sku"]).unwrap();
    }
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        holder.execute_batch("COMMIT").unwrap();
        holder
    });
    let start = Instant::now();
    b.upsert("stock", row("h", 1), &["sku"])
        .expect("admitted once the flush made room");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "it did block: {waited:?}"
    );
    let holder = releaser.join().unwrap();
    b.force_flush().unwrap();

    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    for sku in ["i", "j"] {
        b.upsert("stock", row(sku, 1), &["sku"]).unwrap();
    }
    b.upsert("stock", row("k", 1), &["sku"]).unwrap();
    let start = Instant::now();
    let err = b.upsert("stock", row("l", 1), &["sku"]).unwrap_err();
    assert!(matches!(err, Error::BufferFull { capacity: 3 }), "{err:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "blocked for the timeout: {:?}",
        start.elapsed()
    );
    holder.execute_batch("COMMIT").unwrap();
    b.force_flush().unwrap();
    let skus: Vec<String> = stock(&db).into_iter().map(|r| r.0).collect();
    assert_eq!(skus, ["a", "b", "c", "e", "f", "g", "h", "i", "j", "k"]);
    assert_eq!(b.stats().rejected, 1);
}

#[test]
fn drop_and_close_flush_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(&dir);
        for i in 0..250 {
            db.buffer()
                .upsert("stock", row(&format!("s{i:03}"), i), &["sku"])
                .unwrap();
        }
        db.buffer()
            .insert("events", Row::new().set("kind", "boot"))
            .unwrap();
        // dropped here without force_flush
    }
    let db = open(&dir);
    assert_eq!(stock(&db).len(), 250);
    let n: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 1);
    db.buffer().upsert("stock", row("z", 1), &["sku"]).unwrap();
    db.close().unwrap();
    assert_eq!(stock(&open(&dir)).len(), 251);
}

#[test]
fn force_flush_covers_everything_enqueued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open_with(
        &dir,
        BufferOptions {
            batch_size: 7,
            ..manual_flush()
        },
    ));
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            for i in 0..2000 {
                db.buffer()
                    .insert("events", Row::new().set("kind", format!("e{i}")))
                    .unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let seen_before = db.buffer().stats().enqueued;
    db.buffer().force_flush().unwrap();
    let committed: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
        .unwrap();
    assert!(
        committed as u64 >= seen_before,
        "{committed} committed < {seen_before} enqueued before force_flush"
    );
    writer.join().unwrap();
    db.buffer().force_flush().unwrap();
    let committed: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(committed, 2000);
    // Inserts kept their order.
    let ordered: bool = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) = 0 FROM events a JOIN events b ON b.id = a.id + 1 \
                 WHERE CAST(substr(b.kind, 2) AS INT) < CAST(substr(a.kind, 2) AS INT)",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert!(ordered, "inserts were written in enqueue order");
}

#[test]
fn a_constraint_error_isolates_the_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.write(|tx| Ok(tx.execute("INSERT INTO users(id, email) VALUES (1, 'taken@x')", [])?))
        .unwrap();
    let b = db.buffer();
    let mut tickets = Vec::new();
    for id in 2..12 {
        let email = if id == 6 {
            "taken@x".to_string()
        } else {
            format!("u{id}@x")
        };
        tickets.push(
            b.upsert(
                "users",
                Row::new().set("id", id).set("email", email),
                &["id"],
            )
            .unwrap(),
        );
    }
    let err = b.force_flush().unwrap_err();
    assert!(
        matches!(err, Error::FlushFailed { failed: 1, ref first_error } if first_error.contains("UNIQUE")),
        "{err:?}"
    );
    let n: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 10, "the 9 good rows committed with the existing one");
    assert!(matches!(tickets[4].status(), TicketStatus::Failed(ref m) if m.contains("UNIQUE")));
    assert_eq!(tickets[0].status(), TicketStatus::Committed);
    let failed = b.take_failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].table, "users");
    assert_eq!(failed[0].key.get("id"), Some(&Value::Integer(6)));
    assert!(
        matches!(&failed[0].ops[..], [FailedOp::Upsert(r)] if r.get("email") == Some(&Value::Text("taken@x".into())))
    );
    let stats = b.stats();
    assert_eq!(
        (
            stats.failed_entries,
            stats.flushed_entries,
            stats.failed_kept
        ),
        (1, 9, 0)
    );
    b.force_flush().unwrap();
}

#[test]
fn a_failing_two_statement_entry_rolls_back_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    b.upsert(
        "users",
        Row::new().set("id", 1).set("email", "a@x"),
        &["id"],
    )
    .unwrap();
    b.upsert(
        "users",
        Row::new().set("id", 2).set("email", "b@x"),
        &["id"],
    )
    .unwrap();
    b.force_flush().unwrap();
    // delete id 1, then upsert id 1 with b@x (taken by id 2): the upsert
    // fails, so the delete must not happen either.
    b.delete("users", Row::new().set("id", 1)).unwrap();
    b.upsert(
        "users",
        Row::new().set("id", 1).set("email", "b@x"),
        &["id"],
    )
    .unwrap();
    assert!(b.force_flush().is_err());
    let email: String = db
        .read(|c| Ok(c.query_row("SELECT email FROM users WHERE id = 1", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(email, "a@x");
    assert!(matches!(
        &b.take_failed()[0].ops[..],
        [FailedOp::Delete, FailedOp::Upsert(_)]
    ));
}

#[test]
fn bad_calls_fail_at_enqueue_and_queue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    let cases: Vec<(sqlite_hybrid::Result<sqlite_hybrid::Ticket>, &str)> = vec![
        (
            b.upsert("nope", row("a", 1), &["sku"]),
            "no such table: nope",
        ),
        (
            b.upsert("stock\"; DROP TABLE stock; --", row("a", 1), &["sku"]),
            "no such table",
        ),
        (
            b.upsert("stock", row("a", 1).set("colour", "red"), &["sku"]),
            "no such column: stock.colour",
        ),
        (
            b.upsert("stock", row("a", 1), &["qty"]),
            "not the PRIMARY KEY or a UNIQUE index",
        ),
        (
            b.upsert("stock", Row::new().set("qty", 1), &["sku"]),
            "key column stock.sku is missing",
        ),
        (
            b.upsert(
                "stock",
                Row::new().set("sku", None::<String>).set("qty", 1),
                &["sku"],
            ),
            "key column stock.sku is NULL",
        ),
        (b.upsert("stock", row("a", 1), &[]), "no key columns"),
        (
            b.upsert("users", Row::new().set("id", 1), &["id"]),
            "users.email is NOT NULL",
        ),
        (
            b.upsert(
                "users",
                Row::new().set("id", "one").set("email", "e"),
                &["id"],
            ),
            "expected an integer",
        ),
        (
            b.upsert("strict_t", Row::new().set("k", 1).set("n", "many"), &["k"]),
            "STRICT type INTEGER",
        ),
        (
            b.upsert(
                "strict_t",
                Row::new().set("k", 1).set("big", u64::MAX),
                &["k"],
            ),
            "column big",
        ),
        (
            b.update("stock", Row::new().set("sku", "a"), Row::new()),
            "no columns to change",
        ),
        (
            b.update(
                "stock",
                Row::new().set("sku", "a"),
                Row::new().set("sku", "b"),
            ),
            "cannot change key column",
        ),
        (
            b.delete("stock", Row::new().set("qty", 1)),
            "not the PRIMARY KEY",
        ),
        (b.insert("events", Row::new()), "no columns"),
    ];
    for (result, expected) in cases {
        let err = result.expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "expected '{expected}' in: {err}"
        );
    }
    // A table is keyed or append-only, not both.
    b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    let err = b.insert("stock", row("b", 1)).unwrap_err();
    assert!(err.to_string().contains("keyed on (sku)"), "{err}");
    let stats = b.stats();
    assert_eq!(
        (stats.pending, stats.enqueued),
        (1, 1),
        "only the good call was queued"
    );
}

#[test]
fn get_shows_pending_values_until_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    let key = Row::new().set("sku", "a");
    assert_eq!(b.get("stock", &key).unwrap(), None);
    b.upsert("stock", row("a", 4), &["sku"]).unwrap();
    match b.get("stock", &key).unwrap() {
        Some(PendingRow::Upserted(r)) => assert_eq!(r.get("qty"), Some(&Value::Integer(4))),
        other => panic!("{other:?}"),
    }
    b.force_flush().unwrap();
    assert_eq!(
        b.get("stock", &key).unwrap(),
        None,
        "committed: read the database"
    );
}

#[test]
fn tickets_resolve_when_their_entry_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let b = db.buffer();
    let t1 = b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    let t2 = b.upsert("stock", row("a", 2), &["sku"]).unwrap(); // merged into t1's entry
    assert_eq!(t1.status(), TicketStatus::Pending);
    t2.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(t1.status(), TicketStatus::Committed);
    assert_eq!(stock(&db), vec![("a".into(), 2, None)]);
    // Waiting inside write() would deadlock: refused instead.
    let t3 = b.upsert("stock", row("b", 1), &["sku"]).unwrap();
    let err = db.write(|_| t3.wait(Duration::from_secs(1))).unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
    let err = db.write(|_| b.force_flush()).unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
}

#[test]
fn interval_and_batch_size_start_flushes_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_with(
        &dir,
        BufferOptions {
            batch_size: 5,
            flush_interval: Duration::from_millis(200),
            ..BufferOptions::default()
        },
    );
    let b = db.buffer();
    let t = b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    let start = Instant::now();
    while t.status() == TicketStatus::Pending && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        t.status(),
        TicketStatus::Committed,
        "flushed by the interval"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    let tickets: Vec<_> = (0..5)
        .map(|i| {
            b.upsert("stock", row(&format!("k{i}"), i), &["sku"])
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    while tickets.iter().any(|t| t.status() == TicketStatus::Pending)
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        tickets
            .iter()
            .all(|t| t.status() == TicketStatus::Committed)
    );
}

#[test]
fn a_failed_batch_stays_queued_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_retrying_for(&dir, Duration::from_millis(200));
    let b = db.buffer();
    let ticket = b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    let holder = Connection::open(dir.path().join("buf.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = b.force_flush().unwrap_err();
    assert!(
        matches!(err, Error::FlushFailed { ref first_error, .. } if first_error.contains("locked")),
        "{err:?}"
    );
    assert_eq!(ticket.status(), TicketStatus::Pending, "kept, not dropped");
    assert!(b.stats().failed_batches >= 1);
    b.upsert("stock", row("a", 7), &["sku"]).unwrap();
    holder.execute_batch("COMMIT").unwrap();
    b.force_flush().unwrap();
    assert_eq!(ticket.status(), TicketStatus::Committed);
    assert_eq!(
        stock(&db),
        vec![("a".into(), 7, None)],
        "the retried entry merged with the newer one, in order"
    );
}

#[test]
fn the_flusher_queues_for_the_lock_as_background() {
    if !sqlite_hybrid::FUTEX_QUEUE {
        eprintln!("skipped: the queue's priorities need futex mode, not in this build");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = open_retrying_for(&dir, Duration::from_secs(20));
    let holder = Connection::open(dir.path().join("buf.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let ticket = db.buffer().upsert("stock", row("a", 1), &["sku"]).unwrap();
    let flush = std::thread::spawn({
        let ticket = ticket.clone();
        move || ticket.wait(Duration::from_secs(20))
    });
    let start = Instant::now();
    let priority = loop {
        let waiting: Option<String> = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT priority FROM hybrid_lock_waiters LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .unwrap();
        if let Some(p) = waiting {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the flusher never queued"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(priority, "background");
    holder.execute_batch("COMMIT").unwrap();
    flush.join().unwrap().unwrap();
    assert_eq!(ticket.status(), TicketStatus::Committed);
}

/// Issue 17: a deferred foreign key fails only at COMMIT. That failure
/// belongs to the entry that broke it, not to the batch: the entry fails
/// (ticket, `take_failed`), every other entry commits, and the buffer keeps
/// working.
#[test]
fn a_constraint_failing_only_at_commit_fails_its_entry_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE par(id INTEGER PRIMARY KEY);
             CREATE TABLE ch(id INTEGER PRIMARY KEY,
                             p INT REFERENCES par(id) DEFERRABLE INITIALLY DEFERRED);
             INSERT INTO par VALUES (1);",
        )?)
    })
    .unwrap();
    let b = db.buffer();
    let good = b.upsert("stock", row("a", 1), &["sku"]).unwrap();
    let child_ok = b
        .upsert("ch", Row::new().set("id", 1).set("p", 1), &["id"])
        .unwrap();
    let orphan = b
        .upsert("ch", Row::new().set("id", 2).set("p", 99), &["id"])
        .unwrap();
    // Merged into the orphan's entry: one entry, two tickets.
    let orphan_again = b
        .upsert("ch", Row::new().set("id", 2).set("p", 98), &["id"])
        .unwrap();
    let later = b.upsert("stock", row("b", 2), &["sku"]).unwrap();
    match b.force_flush() {
        Err(Error::FlushFailed {
            failed,
            first_error,
        }) => {
            assert_eq!(failed, 1, "one entry failed (it holds two tickets)");
            assert!(first_error.contains("FOREIGN KEY"), "{first_error}");
        }
        other => panic!("expected FlushFailed, got {other:?}"),
    }
    for ticket in [&good, &child_ok, &later] {
        assert_eq!(ticket.status(), TicketStatus::Committed);
    }
    for ticket in [&orphan, &orphan_again] {
        assert!(matches!(ticket.status(), TicketStatus::Failed(m) if m.contains("FOREIGN KEY")));
    }
    let failed = b.take_failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].table, "ch");
    assert_eq!(failed[0].key.get("id"), Some(&Value::Integer(2)));
    let (children, skus): (i64, i64) = db
        .read(|c| {
            Ok((
                c.query_row("SELECT count(*) FROM ch", [], |r| r.get(0))?,
                c.query_row("SELECT count(*) FROM stock", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!((children, skus), (1, 2));
    // Nothing is jammed: a later entry flushes, and close reports nothing.
    b.upsert("stock", row("c", 3), &["sku"]).unwrap();
    b.force_flush().unwrap();
    db.close().unwrap();
}

/// Issue 17: NaN is refused at the call (SQLite stores it as NULL: a NULL
/// key, or a NOT NULL failure at flush), and so is text that a STRICT REAL
/// column would refuse at flush.
#[test]
fn nan_and_non_numeric_text_are_refused_at_enqueue() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE r(k REAL PRIMARY KEY, v INT);
             CREATE TABLE nn(id INTEGER PRIMARY KEY, v REAL NOT NULL);
             CREATE TABLE sr(id INTEGER PRIMARY KEY, x REAL) STRICT;",
        )?)
    })
    .unwrap();
    let b = db.buffer();
    let nan_key = b
        .upsert("r", Row::new().set("k", f64::NAN).set("v", 1), &["k"])
        .unwrap_err();
    assert!(
        matches!(nan_key, Error::InvalidInput(ref m) if m.contains("NaN")),
        "{nan_key}"
    );
    let nan_value = b
        .insert("nn", Row::new().set("id", 1).set("v", f64::NAN))
        .unwrap_err();
    assert!(matches!(nan_value, Error::InvalidInput(ref m) if m.contains("NaN")));
    for text in ["inf", "NaN", "0x1F"] {
        let err = b
            .insert("sr", Row::new().set("id", 1).set("x", text))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{text}: {err}");
    }
    b.insert("sr", Row::new().set("id", 2).set("x", "2.5e3"))
        .unwrap();
    assert_eq!(b.stats().enqueued, 1, "nothing else was queued");
    b.force_flush().unwrap();
}

/// A batch that failed (the lock held past the retry deadline) is retried
/// after the flusher's retry pause once the lock frees, not after a whole
/// flush interval: the ticket commits long before the 60 s interval.
#[test]
fn a_failed_batch_is_retried_after_the_pause_not_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retry.db");
    let db = sqlite_hybrid::Database::builder(&path)
        .retry(sqlite_hybrid::RetryPolicy {
            deadline: std::time::Duration::from_millis(200),
            ..Default::default()
        })
        .write_buffer(sqlite_hybrid::BufferOptions {
            flush_interval: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .open()
        .unwrap();
    db.write(|tx| Ok(tx.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)")?))
        .unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let ticket = db
        .buffer()
        .upsert(
            "kv",
            sqlite_hybrid::Row::new().set("k", "a").set("v", 1),
            &["k"],
        )
        .unwrap();
    let failed = db
        .buffer()
        .force_flush_timeout(std::time::Duration::from_secs(20));
    assert!(failed.is_err(), "the lock was held: {failed:?}");
    assert!(db.buffer().stats().failed_batches >= 1);
    other.execute_batch("COMMIT").unwrap();
    // Watched without asking for a flush (Ticket::wait would ask).
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ticket.status() != sqlite_hybrid::TicketStatus::Committed {
        assert!(
            std::time::Instant::now() < give_up,
            "not retried: {:?}",
            ticket.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let v: i64 = db
        .read(|c| Ok(c.query_row("SELECT v FROM kv WHERE k = 'a'", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, 1);
}
