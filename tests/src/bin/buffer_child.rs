//! A client process for the crash test: upserts into a buffered table as
//! fast as it can and prints what was acknowledged, until it is killed.
//!
//! Operation `seq` sets `items.id = seq % KEYS` to `value = seq`, so the
//! value of an id only grows. Output lines:
//! * `ACK <seq>`: `force_flush()` returned Ok after operation `seq` was
//!   enqueued, so every operation up to `seq` is committed;
//! * `TICKET <id> <value>`: that operation's ticket reported Committed.
//!
//! Usage: buffer_child DB

use std::io::Write;
use std::time::Duration;

use sqlite_hybrid::{BufferOptions, Database, Row, TicketStatus};

const KEYS: u64 = 5000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: buffer_child DB")?;
    let db = Database::builder(&path)
        .write_buffer(BufferOptions {
            batch_size: 50,
            flush_interval: Duration::from_millis(20),
            ..BufferOptions::default()
        })
        .open()?;
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
        )?)
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY")?;
    out.flush()?;
    let mut watched = Vec::new();
    for seq in 0u64.. {
        let ticket = db.buffer().upsert(
            "items",
            Row::new()
                .set("id", (seq % KEYS) as i64)
                .set("value", seq as i64),
            &["id"],
        )?;
        if seq % 37 == 0 {
            watched.push((seq, ticket));
        }
        if seq % 500 == 499 {
            db.buffer().force_flush()?;
            writeln!(out, "ACK {seq}")?;
        }
        watched.retain(|(seq, t)| {
            if t.status() == TicketStatus::Committed {
                let _ = writeln!(out, "TICKET {} {seq}", seq % KEYS);
                false
            } else {
                true
            }
        });
        out.flush()?;
    }
    Ok(())
}
