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

pub(crate) mod entry;
mod flusher;
mod keys;
mod options;
pub(crate) mod pending;
mod ticket;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::types::Value;

use crate::Row;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::schema::TableInfo;
use entry::{EntryKey, Item, TableMode};
pub use entry::{FailedEntry, FailedOp, PendingRow};
use keys::{same_columns, split_key, unique_key};
pub use options::{Backpressure, BufferOptions, BufferStats};
use pending::{Coalesced, Columns, KeyedOp, encode_key};
#[cfg(feature = "tokio")]
pub use ticket::TicketFuture;
pub use ticket::{Ticket, TicketStatus};
use ticket::{TicketBoard, TicketCell};

/// Hash maps keyed by caller data: foldhash is fast and seeded per map
/// (SipHash was 8% of flush time).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What `get` needs of an entry being written.
#[derive(Debug, Clone)]
struct InFlightView {
    ops: Option<Arc<Coalesced>>,
    /// All of an entry's tickets resolve together; once this one has,
    /// the entry is in the database (or failed) and no longer "pending".
    first_cell: Arc<TicketCell>,
}

/// Everything behind the buffer's one lock.
///
/// The queue is a `Vec` in enqueue order plus an index of keyed entries'
/// positions, so a flush takes the whole queue by moving two values: no
/// hashing, no sorting (unless table priorities are set), no per-entry
/// bookkeeping while writing.
#[derive(Default)]
struct State {
    /// Queued entries, in enqueue order.
    queue: Vec<Item>,
    /// Position in `queue` of each keyed entry.
    queue_index: FastMap<EntryKey, usize>,
    /// The drain being written: keyed entries' positions and views.
    in_flight_index: FastMap<EntryKey, usize>,
    in_flight_views: Vec<InFlightView>,
    in_flight: usize,
    /// Tickets of the entries being written (for `force_flush`).
    in_flight_cells: Vec<Arc<TicketCell>>,
    modes: HashMap<Arc<str>, TableMode>,
    oldest_pending: Option<Instant>,
    flush_requested: bool,
    closed: bool,
    failed: VecDeque<FailedEntry>,
    stats: BufferStats,
    flush_total_ms: f64,
}

impl State {
    fn pending_count(&self) -> usize {
        self.queue.len()
    }
}

/// What the handle and the flusher thread share.
pub(crate) struct Shared {
    core: Arc<Core>,
    options: BufferOptions,
    state: Mutex<State>,
    /// Signalled when entries leave the buffer (room for blocked enqueuers).
    room: Condvar,
    /// Signalled when the flusher should look at the state.
    wake: Condvar,
    board: Arc<TicketBoard>,
    /// Count of batches that failed as a whole (read by `force_flush`).
    batch_failures: AtomicU64,
}

impl Shared {
    fn nudge(&self) {
        let mut state = self.state.lock();
        state.flush_requested = true;
        self.wake.notify_one();
    }
}

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

/// A validated operation, ready to enter the state.
enum NewOp {
    Keyed {
        table: Arc<TableInfo>,
        key_columns: Arc<[usize]>,
        key_values: Vec<Value>,
        op: KeyedOp,
    },
    Insert {
        table: Arc<TableInfo>,
        columns: Columns,
    },
}

