//! The file-wide statistics recorded in the side file: [`SharedCounters`]
//! for [`SideFile`], and the file-wide [`Counts`] read from it. The rules
//! the counters keep (their invariants: `busy_events` not stored, waits in
//! progress per process and generation, the tail counters' generation)
//! are stated with the code that keeps them, in `shared/counters.rs`.

use std::sync::atomic::Ordering;

use crate::shared::SideFile;
use crate::shared::counters::{retag_tail, tail_counters};
use crate::shared::layout::{MAX_PARTICIPANTS, SharedStats, pack_in_flight, unpack_in_flight};
use crate::stats::histogram::LogHistogram;
use crate::stats::lock_stats::Counts;
use crate::stats::registry::{ImmediateBusy, Outcome, SharedCounters};

impl SharedCounters for SideFile {
    fn wait_started(&self, at_unix_ms: u64) -> u64 {
        let stats = self.stats();
        let generation = stats.generation.load(Ordering::Acquire);
        stats
            .last_event_unix_ms
            .store(at_unix_ms, Ordering::Relaxed);
        if let Some(me) = self.own_participant() {
            let word = &self.participant(me).in_flight;
            let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (g, count) = unpack_in_flight(w);
                Some(if g == generation as u32 {
                    pack_in_flight(generation, count.saturating_add(1))
                } else {
                    pack_in_flight(generation, 1)
                })
            });
        }
        generation
    }

    fn handler_call(&self) {
        self.stats().handler_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn handoff(&self) {
        self.stats().handoffs.fetch_add(1, Ordering::Relaxed);
    }

    fn immediate_busy(&self, kind: ImmediateBusy, at_unix_ms: u64) {
        let stats = self.stats();
        let counter = match kind {
            ImmediateBusy::InReadTx => &stats.busy_in_read_tx,
            ImmediateBusy::Snapshot => &stats.busy_snapshot,
        };
        retag_tail(stats);
        counter.fetch_add(1, Ordering::Relaxed);
        stats
            .last_event_unix_ms
            .store(at_unix_ms, Ordering::Relaxed);
    }

    fn app_retry(&self) {
        let stats = self.stats();
        retag_tail(stats);
        stats.app_retries.fetch_add(1, Ordering::Relaxed);
    }

    fn wait_finished(&self, generation: u64, outcome: Outcome, wait_us: u64, at_unix_ms: u64) {
        if let Some(me) = self.own_participant() {
            let word = &self.participant(me).in_flight;
            let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let (g, count) = unpack_in_flight(w);
                (g == generation as u32 && count > 0).then(|| pack_in_flight(generation, count - 1))
            });
        }
        let stats = self.stats();
        if stats.generation.load(Ordering::Acquire) != generation {
            return; // began before a reset
        }
        add_finished(stats, outcome, wait_us, at_unix_ms);
    }
}

fn add_finished(stats: &SharedStats, outcome: Outcome, wait_us: u64, at_unix_ms: u64) {
    match outcome {
        Outcome::Acquired => stats.acquired.fetch_add(1, Ordering::Relaxed),
        Outcome::GaveUp => stats.gave_up.fetch_add(1, Ordering::Relaxed),
        Outcome::Immediate(_) => return, // not a wait
    };
    stats.wait_total_us.fetch_add(wait_us, Ordering::Relaxed);
    stats.wait_max_us.fetch_max(wait_us, Ordering::Relaxed);
    stats.histogram[LogHistogram::bucket_of(wait_us)].fetch_add(1, Ordering::Relaxed);
    stats
        .last_event_unix_ms
        .store(at_unix_ms, Ordering::Relaxed);
}

