//! Health and lock statistics of a [`Database`](crate::Database), typed, and routine
//! maintenance, on either engine.
//!
//! On SQLite, lock statistics come straight from the writer connection's
//! extension state ([`hybrid::ConnState::snapshot`]) and schema health from
//! the extension's `hybrid_health` table. On PostgreSQL, lock statistics are
//! the client's own retries and waits, and the server reports its version,
//! size, connections and lock waits (`pg_stat_activity`,
//! `pg_blocking_pids()`).

use hybrid::LockStats;

/// One attached schema, from the extension's `hybrid_health` table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

/// [`Database::health`](crate::Database::health)'s answer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// Every attached schema (SQLite; empty on PostgreSQL).
    pub schemas: Vec<SchemaHealth>,
    /// This database's lock statistics: this process's row, then (when the
    /// side file is in use) every process's.
    pub locks: Vec<LockStats>,
    /// The server (PostgreSQL; `None` on SQLite).
    pub server: Option<ServerHealth>,
}

/// What a PostgreSQL server says about itself and the database.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerHealth {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `pg_database_size` of the current database, bytes.
    pub database_bytes: i64,
    /// Sessions connected to this database (`pg_stat_activity`).
    pub connections: i64,
    /// The server's `max_connections`.
    pub max_connections: i64,
    /// Sessions of this database waiting for a lock right now.
    pub lock_waits: i64,
    /// The standbys reads go to ([`crate::DatabaseBuilder::standby`]),
    /// with how far each lags behind the primary.
    pub standbys: Vec<StandbyHealth>,
}

/// One streaming standby as this handle sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StandbyHealth {
    /// Its URL without the password.
    pub url: String,
    /// `None` when it could not be asked (down, unreachable); otherwise
    /// the WAL it has still to replay: the primary's
    /// `pg_current_wal_lsn()` minus its `pg_last_wal_replay_lsn()`, bytes.
    pub lag_bytes: Option<i64>,
    /// How old its newest replayed transaction is
    /// (`now() - pg_last_xact_replay_timestamp()`), ms; 0 when it has
    /// replayed everything the primary wrote; `None` when unknown.
    pub lag_ms: Option<f64>,
    /// Reads this handle ran on it.
    pub reads: u64,
    /// Reads that went to the primary instead, because the standby had
    /// not replayed this handle's last write within the wait bound, or
    /// could not be reached.
    pub reads_sent_to_primary: u64,
}

/// One connection waiting for a lock, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LockWaiter {
    /// The waiting process (SQLite) or server backend (PostgreSQL).
    pub pid: u32,
    /// How long it has waited so far, ms.
    pub waited_ms: f64,
    /// Who it waits for: the holder of the write lock (SQLite, when a
    /// process with the extension holds it), or `pg_blocking_pids()`.
    pub blocked_by: Vec<u32>,
    /// What it waits for (`queued for the write lock (interactive, position
    /// 1)`, `Lock:transactionid`).
    pub wait: String,
    /// The statement it runs (PostgreSQL).
    pub query: Option<String>,
}

/// What [`Database::optimize`](crate::Database::optimize) should do besides `PRAGMA optimize` (SQLite;
/// PostgreSQL runs `ANALYZE` and ignores these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptimizeOptions {
    /// Checkpoint with `TRUNCATE` (shrinks the `-wal` file to zero when no
    /// reader is behind) instead of `PASSIVE` (never waits).
    pub truncate_wal: bool,
    /// Free up to this many pages with `PRAGMA incremental_vacuum` (only
    /// when the database uses `auto_vacuum = INCREMENTAL`).
    pub incremental_vacuum_pages: Option<u32>,
}

/// [`Database::optimize`](crate::Database::optimize)'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
