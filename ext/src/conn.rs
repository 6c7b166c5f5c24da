//! [`ConnState`]: everything the extension keeps for one connection (its
//! policy, wait tracker, queue membership and jitter source). It knows
//! neither the busy handler nor the SQL surface: `busy.rs` installs the
//! handler, `sql/` registers the functions and tables that own the state,
//! and the crate root (`lib.rs`) puts them together and takes them off.
//!
//! # Lifetime
//! SQLite 3.40 has no `sqlite3_set_clientdata`, and rusqlite 0.39's (the
//! loadable build's) `busy_handler` takes a plain `fn`. So a connection's state is owned by
//! the SQL functions and tables registered on it (their destructors run
//! when the connection closes), and the busy handler's user-data pointer
//! carries only a numeric id looked up in a registry (`busy.rs`): a stale
//! id can never be a dangling pointer.
//!
//! # Futex mode starts with WAL
//! The file hooks go in at registration, but the side file is opened only
//! when the file's shared memory is first used, i.e. when the database is in
//! WAL mode: a rollback-journal database never gets a side file, and its
//! mode reads `backoff`.

use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use rusqlite::{Connection, ffi};

use crate::budget::CpuBudget;
use crate::clock::now_ns;
use crate::file_hooks::{self, LockObserver, TxnProbe, TxnState};
use crate::policy::backoff::BackoffPolicy;
use crate::policy::json::policy_to_json;
use crate::policy::rng::{SplitMix64, mix64};
use crate::queue::file_queue::FileQueue;
use crate::queue::member::Member;
use crate::queue::priority::{Priority, Settings};
use crate::shared::SideFile;
use crate::slow_waits::{self, LoggedTracker, SlowWaitEvent};
use crate::stats::lock_stats::{LockMode, LockScope, LockStats, RowIdentity};
use crate::stats::registry::{self as stats_registry, FileMetrics, ImmediateBusy, SharedCounters};
use crate::stats::tracker::WaitTracker;

/// The per-connection state: its policy, wait tracker, queue membership
/// and jitter source. [`crate::register`] returns it; Rust code reads and
/// changes the policy and statistics through it without SQL.
#[derive(Debug)]
pub struct ConnState {
    pub(crate) id: u64,
    db_path: String,
    pub(crate) tracker: Arc<LoggedTracker>,
    policy: Mutex<BackoffPolicy>,
    pub(crate) rng: Mutex<SplitMix64>,
    settings: Arc<Settings>,
    hooks: OnceLock<Arc<LockHooks>>,
    /// A per-call deadline (our clock, ns; 0: none) that cuts every wait
    /// shorter than the policy's `timeout_ms`.
    deadline_ns: AtomicU64,
    /// The CPU account of the wait in progress.
    pub(crate) budget: Mutex<Option<CpuBudget>>,
}

/// A connection's view of its database's lock statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct LockSnapshot {
    /// This process's waits on the file.
    pub process: LockStats,
    /// Every process's waits (`None` when the side file is not in use).
    pub file: Option<LockStats>,
}

impl ConnState {
    /// State for a connection whose main database is `db_path`, with the
    /// default policy; nothing is installed yet.
    pub(crate) fn new(id: u64, db_path: &str) -> ConnState {
        let policy = BackoffPolicy::default();
        // Seed from time, pid and id so processes and connections do not
        // draw the same jitter sequence.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = mix64(nanos ^ (u64::from(std::process::id()) << 32) ^ mix64(id));
        ConnState {
            id,
            db_path: db_path.to_string(),
            tracker: Arc::new(LoggedTracker::new(WaitTracker::new(
                stats_registry::global().file(db_path),
            ))),
            policy: Mutex::new(policy),
            rng: Mutex::new(SplitMix64::new(seed)),
            settings: Arc::new(Settings::new(
                Priority::Interactive,
                policy.handoff_ms,
                policy.max_wait_ms,
            )),
            hooks: OnceLock::new(),
            deadline_ns: AtomicU64::new(0),
            budget: Mutex::new(None),
        }
    }

