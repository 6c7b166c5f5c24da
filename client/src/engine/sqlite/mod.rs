//! The SQLite engine: the connections of one [`crate::Database`] on a file
//! (one writer, a pool of readers) and the two things every feature does
//! with them: a retried write transaction and a read transaction.
//!
//! Data flows one way: `core.rs` (for the public handle, the write
//! buffer's flusher and the batch helpers) calls down into
//! [`SqliteEngine`], which calls down into the extension
//! (`hybrid::register`, [`ConnState`]) and knows nothing of them.
//!
//! # Concurrency
//! Writers in one process take turns on the single writer connection (a
//! mutex), so they never contend for SQLite's lock with each other; writers
//! in other processes are handled by `BEGIN IMMEDIATE`, the extension's busy
//! handler and whole-transaction retry. Readers use their own read-only
//! connections and, in WAL mode, never wait for the writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub(crate) mod batch;
pub(crate) mod health;

use hybrid::{BackoffPolicy, ConnState, Priority};
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::pool::ReaderPool;
use crate::retry::{RetryPolicy, retry_lock_errors};
use crate::write_scope::{InWriteGuard, in_write};

/// The connections of one database file.
pub(crate) struct SqliteEngine {
    writer: Mutex<Connection>,
    /// The writer connection's extension state, outside the writer's lock:
    /// metrics and health are read while a write (or its wait) runs.
    writer_state: Arc<ConnState>,
    readers: ReaderPool<Connection>,
    retry: RetryPolicy,
}

impl SqliteEngine {
    pub(crate) fn new(
        (conn, state): (Connection, Arc<ConnState>),
        readers: Vec<Connection>,
        retry: RetryPolicy,
    ) -> SqliteEngine {
        SqliteEngine {
            writer: Mutex::new(conn),
            writer_state: state,
            readers: ReaderPool::new(readers),
            retry,
        }
    }

    /// Number of read-only connections.
    pub(crate) fn reader_count(&self) -> usize {
        self.readers.size()
    }

    /// The writer connection's extension state (its policy and statistics).
    pub(crate) fn writer_state(&self) -> Arc<ConnState> {
        Arc::clone(&self.writer_state)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction at `priority` and
    /// commits; on lock errors, rolls back and re-runs the whole closure with
    /// jittered backoff until the retry policy's deadline (see
    /// [`crate::Database::write`]).
    pub(crate) fn write_as<T>(
        &self,
        priority: Priority,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.write_attempts(priority, |tx| f(tx).map(Attempt::Commit))
    }

    /// [`SqliteEngine::write_as`] for a closure that may find its transaction ended
    /// by SQLite itself (see [`Attempt`]).
    pub(crate) fn write_attempts<T>(
        &self,
        priority: Priority,
        mut f: impl FnMut(&Transaction<'_>) -> Result<Attempt<T>>,
    ) -> Result<T> {
        let _in_write = InWriteGuard::enter();
        let mut writer = self.writer.lock();
        let start = Instant::now();
        // The busy handler waits inside each attempt; it may wait as long as
        // the whole call has left, and no longer. Cleared by the guard even
        // if `f` panics, so no later use of the writer sees a stale deadline.
        let state = &self.writer_state;
        state.set_priority(priority);
        state.set_deadline(Some(start + self.retry.deadline));
        let _deadline = ClearDeadline(state);
        retry_lock_errors(&self.retry, || run_once(&mut writer, &mut f))
    }

    /// Runs `f` on a read-only connection inside one read transaction.
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
            return in_read_transaction(&writer, f);
        }
        let reader = self.readers.checkout(self.retry.deadline)?;
        in_read_transaction(&reader, f)
    }

    /// Runs `f` with the writer connection outside any transaction (for
    /// maintenance that manages its own statements).
    pub(crate) fn with_writer<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let writer = self.writer.lock();
        f(&writer)
    }
}

/// Clears the writer's busy deadline when dropped.
struct ClearDeadline<'a>(&'a ConnState);

impl Drop for ClearDeadline<'_> {
    fn drop(&mut self) {
        self.0.set_deadline(None);
    }
}

/// How one attempt of a write closure ended.
pub(crate) enum Attempt<T> {
    /// Commit the transaction, then return this.
    Commit(T),
    /// SQLite already rolled the transaction back (a statement failed with
    /// an `ON CONFLICT ROLLBACK` clause): nothing to commit; return this.
    RolledBack(T),
}

fn run_once<T>(
    conn: &mut Connection,
    f: &mut impl FnMut(&Transaction<'_>) -> Result<Attempt<T>>,
) -> Result<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match f(&tx)? {
        Attempt::Commit(value) => {
            tx.commit()?;
            Ok(value)
        }
        // Dropping the transaction finishes it (a no-op when SQLite
        // already ended it).
        Attempt::RolledBack(value) => Ok(value),
    }
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

/// Every row of `sql` on a SQLite connection, as values.
pub(crate) fn query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |row| {
        (0..columns).map(|i| row.get::<_, Value>(i)).collect()
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Opens the writer connection: the extension registered with `busy`, and
/// (if `tune`) the recommended pragmas of `hybrid_tune()`. Lock errors on
/// the way (another process switching the same new file to WAL) are
/// retried under `retry`.
pub(crate) fn open_writer(
    path: &Path,
    busy: BackoffPolicy,
    tune: bool,
    retry: &RetryPolicy,
) -> Result<(Connection, Arc<ConnState>)> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    report_slow_waits_to_tracing();
    let state = hybrid::register(&conn)?;
    state
        .set_policy(busy)
        .map_err(|e| Error::InvalidInput(format!("busy policy: {e}")))?;
    conn.set_prepared_statement_cache_capacity(256);
    retry_lock_errors(retry, || {
        if tune {
            conn.query_row("SELECT hybrid_tune()", [], |r| r.get::<_, String>(0))?;
        }
        // One read now: in WAL mode it maps the side file (futex mode from
        // the first write on), and it proves the file is a readable database.
        conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    })?;
    Ok((conn, state))
}

/// Makes the extension's slow-wait log (waits past `hybrid::log_waits()`,
/// 1 s by default) `tracing` warnings with target `sqlite_hybrid::lock`,
/// once per process. (It replaces a hook set before the first open; one
/// set later replaces this one.)
fn report_slow_waits_to_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        hybrid::on_slow_wait(|wait| {
            tracing::warn!(
                target: "sqlite_hybrid::lock",
                db = %wait.db,
                waited_ms = wait.waited.as_secs_f64() * 1000.0,
                holder_pid = wait.holder.map(|(pid, _)| pid),
                queued = wait.queued,
                "{wait}"
            );
        });
    });
}

/// Opens one read-only connection, with the log file (if any) attached.
pub(crate) fn open_reader(path: &Path, log: Option<&Path>) -> Result<Connection> {
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
