//! The busy handler: joins one connection's policy and wait tracker to
//! SQLite's `sqlite3_busy_handler` callback.
//!
//! Data flows one way: SQLite calls [`busy_callback`] → it asks the
//! connection's [`BackoffPolicy`] how long to sleep → it tells the
//! connection's [`WaitTracker`] what happened → the metrics tables read the
//! tracker's file.
//!
//! # Lifetime of the per-connection state
//! SQLite 3.40 has no `sqlite3_set_clientdata`, and rusqlite 0.39's
//! `busy_handler` takes a plain `fn` with no state. So each connection's
//! [`ConnState`] is owned by the SQL functions and virtual tables registered
//! on it (their destructors run when the connection closes), and the busy
//! handler's user-data pointer carries only a numeric id that is looked up in
//! [`LIVE_STATES`]. A stale id (state already gone) can therefore never be a
//! dangling pointer; the callback then falls back to SQLite's own delay table
//! (see [`stateless_fallback`]).
//!
//! # Gotcha: `PRAGMA busy_timeout` removes the handler
//! SQLite keeps one busy handler per connection. `PRAGMA busy_timeout = N`,
//! `sqlite3_busy_timeout()` (Python's `sqlite3.connect(timeout=...)` calls
//! it) and `sqlite3_busy_handler()` replace ours. A positive busy timeout is
//! visible (`PRAGMA busy_timeout` reads N), so [`ConnState::refresh`] notes
//! it; `PRAGMA busy_timeout = 0` or another custom handler is not visible.
//! `hybrid_busy_timeout(ms)` installs ours again.
//!
//! # Two modes
//! * **futex** (Linux, a file database in WAL mode, side file usable): the
//!   write lock is queued and handed over on release (`handoff.rs`), the
//!   file wrapper (`shim.rs`) reports every acquisition, so waits end as
//!   `acquired` exactly when they do.
//! * **backoff** (everything else, and any busy call not caused by the
//!   write lock): sleep by the jittered policy and retry.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusqlite::{Connection, ffi};

use crate::backoff::{BackoffPolicy, Decision, SplitMix64, mix64};
use crate::config::policy_to_json;
use crate::handoff::{Handoff, Priority, Turn};
use crate::metrics::{self, WaitTracker};
use crate::shim::{self, WriteLockObserver};
use crate::sidefile::{SideFile, monotonic_ns};

/// Every live connection state by id, so the busy callback can find its
/// state without holding a raw pointer to it. Entries are removed when the
/// state drops, so the map holds one entry per open registered connection.
static LIVE_STATES: LazyLock<Mutex<HashMap<u64, Weak<ConnState>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Immediate retries after a snapshot bounce before backing off.
const BOUNCE_RETRIES: u32 = 3;

/// The per-connection state: its policy, its wait tracker, its jitter source.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    tracker: Arc<WaitTracker>,
    policy: Mutex<BackoffPolicy>,
    rng: Mutex<SplitMix64>,
    /// The write-lock queue, in futex mode; `None` in backoff mode.
    handoff: Mutex<Option<Arc<Handoff>>>,
    priority: Mutex<Priority>,
}

/// What the file wrapper reports to in futex mode. A separate object (not
/// the `ConnState`) so the wrapper's table never keeps a closed
/// connection's state alive.
struct LockHooks {
    handoff: Arc<Handoff>,
    tracker: Arc<WaitTracker>,
}

impl WriteLockObserver for LockHooks {
    fn may_try_write_lock(&self) -> bool {
        self.handoff.may_try(monotonic_ns())
    }

    fn write_lock_acquired(&self) {
        self.handoff.on_acquired(monotonic_ns());
        // The wait (if any) ends here, exactly: no provisional state.
        self.tracker.settle();
    }

    fn write_lock_released(&self) {
        self.handoff.on_released(monotonic_ns());
    }
}