    /// The main database file this connection's waits count under.
    pub fn db_path(&self) -> &str {
        &self.db_path
    }

    /// This connection's current policy.
    ///
    /// ```
    /// let conn = rusqlite::Connection::open_in_memory()?;
    /// let state = hybrid::register(&conn)?;
    /// assert_eq!(state.policy(), hybrid::BackoffPolicy::default());
    /// # Ok::<(), rusqlite::Error>(())
    /// ```
    pub fn policy(&self) -> BackoffPolicy {
        *self.policy.lock()
    }

    /// Replaces this connection's policy. Errors (and changes nothing) if
    /// the policy breaks a rule of [`BackoffPolicy::validated`].
    pub fn set_policy(&self, policy: BackoffPolicy) -> Result<(), crate::policy::PolicyError> {
        let policy = policy.validated()?;
        *self.policy.lock() = policy;
        self.settings
            .set_tenure(policy.handoff_ms, policy.max_wait_ms);
        Ok(())
    }

    /// This connection's priority class for the write lock.
    pub fn priority(&self) -> Priority {
        self.settings.priority()
    }

    /// Sets this connection's priority class (applies to its next wait).
    pub fn set_priority(&self, priority: Priority) {
        self.settings.set_priority(priority);
    }

    /// Cuts every wait of this connection short at `deadline` (until
    /// cleared with `None`), whatever the policy's `timeout_ms`: a caller
    /// with a deadline of its own sets it once per call instead of
    /// rewriting the policy.
    pub fn set_deadline(&self, deadline: Option<Instant>) {
        let ns = deadline.map_or(0, |d| {
            let left = d.saturating_duration_since(Instant::now());
            (now_ns() + left.as_nanos() as u64).max(1)
        });
        self.deadline_ns.store(ns, Ordering::Relaxed);
    }

    /// How long (ms, from now) a wait that began `elapsed` ago may still
    /// last: the policy's timeout, cut by the deadline if one is set.
    pub(crate) fn time_left_ms(&self, policy: &BackoffPolicy, elapsed: std::time::Duration) -> f64 {
        let by_policy = policy.timeout_ms - elapsed.as_secs_f64() * 1000.0;
        match self.deadline_ns.load(Ordering::Relaxed) {
            0 => by_policy,
            deadline => by_policy.min(deadline.saturating_sub(now_ns()) as f64 / 1e6),
        }
    }

    /// This connection's queue membership, in futex mode.
    pub(crate) fn member(&self) -> Option<&Arc<Member>> {
        self.hooks.get().and_then(|h| h.member())
    }

    /// This connection's database's lock statistics now: this process's
    /// row and, in futex mode, every process's.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let conn = rusqlite::Connection::open(dir.path().join("s.db"))?;
    /// let state = hybrid::register(&conn)?;
    /// conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x)")?;
    /// let snapshot = state.snapshot();
    /// let futex = hybrid::FUTEX_QUEUE; // Linux
    /// assert_eq!(snapshot.process.mode.as_str(), if futex { "futex" } else { "backoff" });
    /// assert_eq!(snapshot.file.map(|f| f.scope.as_str()), futex.then_some("file"));
    /// # Ok::<(), rusqlite::Error>(())
    /// ```
    pub fn snapshot(&self) -> LockSnapshot {
        LockSnapshot {
            process: process_row(self.tracker.file(), Some(policy_to_json(&self.policy()))),
            file: SideFile::existing(&self.db_path).map(|side| file_row(&self.db_path, &side)),
        }
    }

