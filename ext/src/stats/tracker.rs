//! The wait-episode state machine of one connection: what the busy handler
//! reports, turned into finished waits for its file's counters.
//!
//! # What a wait is
//! A *wait* starts at the first busy-handler call for a lock (SQLite's count
//! = 0). Each call either gives up (the wait ends as `gave_up`, its length
//! measured to that call) or lets SQLite retry. In futex mode the file hooks
//! see the acquisition, and the wait ends there ([`WaitTracker::settle`]).
//! In backoff mode SQLite never says that a retry succeeded; it simply stops
//! calling. So after a retry the wait is *provisionally acquired*, measured
//! to the end of that last sleep, and settled when the connection's next
//! wait starts or the connection closes. Readers count provisional waits as
//! acquired, so a snapshot shows every wait exactly once.
//!
//! # Slow waits: recorded here, reported by the owner
//! Statistics record; they do not report. The slow-wait log's threshold
//! comes in as data (`slow_after`, `None`: the log is off), and each call
//! hands back the slow waits it saw ([`SlowWaitSeen`]) for the tracker's
//! owner (`conn.rs`) to report once the tracker's locks are released: a
//! report may run the host's code. The tracker only remembers that a wait
//! was reported as still going on, so its end is reported too.
//!
//! # Locking
//! Lock order: a tracker's `episode` → its file's `stats` → the event ring.
//! A reader (`registry.rs`) locks every episode of a file, then its stats,
//! so it never sees a wait half-way between provisional and settled. Every
//! lock is held for a few field updates, never across a sleep or an SQLite
//! call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::now_unix_ms;
use crate::stats::episode::{Episode, Phase};
use crate::stats::registry::{ConnectionWaits, FileMetrics, FileStats, Outcome, WaitEvent};

/// One run of busy-handler calls as SQLite counts them: from a call with
/// count 0 (SQLite resets its count at every `sqlite3_step`) until the
/// handler gives up or the count starts again. The policy's deadline and
/// retry count run over the whole of it, as SQLite's own handler's do.
///
/// Why not the wait (`Episode`): a wait ends when the write lock is taken,
/// but one step can take it and still be refused something else. With
/// every lock byte of a WAL file held by another connection (SQLite's
/// `superlock` test), a reader takes the write lock to recover the
/// WAL index, fails on the read locks, and asks again: measured per wait,
/// such a loop never reached its deadline and spun forever.
#[derive(Debug, Clone, Copy)]
struct BusyRun {
    started: Instant,
    retries: u32,
    last_delay_ms: f64,
}

/// Where a handler call stands within its run of busy calls (see
/// [`BusyRun`]); input to the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CallContext {
    /// Retries already allowed in this run.
    pub(crate) attempt: u32,
    /// Time since the run's first handler call.
    pub(crate) elapsed: Duration,
    /// The previous sleep of this run in ms (0 for the first).
    pub(crate) previous_delay_ms: f64,
    /// Whether this call started a new run.
    pub(crate) first: bool,
}

/// Where a slow wait stands when the tracker hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowStage {
    /// It passed the threshold and goes on (said once per wait).
    StillWaiting,
    /// It ended with the lock.
    Acquired,
    /// It ended with the handler giving up.
    GaveUp,
}

/// A slow wait the tracker saw, for its owner to report (see "Slow waits"
/// above): a wait that passed the threshold, or one that ended after it
/// did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlowWaitSeen {
    /// Where the wait stands.
    pub(crate) stage: SlowStage,
    /// How long it has waited (or waited in all).
    pub(crate) waited: Duration,
}

/// Whether a wait of `waited` is slow under the threshold `slow_after`.
fn is_slow(waited: Duration, slow_after: Option<Duration>) -> bool {
    slow_after.is_some_and(|threshold| waited >= threshold)
}

/// The wait state of one connection, shared with its file's readers.
#[derive(Debug)]
pub(crate) struct WaitTracker {
    file: Arc<FileMetrics>,
    pub(super) episode: Mutex<Option<Episode>>,
    /// The run of busy calls in progress (locked alone, never with others).
    run: Mutex<Option<BusyRun>>,
    handler_installed: AtomicBool,
}

