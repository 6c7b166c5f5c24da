//! [`LockStats`]: one row of lock-wait statistics, and the one place its
//! derived fields (total, average, quantiles, failure rate, `busy_events`)
//! are computed. The process row and the file-wide row (from the side
//! file) go through [`LockStats::from_counts`]; the Rust client's waits on
//! other engines through [`LockStats::from_wait_totals`], which calls it.

use std::fmt;

use crate::stats::histogram::LogHistogram;

/// Whose waits a [`LockStats`] row counts (the `scope` column of
/// `hybrid_lock_metrics`).
///
/// ```
/// assert_eq!(hybrid::LockScope::File.as_str(), "file");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockScope {
    /// This process's waits (on PostgreSQL: this handle's).
    Process,
    /// Every process's waits on the file, from the shared side file.
    File,
}

impl LockScope {
    /// The text of the `scope` column: `"process"` or `"file"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockScope::Process => "process",
            LockScope::File => "file",
        }
    }
}

impl fmt::Display for LockScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a [`LockStats`] row's waits were served (the `mode` column of
/// `hybrid_lock_metrics`).
///
/// ```
/// assert_eq!(hybrid::LockMode::Backoff.to_string(), "backoff");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockMode {
    /// Queued hand-off through the side file (Linux).
    Futex,
    /// Sleep and retry.
    Backoff,
    /// The Rust client on a PostgreSQL server: its own retries and waits
    /// (never a value of the SQL table).
    Postgres,
}

impl LockMode {
    /// The text of the `mode` column: `"futex"`, `"backoff"` or
    /// `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Futex => "futex",
            LockMode::Backoff => "backoff",
            LockMode::Postgres => "postgres",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The raw counters behind a [`LockStats`] row, as this process keeps them
/// or as the side file keeps them for every process.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) acquired: u64,
    pub(crate) gave_up: u64,
    pub(crate) in_flight: u64,
    pub(crate) handler_calls: u64,
    pub(crate) handoffs: u64,
    pub(crate) busy_in_read_tx: u64,
    pub(crate) busy_snapshot: u64,
    pub(crate) app_retries: u64,
    pub(crate) wait_total_us: u64,
    pub(crate) wait_max_us: u64,
    pub(crate) histogram: LogHistogram,
    pub(crate) last_event_unix_ms: Option<u64>,
}

