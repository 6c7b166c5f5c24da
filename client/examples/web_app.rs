//! A small "web app" on sqlite-hybrid: request handlers on several threads
//! place orders (retried write transactions) and record each user's session
//! state through the write buffer (last write wins, coalesced, flushed in
//! the background), reading their own pending writes back.
//!
//! Note what the buffer is *not* for: counters. Its upserts are last-write-
//! wins, so "read the pending value, write +1" from two threads loses
//! increments; use `db.write` with `UPDATE ... SET n = n + 1` for those.
//!
//! Run: `cargo run -p sqlite-hybrid --example web_app`.

use std::sync::Arc;
use std::time::Duration;

use sqlite_hybrid::{BufferOptions, Database, PendingRow, Row};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(
        Database::builder(dir.path().join("shop.db"))
            .write_buffer(BufferOptions {
                flush_interval: Duration::from_millis(200),
                ..BufferOptions::default()
            })
            .open()?,
    );
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total_cents INTEGER NOT NULL);
             CREATE TABLE sessions(user TEXT PRIMARY KEY, last_page TEXT NOT NULL, requests INTEGER NOT NULL);",
        )?)
    })?;

    // 8 "request handlers".
    let handlers: Vec<_> = (0..8)
        .map(|worker| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || -> sqlite_hybrid::Result<()> {
                for request in 0..200 {
                    // Session state: each handler owns its user's row, so
                    // last-write-wins is exactly right.
                    let user = format!("user-{worker}");
                    let page = format!("/product/{}", request % 10);
                    let key = Row::new().set("user", user.as_str());
                    db.buffer().upsert(
                        "sessions",
                        key.clone()
                            .set("last_page", page.as_str())
                            .set("requests", request + 1),
                        &["user"],
                    )?;
                    // Read-your-writes: the value is visible before it is flushed.
                    match db.buffer().get("sessions", &key)? {
                        Some(PendingRow::Upserted(row)) => {
                            assert_eq!(
                                row.get("last_page"),
                                Some(&rusqlite::types::Value::Text(page))
                            )
                        }
                        None => {} // already flushed: the database has it
                        other => panic!("unexpected pending state {other:?}"),
                    }
                    if request % 20 == 0 {
                        // A real order: one transaction, retried on lock errors.
                        db.write(|tx| {
                            tx.execute(
                                "INSERT INTO orders(customer, total_cents) VALUES (?1, ?2)",
                                (format!("customer-{worker}"), 1999),
                            )?;
                            Ok(())
                        })?;
                    }
                }
                Ok(())
            })
        })
        .collect();
    for handler in handlers {
        handler.join().expect("handler thread")?;
    }
    db.buffer().force_flush()?;

    let (orders, pages): (i64, i64) = db.read(|c| {
        Ok((
            c.query_row("SELECT count(*) FROM orders", [], |r| r.get(0))?,
            c.query_row("SELECT sum(requests) FROM sessions", [], |r| r.get(0))?,
        ))
    })?;
    let stats = db.buffer().stats();
    let locks = db.lock_metrics()?;
    println!("orders: {orders}, requests recorded in sessions: {pages}");
    println!(
        "buffer: {} enqueued, {} coalesced, {} rows in {} batches (avg {:.2} ms)",
        stats.enqueued,
        stats.coalesced,
        stats.flushed_entries,
        stats.flushed_batches,
        stats.avg_flush_ms.unwrap_or(0.0)
    );
    println!(
        "lock waits on {}: {} (max {:.1} ms), lock errors: {}",
        locks.db, locks.busy_events, locks.wait_max_ms, locks.gave_up
    );
    assert_eq!(orders, 80);
    assert_eq!(pages, 8 * 200);
    Ok(())
}
