//! The backoff policy: how long a busy connection sleeps before it retries,
//! and when it gives up.
//!
//! Pure Rust, no SQLite types, so every rule here is unit-tested without a
//! database. The busy handler (`handler.rs`) asks [`BackoffPolicy::decide`]
//! once per call and does what it says.
//!
//! The delay before attempt `n` (0-based) starts from an exponential ceiling
//! `min(cap, base * 2^n)` and jitters it (the "Exponential Backoff And Jitter"
//! kinds from the AWS architecture blog):
//!
//! | jitter         | delay                                           |
//! |----------------|-------------------------------------------------|
//! | `none`         | `ceiling`                                       |
//! | `full`         | uniform in `[0, ceiling]`                       |
//! | `equal`        | `ceiling/2 + uniform in [0, ceiling/2]`          |
//! | `decorrelated` | `min(cap, uniform in [base, 3 * previous delay])` |
//!
//! Why jitter at all: SQLite's own handler sleeps on a fixed table, so
//! waiters that collided once wake together again, and the connection that
//! just committed (which retries after zero sleep) wins nearly every time.
//! Random delays spread the retries out so every waiter gets a fair chance at
//! the moment the lock frees.
//!
//! **Aging** (`aging_ms`): once a wait has lasted `aging_ms`, its ceiling
//! stops following the attempt count and follows the wait's age instead:
//! `cap_ms * (aging_ms / age)^2`, never below `base_ms / 4`. So a wait polls
//! faster the older it is, and the oldest waiter polls fastest.
//!
//! Why: the connection that just committed retries at once, so a waiter
//! only gets the lock if its retry lands in the short gap between a commit
//! and the holder's next `BEGIN` (tens of µs). Plain exponential backoff
//! makes the longest waiters retry *least* often, which is what lets one
//! writer starve for seconds. Why the square: every retry costs CPU (a
//! failed lock attempt plus a wake-up, ~25 µs here), so only waits much
//! older than the rest should poll near the floor; a linear decay made every
//! aged waiter poll fast and cost 5x the CPU of SQLite's own handler.
//!
//! Whatever the jitter, no sleep ends past the deadline (`timeout_ms` after
//! the first busy call): the last sleep is cut to the time remaining, and the
//! call after it gives up. So a waiter gives up at `timeout_ms`, plus at most
//! one lock attempt.

use std::fmt;
use std::time::Duration;

use crate::shared::layout::MAX_HANDOFF_MS;

/// How the exponential delay is randomised. See the module docs for formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: `min(cap, base * 2^n)`.
    None,
    /// Uniform in `[0, ceiling]`. The default: best spread, and the measured
    /// winner in `scripts/contention_bench.py`.
    Full,
    /// Half the ceiling plus uniform in the other half.
    Equal,
    /// Uniform in `[base, 3 * previous]`, capped; depends on the previous delay.
    Decorrelated,
}

impl Jitter {
    /// Every accepted name, in the order the docs list them.
    pub const NAMES: [&'static str; 4] = ["full", "equal", "decorrelated", "none"];

    /// The name used in JSON and SQL.
    pub fn name(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
        }
    }

