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
//!
//! Async waiters (`ticket.await`, feature `tokio`) register their task's
//! waker in the cell itself: the flusher wakes exactly the tasks whose
//! operation it resolved. A flag bit in the state says whether any waker
//! is there, so resolving a cell nobody awaits still takes no lock (one
//! atomic swap).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Waker;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

// The low two bits are the outcome; the default (0) is pending.
const COMMITTED: u8 = 1;
const FAILED: u8 = 2;
const OUTCOME: u8 = 0b11;
/// Set once a future has put a waker in the cell: resolving the cell then
/// takes the lock and wakes; otherwise it skips both.
const AWAITED: u8 = 0b100;

/// The shared state of one ticket.
#[derive(Debug, Default)]
pub(crate) struct TicketCell {
    state: AtomicU8,
    slot: Mutex<Slot>,
}

/// What a cell keeps behind its lock.
#[derive(Debug, Default)]
struct Slot {
    error: Option<String>,
    /// One place per live `TicketFuture` of this operation (a `Ticket` is
    /// `Clone`, so several tasks may await it); `None` marks a free place.
    wakers: Vec<Option<Waker>>,
}

impl TicketCell {
    /// A new pending cell.
    pub(crate) fn new() -> Arc<TicketCell> {
        Arc::new(TicketCell::default())
    }

    /// Marks the operation committed.
    pub(crate) fn commit(&self) {
        let before = self.state.swap(COMMITTED, Ordering::AcqRel);
        if before & AWAITED != 0 {
            let wakers = std::mem::take(&mut self.slot.lock().wakers);
            wake_all(wakers);
        }
    }

    /// Marks the operation failed with `message`.
    pub(crate) fn fail(&self, message: &str) {
        let mut slot = self.slot.lock();
        slot.error = Some(message.to_string());
        let before = self.state.swap(FAILED, Ordering::AcqRel);
        let wakers = if before & AWAITED != 0 {
            std::mem::take(&mut slot.wakers)
        } else {
            Vec::new()
        };
        drop(slot);
        wake_all(wakers);
    }

    /// Where the operation stands.
    pub(crate) fn status(&self) -> TicketStatus {
        self.status_of(self.state.load(Ordering::Acquire))
    }

    fn status_of(&self, state: u8) -> TicketStatus {
        match state & OUTCOME {
            COMMITTED => TicketStatus::Committed,
            FAILED => TicketStatus::Failed(self.slot.lock().error.clone().unwrap_or_default()),
            _ => TicketStatus::Pending,
        }
    }

    /// Puts `waker` in this future's place (`place`, assigned on first
    /// call) and returns the status as of the registration.
    ///
    /// Why no wake-up can be missed: the place is written and the
    /// `AWAITED` bit set under the lock, with one read-modify-write. If
    /// `commit`/`fail` swapped the outcome in first, that read returns it
    /// and the caller is ready at once; otherwise their swap sees the bit
    /// and they take the lock, which waits for this registration.
    #[cfg(feature = "tokio")]
    pub(crate) fn register(&self, place: &mut Option<usize>, waker: &Waker) -> TicketStatus {
        let mut slot = self.slot.lock();
        match place.and_then(|i| slot.wakers.get_mut(i)) {
            // Polled again by the same task: nothing to do.
            Some(Some(current)) if current.will_wake(waker) => {}
            Some(entry) => *entry = Some(waker.clone()),
            None => {
                let free = slot.wakers.iter().position(Option::is_none);
                let index = free.unwrap_or(slot.wakers.len());
                if index == slot.wakers.len() {
                    slot.wakers.push(None);
                }
                slot.wakers[index] = Some(waker.clone());
                *place = Some(index);
            }
        }
        let state = self.state.fetch_or(AWAITED, Ordering::AcqRel);
        drop(slot);
        self.status_of(state)
    }

