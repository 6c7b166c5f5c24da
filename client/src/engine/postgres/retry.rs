//! Re-running a write transaction on PostgreSQL: which failures are
//! contention, and how long to wait between attempts.
//!
//! On SQLite two writers that touch the same row meet at the write lock:
//! the second waits *inside* its attempt (the busy handler, jittered, with
//! aging) and then runs alone, so a failed attempt is rare and
//! [`RetryPolicy::max_attempts`] is a bound for rare errors. On PostgreSQL,
//! under `SERIALIZABLE`, both run, and the loser learns it at its `UPDATE`
//! or `COMMIT`: serialization failure (`40001`) or deadlock (`40P01`). That
//! is the same contention, surfacing as a failed attempt; eight sessions
//! incrementing one row fail most of their attempts. So, here:
//!
//! * **conflicts (`40001`, `40P01`) do not use up `max_attempts`**: only
//!   the deadline bounds them, as only the deadline bounds a wait on
//!   SQLite. Every other lock error (`55P03`, the session's
//!   `lock_timeout`, set to the deadline) counts as before.
//! * **between attempts**, the policy's jittered exponential delays, with
//!   **aging** as the extension's busy handler does it: once a transaction
//!   has been retried for [`AGING_MS`], its ceiling shrinks with its age
//!   (`cap * (AGING_MS / age)^2`, never below `base / 4`), so the oldest
//!   transaction retries soonest. A session that lost many times in a row
//!   is the one that comes back first; that is what keeps sessions that
//!   happen to win from starving it.
//!
//! A conflict is always safe to re-run: PostgreSQL rolled the attempt back
//! (`40001` at `COMMIT` means the commit did not happen).
//!
//! **A lost connection** (the server died, a failover began) is retried
//! too, until the deadline, with the policy's delays but no aging (a new
//! attempt first opens a new session, which a multi-host URL with
//! `target_session_attrs=read-write` sends to whichever server is the
//! primary now): the caller in `mod.rs` turns a connection lost during
//! `COMMIT` into [`Error::CommitOutcomeUnknown`] first, so every lost
//! connection that reaches this loop lost an open transaction, which the
//! server rolled back. After the deadline the connection error itself is
//! returned.

use std::time::{Duration, Instant};

use hybrid::BackoffPolicy;

use crate::error::Error;
use crate::retry::{RetryPolicy, random_unit};

/// After this long (ms) of retrying, a transaction's delays shrink with
/// its age (the extension busy handler's default aging).
pub(crate) const AGING_MS: f64 = 10.0;

/// Whether `sqlstate` is contention between transactions (the attempt
/// was rolled back; running it again is the cure).
pub(crate) fn is_conflict_state(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01")
}

/// Whether `error` says the session is gone: the driver's own I/O or
/// closed-connection errors (no SQLSTATE), `08xxx` connection exceptions,
/// `57P01`..`57P03` (shutdown, crash, cannot connect now).
pub(crate) fn is_connection_lost(error: &Error) -> bool {
    match error {
        Error::Io(db) => match db.sqlstate() {
            None => true,
            Some(state) => state.starts_with("08") || state.starts_with("57P"),
        },
        _ => false,
    }
}

/// Whether `error` is a serialization failure or a deadlock.
fn is_conflict(error: &Error) -> bool {
    match error {
        Error::Database(db) => db.sqlstate().is_some_and(is_conflict_state),
        _ => false,
    }
}

/// Runs `attempt` until it returns anything but a lock error. Conflicts
/// are retried until `policy.deadline`; other lock errors also until
/// `policy.max_attempts` of them. Then the last lock error becomes
/// [`Error::LockTimeout`] (its `attempts` counts every attempt).
pub(crate) fn retry_transaction<T>(
    policy: &RetryPolicy,
    mut attempt: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let backoff = BackoffPolicy {
        aging_ms: Some(AGING_MS),
        ..policy.as_backoff()
    };
    let reconnect_backoff = policy.as_backoff();
    let start = Instant::now();
    let (mut attempts, mut counted, mut previous) = (0u32, 0u32, Duration::ZERO);
    loop {
        attempts = attempts.saturating_add(1);
        let error = match attempt() {
            Err(error) if error.is_lock_error() || is_connection_lost(&error) => error,
            other => return other,
        };
        let lost = is_connection_lost(&error);
        if !lost && !is_conflict(&error) {
            counted += 1;
        }
        let elapsed = start.elapsed();
        let left = policy.deadline.saturating_sub(elapsed);
        if counted >= policy.max_attempts || left.is_zero() {
            return Err(error.into_lock_timeout(attempts, elapsed));
        }
        let delay_ms = if lost { &reconnect_backoff } else { &backoff }.delay_ms(
            attempts - 1,
            elapsed.as_secs_f64() * 1000.0,
            previous.as_secs_f64() * 1000.0,
            &mut random_unit,
        );
        let delay = Duration::from_secs_f64(delay_ms / 1000.0).min(left);
        std::thread::sleep(delay);
        previous = delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_states() {
        assert!(is_conflict_state("40001") && is_conflict_state("40P01"));
        assert!(!is_conflict_state("55P03") && !is_conflict_state("23505"));
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut runs = 0;
        let result: Result<(), Error> = retry_transaction(&RetryPolicy::default(), || {
            runs += 1;
            Err(Error::InvalidInput("no".into()))
        });
        assert!(matches!(result, Err(Error::InvalidInput(_))));
        assert_eq!(runs, 1);
    }
}
