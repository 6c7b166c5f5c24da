//! [`Database`]: the public handle. It opens the connections (`core.rs`),
//! and owns the write buffer and the log database, which are started from
//! here and call down into the core.
//!
//! # Concurrency
//! `Database` is `Send + Sync`; share it with `Arc<Database>`. See
//! `core.rs` for how writers and readers of one process share connections.
//!
//! # Deadlock rule
//! Do not wait for the write buffer (`force_flush`, `Ticket::wait`) inside
//! `write()`: the flusher needs the writer connection you hold. Both return
//! [`Error::InvalidInput`] instead of hanging.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hybrid::{BackoffPolicy, LockStats, Priority};
use rusqlite::{Connection, Transaction};

use crate::buffer::{BufferOptions, WriteBuffer};
use crate::core::Core;
use crate::engine::Engine;
use crate::engine::sqlite::{SqliteEngine, open_reader, open_writer};
use crate::error::{Error, Result};
use crate::health::{Health, LockWaiter, OptimizeOptions, OptimizeReport};
use crate::logdb::{LogDatabase, LogOptions};
use crate::retry::RetryPolicy;

/// Options for [`Database::open_with`]; start from [`Database::builder`].
///
/// ```
/// use sqlite_hybrid::{Database, RetryPolicy};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::builder(dir.path().join("app.db"))
///     .readers(2)
///     .retry(RetryPolicy { deadline: Duration::from_secs(10), ..RetryPolicy::default() })
///     .open()?;
/// assert_eq!(db.reader_count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseBuilder {
    path: PathBuf,
    readers: usize,
    retry: RetryPolicy,
    busy: BackoffPolicy,
    tune: bool,
    buffer: BufferOptions,
    log: Option<LogOptions>,
    standbys: Vec<String>,
    standby_wait: Duration,
}

impl DatabaseBuilder {
    /// Keeps application logs in a separate database file (see
    /// [`LogDatabase`]), ATTACHed as `log` on the reader connections.
    pub fn log_database(mut self, options: LogOptions) -> Self {
        self.log = Some(options);
        self
    }

    /// Number of read-only connections (default 4; 0 means reads use the
    /// writer connection). In-memory databases always use the writer.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers;
        self
    }

    /// How [`Database::write`] retries on lock errors.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The busy handler's backoff policy (the extension's defaults unless
    /// set). Inside [`Database::write`] every wait is also cut short at the
    /// retry policy's deadline.
    pub fn busy_policy(mut self, busy: BackoffPolicy) -> Self {
        self.busy = busy;
        self
    }

    /// Whether to apply the recommended pragmas at open (default true):
    /// WAL, `synchronous=NORMAL`, `foreign_keys=ON`, 64 MB cache, memory temp
    /// store, 256 MiB mmap (the extension's `hybrid_tune()`).
    pub fn tune(mut self, tune: bool) -> Self {
        self.tune = tune;
        self
    }

    /// Options of the write buffer (started on first use).
    pub fn write_buffer(mut self, options: BufferOptions) -> Self {
        self.buffer = options;
        self
    }

    /// PostgreSQL: a streaming standby of the server (a `postgres://` URL
    /// of the same database on it; call once per standby). `query` runs
    /// there, `transact` and the write buffer on the primary. A read
    /// after this handle's own write waits until the standby has replayed
    /// that write (`pg_last_wal_replay_lsn()` >= the write's commit
    /// position), at most [`DatabaseBuilder::standby_wait`], else it runs
    /// on the primary: a handle always reads its own writes. On SQLite, an
    /// error at open.
    ///
    /// ```no_run
    /// use sqlite_hybrid::Database;
    ///
    /// let db = Database::builder("postgresql://app@db1/app")
    ///     .standby("postgresql://app@db2/app")
    ///     .open()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn standby(mut self, url: impl Into<String>) -> Self {
        self.standbys.push(url.into());
        self
    }

    /// How long a read waits for a standby to replay this handle's last
    /// write before it goes to the primary instead (default 100 ms).
    pub fn standby_wait(mut self, wait: Duration) -> Self {
        self.standby_wait = wait;
        self
    }

    /// Opens (creating if needed) the database.
    pub fn open(self) -> Result<Database> {
        Database::open_with(self)
    }
}

/// A SQLite database for many concurrent writers. See the module docs.
///
/// ```
/// use sqlite_hybrid::Database;
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path().join("app.db"))?;
/// db.write(|tx| {
///     tx.execute_batch("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT)")?;
///     tx.execute("INSERT INTO kv VALUES ('a', '1')", [])?;
///     Ok(())
/// })?;
/// let v: String = db.read(|conn| Ok(conn.query_row("SELECT v FROM kv WHERE k = 'a'", [], |r| r.get(0))?))?;
/// assert_eq!(v, "1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Database {
    pub(crate) core: Arc<Core>,
    /// The options the write buffer starts with.
    buffer_options: BufferOptions,
    buffer: OnceLock<WriteBuffer>,
    log: Option<LogDatabase>,
}

