//! Failures outside the caller's control: a full disk and a read-only
//! database. Each gets a clear error; nothing the buffer accepted is
//! dropped, and once the cause is gone everything is written.

use std::time::Duration;

use sqlite_hybrid::{BufferOptions, Database, Error, RetryPolicy, Row, TicketStatus};

fn page_count(db: &Database) -> i64 {
    db.read(|c| Ok(c.query_row("PRAGMA page_count", [], |r| r.get(0))?))
        .unwrap()
}

#[test]
fn a_full_disk_keeps_buffered_entries_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder(dir.path().join("full.db"))
        .retry(RetryPolicy {
            deadline: Duration::from_millis(500),
            ..RetryPolicy::default()
        })
        .write_buffer(BufferOptions {
            flush_interval: Duration::from_secs(600),
            ..BufferOptions::default()
        })
        .open()
        .unwrap();
    db.write(|tx| {
        Ok(tx.execute_batch("CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB NOT NULL)")?)
    })
    .unwrap();
    // "Disk full": the file may not grow beyond a few pages.
    let limit = page_count(&db) + 2;
    db.write(|tx| Ok(tx.execute_batch(&format!("PRAGMA max_page_count = {limit}"))?))
        .unwrap();

    let err = db
        .write(|tx| {
            Ok(tx.execute(
                "INSERT INTO blobs(data) VALUES (?1)",
                [vec![7u8; 64 * 1024]],
            )?)
        })
        .unwrap_err();
    assert!(
        matches!(err, Error::Io(_)),
        "disk full is an I/O-class error: {err:?}"
    );
    assert!(err.to_string().contains("full"), "{err}");

    let tickets: Vec<_> = (0..50)
        .map(|i| {
            db.buffer()
                .upsert(
                    "blobs",
                    Row::new().set("id", i).set("data", vec![i as u8; 8 * 1024]),
                    &["id"],
                )
                .unwrap()
        })
        .collect();
    let err = db.buffer().force_flush().unwrap_err();
    assert!(
        matches!(err, Error::FlushFailed { failed: 50, ref first_error } if first_error.contains("full")),
        "{err:?}"
    );
    assert!(
        tickets.iter().all(|t| t.status() == TicketStatus::Pending),
        "kept, not dropped"
    );
    let stats = db.buffer().stats();
    assert!(
        stats.failed_batches >= 1 && stats.failed_entries == 0,
        "{stats:?}"
    );

    // Room again: everything lands.
    db.write(|tx| Ok(tx.execute_batch("PRAGMA max_page_count = 1000000")?))
        .unwrap();
    db.buffer().force_flush().unwrap();
    assert!(
        tickets
            .iter()
            .all(|t| t.status() == TicketStatus::Committed)
    );
    let (n, bytes): (i64, i64) = db
        .read(|c| {
            Ok(
                c.query_row("SELECT count(*), sum(length(data)) FROM blobs", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?,
            )
        })
        .unwrap();
    assert_eq!((n, bytes), (50, 50 * 8 * 1024));
    assert_eq!(
        db.read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?))
            .unwrap(),
        "ok"
    );
}

#[test]
fn a_read_only_database_gives_clear_errors_and_keeps_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    {
        let db = Database::open(&path).unwrap();
        db.write(|tx| {
            Ok(tx.execute_batch(
                "CREATE TABLE t(k TEXT PRIMARY KEY, v INT); INSERT INTO t VALUES ('a', 1);",
            )?)
        })
        .unwrap();
    }
    // Opening it read-only (as a URI; file permissions do not stop root).
    let uri = format!("file:{}?mode=ro", path.display());
    let db = Database::builder(&uri)
        .tune(false)
        .retry(RetryPolicy {
            deadline: Duration::from_millis(300),
            ..RetryPolicy::default()
        })
        .write_buffer(BufferOptions {
            flush_interval: Duration::from_secs(600),
            ..BufferOptions::default()
        })
        .open()
        .unwrap();
    let v: i64 = db
        .read(|c| Ok(c.query_row("SELECT v FROM t", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, 1, "reads work");
    let err = db
        .write(|tx| Ok(tx.execute("UPDATE t SET v = 2", [])?))
        .unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert!(err.to_string().contains("readonly"), "{err}");
    let ticket = db
        .buffer()
        .upsert("t", Row::new().set("k", "b").set("v", 2), &["k"])
        .unwrap();
    let err = db.buffer().force_flush().unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
    assert_eq!(ticket.status(), TicketStatus::Pending);
    // Closing cannot write it either: the entry is failed and reported, not lost silently.
    let err = db.close().unwrap_err();
    assert!(
        matches!(err, Error::FlushFailed { failed: 1, .. }),
        "{err:?}"
    );
    assert!(
        matches!(ticket.status(), TicketStatus::Failed(ref m) if m.contains("closed before")),
        "{:?}",
        ticket.status()
    );
}