impl ConnState {
    /// State for a connection whose main database is `db_path`, with the
    /// default policy. Not yet installed as the busy handler.
    pub fn new(db_path: &str) -> Arc<ConnState> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let file = metrics::global().file(db_path);
        let policy = BackoffPolicy::default();
        file.set_policy_json(policy_to_json(&policy));
        // Seed from time, pid and id so processes and connections do not
        // draw the same jitter sequence.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = mix64(nanos ^ (u64::from(std::process::id()) << 32) ^ mix64(id));
        let state = Arc::new(ConnState {
            id,
            tracker: WaitTracker::new(file),
            policy: Mutex::new(policy),
            rng: Mutex::new(SplitMix64::new(seed)),
            handoff: Mutex::new(None),
            priority: Mutex::new(Priority::Interactive),
        });
        LIVE_STATES.lock().insert(id, Arc::downgrade(&state));
        state
    }

    /// This connection's wait tracker (and through it, its file's metrics).
    pub fn tracker(&self) -> &Arc<WaitTracker> {
        &self.tracker
    }

    /// This connection's current policy.
    pub fn policy(&self) -> BackoffPolicy {
        *self.policy.lock()
    }

    /// Replaces this connection's policy (already validated).
    pub fn set_policy(&self, policy: BackoffPolicy) {
        *self.policy.lock() = policy;
        if let Some(handoff) = self.handoff.lock().as_ref() {
            handoff.set_handoff(Duration::from_secs_f64(policy.handoff_ms / 1000.0));
        }
        self.tracker.file().set_policy_json(policy_to_json(&policy));
    }

    /// Switches `conn` to futex mode when possible: a writable file
    /// database whose side file can be mapped. Returns whether it did
    /// (otherwise the connection stays in backoff mode).
    pub fn enable_handoff(&self, conn: &Connection) -> bool {
        let path = match conn.path() {
            Some(path) if !path.is_empty() => path.to_string(),
            _ => return false,
        };
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return false; // read-only connections never take the write lock
        }
        let Ok(side) = SideFile::open(&path) else {
            return false;
        };
        let handoff = Arc::new(Handoff::new(
            Arc::clone(&side),
            Duration::from_secs_f64(self.policy().handoff_ms / 1000.0),
        ));
        handoff.set_priority(*self.priority.lock());
        let hooks = Arc::new(LockHooks {
            handoff: Arc::clone(&handoff),
            tracker: Arc::clone(&self.tracker),
        });
        // SAFETY: `conn` is this state's open connection, on this thread.
        if !unsafe { shim::attach(conn.handle(), hooks) } {
            return false;
        }
        self.tracker.file().attach_shared(side);
        *self.handoff.lock() = Some(handoff);
        true
    }

    /// `"futex"` or `"backoff"`.
    pub fn mode(&self) -> &'static str {
        if self.handoff.lock().is_some() {
            "futex"
        } else {
            "backoff"
        }
    }

    /// This connection's priority class.
    pub fn priority(&self) -> Priority {
        *self.priority.lock()
    }

    /// Sets this connection's priority class.
    pub fn set_priority(&self, priority: Priority) {
        *self.priority.lock() = priority;
        if let Some(handoff) = self.handoff.lock().as_ref() {
            handoff.set_priority(priority);
        }
    }

    /// Installs this state's busy handler on `conn`, replacing any other
    /// handler or busy timeout.
    pub fn install(&self, conn: &Connection) -> rusqlite::Result<()> {
        // SAFETY: `conn.handle()` is the open connection this state belongs
        // to; SQLite copies the callback and the user-data value. The
        // user-data is an id, not a pointer, so it never dangles.
        let rc = unsafe {
            ffi::sqlite3_busy_handler(
                conn.handle(),
                Some(busy_callback),
                self.id as usize as *mut c_void,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
        }
        self.tracker.set_handler_installed(true);
        Ok(())
    }

    /// Re-reads `PRAGMA busy_timeout`: a positive value means SQLite's
    /// default handler replaced ours. Returns whether ours is still assumed
    /// in force.
    pub fn refresh(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let timeout_ms: i64 = conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0))?;
        if timeout_ms > 0 {
            self.tracker.set_handler_installed(false);
        }
        Ok(self.tracker.handler_installed())
    }

    /// One busy-handler call; returns SQLite's answer (0 = give up).
    fn on_busy(&self, count: c_int) -> c_int {
        let write_lock = shim::take_write_lock_busy();
        let policy = self.policy();
        let call = self.tracker.handler_called(count, Instant::now());
        let handoff = self.handoff.lock().clone();
        if let (false, Some(handoff)) = (write_lock, &handoff) {
            // SQLite took the write lock and gave it straight back (stale
            // snapshot, SQLITE_BUSY_SNAPSHOT): this connection still owns
            // the tenure, so retry at once instead of sleeping past the
            // queue's idle grace and losing the turn.
            if call.attempt < BOUNCE_RETRIES && handoff.owns_tenure(monotonic_ns()) {
                self.tracker.chose_retry(Instant::now(), 0.0);
                return 1;
            }
        }
        if let (true, Some(handoff)) = (write_lock, handoff) {
            let left_ms = policy.timeout_ms - call.elapsed.as_secs_f64() * 1000.0;
            if left_ms <= 0.0 || policy.max_retries.is_some_and(|max| call.attempt >= max) {
                handoff.leave();
                self.tracker.gave_up(Instant::now());
                return 0;
            }
            let started = Instant::now();
            match handoff.wait_turn(monotonic_ns() + (left_ms * 1_000_000.0) as u64) {
                Turn::Retry => {
                    self.tracker
                        .chose_retry(Instant::now(), started.elapsed().as_secs_f64() * 1000.0);
                    return 1;
                }
                Turn::Deadline => {
                    self.tracker.gave_up(Instant::now());
                    return 0;
                }
                Turn::NoSlot => {} // the queue is full: plain backoff below
            }
        }
        let decision = {
            let mut rng = self.rng.lock();
            policy.decide(
                call.attempt,
                call.elapsed,
                call.previous_delay_ms,
                &mut || rng.next_unit(),
            )
        };
        match decision {
            Decision::GiveUp(_) => {
                self.tracker.gave_up(Instant::now());
                0
            }
            Decision::RetryAfter(delay) => {
                std::thread::sleep(delay);
                self.tracker
                    .chose_retry(Instant::now(), delay.as_secs_f64() * 1000.0);
                1
            }
        }
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        LIVE_STATES.lock().remove(&self.id);
    }
}

