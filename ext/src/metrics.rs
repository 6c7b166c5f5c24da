//! Lock metrics: the busy waits this process saw, per database file.
//!
//! Pure Rust, no SQLite types. The busy handler reports what happens through
//! a per-connection [`WaitTracker`]; the metrics tables read a
//! [`FileSnapshot`] per file and the recent [`WaitEvent`]s.
//!
//! # What a wait is
//! A *wait* (busy episode) starts at the first busy-handler call for a lock
//! (SQLite's count = 0). Each call either gives up (the wait ends as
//! `gave_up`, its length measured to that call) or sleeps and lets SQLite
//! retry. SQLite never tells the handler that a retry succeeded; it simply
//! stops calling. So after a retry the wait is *provisionally acquired*,
//! with its length measured to the end of that last sleep. It is settled
//! (written into the file's counters and the event log) when that
//! connection's next wait starts or the connection closes. Readers add the
//! provisional waits to the settled counters, so a snapshot always shows
//! every wait as exactly one of `in_flight`, `acquired` or `gave_up`.
//!
//! # Invariants and locking
//! * `busy_events == acquired + gave_up + in_flight` in every snapshot, per
//!   reset generation: [`Registry::reset`] bumps a generation number and a
//!   wait that began in an older generation is not counted anywhere.
//! * Lock order: a tracker's `episode` → its file's `stats` → the event log.
//!   The handler holds its own episode lock and then briefly the stats lock;
//!   a reader locks every episode of the files it reads (in list order),
//!   then the stats, so it never sees a wait half-way between provisional
//!   and settled. Every lock is held for a few field updates, never across a
//!   sleep or an SQLite call.
//! * Memory is fixed per file (a log-bucket histogram, not a list of waits),
//!   the event log is a ring of at most [`MAX_EVENT_CAPACITY`] entries, and
//!   the registry forgets unused files beyond [`MAX_IDLE_FILES`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::clock::now_unix_ms;

/// Default number of finished waits kept for `hybrid_lock_events`.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;
/// Largest accepted event-log capacity (about 6 MB of events at most).
pub const MAX_EVENT_CAPACITY: usize = 65_536;
/// Files with no open connection that the registry keeps before forgetting
/// the oldest; bounds memory in processes that open many short-lived files.
pub const MAX_IDLE_FILES: usize = 256;

// ---------------------------------------------------------------------------
// Histogram

/// Sub-buckets per power of two: 8 gives at most 12.5% bucket width, so a
/// percentile reported at the bucket midpoint is within ~6.25% of the truth.
const SUB_BUCKETS: u64 = 8;
const SUB_BITS: u32 = 3;
/// Values at or above 2^41 µs (~25 days) share the last bucket.
const MAX_MSB: u32 = 40;
pub const BUCKETS: usize = ((MAX_MSB - SUB_BITS + 2) as usize) * SUB_BUCKETS as usize;

/// A fixed-memory histogram of microsecond values with log-linear buckets
/// (HdrHistogram's layout with 3 significant bits). Values below 8 µs are
/// exact.
#[derive(Clone)]
pub struct LogHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("total", &self.total)
            .finish()
    }
}

impl LogHistogram {
    fn index(value_us: u64) -> usize {
        if value_us < SUB_BUCKETS {
            return value_us as usize;
        }
        let msb = (63 - value_us.leading_zeros()).min(MAX_MSB);
        let value_us = value_us.min((1u64 << (MAX_MSB + 1)) - 1);
        let sub = (value_us >> (msb - SUB_BITS)) - SUB_BUCKETS;
        ((msb - SUB_BITS + 1) as u64 * SUB_BUCKETS + sub) as usize
    }

