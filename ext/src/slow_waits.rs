//! The slow-wait log, like PostgreSQL's `log_lock_waits`: a wait for a
//! lock that passes the threshold (1 s by default) is reported once while
//! it lasts and once when it ends, naming the waiting process, the process
//! holding the write lock and how long each has been at it. Reports go to
//! `sqlite3_log` (the host's `SQLITE_CONFIG_LOG` callback, if it set one)
//! and to a Rust hook (the client turns them into `tracing` events).
//!
//! A lock error that no busy handler saw (a transaction that had read asks
//! for the write lock, see [`SlowWaitEvent::BusyInReadTransaction`]) is
//! reported too, whenever the log is on, naming the remedy (`BEGIN
//! IMMEDIATE`); at most one such report a second per process, since an app
//! with the bug makes many (the metrics count every one).
//!
//! Reports are made outside every lock of ours: a host's log callback may
//! run any code, queries of our own tables included.
//!
//! A connection's waits are counted by its wait tracker (`stats/`, which
//! records and never reports); [`LoggedTracker`] joins the two: it gives
//! the tracker this log's threshold and reports the slow waits the tracker
//! hands back, after the tracker's locks are released.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rusqlite::ffi;

use crate::clock::now_ns;
use crate::queue::waiters::{holder, waiters};
use crate::shared::SideFile;
use crate::stats::registry::FileMetrics;
use crate::stats::tracker::{CallContext, SlowStage, SlowWaitSeen, WaitTracker};

/// The default threshold: PostgreSQL's `deadlock_timeout`, which is also
/// when its `log_lock_waits` speaks.
const DEFAULT_THRESHOLD_US: u64 = 1_000_000;
/// The largest threshold `hybrid_log_waits` accepts (one day).
pub(crate) const MAX_THRESHOLD_MS: i64 = 86_400_000;

/// 0: off.
static THRESHOLD_US: AtomicU64 = AtomicU64::new(DEFAULT_THRESHOLD_US);

type Hook = Arc<dyn Fn(&SlowWait) + Send + Sync>;
static HOOK: RwLock<Option<Hook>> = RwLock::new(None);

/// Where a reported wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowWaitEvent {
    /// The wait passed the threshold and goes on.
    StillWaiting,
    /// A slow wait ended with the lock.
    Acquired,
    /// A slow wait ended in `SQLITE_BUSY`.
    GaveUp,
    /// Not a wait: a transaction that had read asked for the write lock
    /// while another connection held it, and got `SQLITE_BUSY` at once
    /// (SQLite calls no busy handler inside a transaction). Remedy: begin
    /// transactions that may write with `BEGIN IMMEDIATE`.
    BusyInReadTransaction,
    /// Not a wait: a transaction that had read asked for the write lock
    /// after another connection committed, and got `SQLITE_BUSY_SNAPSHOT`
    /// (its snapshot was stale; no wait can help). Same remedy.
    BusySnapshot,
}

/// One report of the slow-wait log.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowWait {
    /// The database file waited for.
    pub db: String,
    /// The waiting process (this one).
    pub pid: u32,
    /// Where the wait stands.
    pub event: SlowWaitEvent,
    /// How long it has waited (or waited in all).
    pub waited: Duration,
    /// The process holding the write lock and for how long, when a process
    /// with the extension holds it (`None`: the lock is free, or held by a
    /// connection without the extension, or the file is in backoff mode;
    /// always `None` for [`SlowWaitEvent::Acquired`]: the waiter holds it).
    pub holder: Option<(u32, Duration)>,
    /// Connections queued for the lock, in every process (futex mode).
    pub queued: usize,
}

impl std::fmt::Display for SlowWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.waited.as_secs_f64() * 1000.0;
        match self.event {
            SlowWaitEvent::StillWaiting => write!(
                f,
                "process {} still waiting for the write lock on {} after {ms:.1} ms",
                self.pid, self.db
            )?,
            SlowWaitEvent::Acquired => write!(
                f,
                "process {} acquired the write lock on {} after {ms:.1} ms",
                self.pid, self.db
            )?,
            SlowWaitEvent::GaveUp => write!(
                f,
                "process {} gave up waiting for the write lock on {} after {ms:.1} ms \
                 (database is locked)",
                self.pid, self.db
            )?,
            // The remedy first: sqlite3_log cuts a message at about 200
            // bytes, and the path can be long.
            SlowWaitEvent::BusyInReadTransaction => write!(
                f,
                "process {} got SQLITE_BUSY without a wait (use BEGIN IMMEDIATE): a read \
                 transaction asked for the write lock on {} while another connection held it",
                self.pid, self.db
            )?,
            SlowWaitEvent::BusySnapshot => {
                return write!(
                    f,
                    "process {} got SQLITE_BUSY_SNAPSHOT (use BEGIN IMMEDIATE): a read \
                     transaction asked for the write lock on {} after another connection \
                     committed",
                    self.pid, self.db
                );
            }
        }
        if self.event == SlowWaitEvent::Acquired {
            return Ok(());
        }
        match self.holder {
            Some((pid, held)) => write!(
                f,
                "; held by process {pid} for {:.1} ms",
                held.as_secs_f64() * 1000.0
            )?,
            None => write!(
                f,
                "; holder unknown (a connection without the extension, or none)"
            )?,
        }
        write!(f, "; {} queued", self.queued)
    }
}

/// Sets the process-wide threshold of the slow-wait log (`None` or zero:
/// off). The default is 1 s. Also `SELECT hybrid_log_waits(ms)`.
pub fn set_log_waits(threshold: Option<Duration>) {
    let us = threshold.map_or(0, |t| t.as_micros().min(u128::from(u64::MAX)) as u64);
    THRESHOLD_US.store(us, Ordering::Relaxed);
}

