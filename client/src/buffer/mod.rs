//! The write buffer: callers enqueue row operations from any thread and get
//! a [`Ticket`] back at once; a background flusher writes them in batches.
//!
//! # Rules (what is guaranteed)
//! * **Validation at enqueue.** Unknown table or column, a key that is not
//!   the table's PRIMARY KEY or a UNIQUE index, a missing or NULL key, a
//!   missing NOT NULL column, a value that does not fit a STRICT column:
//!   the enqueueing call returns the error; nothing is queued.
//! * **Coalescing.** Operations on the same `(table, key)` merge into one
//!   entry with exactly the effect of running them in order (see
//!   `pending.rs` for the table): upserts merge column by column, last
//!   write wins; an update after an upsert merges into it; a delete
//!   replaces everything before it (the flush still deletes the committed
//!   row); an upsert after a delete becomes "delete, then insert". Plain
//!   `insert`s are never merged.
//! * **One key per table.** The first keyed operation on a table fixes its
//!   key columns; a table is either keyed (upsert/update/delete) or
//!   append-only (insert), never both. Otherwise merged entries could be
//!   reordered against operations on the same row.
//! * **Order.** Tables flush in `table_priority` order (higher first, then
//!   name); within a table, entries in the order they were first
//!   enqueued. Operations on one key are never reordered.
//! * **Batches.** A flush starts when `batch_size` entries are pending,
//!   when the oldest pending entry is `flush_interval` old, or on request;
//!   it writes everything pending, `batch_size` entries per `BEGIN
//!   IMMEDIATE` transaction, with whole-batch retry on lock errors.
//! * **Failures are never silent.** An entry that fails for a row-level
//!   reason (constraint, type) is rolled back alone; the rest of its batch
//!   commits; the entry moves to [`WriteBuffer::take_failed`] and its
//!   tickets fail. A batch that fails as a whole (disk full, I/O, lock
//!   timeout) stays queued and is retried; `force_flush` returns the error.
//! * **Backpressure.** At most `max_pending` entries (queued plus being
//!   written) exist. When full, an enqueue that would add an entry blocks
//!   (up to a timeout) or is rejected, as configured; merging into an
//!   existing entry always succeeds.
//! * **Acknowledged** means: the operation's ticket reports `Committed`,
//!   or a `force_flush` that started after the enqueue returned `Ok`.
//!   Acknowledged operations are in the database file. Operations not yet
//!   acknowledged are lost if the process dies; `close()` and `Drop` flush.
//!
//! # Why a mutex-guarded map, not a channel
//! Coalescing and read-your-writes ([`WriteBuffer::get`]) need one keyed
//! view of everything pending, readable by callers. With a channel, only
//! the flusher would see it. The lock is held for a hash-map update per
//! enqueue (validation happens before it); `make bench` measures the rate.
//!
//! # Modules (each imports only those below it)
//! * this file: [`WriteBuffer`], the handle; starts the flusher.
//! * `validate.rs` (a call checked and turned into an operation),
//!   `enqueue.rs` (admission: one key per table, merging, backpressure),
//!   `lookup.rs` (read-your-writes), `force_flush.rs` (waiting for a
//!   flush), `flusher.rs` (the thread that writes).
//! * `state.rs`: the state behind the one lock, shared with the flusher.
//! * `entry.rs` (an entry and what is reported of it), `keys.rs` (unique
//!   keys and their values), `pending.rs` (the coalescing normal form),
//!   `ticket.rs` (tickets), `options.rs` (settings and counters).

mod enqueue;
pub(crate) mod entry;
mod flusher;
mod force_flush;
mod keys;
mod lookup;
mod options;
pub(crate) mod pending;
mod state;
mod ticket;
mod validate;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::core::Core;
use crate::error::{Error, Result};
use crate::row::Row;
pub use entry::{FailedEntry, FailedOp, PendingRow};
pub use options::{Backpressure, BufferOptions, BufferStats};
use state::Shared;
use ticket::TicketCell;
#[cfg(feature = "tokio")]
pub use ticket::TicketFuture;
pub use ticket::{Ticket, TicketStatus};
use validate::NewOp;

