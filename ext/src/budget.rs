//! A CPU budget for one long wait: after a burst of [`BURST_NS`], every
//! retry is paid for by sleeping at least 1/[`RATE`] times the CPU it used.
//!
//! Why: a waiter that polls (a lock held by a process outside the queue, a
//! rollback-journal database, a long-held lock) must not burn a core while
//! it waits. SQLite's own handler sleeps and costs next to nothing; a wait
//! of ours may cost at most 1% of a core plus a small burst (0.05 s of CPU
//! for a 5 s wait), whatever a retry costs on this machine, while short
//! hand-offs (well within the burst) are never slowed down.
//!
//! Pacing each retry by its own cost, rather than by the wait's total, keeps
//! the waiter polling steadily: it never has to sleep off a debt in one long
//! sleep and miss the moment the lock frees.

use std::time::Duration;

use crate::clock::{now_ns, thread_cpu_ns};

/// CPU a wait may use before pacing starts.
pub(crate) const BURST_NS: u64 = 2_000_000;
/// Share of the time waited a paced wait may spend on the CPU.
pub(crate) const RATE: f64 = 0.01;

/// The CPU account of one wait (started at its first busy call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuBudget {
    start_cpu_ns: u64,
    /// When the last retry went out, and the CPU time then.
    last_ns: u64,
    last_cpu_ns: u64,
    /// A pause decided for the next retry ends then (0: none decided). The
    /// pause is decided once, so the waiter's own wake-ups while it sleeps
    /// it off never push the retry further away.
    not_before_ns: u64,
}

impl CpuBudget {
    /// Starts the account now, on the calling (waiting) thread.
    pub(crate) fn start() -> CpuBudget {
        let cpu = thread_cpu_ns();
        CpuBudget {
            start_cpu_ns: cpu,
            last_ns: now_ns(),
            last_cpu_ns: cpu,
            not_before_ns: 0,
        }
    }

    /// Whether a retry may go out now (`None`: it goes, and is recorded),
    /// or how long to wait first.
    pub(crate) fn retry_or_pause(&mut self) -> Option<Duration> {
        let now = now_ns();
        if self.not_before_ns > now {
            return Some(Duration::from_nanos(self.not_before_ns - now));
        }
        let pause = if self.not_before_ns != 0 {
            Duration::ZERO // the decided pause is over
        } else {
            self.required_sleep()
        };
        if pause.is_zero() {
            self.not_before_ns = 0;
            self.mark_retry();
            None
        } else {
            self.not_before_ns = now + pause.as_nanos() as u64;
            Some(pause)
        }
    }

    /// How long to sleep before the next retry so that this wait keeps to
    /// its budget (zero within the burst or when already paid for).
    pub(crate) fn required_sleep(&self) -> Duration {
        let cpu = thread_cpu_ns();
        required_sleep(
            cpu.saturating_sub(self.start_cpu_ns),
            cpu.saturating_sub(self.last_cpu_ns),
            now_ns().saturating_sub(self.last_ns),
        )
    }

    /// A retry goes out now.
    pub(crate) fn mark_retry(&mut self) {
        self.last_ns = now_ns();
        self.last_cpu_ns = thread_cpu_ns();
    }
}

/// The pure rule: with `used_ns` spent in all, `since_cpu_ns` of it since the
/// last retry, which was `since_ns` ago.
fn required_sleep(used_ns: u64, since_cpu_ns: u64, since_ns: u64) -> Duration {
    if used_ns <= BURST_NS {
        return Duration::ZERO;
    }
    let paid_by = (since_cpu_ns as f64 / RATE) as u64;
    Duration::from_nanos(paid_by.saturating_sub(since_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_burst_nothing_is_paced() {
        assert_eq!(required_sleep(1_500_000, 1_000_000, 0), Duration::ZERO);
    }

    #[test]
    fn beyond_it_each_retry_is_paid_for() {
        // 20 µs of CPU since the last retry, 500 µs ago: sleep 1.5 ms more.
        let pause = required_sleep(3_000_000, 20_000, 500_000);
        assert_eq!(pause, Duration::from_micros(1500));
        assert_eq!(required_sleep(3_000_000, 20_000, 5_000_000), Duration::ZERO);
    }

    #[test]
    fn a_spinning_thread_is_told_to_sleep() {
        let budget = CpuBudget::start();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        assert!(budget.required_sleep() > Duration::from_millis(100));
    }
}