/// Lock-wait statistics of one database file: one row of the SQL table
/// `hybrid_lock_metrics` (see `docs/sql-reference.md` for every column).
///
/// `busy_events` is defined as `acquired + gave_up + in_flight`, so every
/// snapshot satisfies that identity by construction, whatever races with it.
///
/// ```
/// let conn = rusqlite::Connection::open_in_memory()?;
/// let state = hybrid::register(&conn)?;
/// let stats = state.snapshot().process;
/// assert_eq!((stats.scope, stats.busy_events), (hybrid::LockScope::Process, 0));
/// assert_eq!(stats.scope.as_str(), "process");
/// # Ok::<(), rusqlite::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LockStats {
    /// The main database file's path (`:memory:` for in-memory databases).
    pub db: String,
    /// This process's waits or every process's (from the shared side
    /// file); the SQL table shows [`LockScope::as_str`].
    pub scope: LockScope,
    /// Futex (queued hand-off through the side file), backoff, or (the Rust
    /// client) PostgreSQL; the SQL table shows [`LockMode::as_str`].
    pub mode: LockMode,
    /// Open connections of this process on the file with the extension
    /// registered (`None` for the file scope).
    pub connections: Option<u64>,
    /// How many of them have the hybrid busy handler in force (`None` for
    /// the file scope).
    pub handler_active: Option<u64>,
    /// Waits started: `acquired + gave_up + in_flight`.
    pub busy_events: u64,
    /// Busy-handler calls.
    pub retries: u64,
    /// Waits that ended with the lock.
    pub acquired: u64,
    /// Waits that ended in `SQLITE_BUSY` (for the file scope, also waits
    /// whose process died while waiting).
    pub gave_up: u64,
    /// Waits in progress.
    pub in_flight: u64,
    /// Waits that queued in the side file and were handed the lock (futex
    /// mode; always 0 in backoff mode). Most of `acquired` under
    /// contention: a wait that is not a hand-off found the lock free at
    /// its first retry.
    pub handoffs: u64,
    /// `SQLITE_BUSY` results no busy handler saw: a transaction that had
    /// read asked for the write lock while another connection held it
    /// (WAL mode). Not waits: not in `busy_events`. Remedy: `BEGIN
    /// IMMEDIATE` for transactions that may write.
    pub busy_in_read_tx: u64,
    /// `SQLITE_BUSY_SNAPSHOT` results: a transaction that had read asked
    /// for the write lock after another connection committed (its snapshot
    /// was stale). Not waits; same remedy.
    pub busy_snapshot: u64,
    /// Units of work the application re-ran after a lock error, as it
    /// reported them with `hybrid_note_retry()`.
    pub app_retries: u64,
    /// Total time of finished waits, ms.
    pub wait_total_ms: f64,
    /// Mean finished wait, ms.
    pub wait_avg_ms: Option<f64>,
    /// Longest finished wait, ms.
    pub wait_max_ms: f64,
    /// Median wait (within ~6%), ms.
    pub wait_p50_ms: Option<f64>,
    /// 95th percentile wait, ms.
    pub wait_p95_ms: Option<f64>,
    /// 99th percentile wait, ms.
    pub wait_p99_ms: Option<f64>,
    /// `gave_up / (acquired + gave_up)`.
    pub failure_rate: Option<f64>,
    /// Unix time (ms) of the last wait start or end.
    pub last_event_unix_ms: Option<u64>,
    /// The policy (JSON) of the connection this row was read through, when
    /// it uses this file; `None` otherwise and for the file scope.
    pub policy: Option<String>,
    /// The Rust client on PostgreSQL with standbys only (not a column of
    /// `hybrid_lock_metrics`; `None` on SQLite): the largest lag of the
    /// handle's standbys that answered, in bytes of WAL not yet replayed
    /// (the primary's position minus the standby's replay position).
    /// `None` when no standby (or the primary) could be asked.
    pub standby_lag_bytes: Option<i64>,
    /// With `standby_lag_bytes`: the largest age of a standby's newest
    /// replayed transaction, ms (0 when every standby that answered has
    /// replayed everything the primary wrote).
    pub standby_lag_ms: Option<f64>,
}

/// Waits counted outside SQLite's busy handler (the Rust client's
/// PostgreSQL engine), for [`LockStats::from_wait_totals`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitTotals {
    /// Waits that ended with the lock.
    pub acquired: u64,
    /// Waits that ended without it.
    pub gave_up: u64,
    /// Waits going on now.
    pub in_flight: u64,
    /// Retries made while waiting.
    pub retries: u64,
    /// Time spent waiting, in µs, finished waits only.
    pub wait_total_us: u64,
    /// Longest finished wait, in µs.
    pub wait_max_us: u64,
    /// When the last wait began or ended, unix ms.
    pub last_event_unix_ms: Option<u64>,
}

/// What identifies a row besides its counters.
pub(crate) struct RowIdentity {
    pub(crate) db: String,
    pub(crate) scope: LockScope,
    pub(crate) mode: LockMode,
    pub(crate) connections: Option<u64>,
    pub(crate) handler_active: Option<u64>,
    pub(crate) policy: Option<String>,
}