    /// Re-reads `PRAGMA busy_timeout`: a positive value means SQLite's
    /// default handler replaced ours (a zero one or another custom handler
    /// cannot be seen). Returns whether ours is still assumed in force.
    pub(crate) fn refresh(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let timeout_ms: i64 = conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0))?;
        if timeout_ms > 0 {
            self.tracker.set_handler_installed(false);
        }
        Ok(self.tracker.handler_installed())
    }

    /// Puts the file hooks on `conn`'s main file when it is a writable file
    /// database (read-only connections never take the write lock). Returns
    /// whether they went in; without them the connection stays in backoff
    /// mode.
    pub(crate) fn attach_hooks(&self, conn: &Connection) -> bool {
        if self.db_path == ":memory:" || conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return false;
        }
        let hooks = Arc::new(LockHooks {
            db_path: self.db_path.clone(),
            tracker: Arc::clone(&self.tracker),
            settings: Arc::clone(&self.settings),
            member: OnceLock::new(),
            wal_seen: AtomicBool::new(false),
            upgrade_from_read: AtomicBool::new(false),
        });
        // SAFETY: `conn` is this state's open connection, on this thread.
        if !unsafe {
            file_hooks::attach(conn.handle(), Arc::clone(&hooks) as Arc<dyn LockObserver>)
        } {
            return false;
        }
        let _ = self.hooks.set(hooks);
        true
    }
}

