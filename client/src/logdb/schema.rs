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

pub(crate) const INSERT_ENTRY: &str = "INSERT INTO entries(ts, level, target, message, fields, module, file, line, thread) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

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
