//! [`Database`]: one writer connection, a pool of readers, retried write
//! transactions.
//!
//! # Concurrency
//! `Database` is `Send + Sync`; share it with `Arc<Database>`. Writers in one
//! process take turns on the single writer connection (a mutex), so they
//! never contend for SQLite's lock with each other; writers in other
//! processes are handled by `BEGIN IMMEDIATE`, the extension's busy handler
//! and whole-transaction retry. Readers use their own read-only connections
//! and, in WAL mode, never wait for the writer.
//!
//! # Deadlock rule
//! Do not wait for the write buffer (`force_flush`, `Ticket::wait`) inside
//! `write()`: the flusher needs the writer connection you hold. Both return
//! [`Error::InvalidInput`] instead of hanging.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hybrid::ConnState;
use hybrid::backoff::{BackoffPolicy, MAX_TIMEOUT_MS, SplitMix64, mix64};
use hybrid::handoff::Priority;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::buffer::{BufferOptions, WriteBuffer};
use crate::error::{Error, Result};
use crate::logdb::{LogDatabase, LogOptions};
use crate::pool::ReaderPool;
use crate::retry::RetryPolicy;
use crate::schema::{SchemaCache, TableInfo, load_table};

thread_local! {
    /// Set while this thread runs a `write()` closure.
    static IN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside [`Database::write`].
pub(crate) fn in_write() -> bool {
    IN_WRITE.with(Cell::get)
}

struct InWriteGuard(bool);

impl InWriteGuard {
    fn enter() -> InWriteGuard {
        InWriteGuard(IN_WRITE.with(|f| f.replace(true)))
    }
}

impl Drop for InWriteGuard {
    fn drop(&mut self) {
        IN_WRITE.with(|f| f.set(self.0));
    }
}

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
    /// set). Its `timeout_ms` is replaced per attempt by what is left of the
    /// retry deadline.
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
    buffer: OnceLock<WriteBuffer>,
    log: Option<LogDatabase>,
}

/// What the `Database` handle, the write buffer's flusher and the log
/// writer share.
pub(crate) struct Core {
    pub(crate) path: PathBuf,
    writer: Mutex<Writer>,
    readers: ReaderPool,
    pub(crate) schema: SchemaCache,
    pub(crate) retry: RetryPolicy,
    busy: BackoffPolicy,
    pub(crate) buffer_options: BufferOptions,
}