impl Database {
    /// Opens `path` with default options (see [`DatabaseBuilder`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Database::builder(path).open()
    }

    /// Options for opening `path`.
    pub fn builder(path: impl AsRef<Path>) -> DatabaseBuilder {
        DatabaseBuilder {
            path: path.as_ref().to_path_buf(),
            readers: 4,
            retry: RetryPolicy::default(),
            busy: BackoffPolicy::default(),
            tune: true,
            buffer: BufferOptions::default(),
            log: None,
            standbys: Vec::new(),
            standby_wait: Duration::from_millis(100),
        }
    }

    /// Opens with explicit options. A path that is a `postgres://` or
    /// `postgresql://` URL opens a PostgreSQL database instead (feature
    /// `postgres`; see `docs/postgres.md`).
    pub fn open_with(options: DatabaseBuilder) -> Result<Database> {
        // Every options type reports a bad setting the same way: an
        // InvalidInput naming the type and the field.
        options.retry.validate()?;
        let busy = options
            .busy
            .validated()
            .map_err(|e| Error::invalid_option("BackoffPolicy", e.field, e.reason))?;
        options.buffer.validate()?;
        if let Some(url) = options
            .path
            .to_str()
            .filter(|p| crate::engine::is_postgres_url(p))
        {
            return Database::open_postgres(url.to_string(), options);
        }
        if !options.standbys.is_empty() {
            return Err(Error::InvalidInput(
                "DatabaseBuilder::standby is for PostgreSQL servers; a SQLite file has none".into(),
            ));
        }
        let (conn, state) = open_writer(&options.path, busy, options.tune, &options.retry)?;
        let in_memory = conn.path().is_none_or(str::is_empty);
        // The log file exists before the readers attach it.
        let log = match &options.log {
            Some(log_options) => Some(LogDatabase::open_retrying(
                log_options.path_for(&options.path),
                log_options.clone(),
                &options.retry,
            )?),
            None => None,
        };
        let attach = log.as_ref().map(|l| l.path().to_path_buf());
        let readers = if in_memory {
            Vec::new()
        } else {
            (0..options.readers)
                .map(|_| open_reader(&options.path, attach.as_deref()))
                .collect::<Result<_>>()?
        };
        let engine = SqliteEngine::new((conn, state), readers, options.retry);
        let core = Core::new(options.path, Engine::Sqlite(engine));
        Ok(Database {
            core: Arc::new(core),
            buffer_options: options.buffer,
            buffer: OnceLock::new(),
            log,
        })
    }

    #[cfg(not(feature = "postgres"))]
    fn open_postgres(_url: String, _options: DatabaseBuilder) -> Result<Database> {
        Err(Error::InvalidInput(
            "a postgres:// URL needs sqlite-hybrid's `postgres` feature, which this build lacks"
                .into(),
        ))
    }

    #[cfg(feature = "postgres")]
    fn open_postgres(url: String, options: DatabaseBuilder) -> Result<Database> {
        let engine = crate::engine::postgres::PgEngine::open(
            &url,
            options.readers,
            &options.retry,
            &options.standbys,
            options.standby_wait,
        )?;
        let log = match &options.log {
            Some(log_options) => Some(LogDatabase::open_postgres(
                engine.config(),
                engine.display_url(),
                log_options.clone(),
                &options.retry,
            )?),
            None => None,
        };
        let core = Core::new(
            PathBuf::from(engine.display_url()),
            Engine::Postgres(engine),
        );
        Ok(Database {
            core: Arc::new(core),
            buffer_options: options.buffer,
            buffer: OnceLock::new(),
            log,
        })
    }

    /// The path the database was opened with (for PostgreSQL, its URL
    /// without the password).
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// Number of read-only connections (0 for in-memory databases).
    pub fn reader_count(&self) -> usize {
        self.core.reader_count()
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits.
    ///
    /// On a lock error (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT`,
    /// `SQLITE_LOCKED`) the transaction is rolled back and the *whole*
    /// closure runs again, with jittered backoff, until the retry policy's
    /// deadline; then [`Error::LockTimeout`]. Any other error rolls back
    /// and returns at once. So `f` may run more than once: keep side
    /// effects outside the database out of it.
    ///
    /// SQLite only: the closure gets a rusqlite transaction. On PostgreSQL
    /// it is an [`Error::InvalidInput`]; [`Database::transact`] is the same
    /// on both engines.
    pub fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.core
            .sqlite("Database::write", "Database::transact")?
            .write_as(Priority::Interactive, f)
    }

    /// Runs `f` on a read-only connection inside one read transaction (a
    /// consistent snapshot for all its statements). In WAL mode it never
    /// waits for writers.
    ///
    /// SQLite only, like [`Database::write`]; [`Database::query`] is the
    /// same on both engines.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.core
            .sqlite("Database::read", "Database::query")?
            .read(f)
    }

    /// Runs `f` in a write transaction and commits, on either engine: the
    /// closure gets a [`Tx`](crate::Tx), whose statements take SQLite-style
    /// `?1` placeholders and rusqlite parameters (`rusqlite::params!`).
    ///
    /// Retried like [`Database::write`]: on a lock error (SQLite:
    /// `SQLITE_BUSY`, `SQLITE_LOCKED`; PostgreSQL: serialization failure
    /// `40001`, deadlock `40P01`, lock not available `55P03`) the
    /// transaction is rolled back and the whole closure runs again until
    /// the retry policy's deadline, then [`Error::LockTimeout`]. Other
    /// errors roll back and return at once.
    ///
    /// PostgreSQL: serialization failures and deadlocks, what contention
    /// looks like there, are bounded by the deadline only (not by
    /// `max_attempts`), with aged delays so no handle starves. A connection
    /// lost before `COMMIT` (a failover) is reopened (a multi-host URL with
    /// `target_session_attrs=read-write` finds the new primary) and the
    /// closure runs again, until the deadline; a connection lost *during*
    /// `COMMIT` is [`Error::CommitOutcomeUnknown`], never re-run.
    pub fn transact<T>(
        &self,
        f: impl FnMut(&mut crate::engine::tx::Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.core.transact(Priority::Interactive, f)
    }

    /// Runs one query on a reader connection, on either engine; returns
    /// every row as values. Placeholders and parameters as in
    /// [`Database::transact`].
    ///
    /// ```
    /// use sqlite_hybrid::{Database, rusqlite::{params, types::Value}};
    /// let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path().join("q.db"))?;
    /// db.transact(|tx| tx.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);"))?;
    /// let rows = db.query("SELECT x FROM t WHERE x > ?1", params![1])?;
    /// assert_eq!(rows, vec![vec![Value::Integer(2)]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Vec<rusqlite::types::Value>>> {
        self.core.query(sql, &crate::engine::tx::values(params)?)
    }

    /// The write buffer, started on first use with the builder's options.
    pub fn buffer(&self) -> &WriteBuffer {
        self.buffer
            .get_or_init(|| WriteBuffer::start(Arc::clone(&self.core), self.buffer_options.clone()))
    }

    /// The log database, if the builder asked for one.
    pub fn log(&self) -> Option<&LogDatabase> {
        self.log.as_ref()
    }

    /// Forgets cached table descriptions; call after changing the schema
    /// of a table the buffer or batch helpers write to.
    pub fn refresh_schema(&self) {
        self.core.forget_schema();
    }

    /// Flushes and stops the write buffer, then closes every connection.
    /// Errors from the final flush are returned (entries that could not be
    /// written are reported, never dropped silently).
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let buffered = match self.buffer.take() {
            Some(buffer) => buffer.close(),
            None => Ok(()),
        };
        // Logs last, so the buffer's final flush can still log.
        if let Some(log) = self.log.take() {
            log.close()?;
        }
        buffered
    }
}