impl LockStats {
    /// A row for waits counted outside SQLite (no histogram, so no
    /// quantiles), with the same derived fields as every other row:
    /// `busy_events`, average and failure rate are computed here, never by
    /// the caller.
    ///
    /// ```
    /// use hybrid::{LockMode, LockScope, LockStats, WaitTotals};
    /// let totals = WaitTotals { acquired: 3, gave_up: 1, wait_total_us: 8_000, ..WaitTotals::default() };
    /// let row = LockStats::from_wait_totals("db".into(), LockScope::Process, LockMode::Postgres, Some(2), &totals);
    /// assert_eq!((row.busy_events, row.wait_avg_ms, row.failure_rate), (4, Some(2.0), Some(0.25)));
    /// ```
    pub fn from_wait_totals(
        db: String,
        scope: LockScope,
        mode: LockMode,
        connections: Option<u64>,
        totals: &WaitTotals,
    ) -> LockStats {
        let identity = RowIdentity {
            db,
            scope,
            mode,
            connections,
            handler_active: None,
            policy: None,
        };
        let counts = Counts {
            acquired: totals.acquired,
            gave_up: totals.gave_up,
            in_flight: totals.in_flight,
            handler_calls: totals.retries,
            wait_total_us: totals.wait_total_us,
            wait_max_us: totals.wait_max_us,
            last_event_unix_ms: totals.last_event_unix_ms,
            ..Counts::default()
        };
        LockStats::from_counts(identity, &counts)
    }

    /// Computes the derived fields from raw counters.
    pub(crate) fn from_counts(identity: RowIdentity, counts: &Counts) -> LockStats {
        let finished = counts.acquired.saturating_add(counts.gave_up);
        let max_us = counts.wait_max_us as f64;
        // A quantile is a bucket midpoint; never report one above the max.
        let quantile_ms = |q| {
            counts
                .histogram
                .quantile_us(q)
                .map(|us| us.min(max_us) / 1000.0)
        };
        let total_ms = counts.wait_total_us as f64 / 1000.0;
        LockStats {
            db: identity.db,
            scope: identity.scope,
            mode: identity.mode,
            connections: identity.connections,
            handler_active: identity.handler_active,
            busy_events: finished.saturating_add(counts.in_flight),
            retries: counts.handler_calls,
            acquired: counts.acquired,
            gave_up: counts.gave_up,
            in_flight: counts.in_flight,
            handoffs: counts.handoffs,
            busy_in_read_tx: counts.busy_in_read_tx,
            busy_snapshot: counts.busy_snapshot,
            app_retries: counts.app_retries,
            wait_total_ms: total_ms,
            wait_avg_ms: (finished > 0).then(|| total_ms / finished as f64),
            wait_max_ms: max_us / 1000.0,
            wait_p50_ms: quantile_ms(0.50),
            wait_p95_ms: quantile_ms(0.95),
            wait_p99_ms: quantile_ms(0.99),
            failure_rate: (finished > 0).then(|| counts.gave_up as f64 / finished as f64),
            last_event_unix_ms: counts.last_event_unix_ms,
            policy: identity.policy,
            standby_lag_bytes: None,
            standby_lag_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> RowIdentity {
        RowIdentity {
            db: "x.db".into(),
            scope: LockScope::Process,
            mode: LockMode::Backoff,
            connections: Some(1),
            handler_active: Some(1),
            policy: None,
        }
    }

    #[test]
    fn derived_fields() {
        let mut counts = Counts {
            acquired: 3,
            gave_up: 1,
            in_flight: 2,
            wait_total_us: 8_000,
            wait_max_us: 4_000,
            ..Counts::default()
        };
        for us in [1_000, 1_000, 2_000, 4_000] {
            counts.histogram.record(us);
        }
        let s = LockStats::from_counts(identity(), &counts);
        assert_eq!(s.busy_events, 6);
        assert_eq!(s.wait_avg_ms, Some(2.0));
        assert_eq!(s.failure_rate, Some(0.25));
        assert!(s.wait_p99_ms.unwrap() <= 4.0);
        let empty = LockStats::from_counts(identity(), &Counts::default());
        assert_eq!(
            (empty.wait_avg_ms, empty.failure_rate, empty.wait_p50_ms),
            (None, None, None)
        );
    }

    #[test]
    fn garbage_counters_saturate() {
        let counts = Counts {
            acquired: u64::MAX,
            gave_up: u64::MAX,
            in_flight: u64::MAX,
            ..Counts::default()
        };
        assert_eq!(
            LockStats::from_counts(identity(), &counts).busy_events,
            u64::MAX
        );
    }
}