impl WaitTracker {
    /// A tracker for a new connection on `file`, counted in its
    /// `connections` until dropped.
    pub(crate) fn new(file: Arc<FileMetrics>) -> Arc<WaitTracker> {
        let tracker = Arc::new(WaitTracker {
            file,
            episode: Mutex::new(None),
            run: Mutex::new(None),
            handler_installed: AtomicBool::new(false),
        });
        tracker
            .file
            .add_tracker(Arc::downgrade(&tracker) as Weak<dyn ConnectionWaits>);
        tracker
    }

    /// The file this connection's waits are counted under.
    pub(crate) fn file(&self) -> &Arc<FileMetrics> {
        &self.file
    }

    /// Records whether this connection's hybrid busy handler is in force
    /// (shown as `handler_active`).
    pub(crate) fn set_handler_installed(&self, installed: bool) {
        self.handler_installed.store(installed, Ordering::Relaxed);
    }

    /// Whether the handler was last seen in force.
    pub(crate) fn handler_installed(&self) -> bool {
        self.handler_installed.load(Ordering::Relaxed)
    }

    /// A busy-handler call: `count` is SQLite's count of earlier calls in
    /// this step. Count 0 (or no open wait) starts a new wait, settling the
    /// previous one as acquired; count 0 (or no open run) also starts a new
    /// run of calls, which the returned context describes. Also returns the
    /// slow waits seen (at most two: the previous wait, ended slow, and the
    /// current one passing `slow_after`), in that order.
    pub(crate) fn handler_called(
        &self,
        count: i32,
        now: Instant,
        slow_after: Option<Duration>,
    ) -> (CallContext, [Option<SlowWaitSeen>; 2]) {
        let (waited, ended) = self.handler_called_locked(count, now, slow_after);
        let still_waiting = is_slow(waited, slow_after)
            .then(|| self.still_waiting(now))
            .flatten();
        let mut run = self.run.lock();
        let first = count <= 0 || run.is_none();
        let current = match *run {
            Some(current) if !first => current,
            _ => *run.insert(BusyRun {
                started: now,
                retries: 0,
                last_delay_ms: 0.0,
            }),
        };
        let call = CallContext {
            attempt: current.retries,
            elapsed: now.saturating_duration_since(current.started),
            previous_delay_ms: current.last_delay_ms,
            first,
        };
        (call, [ended, still_waiting])
    }

    /// The wait bookkeeping of [`Self::handler_called`], under the locks:
    /// returns how long the current wait has lasted, and the previous wait
    /// if it was slow.
    fn handler_called_locked(
        &self,
        count: i32,
        now: Instant,
        slow_after: Option<Duration>,
    ) -> (Duration, Option<SlowWaitSeen>) {
        let mut ended = None;
        let mut episode = self.episode.lock();
        let mut stats = self.file.stats.lock();
        stats.handler_calls += 1;
        let shared = self.file.shared();
        if let Some(shared) = &shared {
            shared.handler_call();
        }
        if count <= 0 || episode.is_none() {
            if let Some(previous) = episode.take() {
                ended = self.settle_locked(previous, &mut stats, slow_after);
            }
            let at = now_unix_ms();
            stats.last_event_unix_ms = Some(at);
            *episode = Some(Episode {
                generation: stats.generation,
                shared_generation: shared.as_ref().map(|s| s.wait_started(at)),
                started: now,
                phase: Phase::Waiting,
                retries: 0,
                retried_at: now,
                retried_unix_ms: 0,
                slow_reported: false,
            });
        }
        let waited = episode.as_mut().map_or(Duration::ZERO, |current| {
            current.phase = Phase::Waiting;
            now.saturating_duration_since(current.started)
        });
        (waited, ended)
    }

    /// How long from now until the wait in progress passes `slow_after`
    /// and must be reported (`None`: no wait, already reported, or the log
    /// is off).
    pub(crate) fn slow_report_due(&self, slow_after: Option<Duration>) -> Option<Duration> {
        let threshold = slow_after?;
        let episode = self.episode.lock();
        let current = episode.as_ref().filter(|e| !e.slow_reported)?;
        Some(threshold.saturating_sub(current.started.elapsed()))
    }

    /// The wait in progress, to be reported as still going on: once per
    /// wait (the busy handler's calls and the queue's report time both end
    /// here), then `None`.
    pub(crate) fn still_waiting(&self, now: Instant) -> Option<SlowWaitSeen> {
        let mut episode = self.episode.lock();
        let current = episode.as_mut().filter(|e| !e.slow_reported)?;
        current.slow_reported = true;
        Some(SlowWaitSeen {
            stage: SlowStage::StillWaiting,
            waited: now.saturating_duration_since(current.started),
        })
    }