// Health, lock statistics and maintenance (the types are in `health.rs`).
impl Database {
    /// Health of the database and its lock statistics: on SQLite the
    /// extension's `hybrid_health` (every attached schema); on PostgreSQL the
    /// server's version, size, connections and lock waits.
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
        self.core.health()
    }

    /// This process's waits for this database's write lock (on SQLite every
    /// connection of the process on the file, other `Database`s included,
    /// with the writer's policy; on PostgreSQL this handle's retried lock
    /// conflicts, `mode = "postgres"`).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("m.db"))?;
    /// let metrics = db.lock_metrics()?;
    /// assert_eq!((metrics.connections, metrics.busy_events), (Some(5), 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_metrics(&self) -> Result<LockStats> {
        self.core.lock_metrics()
    }

    /// Every process's waits on this database file, from the shared side
    /// file (`None` when the file is not in futex mode, in a build without
    /// it ([`crate::FUTEX_QUEUE`] false: every target but Linux), and on
    /// PostgreSQL).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let db = sqlite_hybrid::Database::open(dir.path().join("f.db"))?;
    /// if sqlite_hybrid::FUTEX_QUEUE {
    ///     let file = db.file_lock_metrics()?.expect("futex mode on Linux");
    ///     assert_eq!((file.scope.as_str(), file.mode.as_str()), ("file", "futex"));
    /// } else {
    ///     assert!(db.file_lock_metrics()?.is_none(), "backoff mode");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn file_lock_metrics(&self) -> Result<Option<LockStats>> {
        self.core.file_lock_metrics()
    }

    /// Who waits for a lock right now, and for whom: on SQLite the queue for
    /// the write lock (every process sharing the side file); on PostgreSQL
    /// the sessions of this database with `wait_event_type = 'Lock'` and
    /// their `pg_blocking_pids()`.
    pub fn lock_waiters(&self) -> Result<Vec<LockWaiter>> {
        self.core.lock_waiters()
    }

    /// Routine maintenance: on SQLite `PRAGMA optimize`, a WAL checkpoint,
    /// and optionally incremental vacuum; on PostgreSQL `ANALYZE`.
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
        self.core.optimize(options)
    }
}

impl Drop for Database {
    /// Flushes the write buffer (see [`Database::close`] to see errors).
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::error!(
                "sqlite-hybrid: final flush of {} failed: {e}",
                self.core.path.display()
            );
        }
    }
}