    /// The midpoint of bucket `index`, in µs.
    fn midpoint(index: usize) -> f64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index as f64;
        }
        let group = index / SUB_BUCKETS;
        let sub = index % SUB_BUCKETS;
        let shift = group - 1;
        let low = (SUB_BUCKETS + sub) << shift;
        low as f64 + (1u64 << shift) as f64 / 2.0
    }

    /// The bucket a value falls in (for histograms kept elsewhere, such as
    /// the shared side file, with the same layout).
    pub fn bucket_of(value_us: u64) -> usize {
        Self::index(value_us)
    }

    /// A histogram from bucket counts kept elsewhere.
    pub fn from_counts(counts: impl IntoIterator<Item = u64>) -> LogHistogram {
        let mut histogram = LogHistogram::default();
        for (slot, count) in histogram.counts.iter_mut().zip(counts) {
            *slot = count;
            histogram.total += count;
        }
        histogram
    }

    /// Counts one value.
    pub fn record(&mut self, value_us: u64) {
        self.counts[Self::index(value_us)] += 1;
        self.total += 1;
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1) in µs, as the midpoint of its
    /// bucket; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::midpoint(index));
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Events

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler let SQLite retry and was not called again for that lock.
    Acquired,
    /// The handler gave up; the caller got `SQLITE_BUSY`.
    GaveUp,
}

impl Outcome {
    /// `"acquired"` or `"gave_up"`, as shown in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::GaveUp => "gave_up",
        }
    }
}

/// One finished (or provisionally acquired) wait.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitEvent {
    /// When the wait ended, Unix milliseconds.
    pub at_unix_ms: u64,
    /// The database file.
    pub db: Arc<str>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its length in µs.
    pub wait_us: u64,
    /// Retries the handler allowed during it.
    pub retries: u32,
    /// The process that waited.
    pub pid: u32,
}

/// The process-wide ring of recent waits, shared by every file.
#[derive(Debug)]
struct EventLog {
    ring: Mutex<VecDeque<WaitEvent>>,
    capacity: AtomicUsize,
}

impl EventLog {
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

// ---------------------------------------------------------------------------
// File-wide counters (shared by every process, e.g. the side file)

/// Where a file's waits are also counted for every process (the side file,
/// see `sidefile.rs`). Implementations use atomics only: they are called
/// under this module's locks.
pub trait SharedCounters: Send + Sync + std::fmt::Debug {
    /// A wait started.
    fn busy_event(&self, at_unix_ms: u64);
    /// The busy handler was called.
    fn handler_call(&self);
    /// A wait ended.
    fn finished(&self, outcome: Outcome, wait_us: u64, at_unix_ms: u64);
}

// ---------------------------------------------------------------------------
// Per-file counters

#[derive(Debug, Default)]
struct FileStats {
    generation: u64,
    busy_events: u64,
    handler_calls: u64,
    acquired: u64,
    gave_up: u64,
    wait_total_us: u64,
    wait_max_us: u64,
    histogram: LogHistogram,
    last_event_unix_ms: Option<u64>,
}

impl FileStats {
    fn add_finished(&mut self, outcome: Outcome, wait_us: u64) {
        match outcome {
            Outcome::Acquired => self.acquired += 1,
            Outcome::GaveUp => self.gave_up += 1,
        }
        self.wait_total_us = self.wait_total_us.saturating_add(wait_us);
        self.wait_max_us = self.wait_max_us.max(wait_us);
        self.histogram.record(wait_us);
    }
}

/// Everything known about one database file.
#[derive(Debug)]
pub struct FileMetrics {
    path: Arc<str>,
    stats: Mutex<FileStats>,
    trackers: Mutex<Vec<Weak<WaitTracker>>>,
    policy_json: Mutex<String>,
    events: Arc<EventLog>,
    shared: Mutex<Option<Arc<dyn SharedCounters>>>,
}

impl FileMetrics {
    /// Also counts this file's waits in `shared` (set once per process).
    pub fn attach_shared(&self, shared: Arc<dyn SharedCounters>) {
        let mut slot = self.shared.lock();
        if slot.is_none() {
            *slot = Some(shared);
        }
    }

    fn shared(&self) -> Option<Arc<dyn SharedCounters>> {
        self.shared.lock().clone()
    }

    /// The database file's path as SQLite reports it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Records the JSON of the policy most recently set on this file.
    pub fn set_policy_json(&self, json: String) {
        *self.policy_json.lock() = json;
    }