    /// The handler slept `delay_ms` and now lets SQLite retry.
    pub(crate) fn chose_retry(&self, now: Instant, delay_ms: f64) {
        if let Some(run) = self.run.lock().as_mut() {
            run.retries = run.retries.saturating_add(1);
            run.last_delay_ms = delay_ms;
        }
        if let Some(episode) = self.episode.lock().as_mut() {
            episode.phase = Phase::Retrying;
            episode.retries = episode.retries.saturating_add(1);
            episode.retried_at = now;
            episode.retried_unix_ms = now_unix_ms();
        }
    }

    /// The handler gave up: the wait ends now as `gave_up`. Returns it if
    /// it was slow (passed `slow_after`, or was reported as still waiting).
    pub(crate) fn gave_up(
        &self,
        now: Instant,
        slow_after: Option<Duration>,
    ) -> Option<SlowWaitSeen> {
        *self.run.lock() = None;
        let mut episode = self.episode.lock();
        episode.take().and_then(|finished| {
            let wait = now.saturating_duration_since(finished.started);
            let mut stats = self.file.stats.lock();
            self.record_locked(
                &finished,
                Outcome::GaveUp,
                wait.as_micros() as u64,
                now_unix_ms(),
                &mut stats,
            );
            (finished.slow_reported || is_slow(wait, slow_after)).then_some(SlowWaitSeen {
                stage: SlowStage::GaveUp,
                waited: wait,
            })
        })
    }

    /// The lock was acquired (futex mode), or the connection is idle or
    /// closing: a wait still open ends as acquired. A no-op without one.
    /// Returns the wait if it was slow.
    pub(crate) fn settle(&self, slow_after: Option<Duration>) -> Option<SlowWaitSeen> {
        let mut episode = self.episode.lock();
        episode.take().and_then(|previous| {
            let mut stats = self.file.stats.lock();
            self.settle_locked(previous, &mut stats, slow_after)
        })
    }

    /// Ends `previous` as acquired; returns it if it was slow.
    fn settle_locked(
        &self,
        previous: Episode,
        stats: &mut FileStats,
        slow_after: Option<Duration>,
    ) -> Option<SlowWaitSeen> {
        // A wait still in `Waiting` here was cut short (the handler was
        // replaced mid-wait, or the lock came between two calls): it got
        // past the lock, so its time counts as acquired.
        let wait_us = previous.provisional_wait_us();
        let at = if previous.retried_unix_ms > 0 {
            previous.retried_unix_ms
        } else {
            now_unix_ms()
        };
        self.record_locked(&previous, Outcome::Acquired, wait_us, at, stats);
        let wait = Duration::from_micros(wait_us);
        (previous.slow_reported || is_slow(wait, slow_after)).then_some(SlowWaitSeen {
            stage: SlowStage::Acquired,
            waited: wait,
        })
    }

    fn record_locked(
        &self,
        episode: &Episode,
        outcome: Outcome,
        wait_us: u64,
        at_unix_ms: u64,
        stats: &mut FileStats,
    ) {
        if let (Some(generation), Some(shared)) = (episode.shared_generation, self.file.shared()) {
            shared.wait_finished(generation, outcome, wait_us, at_unix_ms);
        }
        if episode.generation != stats.generation {
            return; // began before a reset: not counted anywhere
        }
        stats.add_finished(outcome, wait_us, at_unix_ms);
        self.file.push_event(WaitEvent {
            at_unix_ms,
            db: Arc::clone(self.file.path_arc()),
            outcome,
            wait_us,
            retries: episode.retries,
            pid: std::process::id(),
        });
    }
}

impl ConnectionWaits for WaitTracker {
    fn episode(&self) -> &Mutex<Option<Episode>> {
        &self.episode
    }

    fn handler_installed(&self) -> bool {
        WaitTracker::handler_installed(self)
    }
}

impl Drop for WaitTracker {
    fn drop(&mut self) {
        // The owner settles (and reports) a wait still open before it lets
        // go (`conn.rs`); whatever is left is counted here, not reported.
        let _ = self.settle(None);
        self.file.forget_dead_trackers();
    }
}
