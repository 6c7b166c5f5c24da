//! This process's lock statistics: per database file ([`FileMetrics`]), the
//! ring of recent waits, and the process-wide [`Registry`] that bounds both.
//!
//! # Invariants
//! * Per reset generation, every wait is counted exactly once, as
//!   `in_flight`, `acquired` or `gave_up`: [`Registry::reset`] bumps a
//!   generation and a wait that began in an older one is not counted
//!   anywhere (see `tracker.rs` for the wait's life).
//! * Memory is fixed per file (a log-bucket histogram), the event ring holds
//!   at most [`MAX_EVENT_CAPACITY`] entries, and the registry forgets unused
//!   files beyond [`MAX_IDLE_FILES`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::{Mutex, MutexGuard};

use crate::stats::episode::{Episode, Phase};
use crate::stats::histogram::LogHistogram;
use crate::stats::lock_stats::Counts;

/// Default number of finished waits kept for `hybrid_lock_events`.
pub(crate) const DEFAULT_EVENT_CAPACITY: usize = 256;
/// Largest accepted event-ring capacity (about 6 MB of events at most).
pub(crate) const MAX_EVENT_CAPACITY: usize = 65_536;
/// Files with no open connection that the registry keeps before forgetting
/// the oldest; bounds memory in processes that open many short-lived files.
pub(crate) const MAX_IDLE_FILES: usize = 256;

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The connection got the lock.
    Acquired,
    /// The handler gave up; the caller got `SQLITE_BUSY`.
    GaveUp,
    /// Not a wait: the caller got an `SQLITE_BUSY*` that no busy handler
    /// could see (see [`ImmediateBusy`]).
    Immediate(ImmediateBusy),
}

impl Outcome {
    /// `"acquired"`, `"gave_up"`, `"busy_in_read_tx"` or
    /// `"busy_snapshot"`, as shown in SQL.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::GaveUp => "gave_up",
            Outcome::Immediate(kind) => kind.name(),
        }
    }
}

/// An `SQLITE_BUSY*` that SQLite returns at once, without calling any busy
/// handler: a transaction that has read asks for the write lock (WAL mode).
/// No handler can wait these out; the remedy is `BEGIN IMMEDIATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImmediateBusy {
    /// Another connection held the write lock (`SQLITE_BUSY`):
    /// `sqlite3BtreeBeginTrans` calls the busy handler only from no
    /// transaction.
    InReadTx,
    /// The write lock was free, but another connection had committed since
    /// this transaction's snapshot was taken (`SQLITE_BUSY_SNAPSHOT`).
    Snapshot,
}

impl ImmediateBusy {
    /// The column and event outcome it is counted under.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ImmediateBusy::InReadTx => "busy_in_read_tx",
            ImmediateBusy::Snapshot => "busy_snapshot",
        }
    }
}

/// One finished (or provisionally acquired) wait.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WaitEvent {
    pub(crate) at_unix_ms: u64,
    pub(crate) db: Arc<str>,
    pub(crate) outcome: Outcome,
    pub(crate) wait_us: u64,
    pub(crate) retries: u32,
    pub(crate) pid: u32,
}

/// Where a file's waits are also counted for every process (the side file,
/// `shared/counters.rs`). Implementations use atomics only: they are called
/// under this module's locks.
pub(crate) trait SharedCounters: Send + Sync + std::fmt::Debug {
    /// A wait started; returns the reset generation it counts in.
    fn wait_started(&self, at_unix_ms: u64) -> u64;
    /// The busy handler was called.
    fn handler_call(&self);
    /// A queued wait was handed the lock.
    fn handoff(&self);
    /// A wait that started in `generation` ended.
    fn wait_finished(&self, generation: u64, outcome: Outcome, wait_us: u64, at_unix_ms: u64);
    /// A caller got an `SQLITE_BUSY*` no busy handler saw.
    fn immediate_busy(&self, kind: ImmediateBusy, at_unix_ms: u64);
    /// The application re-ran a unit of work (`hybrid_note_retry()`).
    fn app_retry(&self);
}

/// The ring of recent waits, shared by every file of the process.
#[derive(Debug)]
struct EventRing {
    ring: Mutex<VecDeque<WaitEvent>>,
    capacity: AtomicUsize,
}

