//! Flush tickets: a handle per enqueued operation that says when it was
//! committed (or why it could not be).
//!
//! Each operation gets a [`TicketCell`] (an atomic state, plus the error
//! text if it failed). The buffer entry holding the operation keeps the
//! cell; when the entry's batch commits, every cell it holds becomes
//! `Committed`, so an operation merged into a later one is acknowledged
//! when the merged entry commits. Waiters share one condition variable,
//! notified after every batch, so a ticket costs one small allocation and
//! no thread or lock of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

// The default (0) is pending.
const COMMITTED: u8 = 1;
const FAILED: u8 = 2;

/// The shared state of one ticket.
#[derive(Debug, Default)]
pub struct TicketCell {
    state: AtomicU8,
    error: Mutex<Option<String>>,
}

impl TicketCell {
    /// A new pending cell.
    pub fn new() -> Arc<TicketCell> {
        Arc::new(TicketCell::default())
    }

    /// Marks the operation committed.
    pub fn commit(&self) {
        self.state.store(COMMITTED, Ordering::Release);
    }

    /// Marks the operation failed with `message`.
    pub fn fail(&self, message: &str) {
        *self.error.lock() = Some(message.to_string());
        self.state.store(FAILED, Ordering::Release);
    }

    /// Where the operation stands.
    pub fn status(&self) -> TicketStatus {
        match self.state.load(Ordering::Acquire) {
            COMMITTED => TicketStatus::Committed,
            FAILED => TicketStatus::Failed(self.error.lock().clone().unwrap_or_default()),
            _ => TicketStatus::Pending,
        }
    }
}

/// Where an enqueued operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketStatus {
    /// Not yet written.
    Pending,
    /// Committed to the database file (durable as `synchronous` allows:
    /// with WAL and `synchronous=NORMAL`, it survives a process crash; a
    /// power cut may lose the last commits).
    Committed,
    /// Could not be written; the entry is in `take_failed()`.
    Failed(String),
}

/// The condition variable all ticket and flush waiters share.
#[derive(Debug, Default)]
pub struct TicketBoard {
    lock: Mutex<()>,
    changed: Condvar,
}

impl TicketBoard {
    /// Wakes every waiter (after a batch committed or failed).
    pub fn notify(&self) {
        let _guard = self.lock.lock();
        self.changed.notify_all();
    }

    /// Waits until `done()` holds or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock();
        loop {
            if done() {
                return true;
            }
            if self.changed.wait_until(&mut guard, deadline).timed_out() {
                return done();
            }
        }
    }
}

/// A handle to one enqueued operation.
///
/// ```
/// use std::time::Duration;
/// use sqlite_hybrid::{Database, Row, TicketStatus};
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path().join("t.db"))?;
/// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")?))?;
/// let ticket = db.buffer().upsert("kv", Row::new().set("k", "a").set("v", "1"), &["k"])?;
/// ticket.wait(Duration::from_secs(10))?; // committed when this returns Ok
/// assert_eq!(ticket.status(), TicketStatus::Committed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Ticket {
    pub(crate) cell: Arc<TicketCell>,
    pub(crate) board: Arc<TicketBoard>,
    pub(crate) wake_flusher: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("status", &self.status())
            .finish()
    }
}

impl Ticket {
    /// Where the operation stands now.
    pub fn status(&self) -> TicketStatus {
        self.cell.status()
    }

    /// Asks the flusher to write now and waits up to `timeout` for this
    /// operation's commit. `Ok` means committed; a failure returns
    /// [`Error::FlushFailed`]; running out of time returns
    /// [`Error::Timeout`] (the operation stays queued).
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        if crate::write_scope::in_write() {
            return Err(Error::InvalidInput(
                "Ticket::wait inside Database::write would deadlock (the flusher needs the writer)"
                    .into(),
            ));
        }
        (self.wake_flusher)();
        self.board
            .wait_until(timeout, || self.cell.status() != TicketStatus::Pending);
        match self.cell.status() {
            TicketStatus::Committed => Ok(()),
            TicketStatus::Failed(message) => Err(Error::FlushFailed {
                failed: 1,
                first_error: message,
            }),
            TicketStatus::Pending => Err(Error::Timeout { waited: timeout }),
        }
    }
}
