//! The buffer's state behind its one lock, and what the handle and the
//! flusher thread share ([`Shared`]). Everything the other modules of
//! `buffer/` do to the queue goes through these types.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::entry::{EntryKey, FailedEntry, Item, TableMode};
use super::options::{BufferOptions, BufferStats};
use super::pending::Coalesced;
use super::ticket::{TicketBoard, TicketCell};
use crate::core::Core;

/// Hash maps keyed by caller data: foldhash is fast and seeded per map
/// (SipHash was 8% of flush time).
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What `get` needs of an entry being written.
#[derive(Debug, Clone)]
pub(super) struct InFlightView {
    pub(super) ops: Option<Arc<Coalesced>>,
    /// All of an entry's tickets resolve together; once this one has,
    /// the entry is in the database (or failed) and no longer "pending".
    pub(super) first_cell: Arc<TicketCell>,
}

/// Everything behind the buffer's one lock.
///
/// The queue is a `Vec` in enqueue order plus an index of keyed entries'
/// positions, so a flush takes the whole queue by moving two values: no
/// hashing, no sorting (unless table priorities are set), no per-entry
/// bookkeeping while writing.
#[derive(Default)]
pub(super) struct State {
    /// Queued entries, in enqueue order.
    pub(super) queue: Vec<Item>,
    /// Position in `queue` of each keyed entry.
    pub(super) queue_index: FastMap<EntryKey, usize>,
    /// The drain being written: keyed entries' positions and views.
    pub(super) in_flight_index: FastMap<EntryKey, usize>,
    pub(super) in_flight_views: Vec<InFlightView>,
    pub(super) in_flight: usize,
    /// Tickets of the entries being written (for `force_flush`).
    pub(super) in_flight_cells: Vec<Arc<TicketCell>>,
    pub(super) modes: HashMap<Arc<str>, TableMode>,
    pub(super) oldest_pending: Option<Instant>,
    pub(super) flush_requested: bool,
    pub(super) closed: bool,
    pub(super) failed: VecDeque<FailedEntry>,
    pub(super) stats: BufferStats,
    pub(super) flush_total_ms: f64,
}

impl State {
    pub(super) fn pending_count(&self) -> usize {
        self.queue.len()
    }
}

/// What the handle and the flusher thread share.
pub(super) struct Shared {
    pub(super) core: Arc<Core>,
    pub(super) options: BufferOptions,
    pub(super) state: Mutex<State>,
    /// Signalled when entries leave the buffer (room for blocked enqueuers).
    pub(super) room: Condvar,
    /// Signalled when the flusher should look at the state.
    pub(super) wake: Condvar,
    pub(super) board: Arc<TicketBoard>,
    /// Count of batches that failed as a whole (read by `force_flush`).
    pub(super) batch_failures: AtomicU64,
}

impl Shared {
    pub(super) fn new(core: Arc<Core>, options: BufferOptions) -> Shared {
        Shared {
            core,
            options,
            state: Mutex::new(State::default()),
            room: Condvar::new(),
            wake: Condvar::new(),
            board: Arc::new(TicketBoard::default()),
            batch_failures: AtomicU64::new(0),
        }
    }

    /// Asks the flusher to flush now.
    pub(super) fn nudge(&self) {
        let mut state = self.state.lock();
        state.flush_requested = true;
        self.wake.notify_one();
    }
}
