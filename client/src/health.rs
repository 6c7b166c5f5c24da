//! Health and lock statistics of a [`Database`], typed, and routine
//! maintenance.
//!
//! Lock statistics come straight from the writer connection's extension
//! state ([`hybrid::ConnState::snapshot`]): no SQL, and the policy shown is
//! the writer's own. Schema health is read from the extension's
//! `hybrid_health` table on a reader.

use hybrid::LockStats;
use rusqlite::Row as SqlRow;

use crate::database::Database;
use crate::error::Result;

/// One attached schema, from the extension's `hybrid_health` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaHealth {
    /// `main`, `temp` or the ATTACH name.
    pub schema: String,
    /// The file (None for in-memory schemas).
    pub file: Option<String>,
    /// `wal`, `delete`, `memory`, ...
    pub journal_mode: String,
    /// `OFF`, `NORMAL`, `FULL` or `EXTRA`.
    pub synchronous: String,
    /// Page size in bytes.
    pub page_size: i64,
    /// Pages in the database.
    pub page_count: i64,
    /// Unused pages.
    pub freelist_count: i64,
    /// Size of the database file.
    pub file_bytes: Option<i64>,
    /// Size of its `-wal` file.
    pub wal_bytes: Option<i64>,
    /// `PRAGMA foreign_keys` of the connection that read this.
    pub foreign_keys: bool,
    /// `PRAGMA busy_timeout` of that connection (0 while the hybrid handler is in force).
    pub busy_timeout_ms: i64,
    /// The running SQLite version.
    pub sqlite_version: String,
}

/// [`Database::health`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Every attached schema.
    pub schemas: Vec<SchemaHealth>,
    /// This database's lock statistics: this process's row, then (when the
    /// side file is in use) every process's.
    pub locks: Vec<LockStats>,
}

/// What [`Database::optimize`] should do besides `PRAGMA optimize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptimizeOptions {
    /// Checkpoint with `TRUNCATE` (shrinks the `-wal` file to zero when no
    /// reader is behind) instead of `PASSIVE` (never waits).
    pub truncate_wal: bool,
    /// Free up to this many pages with `PRAGMA incremental_vacuum` (only
    /// when the database uses `auto_vacuum = INCREMENTAL`).
    pub incremental_vacuum_pages: Option<u32>,
}

/// [`Database::optimize`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimizeReport {
    /// The checkpoint could not finish because of readers or writers.
    pub checkpoint_busy: bool,
    /// Frames in the WAL after the checkpoint started.
    pub wal_frames: i64,
    /// Frames copied back to the database.
    pub checkpointed_frames: i64,
    /// Pages freed by incremental vacuum.
    pub vacuumed_pages: i64,
}

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

impl Database {
    /// The extension's `hybrid_health` (every attached schema) and this
    /// database's lock statistics.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("h.db"))?;
    /// let health = db.health()?;
    /// assert_eq!(health.schemas[0].journal_mode, "wal");
    /// assert!(health.locks.iter().any(|m| m.db.ends_with("h.db")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn health(&self) -> Result<Health> {
        let schemas = self.read(|conn| {
            Ok(conn
                .prepare(
                    "SELECT schema, file, journal_mode, synchronous, page_size, page_count, freelist_count, \
                     file_bytes, wal_bytes, foreign_keys, busy_timeout, sqlite_version FROM hybrid_health",
                )?
                .query_map([], schema_health)?
                .collect::<rusqlite::Result<_>>()?)
        })?;
        let snapshot = self.core.writer_state().snapshot();
        let locks = std::iter::once(snapshot.process)
            .chain(snapshot.file)
            .collect();
        Ok(Health { schemas, locks })
    }

    /// This process's waits on this database file (every connection of the
    /// process on it, other `Database`s included), with the writer's policy.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("m.db"))?;
    /// let metrics = db.lock_metrics()?;
    /// assert_eq!((metrics.connections, metrics.busy_events), (Some(5), 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_metrics(&self) -> Result<LockStats> {
        Ok(self.core.writer_state().snapshot().process)
    }

    /// Every process's waits on this database file, from the shared side
    /// file (`None` when the file is not in futex mode).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("f.db"))?;
    /// let file = db.file_lock_metrics()?.expect("futex mode on Linux");
    /// assert_eq!((file.scope, file.mode), ("file", "futex"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_lock_metrics(&self) -> Result<Option<LockStats>> {
        Ok(self.core.writer_state().snapshot().file)
    }

    /// `PRAGMA optimize`, a WAL checkpoint, and optionally incremental vacuum.
    ///
    /// ```
    /// use sqlite_hybrid::OptimizeOptions;
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("o.db"))?;
    /// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?))?;
    /// let report = db.optimize(OptimizeOptions { truncate_wal: true, ..Default::default() })?;
    /// assert!(!report.checkpoint_busy);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeReport> {
        self.core.with_writer(|conn| {
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
}