/// The write buffer of a [`crate::Database`]; see the module docs for the
/// rules. Get it with [`crate::Database::buffer`].
pub struct WriteBuffer {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// Why the flusher thread could not start: every call then fails with
    /// it, instead of queueing entries nobody would write.
    start_error: Option<std::io::Error>,
    wake_flusher: Arc<dyn Fn() + Send + Sync>,
}

impl WriteBuffer {
    pub(crate) fn start(core: Arc<Core>, options: BufferOptions) -> WriteBuffer {
        let shared = Arc::new(Shared::new(core, options));
        let for_thread = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("sqlite-hybrid-flusher".into())
            .spawn(move || flusher::run(&for_thread));
        let (flusher, start_error) = match flusher {
            Ok(handle) => (Some(handle), None),
            Err(error) => (None, Some(error)),
        };
        let weak = Arc::downgrade(&shared);
        let wake_flusher: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.nudge();
            }
        });
        WriteBuffer {
            shared,
            flusher: Mutex::new(flusher),
            start_error,
            wake_flusher,
        }
    }

    /// Queues an upsert of `row` into `table`, keyed on `key_columns` (the
    /// table's PRIMARY KEY or a UNIQUE index; all must be in `row`, not NULL).
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// let buffer = db.buffer();
    /// buffer.upsert("stock", Row::new().set("sku", "a").set("qty", 1), &["sku"])?;
    /// buffer.upsert("stock", Row::new().set("sku", "a").set("qty", 2), &["sku"])?; // merges
    /// buffer.force_flush()?;
    /// assert_eq!(buffer.stats().flushed_entries, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upsert(&self, table: &str, row: Row, key_columns: &[&str]) -> Result<Ticket> {
        let info = self.shared.core.table(table)?;
        self.enqueue(validate::upsert(info, &row, key_columns)?)
    }

    /// Queues an update of `changes` on the row whose key is `key` (its
    /// columns must be the table's PRIMARY KEY or a UNIQUE index). Key
    /// columns cannot be changed this way.
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// db.write(|tx| Ok(tx.execute("INSERT INTO stock VALUES ('a', 1)", [])?))?;
    /// db.buffer().update("stock", Row::new().set("sku", "a"), Row::new().set("qty", 9))?;
    /// db.buffer().force_flush()?;
    /// let qty: i64 = db.read(|c| Ok(c.query_row("SELECT qty FROM stock", [], |r| r.get(0))?))?;
    /// assert_eq!(qty, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn update(&self, table: &str, key: Row, changes: Row) -> Result<Ticket> {
        let info = self.shared.core.table(table)?;
        self.enqueue(validate::update(info, &key, &changes)?)
    }

    /// Queues a delete of the row whose key is `key`.
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// db.write(|tx| Ok(tx.execute("INSERT INTO stock VALUES ('a', 1)", [])?))?;
    /// db.buffer().delete("stock", Row::new().set("sku", "a"))?;
    /// db.buffer().force_flush()?;
    /// let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM stock", [], |r| r.get(0))?))?;
    /// assert_eq!(n, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&self, table: &str, key: Row) -> Result<Ticket> {
        let info = self.shared.core.table(table)?;
        self.enqueue(validate::delete(info, &key)?)
    }

    /// Queues a plain insert (never merged with other operations).
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// for i in 0..3 {
    ///     db.buffer().insert("log", Row::new().set("msg", format!("line {i}")))?;
    /// }
    /// db.buffer().force_flush()?;
    /// let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM log", [], |r| r.get(0))?))?;
    /// assert_eq!(n, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert(&self, table: &str, row: Row) -> Result<Ticket> {
        let info = self.shared.core.table(table)?;
        self.enqueue(validate::insert(info, &row)?)
    }

    /// The error to give when the flusher never started.
    fn check_started(&self) -> Result<()> {
        match &self.start_error {
            Some(error) => Err(Error::Spawn(std::io::Error::new(
                error.kind(),
                error.to_string(),
            ))),
            None => Ok(()),
        }
    }

    fn enqueue(&self, op: NewOp) -> Result<Ticket> {
        self.check_started()?;
        let cell = TicketCell::new();
        self.shared.enqueue(op, &cell)?;
        Ok(self.ticket(cell))
    }

    fn ticket(&self, cell: Arc<TicketCell>) -> Ticket {
        Ticket {
            cell,
            board: Arc::clone(&self.shared.board),
            wake_flusher: Arc::clone(&self.wake_flusher),
        }
    }

    /// Read-your-writes: what is queued (or being written) for the row of
    /// `table` whose key is `key`; `None` if nothing is, in which case the
    /// database has the current value.
    ///
    /// ```
    /// use sqlite_hybrid::{PendingRow, Row};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// let key = Row::new().set("sku", "a");
    /// db.buffer().delete("stock", key.clone())?;
    /// assert_eq!(db.buffer().get("stock", &key)?, Some(PendingRow::Deleted));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, table: &str, key: &Row) -> Result<Option<PendingRow>> {
        let info = self.shared.core.table(table)?;
        let (_, key_values) = validate::key_of(&info, key)?;
        Ok(self.shared.pending_row(&info, &key_values))
    }

    /// Writes everything enqueued before this call and returns once it is
    /// committed. Errors: [`Error::FlushFailed`] if any of those entries
    /// failed (they are in `take_failed`) or a batch failed as a whole
    /// (those entries stay queued and are retried); waits up to 60 s.
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// db.buffer().upsert("stock", Row::new().set("sku", "a").set("qty", 1), &["sku"])?;
    /// db.buffer().force_flush()?; // returns once committed
    /// let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM stock", [], |r| r.get(0))?))?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn force_flush(&self) -> Result<()> {
        self.force_flush_timeout(Duration::from_secs(60))
    }

    /// [`WriteBuffer::force_flush`] with an explicit wait limit
    /// ([`Error::Timeout`] when reached; the entries stay queued).
    pub fn force_flush_timeout(&self, timeout: Duration) -> Result<()> {
        self.check_started()?;
        if crate::write_scope::in_write() {
            return Err(Error::InvalidInput(
                "force_flush inside Database::write would deadlock (the flusher needs the writer)"
                    .into(),
            ));
        }
        self.shared.force_flush(timeout)
    }

    /// The buffer's counters.
    ///
    /// ```
    /// use sqlite_hybrid::Row;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// db.buffer().upsert("stock", Row::new().set("sku", "a").set("qty", 1), &["sku"])?;
    /// let stats = db.buffer().stats();
    /// assert_eq!((stats.enqueued, stats.pending), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> BufferStats {
        let state = self.shared.state.lock();
        let mut stats = state.stats.clone();
        stats.pending = state.pending_count();
        stats.in_flight = state.in_flight;
        stats.failed_kept = state.failed.len();
        stats
    }

    /// Removes and returns the entries that could not be written.
    ///
    /// ```
    /// use sqlite_hybrid::{Row, FailedOp};
    /// # let dir = tempfile::tempdir()?;
    /// # let db = sqlite_hybrid::Database::open(dir.path().join("x.db"))?;
    /// # db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")?))?;
    /// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")?))?;
    /// db.write(|tx| Ok(tx.execute("INSERT INTO u VALUES (1, 'x@y')", [])?))?;
    /// db.buffer().upsert("u", Row::new().set("id", 2).set("email", "x@y"), &["id"])?;
    /// assert!(db.buffer().force_flush().is_err());
    /// let failed = db.buffer().take_failed();
    /// assert!(failed[0].error.contains("UNIQUE"));
    /// assert!(matches!(failed[0].ops[0], FailedOp::Upsert(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn take_failed(&self) -> Vec<FailedEntry> {
        self.shared.state.lock().failed.drain(..).collect()
    }

    /// Stops accepting operations, writes everything pending, stops the
    /// flusher. Errors if entries could not be written (they are failed,
    /// with their tickets, and returned by `take_failed` before this
    /// buffer is dropped).
    pub(crate) fn close(&self) -> Result<()> {
        {
            let mut state = self.shared.state.lock();
            state.closed = true;
            self.shared.wake.notify_all();
            self.shared.room.notify_all();
        }
        if let Some(handle) = self.flusher.lock().take() {
            let _ = handle.join();
        }
        let state = self.shared.state.lock();
        match state.failed.front() {
            Some(first) => Err(Error::FlushFailed {
                failed: state.failed.len(),
                first_error: first.error.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for WriteBuffer {
    fn drop(&mut self) {
        // A bound value, so the lock is released before close() takes it.
        let running = self.flusher.lock().is_some();
        if running && let Err(e) = self.close() {
            log::error!("sqlite-hybrid: write buffer closed with unwritten entries: {e}");
        }
    }
}