impl EventRing {
    fn push(&self, event: WaitEvent) {
        let capacity = self.capacity.load(Ordering::Relaxed);
        let mut ring = self.ring.lock();
        while ring.len() >= capacity {
            ring.pop_front();
        }
        if capacity > 0 {
            ring.push_back(event);
        }
    }
}

/// Settled counters of one file, per reset generation.
#[derive(Debug, Default)]
pub(crate) struct FileStats {
    pub(crate) generation: u64,
    pub(crate) handler_calls: u64,
    handoffs: u64,
    acquired: u64,
    gave_up: u64,
    busy_in_read_tx: u64,
    busy_snapshot: u64,
    app_retries: u64,
    wait_total_us: u64,
    wait_max_us: u64,
    histogram: LogHistogram,
    pub(crate) last_event_unix_ms: Option<u64>,
}

impl FileStats {
    pub(crate) fn add_finished(&mut self, outcome: Outcome, wait_us: u64, at_unix_ms: u64) {
        match outcome {
            Outcome::Acquired => self.acquired += 1,
            Outcome::GaveUp => self.gave_up += 1,
            Outcome::Immediate(_) => return, // not a wait
        }
        self.wait_total_us = self.wait_total_us.saturating_add(wait_us);
        self.wait_max_us = self.wait_max_us.max(wait_us);
        self.histogram.record(wait_us);
        self.last_event_unix_ms = Some(at_unix_ms);
    }
}

/// What a file's counters read of one connection (its `WaitTracker`,
/// `tracker.rs`): the wait in progress, and whether its busy handler is in
/// force. Held weakly: a closed connection's tracker is gone.
pub(super) trait ConnectionWaits: Send + Sync + std::fmt::Debug {
    /// The connection's wait in progress (lock order: see `tracker.rs`).
    fn episode(&self) -> &Mutex<Option<Episode>>;
    /// Whether the connection's hybrid busy handler was last seen in force.
    fn handler_installed(&self) -> bool;
}

/// Everything this process knows about one database file.
#[derive(Debug)]
pub(crate) struct FileMetrics {
    path: Arc<str>,
    pub(super) stats: Mutex<FileStats>,
    trackers: Mutex<Vec<Weak<dyn ConnectionWaits>>>,
    events: Arc<EventRing>,
    shared: Mutex<Option<Arc<dyn SharedCounters>>>,
}

/// A consistent view of one file's process counters.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSnapshot {
    pub(crate) counts: Counts,
    pub(crate) connections: u64,
    pub(crate) handler_active: u64,
}

