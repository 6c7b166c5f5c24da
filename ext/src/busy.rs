//! The busy handler: SQLite's `sqlite3_busy_handler` callback, joined to
//! one connection's policy, queue membership and wait tracker.
//!
//! Data flows one way: SQLite calls [`busy_callback`] → it asks the queue
//! (futex mode, a write-lock wait) or the [`BackoffPolicy`] what to do →
//! it tells the connection's wait tracker what happened → the statistics
//! tables read the tracker's file.
//!
//! # Gotcha: `PRAGMA busy_timeout` removes the handler
//! SQLite keeps one busy handler per connection. `PRAGMA busy_timeout = N`,
//! `sqlite3_busy_timeout()` (Python's `sqlite3.connect(timeout=...)` calls
//! it) and `sqlite3_busy_handler()` replace ours. `hybrid_busy_timeout(ms)`
//! installs ours again. The queue never depends on the handler being ours:
//! it never refuses an attempt (`queue/`).
//!
//! # Every long wait is cheap
//! Whatever the mode, a wait keeps to its CPU budget (`budget.rs`): sleeps
//! are stretched once a wait has used more than a small burst plus 1% of
//! the time it has waited.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, ffi};

use crate::budget::CpuBudget;
use crate::clock::now_ns;
use crate::conn::ConnState;
use crate::policy::backoff::{BackoffPolicy, Decision};
use crate::queue::member::{Member, Turn};
use crate::stats::tracker::CallContext;

/// Every live connection state by id, so the busy callback finds its state
/// without holding a raw pointer to it. Entries are removed when the state
/// drops.
static LIVE_STATES: LazyLock<Mutex<HashMap<u64, Weak<ConnState>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Immediate retries after a snapshot bounce before backing off.
const BOUNCE_RETRIES: u32 = 3;

/// A fresh id for a connection state.
pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Makes `state` findable by its id.
pub(crate) fn publish(state: &Arc<ConnState>) {
    LIVE_STATES.lock().insert(state.id, Arc::downgrade(state));
}

/// Forgets the state with `id` (its connection closed).
pub(crate) fn forget(id: u64) {
    LIVE_STATES.lock().remove(&id);
}

fn lookup(id: u64) -> Option<Arc<ConnState>> {
    LIVE_STATES.lock().get(&id).and_then(Weak::upgrade)
}

impl Drop for ConnState {
    fn drop(&mut self) {
        forget(self.id);
    }
}

/// Installs `state`'s busy handler on `conn`, replacing any other handler
/// or busy timeout, and records that it is in force.
pub(crate) fn install_handler(conn: &Connection, state: &ConnState) -> rusqlite::Result<()> {
    install(conn, state.id)?;
    state.tracker.set_handler_installed(true);
    Ok(())
}

/// Removes whatever busy handler `conn` has (ours included).
#[cfg_attr(not(feature = "loadable"), allow(dead_code))]
pub(crate) fn remove_handler(conn: &Connection) {
    // SAFETY: removing the busy handler of our own open connection; a null
    // callback is SQLite's documented way to have none.
    unsafe {
        ffi::sqlite3_busy_handler(conn.handle(), None, std::ptr::null_mut());
    }
}

