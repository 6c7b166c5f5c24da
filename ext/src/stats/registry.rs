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

use crate::stats::histogram::LogHistogram;
use crate::stats::lock_stats::Counts;
use crate::stats::tracker::{Episode, Phase, WaitTracker};

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

/// Everything this process knows about one database file.
#[derive(Debug)]
pub(crate) struct FileMetrics {
    path: Arc<str>,
    pub(super) stats: Mutex<FileStats>,
    trackers: Mutex<Vec<Weak<WaitTracker>>>,
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

    pub(super) fn add_tracker(&self, tracker: &Arc<WaitTracker>) {
        let mut trackers = self.trackers.lock();
        trackers.retain(|t| t.strong_count() > 0);
        trackers.push(Arc::downgrade(tracker));
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
        let trackers: Vec<Arc<WaitTracker>> = list.iter().filter_map(Weak::upgrade).collect();
        let episodes: Vec<MutexGuard<'_, Option<Episode>>> =
            trackers.iter().map(|t| t.episode.lock()).collect();
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
        let trackers: Vec<(Arc<FileMetrics>, Arc<WaitTracker>)> = files
            .iter()
            .zip(&lists)
            .flat_map(|(f, list)| {
                list.iter()
                    .filter_map(Weak::upgrade)
                    .map(move |t| (Arc::clone(f), t))
            })
            .collect();
        let episodes: Vec<MutexGuard<'_, Option<Episode>>> =
            trackers.iter().map(|(_, t)| t.episode.lock()).collect();
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn identity_of(s: &ProcessSnapshot) -> (u64, u64, u64, u64) {
        let c = &s.counts;
        (
            c.acquired + c.gave_up + c.in_flight,
            c.in_flight,
            c.acquired,
            c.gave_up,
        )
    }

    /// The policy's clock runs over SQLite's run of busy calls (count 0
    /// onwards), not over one wait: a step that takes the write lock and
    /// is then refused something else keeps its deadline.
    #[test]
    fn a_run_of_busy_calls_outlasts_the_waits_inside_it() {
        let registry = Registry::default();
        let file = registry.file("/tmp/run.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();
        tracker.handler_called(0, t0);
        tracker.chose_retry(t0 + ms(4), 4.0);
        tracker.settle(); // the write lock was taken...
        let ctx = tracker.handler_called(1, t0 + ms(5)); // ...and the step is refused again
        assert_eq!(
            (ctx.attempt, ctx.elapsed, ctx.previous_delay_ms, ctx.first),
            (1, ms(5), 4.0, false)
        );
        assert_eq!(identity_of(&file.snapshot()), (2, 1, 1, 0), "two waits");
        tracker.gave_up(t0 + ms(6));
        // A give-up ends the run; count 0 (a new step) starts one too.
        let ctx = tracker.handler_called(1, t0 + ms(7));
        assert_eq!((ctx.attempt, ctx.elapsed, ctx.first), (0, ms(0), true));
        tracker.chose_retry(t0 + ms(8), 1.0);
        let ctx = tracker.handler_called(0, t0 + ms(9));
        assert_eq!((ctx.attempt, ctx.elapsed, ctx.first), (0, ms(0), true));
    }

    #[test]
    fn acquired_wait_is_provisional_then_settled() {
        let registry = Registry::default();
        let file = registry.file("/tmp/a.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();

        let ctx = tracker.handler_called(0, t0);
        assert_eq!(
            (ctx.attempt, ctx.elapsed, ctx.first),
            (0, Duration::ZERO, true)
        );
        assert_eq!(identity_of(&file.snapshot()), (1, 1, 0, 0));

        tracker.chose_retry(t0 + ms(3), 3.0);
        let ctx = tracker.handler_called(1, t0 + ms(3));
        assert_eq!(
            (ctx.attempt, ctx.elapsed, ctx.previous_delay_ms, ctx.first),
            (1, ms(3), 3.0, false)
        );
        tracker.chose_retry(t0 + ms(10), 7.0);

        // Not called again: provisionally acquired, visible to readers.
        let s = file.snapshot();
        assert_eq!(identity_of(&s), (1, 0, 1, 0));
        assert_eq!(s.counts.handler_calls, 2);
        assert_eq!(s.counts.wait_max_us, 10_000);
        assert_eq!(registry.events().len(), 1);

        // Settling changes nothing a reader sees.
        tracker.settle();
        assert_eq!(identity_of(&file.snapshot()), identity_of(&s));
        assert_eq!(file.snapshot().counts.wait_max_us, 10_000);
        let events = registry.events();
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].outcome, events[0].wait_us, events[0].retries),
            (Outcome::Acquired, 10_000, 2)
        );
    }

