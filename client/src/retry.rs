//! Whole-transaction retry: how often and how long [`crate::Database::write`]
//! re-runs a transaction that failed with a lock error.
//!
//! Two layers wait for a busy database. Inside one attempt, the extension's
//! busy handler waits for the lock (jittered backoff with aging); its
//! deadline is set, per attempt, to what is left of this policy's
//! `deadline`. Around attempts, this policy re-runs the *whole* closure when
//! SQLite returns a lock error the handler cannot wait out: `SQLITE_BUSY`
//! after the handler gave up, `SQLITE_BUSY_SNAPSHOT` (a snapshot went stale),
//! `SQLITE_LOCKED`, or a busy error SQLite returns without calling the
//! handler (deadlock avoidance in rollback-journal mode).

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use hybrid::{BackoffPolicy, Jitter};

use crate::error::{Error, Result};

/// How [`crate::Database::write`] retries a transaction on lock errors.
///
/// ```
/// use std::time::Duration;
/// use sqlite_hybrid::RetryPolicy;
///
/// let policy = RetryPolicy { deadline: Duration::from_secs(2), ..RetryPolicy::default() };
/// assert_eq!(policy.max_attempts, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Most attempts (the first run included). At least 1.
    ///
    /// On PostgreSQL, attempts that ended in a serialization failure
    /// (`40001`) or a deadlock (`40P01`) do not count: those are what
    /// ordinary contention looks like there (on SQLite the same contention
    /// is a wait inside one attempt), so only the deadline bounds them.
    pub max_attempts: u32,
    /// First delay between attempts.
    pub base: Duration,
    /// Largest delay between attempts.
    pub cap: Duration,
    /// Total time for all attempts, including time waiting for the lock
    /// inside each attempt.
    pub deadline: Duration,
    /// How delays between attempts are randomised.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// 5 s deadline (the busy handler's own default), up to 20 attempts,
    /// 1 ms to 50 ms full-jitter delays between them: lock errors that reach
    /// this layer are rare and short (a stale snapshot, a checkpoint).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 20,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(50),
            deadline: Duration::from_secs(5),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Checks the fields: [`Error::InvalidInput`] naming the offending one
    /// (`RetryPolicy.max_attempts must be at least 1`), as
    /// [`crate::DatabaseBuilder::open`] reports it.
    ///
    /// ```
    /// use sqlite_hybrid::RetryPolicy;
    ///
    /// let bad = RetryPolicy { max_attempts: 0, ..RetryPolicy::default() };
    /// assert!(bad.validate().unwrap_err().to_string().contains("RetryPolicy.max_attempts"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field, reason: String| Err(Error::invalid_option("RetryPolicy", field, reason));
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1".into());
        }
        if self.base.is_zero() {
            return invalid("base", "must be positive".into());
        }
        if self.cap < self.base {
            return invalid(
                "cap",
                format!(
                    "must be at least base ({:?}), got {:?}",
                    self.base, self.cap
                ),
            );
        }
        Ok(())
    }

    /// These delays as the extension's backoff policy (aging off).
    pub(crate) fn as_backoff(&self) -> BackoffPolicy {
        BackoffPolicy {
            base_ms: self.base.as_secs_f64() * 1000.0,
            cap_ms: self.cap.as_secs_f64() * 1000.0,
            jitter: self.jitter,
            aging_ms: None,
            ..BackoffPolicy::default()
        }
    }

    /// After `attempts` failed attempts and `elapsed` time: the delay before
    /// the next attempt (cut to the time left), or `None` to give up.
    pub fn next_delay(
        &self,
        attempts: u32,
        elapsed: Duration,
        previous: Duration,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let left = self
            .deadline
            .checked_sub(elapsed)
            .filter(|d| !d.is_zero())?;
        let delay_ms = self.as_backoff().delay_ms(
            attempts.saturating_sub(1),
            elapsed.as_secs_f64() * 1000.0,
            previous.as_secs_f64() * 1000.0,
            &mut random_unit,
        );
        Some(Duration::from_secs_f64(delay_ms / 1000.0).min(left))
    }
}

/// Runs `step` until it returns anything but a lock error, with `policy`'s
/// jittered delays between attempts; after its deadline or attempts, the
/// last lock error becomes [`Error::LockTimeout`].
///
/// For the steps SQLite answers with `SQLITE_BUSY` without calling any
/// busy handler: switching a new file to WAL while another process opens
/// it too (every multi-process server's first second), or reading it while
/// another process recovers its WAL.
pub(crate) fn retry_lock_errors<T>(
    policy: &RetryPolicy,
    mut step: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let start = Instant::now();
    let (mut attempts, mut previous) = (0u32, Duration::ZERO);
    loop {
        attempts += 1;
        match step() {
            Err(error) if error.is_lock_error() => {
                match policy.next_delay(attempts, start.elapsed(), previous) {
                    Some(delay) => {
                        std::thread::sleep(delay);
                        previous = delay;
                    }
                    None => return Err(error.into_lock_timeout(attempts, start.elapsed())),
                }
            }
            other => return other,
        }
    }
}

/// A uniform number in `[0, 1)`. Each call hashes with fresh random keys
/// (std's `RandomState` draws them per instance), so two `Database`s, or two
/// processes, never jitter in step, and there is no generator state to seed.
pub(crate) fn random_unit() -> f64 {
    (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.next_delay(1, Duration::ZERO, Duration::ZERO).is_some());
        assert!(p.next_delay(2, Duration::ZERO, Duration::ZERO).is_some());
        assert!(p.next_delay(3, Duration::ZERO, Duration::ZERO).is_none());
    }

    #[test]
    fn gives_up_at_the_deadline_and_caps_delays() {
        let p = RetryPolicy::default();
        assert!(
            p.next_delay(1, Duration::from_secs(5), Duration::ZERO)
                .is_none()
        );
        for attempt in 1..19 {
            let d = p
                .next_delay(attempt, Duration::ZERO, Duration::ZERO)
                .unwrap();
            assert!(d <= Duration::from_millis(50));
        }
        // The last delay is cut to the time left.
        let d = p
            .next_delay(10, Duration::from_millis(4999), Duration::ZERO)
            .unwrap();
        assert!(d <= Duration::from_millis(1));
    }

    #[test]
    fn two_policies_do_not_jitter_in_step() {
        let p = RetryPolicy::default();
        let a: Vec<_> = (0..8)
            .map(|_| p.next_delay(6, Duration::ZERO, Duration::ZERO))
            .collect();
        let b: Vec<_> = (0..8)
            .map(|_| p.next_delay(6, Duration::ZERO, Duration::ZERO))
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                base: Duration::ZERO,
                ..RetryPolicy::default()
            }
            .validate()
            .is_err()
        );
        let bad = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let message = bad.validate().unwrap_err().to_string();
        assert!(
            message.contains("RetryPolicy.cap must be at least base"),
            "{message}"
        );
    }
}
