//! File-wide wait statistics in the side file: every process adds its waits
//! here, so `hybrid_lock_metrics` can show a `scope = 'file'` row. This file
//! holds the rules every process keeps (reset, reclaim, the tail counters'
//! generation); `stats/side_file.rs` records into them and reads them.
//!
//! # Invariants
//! * `busy_events` is not stored: it is `acquired + gave_up + in_flight`,
//!   so the identity holds in every snapshot, whatever a reset, a race or
//!   a peer's garbage does to the counters.
//! * Waits in progress are counted per process, in its participant record,
//!   tagged with the reset generation they started in. A snapshot sums only
//!   live processes' current-generation counts; a dead process's waits are
//!   moved to `gave_up` by whoever notices (once: compare-and-swap).
//! * A wait that began before `hybrid_lock_metrics_reset('file')` is not
//!   counted after it.
//! * The counters added after layout 4 was released (`busy_in_read_tx`,
//!   `busy_snapshot`, `app_retries`) carry the reset generation they count
//!   in (`tail_generation`): a process of the previous release resets the
//!   file without knowing them, and they then read as zero until the next
//!   count re-tags them (a count racing with that re-tag may be lost: only
//!   when both releases share a file and one of them reset it).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::now_unix_ms;
use crate::shared::layout::{SharedStats, unpack_in_flight};
use crate::shared::mapping::SideFile;

/// The counters after layout 4's fields, as they count in the current
/// reset generation.
pub(crate) fn tail_counters(stats: &SharedStats) -> [&AtomicU64; 3] {
    [
        &stats.busy_in_read_tx,
        &stats.busy_snapshot,
        &stats.app_retries,
    ]
}

/// Makes the tail counters count in the current generation: after a reset
/// by a process that does not know them, the first to notice zeroes them.
pub(crate) fn retag_tail(stats: &SharedStats) {
    let generation = stats.generation.load(Ordering::Acquire);
    let tagged = stats.tail_generation.load(Ordering::Acquire);
    if tagged != generation
        && stats
            .tail_generation
            .compare_exchange(tagged, generation, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        for counter in tail_counters(stats) {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

impl SideFile {
    /// A dead process's waits in progress end as `gave_up` (they never got
    /// the lock). Only one caller wins the exchange, so each counts once.
    pub(crate) fn reclaim_participant(&self, index: usize) {
        if !self.can_queue() {
            return; // read-only mapping
        }
        let stats = self.stats();
        let generation = stats.generation.load(Ordering::Acquire);
        let word = &self.participant(index).in_flight;
        let old = word.swap(0, Ordering::AcqRel);
        let (g, count) = unpack_in_flight(old);
        if count > 0 && g == generation as u32 {
            stats.gave_up.fetch_add(u64::from(count), Ordering::Relaxed);
            stats
                .last_event_unix_ms
                .store(now_unix_ms(), Ordering::Relaxed);
        }
    }

    /// Zeroes the file-wide counters (for every process); waits in
    /// progress are not counted afterwards.
    pub(crate) fn reset_counts(&self) {
        if !self.can_queue() {
            return;
        }
        let stats = self.stats();
        let generation = stats
            .generation
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        for counter in tail_counters(stats) {
            counter.store(0, Ordering::Relaxed);
        }
        stats.tail_generation.store(generation, Ordering::Release);
        for counter in [
            &stats.acquired,
            &stats.gave_up,
            &stats.handler_calls,
            &stats.handoffs,
            &stats.wait_total_us,
            &stats.wait_max_us,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for bucket in &stats.histogram {
            bucket.store(0, Ordering::Relaxed);
        }
        stats.reset_unix_ms.store(now_unix_ms(), Ordering::Relaxed);
    }
}