    /// Frees a dropped future's place, so the cell does not keep its
    /// task's waker alive (once resolved, the wakers are gone anyway).
    #[cfg(feature = "tokio")]
    pub(crate) fn unregister(&self, place: usize) {
        let mut slot = self.slot.lock();
        if self.state.load(Ordering::Acquire) & OUTCOME == 0
            && let Some(entry) = slot.wakers.get_mut(place)
        {
            *entry = None;
        }
    }
}

fn wake_all(wakers: Vec<Option<Waker>>) {
    wakers.into_iter().flatten().for_each(Waker::wake);
}

/// Where an enqueued operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
pub(crate) struct TicketBoard {
    lock: Mutex<()>,
    changed: Condvar,
}

impl TicketBoard {
    /// Wakes every waiter (after a batch committed or failed).
    pub(crate) fn notify(&self) {
        let _guard = self.lock.lock();
        self.changed.notify_all();
    }

    /// Waits until `done()` holds or `timeout` passes; returns whether it holds.
    pub(crate) fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
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

/// `ticket.await`: resolves when the operation's batch commits (feature
/// `tokio`; the future itself needs no particular runtime).
///
/// The first poll asks the flusher to write now (as [`Ticket::wait`]
/// does), then the task sleeps until the flusher resolves this operation:
/// its waker is kept in the ticket and woken by the commit, so waiting
/// costs no thread and no polling. Dropping the future only stops the
/// waiting: the operation stays queued and is written as usual.
///
/// There is no built-in time limit: while a batch keeps failing as a whole
/// (lock timeout, disk full) its entries stay queued and their tickets
/// pending, so wrap the await in `tokio::time::timeout` where a request
/// must not wait that long.
///
/// ```
/// # async fn demo(db: &sqlite_hybrid::AsyncDatabase) -> sqlite_hybrid::Result<()> {
/// use sqlite_hybrid::Row;
/// let ticket = db.buffer().upsert("kv", Row::new().set("k", "a").set("v", "1"), &["k"])?;
/// ticket.await?; // committed once this returns Ok
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
impl std::future::IntoFuture for Ticket {
    type Output = Result<()>;
    type IntoFuture = TicketFuture;

    fn into_future(self) -> TicketFuture {
        TicketFuture {
            ticket: self,
            place: None,
            nudged: false,
        }
    }
}

/// The future of `ticket.await` (see the `IntoFuture` impl of [`Ticket`]).
/// `Ok` means committed; a failure is [`Error::FlushFailed`].
#[cfg(feature = "tokio")]
#[must_use = "a ticket future does nothing unless awaited (the operation is queued either way)"]
pub struct TicketFuture {
    ticket: Ticket,
    /// This future's place in the cell's wakers, once registered.
    place: Option<usize>,
    nudged: bool,
}

#[cfg(feature = "tokio")]
impl std::fmt::Debug for TicketFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketFuture")
            .field("ticket", &self.ticket)
            .finish()
    }
}

#[cfg(feature = "tokio")]
impl std::future::Future for TicketFuture {
    type Output = Result<()>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<()>> {
        let this = &mut *self;
        let mut status = this.ticket.status();
        if status == TicketStatus::Pending {
            // Someone blocking on this future inside a write closure would
            // hold the writer connection the flusher needs.
            if crate::write_scope::in_write() {
                return std::task::Poll::Ready(Err(Error::InvalidInput(
                    "awaiting a ticket inside Database::write would deadlock (the flusher needs \
                     the writer)"
                        .into(),
                )));
            }
            if !this.nudged {
                this.nudged = true;
                (this.ticket.wake_flusher)();
            }
            status = this.ticket.cell.register(&mut this.place, cx.waker());
        }
        match status {
            TicketStatus::Pending => std::task::Poll::Pending,
            TicketStatus::Committed => std::task::Poll::Ready(Ok(())),
            TicketStatus::Failed(message) => std::task::Poll::Ready(Err(Error::FlushFailed {
                failed: 1,
                first_error: message,
            })),
        }
    }
}

#[cfg(feature = "tokio")]
impl Drop for TicketFuture {
    fn drop(&mut self) {
        if let Some(place) = self.place.take() {
            self.ticket.cell.unregister(place);
        }
    }
}
