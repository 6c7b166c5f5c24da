//! The state of one connection's wait in progress, written by its
//! `WaitTracker` (`tracker.rs`, which says what a wait is) and read by its
//! file's counters (`registry.rs`), which count it while it lasts.

use std::time::Instant;

/// Where a wait in progress stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The handler is running (deciding or sleeping).
    Waiting,
    /// The handler let SQLite retry and has not been called again.
    Retrying,
}

/// One connection's wait in progress (see `tracker.rs`, "What a wait is").
#[derive(Debug, Clone)]
pub(super) struct Episode {
    /// The process counters' reset generation when the wait began.
    pub(super) generation: u64,
    /// The side file's reset generation, if the wait is counted there.
    pub(super) shared_generation: Option<u64>,
    pub(super) started: Instant,
    pub(super) phase: Phase,
    pub(super) retries: u32,
    pub(super) retried_at: Instant,
    pub(super) retried_unix_ms: u64,
    /// The slow-wait log reported this wait as still going on.
    pub(super) slow_reported: bool,
}

impl Episode {
    /// The wait's length if it ends as acquired now (to its last retry).
    pub(super) fn provisional_wait_us(&self) -> u64 {
        self.retried_at
            .saturating_duration_since(self.started)
            .as_micros() as u64
    }
}