    /// A consistent view of the counters, provisional waits included.
    pub fn snapshot(&self) -> FileSnapshot {
        // Holding the tracker list keeps new connections from starting a
        // wait this snapshot would not see.
        let list = self.trackers.lock();
        let trackers: Vec<Arc<WaitTracker>> = list.iter().filter_map(Weak::upgrade).collect();
        let episodes: Vec<MutexGuard<'_, Option<Episode>>> =
            trackers.iter().map(|t| t.episode.lock()).collect();
        let stats = self.stats.lock();
        let snapshot = self.snapshot_locked(&trackers, &episodes, &stats);
        drop(stats);
        drop(episodes);
        // Release the list before the last reference to a closed
        // connection's tracker can drop: its Drop takes the list lock.
        drop(list);
        drop(trackers);
        snapshot
    }

    fn snapshot_locked(
        &self,
        trackers: &[Arc<WaitTracker>],
        episodes: &[MutexGuard<'_, Option<Episode>>],
        stats: &FileStats,
    ) -> FileSnapshot {
        let mut histogram = stats.histogram.clone();
        let (mut acquired, mut total_us, mut max_us) =
            (stats.acquired, stats.wait_total_us, stats.wait_max_us);
        let mut in_flight = 0;
        for episode in episodes.iter().filter_map(|e| e.as_ref()) {
            if episode.generation != stats.generation {
                continue;
            }
            match episode.phase {
                Phase::Waiting => in_flight += 1,
                Phase::Retrying => {
                    let wait_us = episode.provisional_wait_us();
                    acquired += 1;
                    total_us = total_us.saturating_add(wait_us);
                    max_us = max_us.max(wait_us);
                    histogram.record(wait_us);
                }
            }
        }
        let finished = acquired + stats.gave_up;
        let quantile_ms = |q| {
            histogram
                .quantile_us(q)
                .map(|us| us.min(max_us as f64) / 1000.0)
        };
        FileSnapshot {
            db: self.path.to_string(),
            connections: trackers.len() as u64,
            handler_active: trackers
                .iter()
                .filter(|t| t.handler_installed.load(Ordering::Relaxed))
                .count() as u64,
            busy_events: stats.busy_events,
            handler_calls: stats.handler_calls,
            acquired,
            gave_up: stats.gave_up,
            in_flight,
            wait_total_ms: total_us as f64 / 1000.0,
            wait_avg_ms: (finished > 0).then(|| total_us as f64 / 1000.0 / finished as f64),
            wait_max_ms: max_us as f64 / 1000.0,
            wait_p50_ms: quantile_ms(0.50),
            wait_p95_ms: quantile_ms(0.95),
            wait_p99_ms: quantile_ms(0.99),
            failure_rate: (finished > 0).then(|| stats.gave_up as f64 / finished as f64),
            last_event_unix_ms: stats.last_event_unix_ms,
            policy_json: self.policy_json.lock().clone(),
        }
    }
}

/// One row of `hybrid_lock_metrics`, computed by [`FileMetrics::snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct FileSnapshot {
    pub db: String,
    pub connections: u64,
    pub handler_active: u64,
    pub busy_events: u64,
    pub handler_calls: u64,
    pub acquired: u64,
    pub gave_up: u64,
    pub in_flight: u64,
    pub wait_total_ms: f64,
    pub wait_avg_ms: Option<f64>,
    pub wait_max_ms: f64,
    pub wait_p50_ms: Option<f64>,
    pub wait_p95_ms: Option<f64>,
    pub wait_p99_ms: Option<f64>,
    pub failure_rate: Option<f64>,
    pub last_event_unix_ms: Option<u64>,
    pub policy_json: String,
}

// ---------------------------------------------------------------------------
// Per-connection wait tracking

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The handler is running (deciding or sleeping).
    Waiting,
    /// The handler let SQLite retry and has not been called again.
    Retrying,
}

#[derive(Debug, Clone)]
struct Episode {
    generation: u64,
    started: Instant,
    phase: Phase,
    retries: u32,
    last_delay_ms: f64,
    retried_at: Instant,
    retried_unix_ms: u64,
}

impl Episode {
    fn provisional_wait_us(&self) -> u64 {
        self.retried_at
            .saturating_duration_since(self.started)
            .as_micros() as u64
    }
}