impl WriteBuffer {
    pub(crate) fn start(core: Arc<Core>, options: BufferOptions) -> WriteBuffer {
        let shared = Arc::new(Shared {
            core,
            options,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            wake: Condvar::new(),
            board: Arc::new(TicketBoard::default()),
            batch_failures: AtomicU64::new(0),
        });
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
        let keys = unique_key(&info, key_columns)?;
        let columns = info.resolve_row(&row)?;
        let present: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
        info.check_insertable(&present)?;
        let (key_values, columns) = split_key(&info, &keys, columns)?;
        self.enqueue(NewOp::Keyed {
            table: info,
            key_columns: keys,
            key_values,
            op: KeyedOp::Upsert(columns),
        })
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
        let names: Vec<&str> = key.iter().map(|(c, _)| c).collect();
        let keys = unique_key(&info, &names)?;
        let (key_values, _) = split_key(&info, &keys, info.resolve_row(&key)?)?;
        let set = info.resolve_row(&changes)?;
        if set.is_empty() {
            return Err(Error::InvalidInput(
                "update with no columns to change".into(),
            ));
        }
        if let Some((c, _)) = set.iter().find(|(c, _)| keys.contains(c)) {
            return Err(Error::InvalidInput(format!(
                "update cannot change key column {}.{}; delete and upsert instead",
                info.name, info.columns[*c].name
            )));
        }
        self.enqueue(NewOp::Keyed {
            table: info,
            key_columns: keys,
            key_values,
            op: KeyedOp::Update(set),
        })
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
        let names: Vec<&str> = key.iter().map(|(c, _)| c).collect();
        let keys = unique_key(&info, &names)?;
        let (key_values, _) = split_key(&info, &keys, info.resolve_row(&key)?)?;
        self.enqueue(NewOp::Keyed {
            table: info,
            key_columns: keys,
            key_values,
            op: KeyedOp::Delete,
        })
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
        let columns = info.resolve_row(&row)?;
        if columns.is_empty() {
            return Err(Error::InvalidInput(format!(
                "insert into {} with no columns",
                info.name
            )));
        }
        let present: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
        info.check_insertable(&present)?;
        self.enqueue(NewOp::Insert {
            table: info,
            columns,
        })
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
        let shared = &self.shared;
        let cell = TicketCell::new();
        let mut state = shared.state.lock();
        let deadline = match shared.options.backpressure {
            Backpressure::Block { timeout } => Some(Instant::now() + timeout),
            Backpressure::Reject => None,
        };
        let (table, mode) = match &op {
            NewOp::Keyed {
                table, key_columns, ..
            } => (table, TableMode::Keyed(Arc::clone(key_columns))),
            NewOp::Insert { table, .. } => (table, TableMode::Append),
        };
        let name: Arc<str> = Arc::clone(&table.shared_name);
        match (state.modes.get(&name), &mode) {
            (None, _) => {
                state.modes.insert(Arc::clone(&name), mode);
            }
            (Some(TableMode::Keyed(fixed)), TableMode::Keyed(wanted))
                if same_columns(fixed, wanted) => {}
            (Some(TableMode::Append), TableMode::Append) => {}
            (Some(existing), _) => {
                let describe = |m: &TableMode| match m {
                    TableMode::Append => "append-only (insert)".to_string(),
                    TableMode::Keyed(k) => {
                        let cols: Vec<&str> =
                            k.iter().map(|c| table.columns[*c].name.as_str()).collect();
                        format!("keyed on ({})", cols.join(", "))
                    }
                };
                return Err(Error::InvalidInput(format!(
                    "table {} is {} in this write buffer; this call is {}",
                    table.name,
                    describe(existing),
                    describe(&mode)
                )));
            }
        }
        let entry_key = match &op {
            NewOp::Keyed { key_values, .. } => Some((Arc::clone(&name), encode_key(key_values))),
            NewOp::Insert { .. } => None,
        };
        let mut op = Some(op);
        loop {
            if state.closed {
                return Err(Error::Closed);
            }
            // Merging never needs room.
            if let Some(key) = &entry_key {
                let position = state.queue_index.get(key).copied();
                if let Some(Item::Keyed { ops, tickets, .. }) =
                    position.and_then(|p| state.queue.get_mut(p))
                {
                    if let Some(NewOp::Keyed { op: keyed_op, .. }) = op.take() {
                        // Queued entries are not shared, so this never clones.
                        Arc::make_mut(ops).apply(keyed_op);
                    }
                    tickets.push(Arc::clone(&cell));
                    state.stats.coalesced += 1;
                    state.stats.enqueued += 1;
                    return Ok(self.ticket(cell));
                }
            }
            if state.pending_count() + state.in_flight < shared.options.max_pending {
                break;
            }
            // Full: make room as soon as possible, whatever the mode.
            state.flush_requested = true;
            shared.wake.notify_one();
            let full = Error::BufferFull {
                capacity: shared.options.max_pending,
            };
            match deadline {
                None => {
                    state.stats.rejected += 1;
                    return Err(full);
                }
                Some(deadline) => {
                    if shared.room.wait_until(&mut state, deadline).timed_out()
                        && state.pending_count() + state.in_flight >= shared.options.max_pending
                    {
                        state.stats.rejected += 1;
                        return Err(full);
                    }
                }
            }
        }
        let item = match op.take() {
            Some(NewOp::Keyed {
                table,
                key_columns,
                key_values,
                op,
            }) => Item::Keyed {
                key: entry_key.clone().expect("keyed ops have a key"),
                table,
                key_columns,
                key_values,
                ops: Arc::new(Coalesced::of(op)),
                tickets: vec![Arc::clone(&cell)],
            },
            Some(NewOp::Insert { table, columns }) => Item::Insert {
                table,
                columns,
                ticket: Arc::clone(&cell),
            },
            None => {
                return Err(Error::InvalidInput(
                    "internal: operation consumed twice".into(),
                ));
            }
        };
        if let Some(key) = entry_key {
            let position = state.queue.len();
            state.queue_index.insert(key, position);
        }
        state.queue.push(item);
        state.oldest_pending.get_or_insert_with(Instant::now);
        state.stats.enqueued += 1;
        if state.pending_count() >= shared.options.batch_size {
            shared.wake.notify_one();
        }
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
        let names: Vec<&str> = key.iter().map(|(c, _)| c).collect();
        let keys = unique_key(&info, &names)?;
        let (key_values, _) = split_key(&info, &keys, info.resolve_row(key)?)?;
        let entry_key: EntryKey = (Arc::clone(&info.shared_name), encode_key(&key_values));
        let state = self.shared.state.lock();
        let in_flight = state
            .in_flight_index
            .get(&entry_key)
            .and_then(|&p| state.in_flight_views.get(p))
            .filter(|view| view.first_cell.status() == TicketStatus::Pending)
            .and_then(|view| view.ops.as_ref());
        let queued = match state
            .queue_index
            .get(&entry_key)
            .and_then(|&p| state.queue.get(p))
        {
            Some(Item::Keyed { ops, .. }) => Some(ops),
            _ => None,
        };
        let combined: Coalesced = match (in_flight, queued) {
            (None, None) => return Ok(None),
            (Some(a), None) => (**a).clone(),
            (None, Some(b)) => (**b).clone(),
            (Some(a), Some(b)) => {
                let mut c = (**a).clone();
                c.then(b);
                c
            }
        };
        drop(state);
        let row = |columns: &Columns| {
            let mut row = Row::new();
            for (c, v) in columns {
                row.put(&info.columns[*c].name, v.clone());
            }
            row
        };
        Ok(Some(match (combined.before, combined.upsert) {
            (pending::Before::Delete, None) => PendingRow::Deleted,
            (pending::Before::Delete, Some(u)) => PendingRow::Replaced(row(&u)),
            (pending::Before::Nothing, Some(u)) => PendingRow::Upserted(row(&u)),
            (pending::Before::Update(a), None) => PendingRow::Updated(row(&a)),
            (pending::Before::Update(a), Some(u)) => PendingRow::UpdatedThenUpserted {
                update: row(&a),
                upsert: row(&u),
            },
            (pending::Before::Nothing, None) => return Ok(None),
        }))
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
        let shared = &self.shared;
        let failures_before = shared.batch_failures.load(Ordering::Acquire);
        // One ticket per entry: all tickets of an entry resolve together,
        // so its first one stands for it (and `failed` counts entries).
        let cells: Vec<Arc<TicketCell>> = {
            let mut state = shared.state.lock();
            let mut cells: Vec<Arc<TicketCell>> = state
                .queue
                .iter()
                .map(|i| Arc::clone(&i.cells()[0]))
                .collect();
            cells.extend(
                state
                    .in_flight_views
                    .iter()
                    .map(|v| Arc::clone(&v.first_cell)),
            );
            state.flush_requested = true;
            shared.wake.notify_one();
            cells
        };
        let batch_failed = || shared.batch_failures.load(Ordering::Acquire) > failures_before;
        // Entries resolve roughly in queue order, so a cursor that only moves
        // forward checks each one about once (rescanning from the start on
        // every batch was quadratic in the queue length).
        let mut first_unresolved = 0;
        let done = shared.board.wait_until(timeout, || {
            while first_unresolved < cells.len()
                && cells[first_unresolved].status() != TicketStatus::Pending
            {
                first_unresolved += 1;
            }
            batch_failed() || first_unresolved == cells.len()
        });
        let failed: Vec<String> = cells
            .iter()
            .filter_map(|c| match c.status() {
                TicketStatus::Failed(m) => Some(m),
                _ => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            return Err(Error::FlushFailed {
                failed: failed.len(),
                first_error: first.clone(),
            });
        }
        let still_pending = cells
            .iter()
            .filter(|c| c.status() == TicketStatus::Pending)
            .count();
        if still_pending == 0 {
            return Ok(());
        }
        if batch_failed() {
            let error = shared
                .state
                .lock()
                .stats
                .last_error
                .clone()
                .unwrap_or_default();
            return Err(Error::FlushFailed {
                failed: still_pending,
                first_error: format!("batch kept for retry: {error}"),
            });
        }
        debug_assert!(!done);
        Err(Error::Timeout { waited: timeout })
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