fn lookup(id: u64) -> Option<Arc<ConnState>> {
    LIVE_STATES.lock().get(&id).and_then(Weak::upgrade)
}

/// The `xBusy` callback given to `sqlite3_busy_handler`.
///
/// Runs on the thread of the connection that hit the lock. A panic must
/// never unwind into SQLite, so the body is wrapped in `catch_unwind`; a
/// panic gives up the wait (the caller sees `SQLITE_BUSY`, the host lives).
unsafe extern "C" fn busy_callback(user_data: *mut c_void, count: c_int) -> c_int {
    let id = user_data as usize as u64;
    catch_unwind(AssertUnwindSafe(|| match lookup(id) {
        Some(state) => state.on_busy(count),
        None => stateless_fallback(count),
    }))
    .unwrap_or(0)
}

/// SQLite's own default delays (`sqliteDefaultBusyCallback`), with a 5 s
/// total: used only if a busy call arrives for a state that is gone, which
/// happens only if registering the extension failed half-way.
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
        // The fallback's own answer at that count is "give up".
        assert_eq!(stateless_fallback(count as c_int + 1), 0);
    }

    #[test]
    fn stale_id_is_not_found_after_drop() {
        let state = ConnState::new("/tmp/handler-test.db");
        let id = state.id;
        assert!(lookup(id).is_some());
        drop(state);
        assert!(lookup(id).is_none());
    }
}