/// Where a handler call stands within its wait; input to the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallContext {
    /// Retries already allowed in this wait.
    pub attempt: u32,
    /// Time since the wait's first handler call.
    pub elapsed: Duration,
    /// The previous sleep of this wait in ms (0 for the first).
    pub previous_delay_ms: f64,
}

/// The wait state of one connection, shared with the file's readers.
#[derive(Debug)]
pub struct WaitTracker {
    file: Arc<FileMetrics>,
    episode: Mutex<Option<Episode>>,
    handler_installed: AtomicBool,
}

impl WaitTracker {
    /// A tracker for a new connection on `file`, counted in its
    /// `connections` until dropped.
    pub fn new(file: Arc<FileMetrics>) -> Arc<WaitTracker> {
        let tracker = Arc::new(WaitTracker {
            file,
            episode: Mutex::new(None),
            handler_installed: AtomicBool::new(false),
        });
        let mut trackers = tracker.file.trackers.lock();
        trackers.retain(|t| t.strong_count() > 0);
        trackers.push(Arc::downgrade(&tracker));
        drop(trackers);
        tracker
    }

    /// The file this connection's waits are counted under.
    pub fn file(&self) -> &Arc<FileMetrics> {
        &self.file
    }

    /// Records whether this connection's hybrid busy handler is in force
    /// (shown as `handler_active`).
    pub fn set_handler_installed(&self, installed: bool) {
        self.handler_installed.store(installed, Ordering::Relaxed);
    }

    /// Whether the handler was last seen in force.
    pub fn handler_installed(&self) -> bool {
        self.handler_installed.load(Ordering::Relaxed)
    }

    /// A busy-handler call: `count` is SQLite's count of earlier calls for
    /// this lock. Count 0 (or no open wait) starts a new wait, settling the
    /// previous one as acquired.
    pub fn handler_called(&self, count: i32, now: Instant) -> CallContext {
        let mut episode = self.episode.lock();
        let mut stats = self.file.stats.lock();
        stats.handler_calls += 1;
        let shared = self.file.shared();
        if let Some(shared) = &shared {
            shared.handler_call();
        }
        if count <= 0 || episode.is_none() {
            if let Some(previous) = episode.take() {
                self.settle_locked(previous, &mut stats);
            }
            stats.busy_events += 1;
            stats.last_event_unix_ms = Some(now_unix_ms());
            if let Some(shared) = &shared {
                shared.busy_event(now_unix_ms());
            }
            *episode = Some(Episode {
                generation: stats.generation,
                started: now,
                phase: Phase::Waiting,
                retries: 0,
                last_delay_ms: 0.0,
                retried_at: now,
                retried_unix_ms: 0,
            });
        }
        let current = episode.as_mut().expect("an episode was just ensured");
        current.phase = Phase::Waiting;
        CallContext {
            attempt: current.retries,
            elapsed: now.saturating_duration_since(current.started),
            previous_delay_ms: current.last_delay_ms,
        }
    }

    /// The handler slept `delay_ms` and now lets SQLite retry.
    pub fn chose_retry(&self, now: Instant, delay_ms: f64) {
        if let Some(episode) = self.episode.lock().as_mut() {
            episode.phase = Phase::Retrying;
            episode.retries = episode.retries.saturating_add(1);
            episode.last_delay_ms = delay_ms;
            episode.retried_at = now;
            episode.retried_unix_ms = now_unix_ms();
        }
    }

    /// The handler gave up: the wait ends now as `gave_up`.
    pub fn gave_up(&self, now: Instant) {
        let mut episode = self.episode.lock();
        if let Some(finished) = episode.take() {
            let wait_us = now.saturating_duration_since(finished.started).as_micros() as u64;
            let mut stats = self.file.stats.lock();
            self.record_locked(
                &finished,
                Outcome::GaveUp,
                wait_us,
                now_unix_ms(),
                &mut stats,
            );
        }
    }

    /// Settles a provisionally acquired wait (the connection is idle or
    /// closing). A no-op when no wait is open.
    pub fn settle(&self) {
        let mut episode = self.episode.lock();
        if let Some(previous) = episode.take() {
            let mut stats = self.file.stats.lock();
            self.settle_locked(previous, &mut stats);
        }
    }