impl SideFile {
    /// The file-wide counters now (every process). Waits of processes that
    /// died while waiting are moved to `gave_up` on the way.
    pub(crate) fn counts(&self) -> Counts {
        let stats = self.stats();
        let generation = stats.generation.load(Ordering::Acquire) as u32;
        let mut in_flight = 0u64;
        for index in 0..MAX_PARTICIPANTS {
            let record = self.participant(index);
            let epoch = record.epoch.load(Ordering::Acquire);
            let (g, count) = unpack_in_flight(record.in_flight.load(Ordering::Acquire));
            if epoch == 0 || count == 0 || g != generation {
                continue;
            }
            if self.participant_alive(index, epoch as u32) {
                in_flight += u64::from(count);
            } else {
                self.reclaim_participant(index);
            }
        }
        let last = stats.last_event_unix_ms.load(Ordering::Relaxed);
        // Zero when a reset left them behind (see the module's invariants).
        let tail_current = stats.tail_generation.load(Ordering::Acquire)
            == stats.generation.load(Ordering::Acquire);
        let [busy_in_read_tx, busy_snapshot, app_retries] =
            tail_counters(stats).map(|c| c.load(Ordering::Relaxed) * u64::from(tail_current));
        Counts {
            acquired: stats.acquired.load(Ordering::Relaxed),
            gave_up: stats.gave_up.load(Ordering::Relaxed),
            in_flight,
            handler_calls: stats.handler_calls.load(Ordering::Relaxed),
            handoffs: stats.handoffs.load(Ordering::Relaxed),
            busy_in_read_tx,
            busy_snapshot,
            app_retries,
            wait_total_us: stats.wait_total_us.load(Ordering::Relaxed),
            wait_max_us: stats.wait_max_us.load(Ordering::Relaxed),
            histogram: LogHistogram::from_counts(
                stats.histogram.iter().map(|b| b.load(Ordering::Relaxed)),
            ),
            last_event_unix_ms: (last > 0).then_some(last),
        }
    }
}

#[cfg(all(test, hybrid_futex))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::shared::mapping::path_for;

    fn side(dir: &tempfile::TempDir) -> (String, std::sync::Arc<SideFile>) {
        let db = dir.path().join("c.db");
        std::fs::write(&db, b"").unwrap();
        let db = db.to_str().unwrap().to_string();
        let side = SideFile::open(&db).unwrap();
        (db, side)
    }

    #[test]
    fn the_identity_holds_across_a_reset_during_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, side) = side(&dir);
        let g = side.wait_started(1);
        side.wait_finished(g, Outcome::Acquired, 10, 2);
        let g_open = side.wait_started(3);
        let c = side.counts();
        assert_eq!((c.acquired, c.in_flight), (1, 1));
        side.reset_counts();
        assert_eq!(side.counts().in_flight, 0, "old waits are not in flight");
        side.wait_finished(g_open, Outcome::Acquired, 10, 4);
        let c = side.counts();
        assert_eq!((c.acquired, c.gave_up, c.in_flight), (0, 0, 0));
        let g = side.wait_started(5);
        side.wait_finished(g, Outcome::GaveUp, 10, 6);
        let c = side.counts();
        assert_eq!((c.acquired, c.gave_up, c.in_flight), (0, 1, 0));
    }

    #[test]
    fn the_counters_after_layout_4_follow_resets_of_either_release() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, side) = side(&dir);
        side.immediate_busy(ImmediateBusy::InReadTx, 1);
        side.immediate_busy(ImmediateBusy::Snapshot, 2);
        side.app_retry();
        let tail = |c: Counts| (c.busy_in_read_tx, c.busy_snapshot, c.app_retries);
        assert_eq!(tail(side.counts()), (1, 1, 1));
        side.reset_counts();
        assert_eq!(tail(side.counts()), (0, 0, 0));
        side.app_retry();
        assert_eq!(tail(side.counts()), (0, 0, 1));
        // A process of the previous release resets: it bumps the generation
        // and zeroes only the counters it knows.
        side.stats().generation.fetch_add(1, Ordering::AcqRel);
        assert_eq!(tail(side.counts()), (0, 0, 0), "left behind: read as zero");
        side.immediate_busy(ImmediateBusy::Snapshot, 3);
        assert_eq!(tail(side.counts()), (0, 1, 0), "re-tagged, counting afresh");
    }

    #[test]
    fn a_dead_processs_wait_becomes_gave_up() {
        let dir = tempfile::tempdir().unwrap();
        let (db, observer) = side(&dir);
        let doomed = SideFile::map(Path::new(&db), path_for(&db), true).unwrap();
        doomed.wait_started(1);
        assert_eq!(observer.counts().in_flight, 1);
        drop(doomed); // its process "dies": the lock byte is released
        std::thread::sleep(std::time::Duration::from_millis(10)); // probe cache
        let c = observer.counts();
        assert_eq!((c.in_flight, c.gave_up), (0, 1));
        assert_eq!(observer.counts().gave_up, 1, "counted once");
    }
}
