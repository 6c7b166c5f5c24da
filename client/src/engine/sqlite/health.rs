//! Health, lock statistics and maintenance on SQLite: the extension's
//! `hybrid_health` table, the writer connection's extension state, and
//! `PRAGMA optimize` with a checkpoint.

use hybrid::LockStats;
use rusqlite::Row as SqlRow;

use super::SqliteEngine;
use crate::error::Result;
use crate::health::{Health, LockWaiter, OptimizeOptions, OptimizeReport, SchemaHealth};

fn schema_health(r: &SqlRow<'_>) -> rusqlite::Result<SchemaHealth> {
    Ok(SchemaHealth {
        schema: r.get(0)?,
        file: r.get(1)?,
        journal_mode: r.get(2)?,
        synchronous: r.get(3)?,
        page_size: r.get(4)?,
        page_count: r.get(5)?,
        freelist_count: r.get(6)?,
        file_bytes: r.get(7)?,
        wal_bytes: r.get(8)?,
        foreign_keys: r.get(9)?,
        busy_timeout_ms: r.get(10)?,
        sqlite_version: r.get(11)?,
    })
}

/// Every attached schema and the lock statistics.
pub(crate) fn health(engine: &SqliteEngine) -> Result<Health> {
    let schemas = engine.read(|conn| {
        Ok(conn
            .prepare(
                "SELECT schema, file, journal_mode, synchronous, page_size, page_count, freelist_count, \
                 file_bytes, wal_bytes, foreign_keys, busy_timeout, sqlite_version FROM hybrid_health",
            )?
            .query_map([], schema_health)?
            .collect::<rusqlite::Result<_>>()?)
    })?;
    let snapshot = engine.writer_state().snapshot();
    let locks = std::iter::once(snapshot.process)
        .chain(snapshot.file)
        .collect();
    Ok(Health {
        schemas,
        locks,
        server: None,
    })
}

/// This process's waits on the file.
pub(crate) fn lock_metrics(engine: &SqliteEngine) -> LockStats {
    engine.writer_state().snapshot().process
}

/// Every process's waits on the file (futex mode).
pub(crate) fn file_lock_metrics(engine: &SqliteEngine) -> Option<LockStats> {
    engine.writer_state().snapshot().file
}

/// The queue for the write lock (the extension's `hybrid_lock_waiters`),
/// each waiter shown as blocked by the holder (`hybrid_lock_holder`).
pub(crate) fn lock_waiters(engine: &SqliteEngine) -> Result<Vec<LockWaiter>> {
    engine.read(|conn| {
        let db = conn.path().unwrap_or_default().to_string();
        let holder: Option<i64> = conn
            .query_row(
                "SELECT pid FROM hybrid_lock_holder WHERE db = ?1",
                [&db],
                |r| r.get(0),
            )
            .unwrap_or(None);
        let mut stmt = conn.prepare(
            "SELECT pid, waited_ms, priority, position FROM hybrid_lock_waiters WHERE db = ?1 \
             ORDER BY position",
        )?;
        let rows = stmt.query_map([&db], |r| {
            Ok(LockWaiter {
                pid: r.get::<_, i64>(0)? as u32,
                waited_ms: r.get(1)?,
                blocked_by: holder.map(|h| h as u32).into_iter().collect(),
                wait: format!(
                    "queued for the write lock ({}, position {})",
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?
                ),
                query: None,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })
}

/// `PRAGMA optimize`, a WAL checkpoint, and optionally incremental vacuum.
pub(crate) fn optimize(engine: &SqliteEngine, options: OptimizeOptions) -> Result<OptimizeReport> {
    engine.with_writer(|conn| {
        conn.execute_batch("PRAGMA optimize")?;
        let mode = if options.truncate_wal {
            "TRUNCATE"
        } else {
            "PASSIVE"
        };
        let (busy, wal_frames, checkpointed_frames): (i64, i64, i64) =
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let mut vacuumed_pages = 0;
        if let Some(pages) = options.incremental_vacuum_pages {
            let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
            if auto_vacuum == 2 {
                let before: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
                let after: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                vacuumed_pages = before - after;
            }
        }
        Ok(OptimizeReport {
            checkpoint_busy: busy != 0,
            wal_frames,
            checkpointed_frames,
            vacuumed_pages,
        })
    })
}
