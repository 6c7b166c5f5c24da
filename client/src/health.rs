//! Typed views of the extension's health and lock-metrics tables, and
//! routine maintenance.

use rusqlite::{OptionalExtension, Row as SqlRow};

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

/// One file's lock metrics, from the extension's `hybrid_lock_metrics`
/// (this process's waits; see the README for each field).
#[derive(Debug, Clone, PartialEq)]
pub struct LockMetrics {
    /// The main database file's path.
    pub db: String,
    /// `process` (this process's waits) or `file` (every process's, from
    /// the shared side file).
    pub scope: String,
    /// `futex` (queued hand-off through the side file) or `backoff`.
    pub mode: String,
    /// Open connections of this process on the file with the extension
    /// registered (`None` for the `file` scope).
    pub connections: Option<i64>,
    /// How many of them have the hybrid busy handler in force.
    pub handler_active: Option<i64>,
    /// Waits started.
    pub busy_events: i64,
    /// Busy-handler calls.
    pub retries: i64,
    /// Waits that ended with the lock.
    pub acquired: i64,
    /// Waits that ended in `SQLITE_BUSY`.
    pub gave_up: i64,
    /// Waits in progress.
    pub in_flight: i64,
    /// Total time of finished waits.
    pub wait_total_ms: f64,
    /// Mean wait.
    pub wait_avg_ms: Option<f64>,
    /// Longest wait.
    pub wait_max_ms: f64,
    /// Median wait.
    pub wait_p50_ms: Option<f64>,
    /// 95th percentile wait.
    pub wait_p95_ms: Option<f64>,
    /// 99th percentile wait.
    pub wait_p99_ms: Option<f64>,
    /// `gave_up / (acquired + gave_up)`.
    pub failure_rate: Option<f64>,
    /// ISO-8601 time of the last wait start or end.
    pub last_event_at: Option<String>,
    /// JSON backoff policy.
    pub policy: Option<String>,
}

/// [`Database::health`]'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Every attached schema.
    pub schemas: Vec<SchemaHealth>,
    /// Every database file this process has opened with the extension.
    pub locks: Vec<LockMetrics>,
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

fn lock_metrics(r: &SqlRow<'_>) -> rusqlite::Result<LockMetrics> {
    Ok(LockMetrics {
        db: r.get(0)?,
        scope: r.get(1)?,
        mode: r.get(2)?,
        connections: r.get(3)?,
        handler_active: r.get(4)?,
        busy_events: r.get(5)?,
        retries: r.get(6)?,
        acquired: r.get(7)?,
        gave_up: r.get(8)?,
        in_flight: r.get(9)?,
        wait_total_ms: r.get(10)?,
        wait_avg_ms: r.get(11)?,
        wait_max_ms: r.get(12)?,
        wait_p50_ms: r.get(13)?,
        wait_p95_ms: r.get(14)?,
        wait_p99_ms: r.get(15)?,
        failure_rate: r.get(16)?,
        last_event_at: r.get(17)?,
        policy: r.get(18)?,
    })
}

const LOCK_METRICS_COLUMNS: &str = "db, scope, mode, connections, handler_active, busy_events, retries, acquired, \
     gave_up, in_flight, wait_total_ms, wait_avg_ms, wait_max_ms, wait_p50_ms, wait_p95_ms, wait_p99_ms, \
     failure_rate, last_event_at, policy";

impl Database {
    /// The extension's `hybrid_health` and `hybrid_lock_metrics`, typed.
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
        self.read(|conn| {
            let schemas = conn
                .prepare(
                    "SELECT schema, file, journal_mode, synchronous, page_size, page_count, freelist_count, \
                     file_bytes, wal_bytes, foreign_keys, busy_timeout, sqlite_version FROM hybrid_health",
                )?
                .query_map([], schema_health)?
                .collect::<rusqlite::Result<_>>()?;
            let locks = conn
                .prepare(&format!("SELECT {LOCK_METRICS_COLUMNS} FROM hybrid_lock_metrics"))?
                .query_map([], lock_metrics)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Health { schemas, locks })
        })
    }

    /// This database file's row of [`Database::health`]'s lock metrics
    /// (waits of every connection of this process on the file).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("m.db"))?;
    /// let metrics = db.lock_metrics()?;
    /// assert_eq!((metrics.connections, metrics.busy_events), (Some(5), 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_metrics(&self) -> Result<LockMetrics> {
        self.lock_metrics_scope("process")?
            .ok_or_else(|| crate::Error::InvalidInput("no lock metrics for this database".into()))
    }

    /// Every process's waits on this database file, from the shared side
    /// file (`None` when the file is not in futex mode).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("f.db"))?;
    /// let file = db.file_lock_metrics()?.expect("futex mode on Linux");
    /// assert_eq!((file.scope.as_str(), file.mode.as_str()), ("file", "futex"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_lock_metrics(&self) -> Result<Option<LockMetrics>> {
        self.lock_metrics_scope("file")
    }

    fn lock_metrics_scope(&self, scope: &str) -> Result<Option<LockMetrics>> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {LOCK_METRICS_COLUMNS} FROM hybrid_lock_metrics \
                 WHERE scope = ?1 AND db = (SELECT file FROM pragma_database_list WHERE name = 'main')"
            );
            Ok(conn.query_row(&sql, [scope], lock_metrics).optional()?)
        })
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