    /// Parses a name from [`Jitter::NAMES`] (exact, lower case).
    pub fn from_name(name: &str) -> Option<Jitter> {
        match name {
            "none" => Some(Jitter::None),
            "full" => Some(Jitter::Full),
            "equal" => Some(Jitter::Equal),
            "decorrelated" => Some(Jitter::Decorrelated),
            _ => None,
        }
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection's backoff policy. Always valid: build it with
/// [`BackoffPolicy::default`] and change it with [`BackoffPolicy::validated`]
/// (or the JSON layer in `config.rs`, which calls it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay, in milliseconds (fractions allowed).
    pub base_ms: f64,
    /// Largest delay, in milliseconds.
    pub cap_ms: f64,
    /// How delays are randomised.
    pub jitter: Jitter,
    /// Total time a wait may last, from the first busy call, in milliseconds.
    pub timeout_ms: f64,
    /// Most retries in one wait; `None` means only the deadline limits them.
    pub max_retries: Option<u32>,
    /// Once a wait has lasted this long (ms), its ceiling follows the
    /// wait's age instead of the attempt count: `cap_ms * (aging_ms /
    /// age)^2`, never below `base_ms / 4`, so the oldest waiter polls
    /// fastest; `None` disables aging.
    pub aging_ms: Option<f64>,
    /// Futex mode: the longest this connection may keep re-taking the lock
    /// while others wait before it must hand it over (0 to 10 ms: the queue
    /// caps every tenure, so one connection cannot starve the others).
    pub handoff_ms: f64,
    /// Futex mode: the wait for its turn a queued connection should not
    /// exceed under steady contention. Each holder's tenure is
    /// `max_wait_ms / (connections queued + 1)`, at most `handoff_ms`: a
    /// larger value buys throughput (fewer hand-offs) with longer waits.
    /// Not a deadline: `timeout_ms` is when a wait gives up.
    pub max_wait_ms: f64,
}

/// Smallest accepted `base_ms`: one microsecond. Zero would turn every
/// jitter kind into a busy spin.
pub(crate) const MIN_BASE_MS: f64 = 0.001;
/// Largest accepted `cap_ms`: one minute. A longer single sleep is never what
/// a lock waiter wants, and it bounds how late a give-up can be noticed.
pub(crate) const MAX_CAP_MS: f64 = 60_000.0;
/// Largest accepted `timeout_ms`: one day.
pub(crate) const MAX_TIMEOUT_MS: f64 = 86_400_000.0;
/// Largest accepted `max_wait_ms`: one minute (a tenure never exceeds
/// `MAX_HANDOFF_MS` anyway, so more changes nothing).
pub(crate) const MAX_WAIT_LIMIT_MS: f64 = 60_000.0;

impl Default for BackoffPolicy {
    /// Defaults chosen by measurement (`docs/sql-reference.md`, "How the
    /// busy handler decides"; figures in `docs/benchmarks.md`): 8 writer
    /// processes on one WAL file, 2 cores. A small cap keeps waiters close to
    /// the moment the lock frees (fairness, short max wait); the base keeps
    /// the first retries cheap. 5 s matches Python's sqlite3 default timeout.
    fn default() -> Self {
        BackoffPolicy {
            base_ms: 0.2,
            cap_ms: 5.0,
            jitter: Jitter::Full,
            timeout_ms: 5000.0,
            max_retries: None,
            aging_ms: Some(10.0),
            handoff_ms: 10.0,
            max_wait_ms: 50.0,
        }
    }
}

/// What the busy handler should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Sleep this long, then let SQLite try the lock again.
    RetryAfter(Duration),
    /// Stop: SQLite returns `SQLITE_BUSY` to the caller.
    GiveUp(GiveUpReason),
}

/// Why a wait ended without the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUpReason {
    /// `timeout_ms` has passed since the first busy call.
    Deadline,
    /// `max_retries` retries were already made.
    MaxRetries,
}

/// A rule a policy field broke; the JSON layer turns it into a message.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    /// The offending field (`base_ms`, `cap_ms`, ...).
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for PolicyError {}

impl BackoffPolicy {
    /// Checks every invariant and returns the policy, or the first broken rule.
    ///
    /// Rules: all numbers finite; 0.001 ms <= `base_ms` <= `cap_ms` <=
    /// 60 000 ms; 0 <= `timeout_ms` <= one day; 0 <= `handoff_ms` <= 10 ms;
    /// 0 <= `max_wait_ms` <= 60 000 ms.
    ///
    /// ```
    /// use hybrid::BackoffPolicy;
    /// let bad = BackoffPolicy { handoff_ms: 60_000.0, ..BackoffPolicy::default() };
    /// assert_eq!(bad.validated().unwrap_err().field, "handoff_ms");
    /// ```
    pub fn validated(self) -> Result<BackoffPolicy, PolicyError> {
        check_ms("base_ms", self.base_ms, MIN_BASE_MS, MAX_CAP_MS)?;
        check_ms("cap_ms", self.cap_ms, MIN_BASE_MS, MAX_CAP_MS)?;
        check_ms("timeout_ms", self.timeout_ms, 0.0, MAX_TIMEOUT_MS)?;
        if let Some(aging_ms) = self.aging_ms {
            check_ms("aging_ms", aging_ms, 0.0, MAX_TIMEOUT_MS)?;
        }
        check_ms("handoff_ms", self.handoff_ms, 0.0, MAX_HANDOFF_MS)?;
        check_ms("max_wait_ms", self.max_wait_ms, 0.0, MAX_WAIT_LIMIT_MS)?;
        if self.cap_ms < self.base_ms {
            return Err(PolicyError {
                field: "cap_ms",
                reason: format!("must be >= base_ms ({}), got {}", self.base_ms, self.cap_ms),
            });
        }
        Ok(self)
    }