impl FileMetrics {
    /// The database file's path as SQLite reports it.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn path_arc(&self) -> &Arc<str> {
        &self.path
    }

    /// Also counts this file's waits in `shared` from now on (once per
    /// process: every connection of the process maps the same side file).
    pub(crate) fn attach_shared(&self, shared: Arc<dyn SharedCounters>) {
        let mut slot = self.shared.lock();
        if slot.is_none() {
            *slot = Some(shared);
        }
    }

    /// A queued wait of this process was handed the lock.
    pub(crate) fn handoff(&self) {
        self.stats.lock().handoffs += 1;
        if let Some(shared) = self.shared() {
            shared.handoff();
        }
    }

    /// A caller of this process got an `SQLITE_BUSY*` that no busy handler
    /// saw: counted (in its own column, never as a wait) here and in the
    /// side file, and shown in `hybrid_lock_events`.
    pub(crate) fn immediate_busy(&self, kind: ImmediateBusy) {
        let at_unix_ms = crate::clock::now_unix_ms();
        {
            let mut stats = self.stats.lock();
            match kind {
                ImmediateBusy::InReadTx => stats.busy_in_read_tx += 1,
                ImmediateBusy::Snapshot => stats.busy_snapshot += 1,
            }
            stats.last_event_unix_ms = Some(at_unix_ms);
        }
        if let Some(shared) = self.shared() {
            shared.immediate_busy(kind, at_unix_ms);
        }
        self.push_event(WaitEvent {
            at_unix_ms,
            db: Arc::clone(&self.path),
            outcome: Outcome::Immediate(kind),
            wait_us: 0,
            retries: 0,
            pid: std::process::id(),
        });
    }

    /// The application re-ran a unit of work after a lock error; returns
    /// this process's count for the file (since the last reset).
    pub(crate) fn app_retry(&self) -> u64 {
        let count = {
            let mut stats = self.stats.lock();
            stats.app_retries = stats.app_retries.saturating_add(1);
            stats.app_retries
        };
        if let Some(shared) = self.shared() {
            shared.app_retry();
        }
        count
    }

    /// The file-wide counters, when the side file is in use.
    pub(crate) fn shared(&self) -> Option<Arc<dyn SharedCounters>> {
        self.shared.lock().clone()
    }

    pub(super) fn add_tracker(&self, tracker: Weak<dyn ConnectionWaits>) {
        let mut trackers = self.trackers.lock();
        trackers.retain(|t| t.strong_count() > 0);
        trackers.push(tracker);
    }

    pub(super) fn forget_dead_trackers(&self) {
        self.trackers.lock().retain(|t| t.strong_count() > 0);
    }

    pub(super) fn push_event(&self, event: WaitEvent) {
        self.events.push(event);
    }

    /// This process's counters, provisional waits included.
    pub(crate) fn snapshot(&self) -> ProcessSnapshot {
        // Holding the tracker list keeps new connections from starting a
        // wait this snapshot would not see.
        let list = self.trackers.lock();
        let trackers: Vec<Arc<dyn ConnectionWaits>> =
            list.iter().filter_map(Weak::upgrade).collect();
        let episodes: Vec<MutexGuard<'_, Option<Episode>>> =
            trackers.iter().map(|t| t.episode().lock()).collect();
        let stats = self.stats.lock();
        let mut counts = Counts {
            acquired: stats.acquired,
            gave_up: stats.gave_up,
            in_flight: 0,
            handler_calls: stats.handler_calls,
            handoffs: stats.handoffs,
            busy_in_read_tx: stats.busy_in_read_tx,
            busy_snapshot: stats.busy_snapshot,
            app_retries: stats.app_retries,
            wait_total_us: stats.wait_total_us,
            wait_max_us: stats.wait_max_us,
            histogram: stats.histogram.clone(),
            last_event_unix_ms: stats.last_event_unix_ms,
        };
        for episode in episodes.iter().filter_map(|e| e.as_ref()) {
            if episode.generation != stats.generation {
                continue;
            }
            match episode.phase {
                Phase::Waiting => counts.in_flight += 1,
                Phase::Retrying => {
                    let wait_us = episode.provisional_wait_us();
                    counts.acquired += 1;
                    counts.wait_total_us = counts.wait_total_us.saturating_add(wait_us);
                    counts.wait_max_us = counts.wait_max_us.max(wait_us);
                    counts.histogram.record(wait_us);
                }
            }
        }
        let snapshot = ProcessSnapshot {
            counts,
            connections: trackers.len() as u64,
            handler_active: trackers.iter().filter(|t| t.handler_installed()).count() as u64,
        };
        drop(stats);
        drop(episodes);
        // Release the list before the last reference to a closed
        // connection's tracker can drop: its Drop takes the list lock.
        drop(list);
        drop(trackers);
        snapshot
    }
}

/// All files this process has touched, and the shared event ring.
///
/// The extension uses one process-wide instance ([`global`]); tests build
/// their own.
#[derive(Debug)]
pub(crate) struct Registry {
    files: Mutex<HashMap<Arc<str>, Arc<FileMetrics>>>,
    events: Arc<EventRing>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            files: Mutex::new(HashMap::new()),
            events: Arc::new(EventRing {
                ring: Mutex::new(VecDeque::new()),
                capacity: AtomicUsize::new(DEFAULT_EVENT_CAPACITY),
            }),
        }
    }
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process-wide registry used by the extension.
pub(crate) fn global() -> &'static Registry {
    &GLOBAL
}