/// The registration of each connection handle, so registering a connection
/// again keeps its state. A handle can be reused by a later connection, so
/// an entry counts only while its state is alive and its file hooks are
/// still the ones on that connection's file.
static REGISTERED: LazyLock<Mutex<HashMap<usize, Weak<ConnState>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The live registration of `conn`, if it has one with file hooks (a
/// connection without them, in memory or read-only, is simply registered
/// afresh: it has no queue membership to lose).
pub(crate) fn registered(conn: &Connection) -> Option<Arc<ConnState>> {
    // SAFETY: only the handle's address is used here.
    let db = unsafe { conn.handle() };
    let state = REGISTERED.lock().get(&(db as usize))?.upgrade()?;
    let hooks = Arc::clone(state.hooks.get()?) as Arc<dyn LockObserver>;
    // SAFETY: `conn` is open and used by this thread.
    unsafe { file_hooks::observed_by(db, &hooks) }.then_some(state)
}

/// Records `state` as `conn`'s registration (forgetting dead ones).
pub(crate) fn remember(conn: &Connection, state: &Arc<ConnState>) {
    // SAFETY: only the handle's address is used as a key.
    let db = unsafe { conn.handle() } as usize;
    let mut registered = REGISTERED.lock();
    registered.retain(|_, state| state.strong_count() > 0);
    registered.insert(db, Arc::downgrade(state));
}

/// This process's row of `file`, showing `policy`.
pub(crate) fn process_row(file: &FileMetrics, policy: Option<String>) -> LockStats {
    let process = file.snapshot();
    LockStats::from_counts(
        RowIdentity {
            db: file.path().to_string(),
            scope: LockScope::Process,
            mode: if file.shared().is_some() {
                LockMode::Futex
            } else {
                LockMode::Backoff
            },
            connections: Some(process.connections),
            handler_active: Some(process.handler_active),
            policy,
        },
        &process.counts,
    )
}

/// The file-wide row of `db_path`, from its side file.
pub(crate) fn file_row(db_path: &str, side: &SideFile) -> LockStats {
    LockStats::from_counts(
        RowIdentity {
            db: db_path.to_string(),
            scope: LockScope::File,
            mode: LockMode::Futex,
            connections: None,
            handler_active: None,
            policy: None,
        },
        &side.counts(),
    )
}

/// What the file hooks report to: one connection's queue membership,
/// opened at the first sign of WAL mode. A separate object (not the
/// `ConnState`) so the file's wrapper never keeps a closed connection's
/// functions alive.
#[derive(Debug)]
struct LockHooks {
    db_path: String,
    tracker: Arc<LoggedTracker>,
    settings: Arc<Settings>,
    /// `Some` in futex mode; `None` if the side file could not be used.
    member: OnceLock<Option<Arc<Member>>>,
    wal_seen: AtomicBool,
    /// The write lock held now was taken by a read transaction.
    upgrade_from_read: AtomicBool,
}

impl LockHooks {
    fn member(&self) -> Option<&Arc<Member>> {
        self.member.get().and_then(Option::as_ref)
    }

    /// Opens the queue (once per connection); failures mean backoff mode.
    fn open_member(&self) -> Option<Arc<Member>> {
        let queue = FileQueue::open(&self.db_path).ok()?;
        self.tracker
            .file()
            .attach_shared(Arc::clone(queue.side()) as Arc<dyn SharedCounters>);
        Some(Arc::new(Member::new(queue, Arc::clone(&self.settings))))
    }
}

impl LockObserver for LockHooks {
    fn wal_in_use(&self) {
        // A plain load first: this runs on every shared-memory lock call.
        if !self.wal_seen.load(Ordering::Relaxed) && !self.wal_seen.swap(true, Ordering::Relaxed) {
            self.member.get_or_init(|| self.open_member());
        }
    }

    fn before_write_lock(&self) {
        if let Some(member) = self.member() {
            member.before_attempt();
        }
    }

    fn write_lock_result(&self, rc: c_int, probe: &TxnProbe<'_>) {
        if rc == ffi::SQLITE_OK {
            // Remembered for the release: only a lock taken by a read
            // transaction can be given back at once as a stale snapshot.
            let from_read = probe.main_txn_state() == Some(TxnState::Read);
            self.upgrade_from_read.store(from_read, Ordering::Relaxed);
            let Some(member) = self.member() else {
                return;
            };
            member.set_attempt_busy(false);
            if member.on_acquired() {
                self.tracker.file().handoff();
            }
            // The wait (if any) ends here, exactly: no provisional state.
            self.tracker.settle();
            return;
        }
        let busy = rc & 0xff == ffi::SQLITE_BUSY;
        // In a transaction already, SQLite calls no busy handler: the
        // caller gets this SQLITE_BUSY now (`sqlite3BtreeBeginTrans` calls
        // the handler only from no transaction).
        let seen_by_caller = busy
            && matches!(
                probe.main_txn_state(),
                Some(TxnState::Read | TxnState::Write)
            );
        if let Some(member) = self.member() {
            member.set_attempt_busy(busy && !seen_by_caller);
        }
        if seen_by_caller {
            self.count_immediate(ImmediateBusy::InReadTx);
        }
    }

    fn write_lock_released(&self, probe: &TxnProbe<'_>) {
        if let Some(member) = self.member() {
            member.on_released();
        }
        // Taken by a read transaction and given back while it is still a
        // read transaction: `walBeginWriteTransaction` found the snapshot
        // stale and returns SQLITE_BUSY_SNAPSHOT to the caller. (A
        // successful upgrade makes it a write transaction before anything
        // can release the lock; commit and rollback release it as one. The
        // one other way, in sqlite3BtreeBeginTrans: an I/O error while
        // creating page 1 of an empty database, inside a read transaction.)
        if self.upgrade_from_read.swap(false, Ordering::Relaxed)
            && probe.main_txn_state() == Some(TxnState::Read)
        {
            self.count_immediate(ImmediateBusy::Snapshot);
        }
    }
}

impl LockHooks {
    /// Counts a caller-visible `SQLITE_BUSY*` no busy handler saw, and
    /// tells the slow-wait log (which names the remedy).
    fn count_immediate(&self, kind: ImmediateBusy) {
        self.tracker.file().immediate_busy(kind);
        let event = match kind {
            ImmediateBusy::InReadTx => SlowWaitEvent::BusyInReadTransaction,
            ImmediateBusy::Snapshot => SlowWaitEvent::BusySnapshot,
        };
        slow_waits::report_immediate(&self.db_path, event);
    }
}

/// SQLite's result code for a registration error (`SQLITE_NOMEM` stays
/// itself, so an out-of-memory open reports out of memory).
pub(crate) fn error_code(error: &rusqlite::Error) -> c_int {
    match error {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::OutOfMemory => {
            ffi::SQLITE_NOMEM
        }
        _ => ffi::SQLITE_ERROR,
    }
}