    fn settle_locked(&self, previous: Episode, stats: &mut FileStats) {
        // A wait still in `Waiting` here was cut short (e.g. the handler
        // was replaced mid-wait); it did get past the lock or the caller
        // got an error we never saw, so count its time as acquired.
        let wait_us = previous.provisional_wait_us();
        let at = if previous.retried_unix_ms > 0 {
            previous.retried_unix_ms
        } else {
            now_unix_ms()
        };
        self.record_locked(&previous, Outcome::Acquired, wait_us, at, stats);
    }

    fn record_locked(
        &self,
        episode: &Episode,
        outcome: Outcome,
        wait_us: u64,
        at_unix_ms: u64,
        stats: &mut FileStats,
    ) {
        // The file-wide view counts every wait (its own reset is separate).
        if let Some(shared) = self.file.shared() {
            shared.finished(outcome, wait_us, at_unix_ms);
        }
        if episode.generation != stats.generation {
            return;
        }
        stats.add_finished(outcome, wait_us);
        stats.last_event_unix_ms = Some(at_unix_ms);
        self.file.events.push(WaitEvent {
            at_unix_ms,
            db: Arc::clone(&self.file.path),
            outcome,
            wait_us,
            retries: episode.retries,
            pid: std::process::id(),
        });
    }
}

impl Drop for WaitTracker {
    fn drop(&mut self) {
        self.settle();
        self.file.trackers.lock().retain(|t| t.strong_count() > 0);
    }
}

// ---------------------------------------------------------------------------
// Registry

/// All files this process has touched, and the shared event log.
///
/// The extension uses one process-wide instance ([`global`]); tests build
/// their own.
#[derive(Debug)]
pub struct Registry {
    files: Mutex<HashMap<Arc<str>, Arc<FileMetrics>>>,
    events: Arc<EventLog>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            files: Mutex::new(HashMap::new()),
            events: Arc::new(EventLog {
                ring: Mutex::new(VecDeque::new()),
                capacity: AtomicUsize::new(DEFAULT_EVENT_CAPACITY),
            }),
        }
    }
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);

/// The process-wide registry used by the extension.
pub fn global() -> &'static Registry {
    &GLOBAL
}