    /// The exponential ceiling for attempt `attempt` (0-based), in ms.
    fn ceiling_ms(&self, attempt: u32) -> f64 {
        // 2^40 * MIN_BASE_MS already exceeds MAX_CAP_MS, so clamping the
        // exponent keeps the arithmetic finite without changing the result.
        let doublings = attempt.min(40) as i32;
        (self.base_ms * 2f64.powi(doublings)).min(self.cap_ms)
    }

    /// The jittered delay before attempt `attempt`, in ms, ignoring the
    /// deadline. `elapsed_ms` is the wait's age (for aging), `previous_ms`
    /// its last delay (used only by `decorrelated`; 0 for the first).
    /// `unit` draws uniform numbers in `[0, 1)`.
    pub fn delay_ms(
        &self,
        attempt: u32,
        elapsed_ms: f64,
        previous_ms: f64,
        unit: &mut impl FnMut() -> f64,
    ) -> f64 {
        let (ceiling, previous_ms) = match self.aging_ms {
            Some(aging_ms) if elapsed_ms >= aging_ms && elapsed_ms > 0.0 => {
                let decay = (aging_ms / elapsed_ms).powi(2);
                let ceiling = (self.cap_ms * decay).max(self.base_ms / 4.0);
                // Decorrelated jitter follows the previous delay; cap it by
                // the aged ceiling so it shrinks with age too.
                (ceiling, previous_ms.min(ceiling))
            }
            _ => (self.ceiling_ms(attempt), previous_ms),
        };
        let delay = match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => ceiling * unit(),
            Jitter::Equal => ceiling / 2.0 + (ceiling / 2.0) * unit(),
            Jitter::Decorrelated => {
                let low = self.base_ms.min(ceiling);
                let upper = (previous_ms * 3.0).max(low);
                (low + (upper - low) * unit()).min(self.cap_ms)
            }
        };
        delay.clamp(0.0, self.cap_ms)
    }

    /// Decides the next step of a wait (the busy handler's one question).
    ///
    /// * `attempt`: retries already made in this wait (SQLite's busy count).
    /// * `elapsed`: time since the wait's first busy call.
    /// * `previous_ms`: the last delay of this wait (0 for the first).
    ///
    /// Gives up when `max_retries` retries were made or the deadline has
    /// passed; otherwise sleeps the jittered delay cut to the time left.
    pub(crate) fn decide(
        &self,
        attempt: u32,
        elapsed: Duration,
        previous_ms: f64,
        unit: &mut impl FnMut() -> f64,
    ) -> Decision {
        if self.max_retries.is_some_and(|max| attempt >= max) {
            return Decision::GiveUp(GiveUpReason::MaxRetries);
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        let remaining_ms = self.timeout_ms - elapsed_ms;
        if remaining_ms <= 0.0 {
            return Decision::GiveUp(GiveUpReason::Deadline);
        }
        let delay_ms = self
            .delay_ms(attempt, elapsed_ms, previous_ms, unit)
            .min(remaining_ms);
        Decision::RetryAfter(Duration::from_secs_f64(delay_ms / 1000.0))
    }
}