impl Registry {
    /// The metrics of `path`, created on first use.
    pub(crate) fn file(&self, path: &str) -> Arc<FileMetrics> {
        let mut files = self.files.lock();
        if let Some(file) = files.get(path) {
            return Arc::clone(file);
        }
        let idle = files.values().filter(|f| Arc::strong_count(f) == 1).count();
        if idle >= MAX_IDLE_FILES {
            // Forget idle files (no connection, nobody reading), oldest
            // activity first, down to half the limit.
            let mut idle_paths: Vec<(Option<u64>, Arc<str>)> = files
                .iter()
                .filter(|(_, f)| Arc::strong_count(f) == 1)
                .map(|(p, f)| (f.stats.lock().last_event_unix_ms, Arc::clone(p)))
                .collect();
            idle_paths.sort();
            for (_, path) in idle_paths.into_iter().take(idle - MAX_IDLE_FILES / 2) {
                files.remove(&path);
            }
        }
        let path: Arc<str> = Arc::from(path);
        let file = Arc::new(FileMetrics {
            path: Arc::clone(&path),
            stats: Mutex::new(FileStats::default()),
            trackers: Mutex::new(Vec::new()),
            events: Arc::clone(&self.events),
            shared: Mutex::new(None),
        });
        files.insert(path, Arc::clone(&file));
        file
    }

    /// Every known file, sorted by path.
    pub(crate) fn files(&self) -> Vec<Arc<FileMetrics>> {
        let mut files: Vec<_> = self.files.lock().values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Zeroes every counter and empties the event ring. Waits in progress
    /// are not counted afterwards.
    pub(crate) fn reset(&self) {
        for file in self.files() {
            let mut stats = file.stats.lock();
            let generation = stats.generation + 1;
            *stats = FileStats {
                generation,
                ..FileStats::default()
            };
        }
        self.events.ring.lock().clear();
    }

    /// Sets how many finished waits the ring keeps (1 ..=
    /// [`MAX_EVENT_CAPACITY`]); drops the oldest beyond it.
    pub(crate) fn set_event_capacity(&self, capacity: usize) -> Result<(), String> {
        if !(1..=MAX_EVENT_CAPACITY).contains(&capacity) {
            return Err(format!(
                "event capacity must be between 1 and {MAX_EVENT_CAPACITY}, got {capacity}"
            ));
        }
        self.events.capacity.store(capacity, Ordering::Relaxed);
        let mut ring = self.events.ring.lock();
        while ring.len() > capacity {
            ring.pop_front();
        }
        Ok(())
    }

    /// How many finished waits the ring keeps.
    pub(crate) fn event_capacity(&self) -> usize {
        self.events.capacity.load(Ordering::Relaxed)
    }

    /// The most recent waits, oldest first: the ring plus provisionally
    /// acquired waits, cut to the capacity.
    pub(crate) fn events(&self) -> Vec<WaitEvent> {
        let files = self.files();
        // Same discipline as FileMetrics::snapshot: lists (in path order),
        // then episodes, then the ring; released before trackers can drop.
        let lists: Vec<_> = files.iter().map(|f| f.trackers.lock()).collect();
        let trackers: Vec<(Arc<FileMetrics>, Arc<dyn ConnectionWaits>)> = files
            .iter()
            .zip(&lists)
            .flat_map(|(f, list)| {
                list.iter()
                    .filter_map(Weak::upgrade)
                    .map(move |t| (Arc::clone(f), t))
            })
            .collect();
        let episodes: Vec<MutexGuard<'_, Option<Episode>>> =
            trackers.iter().map(|(_, t)| t.episode().lock()).collect();
        let mut events: Vec<WaitEvent> = self.events.ring.lock().iter().cloned().collect();
        for ((file, _), episode) in trackers.iter().zip(&episodes) {
            let Some(episode) = episode.as_ref().filter(|e| e.phase == Phase::Retrying) else {
                continue;
            };
            if episode.generation != file.stats.lock().generation {
                continue;
            }
            events.push(WaitEvent {
                at_unix_ms: episode.retried_unix_ms,
                db: Arc::clone(&file.path),
                outcome: Outcome::Acquired,
                wait_us: episode.provisional_wait_us(),
                retries: episode.retries,
                pid: std::process::id(),
            });
        }
        drop(episodes);
        drop(lists);
        drop(trackers);
        events.sort_by_key(|e| e.at_unix_ms);
        let excess = events.len().saturating_sub(self.event_capacity());
        events.drain(..excess);
        events
    }
}