impl Registry {
    /// The metrics of `path`, created on first use.
    pub fn file(&self, path: &str) -> Arc<FileMetrics> {
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
            policy_json: Mutex::new(String::new()),
            events: Arc::clone(&self.events),
            shared: Mutex::new(None),
        });
        files.insert(path, Arc::clone(&file));
        file
    }

    /// Every known file, sorted by path.
    pub fn files(&self) -> Vec<Arc<FileMetrics>> {
        let mut files: Vec<_> = self.files.lock().values().cloned().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// Zeroes every counter and empties the event log. Waits in progress
    /// are not counted afterwards (see the module docs).
    pub fn reset(&self) {
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

    /// Sets how many finished waits the event log keeps (1 ..=
    /// [`MAX_EVENT_CAPACITY`]); drops the oldest beyond it.
    pub fn set_event_capacity(&self, capacity: usize) -> Result<(), String> {
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

    /// How many finished waits the event log keeps.
    pub fn event_capacity(&self) -> usize {
        self.events.capacity.load(Ordering::Relaxed)
    }

    /// The most recent waits, oldest first: the ring plus provisionally
    /// acquired waits, cut to the capacity.
    pub fn events(&self) -> Vec<WaitEvent> {
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
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = LogHistogram::index(v);
            assert!(
                i == last || i == last + 1,
                "value {v}: index {i} after {last}"
            );
            last = i;
        }
        assert!(LogHistogram::index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn histogram_quantiles_are_within_bucket_error() {
        let mut h = LogHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 100); // 0.1 ms .. 1000 ms
        }
        for (q, truth) in [(0.5, 500_000.0), (0.95, 950_000.0), (0.99, 990_000.0)] {
            let got = h.quantile_us(q).unwrap();
            assert!((got - truth).abs() / truth < 0.07, "q{q}: {got} vs {truth}");
        }
        assert_eq!(LogHistogram::default().quantile_us(0.5), None);
        let mut one = LogHistogram::default();
        one.record(3);
        assert_eq!(one.quantile_us(0.99), Some(3.0));
    }

    #[test]
    fn acquired_wait_is_provisional_then_settled() {
        let registry = Registry::default();
        let file = registry.file("/tmp/a.db");
        let tracker = WaitTracker::new(Arc::clone(&file));
        let t0 = Instant::now();

        let ctx = tracker.handler_called(0, t0);
        assert_eq!((ctx.attempt, ctx.elapsed), (0, Duration::ZERO));
        let s = file.snapshot();
        assert_eq!((s.busy_events, s.in_flight, s.acquired), (1, 1, 0));

        tracker.chose_retry(t0 + ms(3), 3.0);
        let ctx = tracker.handler_called(1, t0 + ms(3));
        assert_eq!(
            (ctx.attempt, ctx.elapsed, ctx.previous_delay_ms),
            (1, ms(3), 3.0)
        );
        tracker.chose_retry(t0 + ms(10), 7.0);

        // Not called again: provisionally acquired, visible to readers.
        let s = file.snapshot();
        assert_eq!(
            (s.busy_events, s.in_flight, s.acquired, s.gave_up),
            (1, 0, 1, 0)
        );
        assert_eq!(s.handler_calls, 2);
        assert!((s.wait_max_ms - 10.0).abs() < 1e-9);
        assert_eq!(registry.events().len(), 1);

        // Settling changes nothing a reader sees.
        tracker.settle();
        assert_eq!(file.snapshot(), s);
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
        assert_eq!(
            (s.busy_events, s.acquired, s.gave_up, s.in_flight),
            (1, 0, 1, 0)
        );
        assert_eq!(s.failure_rate, Some(1.0));
        assert!((s.wait_total_ms - 50.0).abs() < 1e-9);
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
        assert_eq!((s.busy_events, s.acquired, s.in_flight), (5, 5, 0));
        assert_eq!(s.failure_rate, Some(0.0));
        let p50 = s.wait_p50_ms.unwrap();
        assert!(
            (p50 - 2.0).abs() / 2.0 < 0.07,
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
        assert_eq!(
            (file.snapshot().connections, file.snapshot().handler_active),
            (2, 1)
        );
        let t0 = Instant::now();
        b.handler_called(0, t0);
        b.chose_retry(t0 + ms(1), 1.0);
        drop(b);
        let s = file.snapshot();
        assert_eq!((s.connections, s.acquired, s.busy_events), (1, 1, 1));
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
        let s = file.snapshot();
        assert_eq!(
            (s.busy_events, s.acquired, s.in_flight, s.gave_up),
            (0, 0, 0, 0)
        );
        tracker.gave_up(t0 + ms(9)); // the wait from before the reset
        let s = file.snapshot();
        assert_eq!((s.busy_events, s.gave_up), (0, 0));
        assert!(registry.events().is_empty());
        tracker.handler_called(0, t0 + ms(20));
        tracker.gave_up(t0 + ms(21));
        assert_eq!(
            (file.snapshot().busy_events, file.snapshot().gave_up),
            (1, 1)
        );
    }

    #[test]
    fn event_log_keeps_the_newest_within_capacity() {
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
            file.snapshot().gave_up,
            10,
            "counters are not limited by the log"
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
                let registry = Arc::clone(&registry);
                std::thread::spawn(move || {
                    let tracker = WaitTracker::new(file);
                    for i in 0..500 {
                        let now = Instant::now();
                        tracker.handler_called(0, now);
                        if (i + t) % 3 == 0 {
                            tracker.gave_up(now);
                        } else {
                            tracker.chose_retry(now, 0.0);
                        }
                        if i % 50 == 0 {
                            let s = registry.files()[0].snapshot();
                            assert_eq!(s.busy_events, s.acquired + s.gave_up + s.in_flight);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = file.snapshot();
        assert_eq!(s.busy_events, 4000);
        assert_eq!(s.acquired + s.gave_up, 4000);
        let expected_gave_up: u64 = (0..8)
            .map(|t| (0..500).filter(|i| (i + t) % 3 == 0).count() as u64)
            .sum();
        assert_eq!(s.gave_up, expected_gave_up);
    }
}
