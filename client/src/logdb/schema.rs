//! The log file's schema, and the one place its SQL lives.
//!
//! `ts` is ISO-8601 UTC text with milliseconds (`2026-11-24T19:07:03.120Z`):
//! it sorts correctly as text, SQLite's date functions read it, and a human
//! reads it. `fields` is a JSON object (structured fields of tracing events)
//! or NULL.

use rusqlite::Connection;

use crate::error::Result;

/// Creates the tables and indexes if missing.
pub(crate) fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS entries(
             id INTEGER PRIMARY KEY,
             ts TEXT NOT NULL,
             level TEXT NOT NULL,
             target TEXT NOT NULL,
             message TEXT NOT NULL,
             fields TEXT,
             module TEXT,
             file TEXT,
             line INTEGER,
             thread TEXT
         );
         CREATE INDEX IF NOT EXISTS entries_ts ON entries(ts);
         CREATE INDEX IF NOT EXISTS entries_level_ts ON entries(level, ts);
         CREATE TABLE IF NOT EXISTS writer_stats(
             id INTEGER PRIMARY KEY CHECK (id = 1),
             written INTEGER NOT NULL,
             batches INTEGER NOT NULL,
             dropped INTEGER NOT NULL,
             failed INTEGER NOT NULL,
             deleted INTEGER NOT NULL,
             last_flush_at TEXT,
             pid INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

/// Bound parameters per entry, in `insert_entries`' column order.
pub(crate) const ENTRY_PARAMS: usize = 9;

/// Rows per multi-row insert: one statement execution per this many rows
/// instead of one per row. Measured (`log_bench --throughput`, batches of
/// 1,000): 1.6 µs of writer CPU per row one by one, 1.3 µs 50 at a time;
/// 100 at a time was no better. 50 rows are 450 parameters, under SQLite's
/// oldest limit of 999.
pub(crate) const ROWS_PER_INSERT: usize = 50;

/// An insert of `rows` entries, `ENTRY_PARAMS` parameters each (ts, level,
/// target, message, fields, module, file, line, thread).
pub(crate) fn insert_entries(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::from(
        "INSERT INTO entries(ts, level, target, message, fields, module, file, line, thread) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(one);
    }
    sql
}

pub(crate) const UPSERT_STATS: &str = "INSERT INTO writer_stats(id, written, batches, dropped, failed, deleted, last_flush_at, pid) \
     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET written = excluded.written, \
     batches = excluded.batches, dropped = excluded.dropped, failed = excluded.failed, deleted = excluded.deleted, \
     last_flush_at = excluded.last_flush_at, pid = excluded.pid";

/// Deletes up to `chunk` entries older than `cutoff` (ISO text); returns
/// how many.
pub(crate) fn delete_older_than(conn: &Connection, cutoff: &str, chunk: usize) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
        rusqlite::params![cutoff, chunk as i64],
    )?)
}

/// Deletes up to `chunk` of the oldest entries beyond the newest `keep`.
pub(crate) fn delete_beyond(conn: &Connection, keep: u64, chunk: usize) -> Result<usize> {
    let count: i64 = conn.query_row("SELECT count(*) FROM entries", [], |r| r.get(0))?;
    let excess = (count as u64).saturating_sub(keep).min(chunk as u64);
    if excess == 0 {
        return Ok(0);
    }
    Ok(conn.execute(
        "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY id LIMIT ?1)",
        [excess as i64],
    )?)
}