fn check_ms(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), PolicyError> {
    if !value.is_finite() {
        return Err(PolicyError {
            field,
            reason: format!("must be a finite number of milliseconds, got {value}"),
        });
    }
    if value < min || value > max {
        return Err(PolicyError {
            field,
            reason: format!("must be between {min} and {max} milliseconds, got {value}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rng::SplitMix64;

    fn policy(jitter: Jitter) -> BackoffPolicy {
        BackoffPolicy {
            base_ms: 0.5,
            cap_ms: 8.0,
            jitter,
            timeout_ms: 1000.0,
            max_retries: None,
            aging_ms: None,
            handoff_ms: 2.0,
            max_wait_ms: 50.0,
        }
    }

    fn delays(p: &BackoffPolicy, attempts: u32, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        let mut unit = || rng.next_unit();
        let mut previous = 0.0;
        (0..attempts)
            .map(|n| {
                let d = p.delay_ms(n, 0.0, previous, &mut unit);
                previous = d;
                d
            })
            .collect()
    }

    #[test]
    fn none_doubles_from_base_to_cap() {
        let d = delays(&policy(Jitter::None), 7, 1);
        assert_eq!(d, vec![0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
    }

    #[test]
    fn full_stays_within_zero_and_ceiling_and_spreads() {
        let p = policy(Jitter::Full);
        for seed in 0..200 {
            for (n, d) in delays(&p, 12, seed).into_iter().enumerate() {
                let ceiling = (0.5 * 2f64.powi(n as i32)).min(8.0);
                assert!((0.0..=ceiling).contains(&d), "attempt {n}: {d} > {ceiling}");
            }
        }
        // Spread: over many draws at the cap, both halves of [0, cap] occur.
        let at_cap: Vec<f64> = (0..200).map(|s| delays(&p, 6, s)[5]).collect();
        assert!(at_cap.iter().any(|d| *d < 4.0) && at_cap.iter().any(|d| *d >= 4.0));
    }

    #[test]
    fn equal_stays_in_upper_half_of_ceiling() {
        let p = policy(Jitter::Equal);
        for seed in 0..200 {
            for (n, d) in delays(&p, 12, seed).into_iter().enumerate() {
                let ceiling = (0.5 * 2f64.powi(n as i32)).min(8.0);
                assert!(d >= ceiling / 2.0 && d <= ceiling, "attempt {n}: {d}");
            }
        }
    }

    #[test]
    fn decorrelated_stays_between_base_and_cap() {
        let p = policy(Jitter::Decorrelated);
        for seed in 0..200 {
            let d = delays(&p, 30, seed);
            assert!(d.iter().all(|d| (0.5..=8.0).contains(d)), "{d:?}");
        }
    }

    #[test]
    fn cap_is_respected_for_huge_attempt_numbers() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let p = policy(jitter);
            let mut rng = SplitMix64::new(7);
            let mut unit = || rng.next_unit();
            for attempt in [63, 64, 1000, u32::MAX] {
                let d = p.delay_ms(attempt, 1e9, 1e9, &mut unit);
                assert!(d.is_finite() && d <= 8.0, "{jitter}: {d}");
            }
        }
    }

    #[test]
    fn deadline_cuts_last_sleep_and_then_gives_up() {
        let p = policy(Jitter::None);
        let mut unit = || 0.5;
        // 998 ms gone, cap is 8 ms: the sleep is cut to the 2 ms left.
        let d = p.decide(10, Duration::from_millis(998), 8.0, &mut unit);
        assert_eq!(d, Decision::RetryAfter(Duration::from_millis(2)));
        let d = p.decide(11, Duration::from_millis(1000), 8.0, &mut unit);
        assert_eq!(d, Decision::GiveUp(GiveUpReason::Deadline));
    }

    #[test]
    fn simulated_wait_never_sleeps_past_the_deadline() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let p = policy(jitter);
            let mut rng = SplitMix64::new(3);
            let mut unit = || rng.next_unit();
            let (mut elapsed, mut previous, mut attempt) = (Duration::ZERO, 0.0, 0);
            loop {
                match p.decide(attempt, elapsed, previous, &mut unit) {
                    Decision::RetryAfter(d) => {
                        elapsed += d;
                        previous = d.as_secs_f64() * 1000.0;
                        attempt += 1;
                        assert!(elapsed <= Duration::from_millis(1000) + Duration::from_nanos(1));
                    }
                    Decision::GiveUp(reason) => {
                        assert_eq!(reason, GiveUpReason::Deadline);
                        break;
                    }
                }
                assert!(attempt < 1_000_000, "{jitter}: wait never ended");
            }
        }
    }

    #[test]
    fn aging_makes_older_waits_poll_faster() {
        let p = BackoffPolicy {
            aging_ms: Some(50.0),
            ..policy(Jitter::None)
        };
        // Young: exponential from base up to the cap.
        assert_eq!(p.delay_ms(0, 10.0, 0.0, &mut || 0.5), 0.5);
        assert_eq!(p.delay_ms(6, 49.9, 8.0, &mut || 0.5), 8.0);
        // Aged: cap * (aging / age)^2, whatever the attempt number ...
        assert_eq!(p.delay_ms(6, 50.0, 8.0, &mut || 0.5), 8.0);
        assert_eq!(p.delay_ms(6, 100.0, 8.0, &mut || 0.5), 2.0);
        assert_eq!(p.delay_ms(6, 200.0, 8.0, &mut || 0.5), 0.5);
        // ... never below base / 4, however old.
        assert_eq!(p.delay_ms(6, 1e7, 8.0, &mut || 0.5), 0.125);
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            let p = BackoffPolicy { jitter, ..p };
            let mut rng = SplitMix64::new(9);
            let mut previous = 8.0;
            for _ in 0..100 {
                previous = p.delay_ms(30, 400.0, previous, &mut || rng.next_unit());
                assert!(
                    previous <= 0.5,
                    "{jitter}: aged delay {previous} above base"
                );
            }
        }
        let off = BackoffPolicy {
            aging_ms: None,
            ..p
        };
        assert_eq!(off.delay_ms(6, 1e6, 8.0, &mut || 0.5), 8.0);
    }

    #[test]
    fn zero_timeout_gives_up_at_once() {
        let p = BackoffPolicy {
            timeout_ms: 0.0,
            ..policy(Jitter::Full)
        };
        let d = p.decide(0, Duration::ZERO, 0.0, &mut || 0.5);
        assert_eq!(d, Decision::GiveUp(GiveUpReason::Deadline));
    }

    #[test]
    fn max_retries_counts_retries_not_calls() {
        let p = BackoffPolicy {
            max_retries: Some(2),
            ..policy(Jitter::None)
        };
        let mut unit = || 0.5;
        assert!(matches!(
            p.decide(0, Duration::ZERO, 0.0, &mut unit),
            Decision::RetryAfter(_)
        ));
        assert!(matches!(
            p.decide(1, Duration::ZERO, 0.0, &mut unit),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            p.decide(2, Duration::ZERO, 0.0, &mut unit),
            Decision::GiveUp(GiveUpReason::MaxRetries)
        );
        let never = BackoffPolicy {
            max_retries: Some(0),
            ..p
        };
        assert_eq!(
            never.decide(0, Duration::ZERO, 0.0, &mut unit),
            Decision::GiveUp(GiveUpReason::MaxRetries)
        );
    }

    #[test]
    fn validation_rejects_each_bad_field() {
        let good = BackoffPolicy::default();
        assert_eq!(good.validated(), Ok(good));
        let cases = [
            (
                BackoffPolicy {
                    base_ms: -1.0,
                    ..good
                },
                "base_ms",
            ),
            (
                BackoffPolicy {
                    base_ms: 0.0,
                    ..good
                },
                "base_ms",
            ),
            (
                BackoffPolicy {
                    base_ms: f64::NAN,
                    ..good
                },
                "base_ms",
            ),
            (
                BackoffPolicy {
                    cap_ms: f64::INFINITY,
                    ..good
                },
                "cap_ms",
            ),
            (
                BackoffPolicy {
                    base_ms: 5.0,
                    cap_ms: 1.0,
                    ..good
                },
                "cap_ms",
            ),
            (
                BackoffPolicy {
                    cap_ms: 1e9,
                    ..good
                },
                "cap_ms",
            ),
            (
                BackoffPolicy {
                    timeout_ms: -5.0,
                    ..good
                },
                "timeout_ms",
            ),
            (
                BackoffPolicy {
                    timeout_ms: f64::NAN,
                    ..good
                },
                "timeout_ms",
            ),
            (
                BackoffPolicy {
                    timeout_ms: 1e12,
                    ..good
                },
                "timeout_ms",
            ),
            (
                BackoffPolicy {
                    aging_ms: Some(-1.0),
                    ..good
                },
                "aging_ms",
            ),
            (
                BackoffPolicy {
                    aging_ms: Some(f64::NAN),
                    ..good
                },
                "aging_ms",
            ),
            (
                BackoffPolicy {
                    handoff_ms: -1.0,
                    ..good
                },
                "handoff_ms",
            ),
            (
                BackoffPolicy {
                    handoff_ms: f64::INFINITY,
                    ..good
                },
                "handoff_ms",
            ),
            (
                BackoffPolicy {
                    handoff_ms: 60_000.0,
                    ..good
                },
                "handoff_ms",
            ),
            (
                BackoffPolicy {
                    max_wait_ms: -1.0,
                    ..good
                },
                "max_wait_ms",
            ),
            (
                BackoffPolicy {
                    max_wait_ms: f64::NAN,
                    ..good
                },
                "max_wait_ms",
            ),
            (
                BackoffPolicy {
                    max_wait_ms: 1e9,
                    ..good
                },
                "max_wait_ms",
            ),
        ];
        for (policy, field) in cases {
            let err = policy.validated().expect_err(field);
            assert_eq!(err.field, field, "{policy:?}");
        }
    }

    #[test]
    fn jitter_names_round_trip() {
        for name in Jitter::NAMES {
            assert_eq!(Jitter::from_name(name).map(Jitter::name), Some(name));
        }
        assert_eq!(Jitter::from_name("Full"), None);
    }
}
