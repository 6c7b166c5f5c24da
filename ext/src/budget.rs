//! A CPU budget for one long wait: at most [`BURST_NS`] of CPU plus
//! [`RATE`] of the time waited, measured on the waiting thread.
//!
//! Why: a waiter that polls (a lock held by a process outside the queue, a
//! rollback-journal database, a long-held lock) must not burn a core while
//! it waits. SQLite's own handler sleeps and costs next to nothing; a wait
//! of ours may cost at most 1% of a core plus a small burst (0.05 s of CPU
//! for a 5 s wait), whatever a retry costs on this machine (the sleeps'
//! own system-call overhead included), while short hand-offs, well within
//! the burst, are never slowed down.
//!
//! A pause is decided once and then served ([`CpuBudget::retry_or_pause`]),
//! so the waiter's own wake-ups while it sleeps never push its retry
//! further away; and no single pause exceeds [`MAX_PAUSE`], so a waiter
//! never sleeps through a long stretch in which the lock may free.
//!
//! Only builds with a thread CPU clock (Linux) have a budget: elsewhere
//! `thread_cpu_ns` reads 0, so a wait never runs over it.

use std::time::Duration;

use crate::clock::{now_ns, thread_cpu_ns};

/// CPU a wait may use before the rate applies.
pub(crate) const BURST_NS: u64 = 2_000_000;
/// Share of the time waited a wait may spend on the CPU.
pub(crate) const RATE: f64 = 0.01;
/// Retries on a hand-off per wait that no pause delays.
pub(crate) const FREE_HANDOFFS: u32 = 8;
/// Longest single pause the budget imposes.
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The CPU account of one wait (started at its first busy call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuBudget {
    start_ns: u64,
    start_cpu_ns: u64,
    /// A pause decided for the next retry ends then (0: none decided).
    not_before_ns: u64,
    /// Retries made on a hand-off so far (see [`CpuBudget::handed_over`]).
    handoffs: u32,
    /// The header's `release_seq` at the last retry on a hand-off, and
    /// how many such retries were free because it had moved since.
    last_release_seq: Option<u32>,
    free_on_release: u64,
}

impl CpuBudget {
    /// Starts the account now, on the calling (waiting) thread.
    pub(crate) fn start() -> CpuBudget {
        CpuBudget {
            start_ns: now_ns(),
            start_cpu_ns: thread_cpu_ns(),
            not_before_ns: 0,
            handoffs: 0,
            last_release_seq: None,
            free_on_release: 0,
        }
    }

    /// How long to sleep before the next retry so that this wait keeps to
    /// its budget (zero when it does).
    pub(crate) fn required_sleep(&self) -> Duration {
        required_sleep(
            now_ns().saturating_sub(self.start_ns),
            thread_cpu_ns().saturating_sub(self.start_cpu_ns),
        )
    }

    /// Like [`CpuBudget::retry_or_pause`], for a retry the waiter was woken
    /// for because the lock was handed to it (`release_seq`: the header's
    /// count of releases now). Goes out at once, whatever the budget, for
    /// the first [`FREE_HANDOFFS`] of a wait, and after that whenever the
    /// lock was released since the last such retry, at most once per
    /// millisecond waited.
    ///
    /// Why: the lock waits for the head, and every other waiter with it. A
    /// head paused by its budget left the lock to whoever came by for up
    /// to [`MAX_PAUSE`] (measured: turns of 55 ms instead of 6, waits of
    /// 98-166 ms, at 8 writers with `synchronous=FULL`). With 32 writers a
    /// head on a busy machine loses more than [`FREE_HANDOFFS`] races to
    /// writers that were not queued (each one a real release that woke
    /// it), and a pause then cost it 150-160 ms waits with the lock free
    /// (traced: 18 of 769 waits over 100 ms). Wake-ups with no release
    /// behind them are a peer's, and pay the budget as any poll does; the
    /// per-millisecond bound keeps a peer that fakes releases to one retry
    /// per millisecond.
    pub(crate) fn handed_over(&mut self, release_seq: u32) -> Option<Duration> {
        let released = self
            .last_release_seq
            .is_some_and(|seen| seen != release_seq);
        self.last_release_seq = Some(release_seq);
        if self.handoffs < FREE_HANDOFFS {
            self.handoffs += 1;
            return None;
        }
        let waited_ms = now_ns().saturating_sub(self.start_ns) / 1_000_000;
        if released && self.free_on_release < waited_ms {
            self.free_on_release += 1;
            return None;
        }
        self.retry_or_pause()
    }

    /// Whether a retry may go out now (`None`), or how long to wait first.
    pub(crate) fn retry_or_pause(&mut self) -> Option<Duration> {
        let now = now_ns();
        if self.not_before_ns > now {
            return Some(Duration::from_nanos(self.not_before_ns - now));
        }
        if self.not_before_ns != 0 {
            self.not_before_ns = 0; // the decided pause is over
            return None;
        }
        let pause = self.required_sleep();
        if pause.is_zero() {
            return None;
        }
        self.not_before_ns = now + pause.as_nanos() as u64;
        Some(pause)
    }
}

/// The pure rule: with `used_cpu_ns` spent over `elapsed_ns`, the sleep that
/// brings the wait back to `BURST_NS + RATE × elapsed`, at most `MAX_PAUSE`.
fn required_sleep(elapsed_ns: u64, used_cpu_ns: u64) -> Duration {
    if used_cpu_ns <= BURST_NS {
        return Duration::ZERO;
    }
    let paid_by = ((used_cpu_ns - BURST_NS) as f64 / RATE) as u64;
    Duration::from_nanos(paid_by.saturating_sub(elapsed_ns)).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_waits_are_free_long_ones_are_paced() {
        assert_eq!(
            required_sleep(1_000_000, 1_500_000),
            Duration::ZERO,
            "burst"
        );
        // 5 s waited, 52 ms used: within 2 ms + 1% of 5 s.
        assert_eq!(required_sleep(5_000_000_000, 52_000_000), Duration::ZERO);
        // 1 s waited, 12.1 ms used: 1.01 s earns it, so 10 ms more.
        let pause = required_sleep(1_000_000_000, 12_100_000);
        assert_eq!(pause, Duration::from_millis(10));
        // However deep in debt, one pause is bounded.
        assert_eq!(required_sleep(0, 1_000_000_000), MAX_PAUSE);
    }

    /// Spins until this thread has used `cpu` of CPU time (not wall time:
    /// on a loaded machine the thread may get little of it).
    fn spin_for_cpu(cpu: Duration) {
        let start = thread_cpu_ns();
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while thread_cpu_ns().saturating_sub(start) < cpu.as_nanos() as u64 {
            assert!(std::time::Instant::now() < give_up, "no CPU for 30 s");
            std::hint::spin_loop();
        }
    }

    #[test]
    #[cfg_attr(
        not(hybrid_futex),
        ignore = "no thread CPU clock in this build: no budget"
    )]
    fn a_decided_pause_is_served_once() {
        let mut budget = CpuBudget::start();
        spin_for_cpu(Duration::from_millis(5)); // over the burst
        let pause = budget.retry_or_pause().expect("over budget");
        assert!(pause <= MAX_PAUSE, "{pause:?}");
        std::thread::sleep(pause + Duration::from_millis(1));
        assert_eq!(budget.retry_or_pause(), None, "served: the retry goes");
    }

    #[test]
    #[cfg_attr(
        not(hybrid_futex),
        ignore = "no thread CPU clock in this build: no budget"
    )]
    fn a_spinning_thread_is_told_to_sleep() {
        let budget = CpuBudget::start();
        spin_for_cpu(Duration::from_millis(20));
        assert!(budget.required_sleep() > Duration::from_millis(10));
    }

    #[test]
    #[cfg_attr(
        not(hybrid_futex),
        ignore = "no thread CPU clock in this build: no budget"
    )]
    fn hand_offs_go_at_once_up_to_a_bound_then_pay() {
        let mut budget = CpuBudget::start();
        spin_for_cpu(Duration::from_millis(5)); // over the burst
        for n in 0..FREE_HANDOFFS {
            assert_eq!(budget.handed_over(7), None, "hand-off {n} is not paused");
        }
        assert!(
            budget.handed_over(7).is_some(),
            "a peer's wake-ups, with no release behind them, pay"
        );
    }

    #[test]
    #[cfg_attr(
        not(hybrid_futex),
        ignore = "no thread CPU clock in this build: no budget"
    )]
    fn hand_offs_after_a_release_go_at_once_at_most_once_per_ms_waited() {
        let mut budget = CpuBudget::start();
        spin_for_cpu(Duration::from_millis(5)); // over the burst
        for n in 0..FREE_HANDOFFS {
            assert_eq!(budget.handed_over(n), None);
        }
        // At least 5 ms of CPU were spent since the start: >= 5 ms waited.
        let mut seq = FREE_HANDOFFS;
        for n in 0..5 {
            seq += 1;
            assert_eq!(budget.handed_over(seq), None, "release {n}: not paused");
        }
        let waited_ms = (now_ns() - budget.start_ns) / 1_000_000;
        let mut paused = false;
        for _ in 0..=waited_ms {
            seq += 1;
            paused |= budget.handed_over(seq).is_some();
        }
        assert!(paused, "more releases than ms waited: the budget applies");
    }
}