/// Installs the busy callback for the state with `id` on `conn`.
fn install(conn: &Connection, id: u64) -> rusqlite::Result<()> {
    // SAFETY: `conn.handle()` is an open connection; SQLite copies the
    // callback and the user-data value, which is an id, not a pointer, so
    // it never dangles.
    let rc = unsafe {
        ffi::sqlite3_busy_handler(
            conn.handle(),
            Some(busy_callback),
            id as usize as *mut c_void,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// The `xBusy` callback given to `sqlite3_busy_handler`.
///
/// Runs on the thread of the connection that hit the lock. A panic must
/// never unwind into SQLite, so the body is wrapped in `catch_unwind`; a
/// panic gives up the wait (the caller sees `SQLITE_BUSY`, the host lives).
unsafe extern "C" fn busy_callback(user_data: *mut c_void, count: c_int) -> c_int {
    let id = user_data as usize as u64;
    catch_unwind(AssertUnwindSafe(|| match lookup(id) {
        Some(state) => on_busy(&state, count),
        None => stateless_fallback(count),
    }))
    .unwrap_or(0)
}

/// One busy-handler call; returns SQLite's answer (0 = give up).
fn on_busy(state: &ConnState, count: c_int) -> c_int {
    let member = state.member();
    let write_lock = member.is_some_and(|m| m.take_attempt_busy());
    let policy = state.policy();
    let call = state.tracker.handler_called(count, Instant::now());
    let mut budget = match *state.budget.lock() {
        Some(budget) if !call.first => budget,
        _ => CpuBudget::start(),
    };
    let answer = decide(state, member, write_lock, &policy, call, &mut budget);
    *state.budget.lock() = Some(budget);
    answer
}

/// The busy handler's decision for one call (see [`on_busy`]).
fn decide(
    state: &ConnState,
    member: Option<&Arc<Member>>,
    write_lock: bool,
    policy: &BackoffPolicy,
    call: CallContext,
    budget: &mut CpuBudget,
) -> c_int {
    let left_ms = state.time_left_ms(policy, call.elapsed);
    if let Some(member) = member {
        if !write_lock && call.attempt < BOUNCE_RETRIES && member.owns_tenure(now_ns()) {
            // SQLite took the write lock and gave it straight back (stale
            // snapshot, SQLITE_BUSY_SNAPSHOT): this connection still owns
            // the tenure, so retry at once instead of losing its turn.
            state.tracker.chose_retry(Instant::now(), 0.0);
            return 1;
        }
        if write_lock {
            if left_ms <= 0.0 || policy.max_retries.is_some_and(|max| call.attempt >= max) {
                member.leave();
                state.tracker.gave_up(Instant::now());
                return 0;
            }
            let started = Instant::now();
            let deadline = now_ns() + (left_ms * 1_000_000.0) as u64;
            loop {
                let report_at = state
                    .tracker
                    .slow_report_due()
                    .map_or(u64::MAX, |due| now_ns() + due.as_nanos() as u64);
                match member.wait_turn(deadline, report_at, budget) {
                    Turn::Retry => {
                        state
                            .tracker
                            .chose_retry(Instant::now(), started.elapsed().as_secs_f64() * 1000.0);
                        return 1;
                    }
                    Turn::Deadline => {
                        state.tracker.gave_up(Instant::now());
                        return 0;
                    }
                    // The slow-wait log speaks; the wait goes on, still queued.
                    Turn::Report => state.tracker.report_still_waiting(Instant::now()),
                    Turn::NoSlot => break, // the queue is full: plain backoff below
                }
            }
        }
    }
    let effective = BackoffPolicy {
        timeout_ms: (call.elapsed.as_secs_f64() * 1000.0 + left_ms).max(0.0),
        ..*policy
    };
    let decision = {
        let mut rng = state.rng.lock();
        effective.decide(
            call.attempt,
            call.elapsed,
            call.previous_delay_ms,
            &mut || rng.next_unit(),
        )
    };
    match decision {
        Decision::GiveUp(_) => {
            state.tracker.gave_up(Instant::now());
            0
        }
        Decision::RetryAfter(delay) => {
            // Stretched to the CPU budget, but never past the deadline.
            let delay = delay
                .max(budget.required_sleep())
                .min(Duration::from_secs_f64(left_ms.max(0.0) / 1000.0));
            std::thread::sleep(delay);
            state
                .tracker
                .chose_retry(Instant::now(), delay.as_secs_f64() * 1000.0);
            1
        }
    }
}

/// SQLite's own default delays (`sqliteDefaultBusyCallback`), with a 5 s
/// total: used only if a busy call arrives for a state that is gone.
fn stateless_fallback(count: c_int) -> c_int {
    const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    const TIMEOUT_MS: u64 = 5000;
    let count = count.max(0) as usize;
    let (delay, prior) = if count < DELAYS_MS.len() {
        (DELAYS_MS[count], DELAYS_MS[..count].iter().sum())
    } else {
        let last = DELAYS_MS[DELAYS_MS.len() - 1];
        let table_sum: u64 = DELAYS_MS.iter().sum();
        (last, table_sum + last * (count - DELAYS_MS.len()) as u64)
    };
    if prior >= TIMEOUT_MS {
        return 0;
    }
    std::thread::sleep(Duration::from_millis(delay.min(TIMEOUT_MS - prior)));
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_gives_up_after_about_five_seconds_of_delays() {
        // Count how many calls fit in 5 s without sleeping: same arithmetic.
        let mut total = 0u64;
        let mut count = 0usize;
        const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
        while total < 5000 {
            total += if count < 12 { DELAYS_MS[count] } else { 100 };
            count += 1;
        }
        assert_eq!(stateless_fallback(count as c_int + 1), 0);
    }

    #[test]
    fn stale_id_is_not_found_after_drop() {
        let state = Arc::new(ConnState::new(next_id(), "/tmp/busy-test.db"));
        publish(&state);
        let id = state.id;
        assert!(lookup(id).is_some());
        drop(state);
        assert!(lookup(id).is_none());
    }
}