    #[test]
    fn gave_up_wait_counts_once_with_full_length() {
        let registry = Registry::default();
        let file = registry.file("/tmp/b.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();
        tracker.handler_called(0, t0);
        tracker.chose_retry(t0 + ms(40), 40.0);
        tracker.handler_called(1, t0 + ms(40));
        tracker.gave_up(t0 + ms(50));
        let s = file.snapshot();
        assert_eq!(identity_of(&s), (1, 0, 0, 1));
        assert_eq!(s.counts.wait_total_us, 50_000);
        assert_eq!(registry.events()[0].outcome, Outcome::GaveUp);
    }

    #[test]
    fn new_wait_settles_the_previous_one() {
        let registry = Registry::default();
        let file = registry.file("/tmp/c.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();
        for i in 0..5 {
            let start = t0 + ms(100 * i);
            tracker.handler_called(0, start);
            tracker.chose_retry(start + ms(2), 2.0);
        }
        let s = file.snapshot();
        assert_eq!(identity_of(&s), (5, 0, 5, 0));
        let p50 = s.counts.histogram.quantile_us(0.5).unwrap();
        assert!(
            (p50 - 2000.0).abs() / 2000.0 < 0.07,
            "p50 {p50} is not 2 ms within bucket error"
        );
    }

    #[test]
    fn closing_connection_settles_and_uncounts_it() {
        let registry = Registry::default();
        let file = registry.file("/tmp/d.db");
        let a = WaitTracker::new(Arc::clone(&file));
        let b = WaitTracker::new(Arc::clone(&file));
        a.set_handler_installed(true);
        let s = file.snapshot();
        assert_eq!((s.connections, s.handler_active), (2, 1));
        let t0 = Instant::now();
        b.handler_called(0, t0);
        b.chose_retry(t0 + ms(1), 1.0);
        drop(b);
        let s = file.snapshot();
        assert_eq!((s.connections, s.counts.acquired), (1, 1));
        drop(a);
        assert_eq!(file.snapshot().connections, 0);
    }

    #[test]
    fn reset_zeroes_counts_and_forgets_waits_in_progress() {
        let registry = Registry::default();
        let file = registry.file("/tmp/e.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();
        tracker.handler_called(0, t0);
        tracker.chose_retry(t0 + ms(1), 1.0);
        tracker.handler_called(0, t0 + ms(5)); // settles the first, starts a second
        registry.reset();
        assert_eq!(identity_of(&file.snapshot()), (0, 0, 0, 0));
        tracker.gave_up(t0 + ms(9)); // the wait from before the reset
        assert_eq!(identity_of(&file.snapshot()), (0, 0, 0, 0));
        assert!(registry.events().is_empty());
        tracker.handler_called(0, t0 + ms(20));
        tracker.gave_up(t0 + ms(21));
        assert_eq!(identity_of(&file.snapshot()), (1, 0, 0, 1));
    }

    #[test]
    fn event_ring_keeps_the_newest_within_capacity() {
        let registry = Registry::default();
        assert!(registry.set_event_capacity(0).is_err());
        assert!(registry.set_event_capacity(MAX_EVENT_CAPACITY + 1).is_err());
        registry.set_event_capacity(3).unwrap();
        let file = registry.file("/tmp/f.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();
        for i in 0..10u64 {
            tracker.handler_called(0, t0);
            tracker.gave_up(t0 + ms(i + 1));
        }
        let events = registry.events();
        assert_eq!(
            events.iter().map(|e| e.wait_us).collect::<Vec<_>>(),
            vec![8000, 9000, 10_000]
        );
        registry.set_event_capacity(1).unwrap();
        assert_eq!(registry.events().len(), 1);
        assert_eq!(
            file.snapshot().counts.gave_up,
            10,
            "counters are not limited by the ring"
        );
    }

    #[test]
    fn registry_forgets_idle_files_beyond_the_limit() {
        let registry = Registry::default();
        let kept = registry.file("/kept.db");
        for i in 0..(MAX_IDLE_FILES * 3) {
            registry.file(&format!("/tmp/idle-{i}.db"));
        }
        let files = registry.files();
        assert!(files.len() <= MAX_IDLE_FILES + 1, "{} files", files.len());
        assert!(files.iter().any(|f| Arc::ptr_eq(f, &kept)));
    }

    #[test]
    fn concurrent_waits_add_up() {
        let registry = Arc::new(Registry::default());
        let file = registry.file("/tmp/g.db");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let file = Arc::clone(&file);
                std::thread::spawn(move || {
                    let tracker = WaitTracker::new(Arc::clone(&file));
                    for i in 0..500 {
                        let now = Instant::now();
                        tracker.handler_called(0, now);
                        if (i + t) % 3 == 0 {
                            tracker.gave_up(now);
                        } else {
                            tracker.chose_retry(now, 0.0);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = file.snapshot();
        assert_eq!(s.counts.acquired + s.counts.gave_up, 4000);
        let expected_gave_up: u64 = (0..8)
            .map(|t| (0..500).filter(|i| (i + t) % 3 == 0).count() as u64)
            .sum();
        assert_eq!(s.counts.gave_up, expected_gave_up);
    }
}
