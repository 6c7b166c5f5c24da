//! A client process for the crash test: upserts into a buffered table and
//! logs through the log database as fast as it can, and prints what was
//! acknowledged, until it is killed.
//!
//! Operation `seq` sets `items.id = seq % KEYS` to `value = seq`, so the
//! value of an id only grows; every 50th operation also logs `op <seq>`.
//! Output lines:
//! * `ACK <seq>`: `force_flush()` returned Ok after operation `seq` was
//!   enqueued, so every operation up to `seq` is committed;
//! * `TICKET <id> <value>`: that operation's ticket reported Committed;
//! * `LOGACK <seq>`: the log database's `flush()` returned Ok after the
//!   log lines of every operation up to `seq` were sent.
//!
//! Usage: buffer_child DB (a SQLite path or a postgres:// URL)

use std::io::Write;
use std::time::Duration;

use sqlite_hybrid::{BufferOptions, Database, LogLevel, LogOptions, LogRecord, Row, TicketStatus};

const KEYS: u64 = 5000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: buffer_child DB")?;
    let db = Database::builder(&path)
        .write_buffer(BufferOptions {
            batch_size: 50,
            flush_interval: Duration::from_millis(20),
            ..BufferOptions::default()
        })
        .log_database(LogOptions {
            channel_capacity: 1_000_000,
            flush_interval: Duration::from_millis(50),
            ..LogOptions::default()
        })
        .open()?;
    let logs = db.log().ok_or("no log database")?.sink();
    db.transact(|tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
        )
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
        if seq % 50 == 0 && !logs.send(LogRecord::new(LogLevel::Info, "child", format!("op {seq}")))
        {
            return Err("a log line was dropped; the test needs every one queued".into());
        }
        if seq % 500 == 499 {
            db.buffer().force_flush()?;
            writeln!(out, "ACK {seq}")?;
            if seq % 2000 == 1999 {
                logs.flush(Duration::from_secs(30))?;
                writeln!(out, "LOGACK {seq}")?;
            }
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