/// The threshold of the slow-wait log (`None`: off).
pub fn log_waits() -> Option<Duration> {
    match THRESHOLD_US.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// Calls `hook` with every report of the slow-wait log of this process,
/// besides `sqlite3_log` (replacing an earlier hook). It runs on the
/// waiting connection's thread, inside its busy handler or lock call: keep
/// it short, and do not use that connection from it.
pub fn on_slow_wait(hook: impl Fn(&SlowWait) + Send + Sync + 'static) {
    *HOOK.write() = Some(Arc::new(hook));
}

/// When the last report of an error no handler saw was made (our clock, ns;
/// 0: never).
static LAST_IMMEDIATE_NS: AtomicU64 = AtomicU64::new(0);
/// At most one report a second of errors no handler saw.
const IMMEDIATE_REPORT_INTERVAL_NS: u64 = 1_000_000_000;

/// Reports a caller-visible `SQLITE_BUSY*` that no busy handler saw,
/// `event` being [`SlowWaitEvent::BusyInReadTransaction`] or
/// [`SlowWaitEvent::BusySnapshot`] (the log must be on; at most one a
/// second per process).
pub(crate) fn report_immediate(db: &str, event: SlowWaitEvent) {
    if log_waits().is_none() {
        return;
    }
    let now = now_ns().max(1);
    let last = LAST_IMMEDIATE_NS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < IMMEDIATE_REPORT_INTERVAL_NS {
        return;
    }
    if LAST_IMMEDIATE_NS
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return; // another thread reports now
    }
    report(db, event, Duration::ZERO);
}

/// Reports `event` of a wait of `waited` on `db` (the caller holds no lock
/// of ours).
pub(crate) fn report(db: &str, event: SlowWaitEvent, waited: Duration) {
    // Once acquired, the holder is the waiter itself.
    let side = SideFile::existing(db).filter(|_| event != SlowWaitEvent::Acquired);
    let report = SlowWait {
        db: db.to_string(),
        pid: std::process::id(),
        event,
        waited,
        holder: side
            .as_ref()
            .and_then(|side| holder(side))
            .map(|h| (h.pid, Duration::from_secs_f64(h.held_ms / 1000.0))),
        queued: side.as_ref().map_or(0, |side| waiters(side).len()),
    };
    if let Ok(message) = CString::new(format!("hybrid: {report}")) {
        // SAFETY: a format string with one %s and a NUL-terminated argument;
        // sqlite3_log only formats it and calls the host's callback.
        unsafe { ffi::sqlite3_log(ffi::SQLITE_WARNING, c"%s".as_ptr(), message.as_ptr()) };
    }
    let hook = HOOK.read().clone();
    if let Some(hook) = hook {
        hook(&report);
    }
}

/// One connection's wait tracker whose slow waits go to this log: each call
/// passes the log's threshold in ([`log_waits`]) and reports what the
/// tracker hands back. A wait still open when the last owner (the
/// connection's state, its file hooks) lets go is settled and reported.
#[derive(Debug)]
pub(crate) struct LoggedTracker {
    tracker: Arc<WaitTracker>,
}

impl LoggedTracker {
    /// Logs the slow waits of `tracker`.
    pub(crate) fn new(tracker: Arc<WaitTracker>) -> LoggedTracker {
        LoggedTracker { tracker }
    }

    /// The file this connection's waits are counted under.
    pub(crate) fn file(&self) -> &Arc<FileMetrics> {
        self.tracker.file()
    }

    /// Records whether the hybrid busy handler is in force.
    pub(crate) fn set_handler_installed(&self, installed: bool) {
        self.tracker.set_handler_installed(installed);
    }

    /// Whether the handler was last seen in force.
    pub(crate) fn handler_installed(&self) -> bool {
        self.tracker.handler_installed()
    }

    /// A busy-handler call ([`WaitTracker::handler_called`]).
    pub(crate) fn handler_called(&self, count: i32, now: Instant) -> CallContext {
        let (call, seen) = self.tracker.handler_called(count, now, log_waits());
        for seen in seen.into_iter().flatten() {
            self.report(seen);
        }
        call
    }

    /// The handler slept `delay_ms` and now lets SQLite retry.
    pub(crate) fn chose_retry(&self, now: Instant, delay_ms: f64) {
        self.tracker.chose_retry(now, delay_ms);
    }

    /// The handler gave up: the wait ends now.
    pub(crate) fn gave_up(&self, now: Instant) {
        if let Some(seen) = self.tracker.gave_up(now, log_waits()) {
            self.report(seen);
        }
    }

    /// A wait still open ends as acquired ([`WaitTracker::settle`]).
    pub(crate) fn settle(&self) {
        if let Some(seen) = self.tracker.settle(log_waits()) {
            self.report(seen);
        }
    }

    /// How long from now until the wait in progress must be reported as
    /// still going on (`None`: no wait, reported already, or the log is
    /// off).
    pub(crate) fn slow_report_due(&self) -> Option<Duration> {
        self.tracker.slow_report_due(log_waits())
    }

    /// Reports the wait in progress as still going on (once per wait).
    pub(crate) fn report_still_waiting(&self, now: Instant) {
        if let Some(seen) = self.tracker.still_waiting(now) {
            self.report(seen);
        }
    }

    fn report(&self, seen: SlowWaitSeen) {
        let event = match seen.stage {
            SlowStage::StillWaiting => SlowWaitEvent::StillWaiting,
            SlowStage::Acquired => SlowWaitEvent::Acquired,
            SlowStage::GaveUp => SlowWaitEvent::GaveUp,
        };
        report(self.tracker.file().path(), event, seen.waited);
    }
}

impl Drop for LoggedTracker {
    fn drop(&mut self) {
        self.settle();
    }
}