struct Writer {
    conn: Connection,
    state: Arc<ConnState>,
    rng: SplitMix64,
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
        }
    }

    /// Opens with explicit options.
    pub fn open_with(options: DatabaseBuilder) -> Result<Database> {
        options.retry.validate().map_err(Error::InvalidInput)?;
        let busy = options
            .busy
            .validated()
            .map_err(|e| Error::InvalidInput(format!("busy policy: {e}")))?;
        options.buffer.validate()?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&options.path, flags)?;
        let state = hybrid::register(&conn)?;
        state.set_policy(busy);
        conn.set_prepared_statement_cache_capacity(256);
        if options.tune {
            hybrid::sql::tune::tune(&conn)?;
        }
        let in_memory = conn.path().is_none_or(str::is_empty);
        // The log file exists before the readers attach it.
        let log = match &options.log {
            Some(log_options) => Some(LogDatabase::open(
                log_options.path_for(&options.path),
                log_options.clone(),
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
        let seed = mix64(
            std::process::id() as u64
                ^ Instant::now().elapsed().as_nanos() as u64
                ^ (&conn as *const _ as u64),
        );
        let core = Core {
            path: options.path,
            writer: Mutex::new(Writer {
                conn,
                state,
                rng: SplitMix64::new(seed),
            }),
            readers: ReaderPool::new(readers),
            schema: SchemaCache::default(),
            retry: options.retry,
            busy,
            buffer_options: options.buffer,
        };
        Ok(Database {
            core: Arc::new(core),
            buffer: OnceLock::new(),
            log,
        })
    }

    /// The path the database was opened with.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// Number of read-only connections (0 for in-memory databases).
    pub fn reader_count(&self) -> usize {
        self.core.readers.size()
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits.
    ///
    /// On a lock error (`SQLITE_BUSY`, `SQLITE_BUSY_SNAPSHOT`,
    /// `SQLITE_LOCKED`) the transaction is rolled back and the *whole*
    /// closure runs again, with jittered backoff, until the retry policy's
    /// deadline; then [`Error::LockTimeout`]. Any other error rolls back
    /// and returns at once. So `f` may run more than once: keep side
    /// effects outside the database out of it.
    pub fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.core.write(f)
    }

    /// Runs `f` on a read-only connection inside one read transaction (a
    /// consistent snapshot for all its statements). In WAL mode it never
    /// waits for writers.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.core.read(f)
    }

    /// The write buffer, started on first use with the builder's options.
    pub fn buffer(&self) -> &WriteBuffer {
        self.buffer
            .get_or_init(|| WriteBuffer::start(Arc::clone(&self.core)))
    }

    /// The log database, if the builder asked for one.
    pub fn log(&self) -> Option<&LogDatabase> {
        self.log.as_ref()
    }

    /// Forgets cached table descriptions; call after changing the schema
    /// of a table the buffer or batch helpers write to.
    pub fn refresh_schema(&self) {
        self.core.schema.clear();
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

fn open_reader(path: &Path, log: Option<&Path>) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    hybrid::register(&conn)?;
    // The per-connection settings of `hybrid_tune()` (journal mode is the
    // writer's business), plus query_only as a second guard.
    conn.execute_batch(
        "PRAGMA query_only = ON; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA cache_size = -16000; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = 268435456;",
    )?;
    if let Some(log) = log {
        // Read-only like its connection. Not on the writer: BEGIN IMMEDIATE
        // would take the log file's write lock too.
        conn.execute("ATTACH DATABASE ?1 AS log", [log.to_string_lossy()])?;
    }
    Ok(conn)
}

impl Core {
    pub(crate) fn write<T>(&self, f: impl FnMut(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_as(Priority::Interactive, f)
    }

    /// [`Core::write`] with the write lock requested at `priority` (the
    /// buffer's flusher uses `Background`, so request handlers go first).
    pub(crate) fn write_as<T>(
        &self,
        priority: Priority,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let _in_write = InWriteGuard::enter();
        let mut writer = self.writer.lock();
        let writer = &mut *writer;
        writer.state.set_priority(priority);
        let start = Instant::now();
        let (mut attempts, mut previous) = (0u32, Duration::ZERO);
        loop {
            attempts += 1;
            // The busy handler may wait as long as the whole policy has left.
            let left_ms = (self
                .retry
                .deadline
                .saturating_sub(start.elapsed())
                .as_secs_f64()
                * 1000.0)
                .min(MAX_TIMEOUT_MS);
            writer.state.set_policy(BackoffPolicy {
                timeout_ms: left_ms,
                ..self.busy
            });
            let result = run_once(&mut writer.conn, &mut f);
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) if error.is_lock_error() => error,
                Err(error) => return Err(error),
            };
            match self
                .retry
                .next_delay(attempts, start.elapsed(), previous, &mut writer.rng)
            {
                Some(delay) => {
                    std::thread::sleep(delay);
                    previous = delay;
                }
                None => {
                    let source = match error {
                        Error::Sqlite(e) => e,
                        Error::LockTimeout { source, .. } => source,
                        other => rusqlite::Error::ModuleError(other.to_string()),
                    };
                    return Err(Error::LockTimeout {
                        attempts,
                        waited: start.elapsed(),
                        source,
                    });
                }
            }
        }
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        if self.readers.size() == 0 {
            if in_write() {
                return Err(Error::InvalidInput(
                    "read() inside write() on an in-memory database would deadlock: use the \
                     transaction you were given"
                        .into(),
                ));
            }
            let writer = self.writer.lock();
            return in_read_transaction(&writer.conn, f);
        }
        let reader = self.readers.checkout(self.retry.deadline)?;
        in_read_transaction(&reader, f)
    }

    /// The description of `table`, from the cache or read through a reader.
    pub(crate) fn table(&self, name: &str) -> Result<Arc<TableInfo>> {
        self.schema
            .table(name, || self.read(|conn| load_table(conn, name)))
    }

    /// Runs `f` with the writer connection outside any transaction (for
    /// maintenance that manages its own statements).
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let writer = self.writer.lock();
        f(&writer.conn)
    }
}

fn run_once<T>(
    conn: &mut Connection,
    f: &mut impl FnMut(&Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let tx = conn.unchecked_transaction()?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}
