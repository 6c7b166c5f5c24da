//! Fair, fast hand-off of a database's write lock between connections in
//! any process, through the shared side file (`sidefile.rs`).
//!
//! SQLite's write lock has no queue: whoever retries at the right instant
//! wins, and the connection that just committed (it retries at once) nearly
//! always does. Sleeping waiters cannot compete with that. This module adds
//! a queue beside the lock; the file wrapper (`shim.rs`) consults it on
//! every write-lock attempt, acquisition and release.
//!
//! # The rules
//! * **Queued waiters go in order.** A connection that found the lock busy
//!   takes a slot and a ticket. Only the *head* (interactive before
//!   background, then lowest ticket) may try the lock, and only once the
//!   current tenure is over; the others sleep on their slot's futex.
//!   (Why wait for the tenure even if the lock looks free: SQLite itself
//!   sometimes takes the write lock and gives it straight back, when the
//!   connection's snapshot went stale, `SQLITE_BUSY_SNAPSHOT`, and retries
//!   at once. That connection owns the fresh tenure, so it gets the lock
//!   back instead of losing its turn to the next waiter. A holder that goes
//!   idle costs the head at most `handoff_ms`.)
//! * **Bounded barging (lock cohorting by time).** A connection not in the
//!   queue may take the lock when nobody waits, or when it holds the
//!   current *tenure* and the tenure is younger than `handoff_ms`: the
//!   releasing writer may re-acquire at once (no context switch, warm
//!   caches: throughput), but only for `handoff_ms` while others wait
//!   (fairness). The tenure starts at the first acquisition made while
//!   nobody waited, or when a new connection takes over.
//! * **Wake on release.** A release after the tenure has expired wakes the
//!   head at once. During a tenure, the releasing connection predicts from
//!   its own history whether it is coming straight back: a writer in a loop
//!   re-takes the lock within microseconds (keep the tenure, wake nobody),
//!   a request handler does not (give up the tenure and wake the head now,
//!   so a short collision costs a wake-up, not a tenure). Misjudged idle
//!   holders are caught by the head's poll and [`IDLE_GRACE`].
//! * **Only participants are refused.** A refusal is answered by the hybrid
//!   busy handler, which queues the connection. If the connection's busy
//!   handler was replaced (`PRAGMA busy_timeout`, Python's
//!   `connect(timeout=...)`), nobody answers; after
//!   [`UNANSWERED_REFUSALS`] such refusals it is treated like a process
//!   without the extension (tries the lock freely) until the hybrid
//!   handler runs for it again.
//! * **Nothing hangs.** Every sleep is bounded; waiters refresh a heartbeat
//!   every few ms, a head whose heartbeat is stale is skipped, and a slot of
//!   a dead process is freed. Background waiters older than
//!   [`BACKGROUND_PROMOTE`] count as interactive, so they cannot starve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::sidefile::{
    MAX_SLOTS, RECLAIM_NS, STALE_NS, SideFile, Slot, futex_wait, futex_wake, monotonic_ns,
    process_alive,
};

/// Longest sleep of the head of the queue between attempts.
pub const HEAD_POLL: Duration = Duration::from_millis(1);
/// Longest spin of the head for a release it expects soon.
pub const HEAD_SPIN: Duration = Duration::from_micros(300);
/// During a tenure the head looks at least this often whether the holder
/// has gone idle (so a short wait stays short).
pub const TENURE_POLL: Duration = Duration::from_micros(500);
/// A lock free for this long after a release is free: the holder is not
/// coming straight back (it re-takes within a few µs when it is), so the
/// head may take it even during the holder's tenure.
pub const IDLE_GRACE: Duration = Duration::from_micros(200);
/// A connection whose release-to-next-attempt gap averages below this is
/// "coming straight back" (a writer in a loop): it keeps its tenure at
/// release. Longer than [`IDLE_GRACE`] so that scheduling noise on a busy
/// machine does not flip a looping writer into handing over every time.
pub const REGRAB_LIMIT: Duration = Duration::from_micros(500);
/// Gaps are clipped to this before averaging, so one long pause (or the
/// unknown start) is forgotten after a few dozen quick cycles.
const REGRAB_CLIP: Duration = Duration::from_millis(10);
/// The head starts spinning this long before the expected release.
pub const SPIN_LEAD: Duration = Duration::from_micros(150);
/// Longest sleep of other waiters (their heartbeat interval).
pub const HEARTBEAT: Duration = Duration::from_millis(20);
/// Refusals not followed by the hybrid busy handler before the connection
/// is taken to have another busy handler (and is no longer refused).
pub const UNANSWERED_REFUSALS: u32 = 3;
/// Background waiters waiting longer than this are served as interactive.
pub const BACKGROUND_PROMOTE: Duration = Duration::from_millis(250);

/// A connection's priority class for the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Request handlers: served first (the default).
    Interactive = 0,
    /// Bulk work (the write buffer's flusher): served after interactive
    /// waiters, but never starved.
    Background = 1,
}

impl Priority {
    /// `"interactive"` or `"background"`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Background => "background",
        }
    }

    /// Parses a name from [`Priority::name`].
    pub fn from_name(name: &str) -> Option<Priority> {
        match name {
            "interactive" => Some(Priority::Interactive),
            "background" => Some(Priority::Background),
            _ => None,
        }
    }
}

/// What the busy handler should do after [`Handoff::wait_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This connection may try the lock now.
    Retry,
    /// The deadline passed while waiting; the slot was left.
    Deadline,
    /// No free slot: fall back to plain backoff.
    NoSlot,
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// One connection's side of the queue.
#[derive(Debug)]
pub struct Handoff {
    side: Arc<SideFile>,
    token: u64,
    slot: Mutex<Option<usize>>,
    /// The slot's wake word when this connection last went to try the lock.
    last_wake_seen: AtomicU32,
    /// When this connection last went to try the lock (monotonic ns).
    last_retry_ns: AtomicU64,
    priority: AtomicU32,
    handoff_ns: AtomicU64,
    /// Refusals since the hybrid busy handler last ran for this connection.
    unanswered_refusals: AtomicU32,
    /// When this connection last released the lock (0: not since its last
    /// attempt).
    last_release_ns: AtomicU64,
    /// Moving average of the gap between this connection's release and
    /// its next attempt: short for a writer in a loop, long for a handler.
    regrab_ewma_ns: AtomicU64,
}

impl Handoff {
    /// A connection's queue state on `side`, with tenure length `handoff`.
    pub fn new(side: Arc<SideFile>, handoff: Duration) -> Handoff {
        // Unique across processes: pid in the high half.
        let token = (u64::from(std::process::id()) << 32)
            | (NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
        Handoff {
            side,
            token,
            slot: Mutex::new(None),
            last_wake_seen: AtomicU32::new(0),
            last_retry_ns: AtomicU64::new(0),
            priority: AtomicU32::new(Priority::Interactive as u32),
            handoff_ns: AtomicU64::new(handoff.as_nanos() as u64),
            unanswered_refusals: AtomicU32::new(0),
            last_release_ns: AtomicU64::new(0),
            // Unknown at first: assume it does not come straight back.
            regrab_ewma_ns: AtomicU64::new(REGRAB_CLIP.as_nanos() as u64),
        }
    }

    /// The side file this connection queues on.
    pub fn side(&self) -> &Arc<SideFile> {
        &self.side
    }

    /// This connection's priority class.
    pub fn priority(&self) -> Priority {
        if self.priority.load(Ordering::Relaxed) == 1 {
            Priority::Background
        } else {
            Priority::Interactive
        }
    }

    /// Changes the priority class (applies to the next wait).
    pub fn set_priority(&self, priority: Priority) {
        self.priority.store(priority as u32, Ordering::Relaxed);
    }

    /// Changes the tenure length.
    pub fn set_handoff(&self, handoff: Duration) {
        self.handoff_ns
            .store(handoff.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Whether this connection holds a queue slot now.
    pub fn is_queued(&self) -> bool {
        self.slot.lock().is_some()
    }

    fn slot_class(slot: &Slot, now_ns: u64) -> u32 {
        let background = slot.priority.load(Ordering::Relaxed) == Priority::Background as u32;
        let waited = now_ns.saturating_sub(slot.wait_start_ns.load(Ordering::Relaxed));
        u32::from(background && waited < BACKGROUND_PROMOTE.as_nanos() as u64)
    }

    /// The head of the queue: the live waiter with the lowest (class,
    /// ticket). Frees slots of dead processes on the way.
    pub fn head(&self, now_ns: u64) -> Option<usize> {
        let header = self.side.header();
        if header.waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut best: Option<((u32, u64), usize)> = None;
        for (index, slot) in self.side.slots() {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 {
                continue;
            }
            let heartbeat = slot.heartbeat_ns.load(Ordering::Acquire);
            let age = now_ns.saturating_sub(heartbeat);
            if heartbeat == 0 || age >= STALE_NS {
                if heartbeat != 0
                    && age >= RECLAIM_NS
                    && !process_alive(slot.pid.load(Ordering::Relaxed))
                {
                    self.free_slot(index, owner);
                }
                continue;
            }
            let key = (
                Self::slot_class(slot, now_ns),
                slot.ticket.load(Ordering::Relaxed),
            );
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, index));
            }
        }
        best.map(|(_, index)| index)
    }

    fn others_waiting(&self, now_ns: u64) -> bool {
        let mine = *self.slot.lock();
        self.head(now_ns).is_some_and(|head| Some(head) != mine)
    }

    /// Whether the current tenure leaves the lock to others: no tenure,
    /// our own, expired, or its holder released the lock and did not come
    /// straight back (idle for [`IDLE_GRACE`]).
    fn tenure_over(&self, now_ns: u64) -> bool {
        let header = self.side.header();
        let owner = header.tenure_owner.load(Ordering::Acquire);
        let idle = header.held.load(Ordering::Acquire) == 0
            && now_ns.saturating_sub(header.released_at_ns.load(Ordering::Acquire))
                >= IDLE_GRACE.as_nanos() as u64;
        owner == 0
            || owner == self.token
            || idle
            || now_ns.saturating_sub(header.tenure_start_ns.load(Ordering::Acquire))
                >= self.handoff_ns.load(Ordering::Relaxed)
    }

    /// Before an attempt at the write lock: whether to really try it
    /// (false: answer "busy" and let the busy handler queue).
    pub fn may_try(&self, now_ns: u64) -> bool {
        let released = self.last_release_ns.swap(0, Ordering::Relaxed);
        if released != 0 {
            // Weight 1/8: one slow cycle (a preemption) must not flip the
            // prediction; a changed habit shows within a dozen cycles.
            let clip = REGRAB_CLIP.as_nanos() as u64;
            let gap = now_ns.saturating_sub(released).min(clip);
            // Never above `clip`: it starts there and averages clipped gaps.
            let average = self.regrab_ewma_ns.load(Ordering::Relaxed);
            self.regrab_ewma_ns
                .store(average - average / 8 + gap / 8, Ordering::Relaxed);
        }
        if let Some(mine) = *self.slot.lock() {
            return self.head(now_ns) == Some(mine) && self.tenure_over(now_ns);
        }
        if !self.others_waiting(now_ns) {
            return true;
        }
        if self.unanswered_refusals.load(Ordering::Relaxed) >= UNANSWERED_REFUSALS {
            return true; // another busy handler: we cannot queue it
        }
        let header = self.side.header();
        let in_tenure = header.tenure_owner.load(Ordering::Acquire) == self.token
            && now_ns.saturating_sub(header.tenure_start_ns.load(Ordering::Acquire))
                < self.handoff_ns.load(Ordering::Relaxed);
        if !in_tenure {
            self.unanswered_refusals.fetch_add(1, Ordering::Relaxed);
        }
        in_tenure
    }

    /// The write lock was acquired (called while holding it).
    pub fn on_acquired(&self, now_ns: u64) {
        let had_slot = self.slot.lock().take();
        if let Some(index) = had_slot {
            self.free_slot(index, self.token);
        }
        let header = self.side.header();
        header.holder_since_ns.store(now_ns, Ordering::Release);
        header.held.store(1, Ordering::Release);
        let contended = self.others_waiting(now_ns);
        if header.tenure_owner.load(Ordering::Acquire) != self.token || !contended {
            header.tenure_start_ns.store(now_ns, Ordering::Release);
            header.tenure_owner.store(self.token, Ordering::Release);
        }
        if had_slot.is_some() {
            // The next waiter is now the head: let it start watching.
            if let Some(head) = self.head(now_ns) {
                futex_wake(&self.side.slot(head).wake);
            }
        }
    }

    /// The write lock was released.
    pub fn on_released(&self, now_ns: u64) {
        self.last_release_ns.store(now_ns.max(1), Ordering::Relaxed);
        let header = self.side.header();
        header.released_at_ns.store(now_ns, Ordering::Release);
        header.held.store(0, Ordering::Release);
        // Races between processes only blur the average; it is a hint.
        let hold = now_ns.saturating_sub(header.holder_since_ns.load(Ordering::Acquire));
        let average = header.hold_ewma_ns.load(Ordering::Relaxed);
        header.hold_ewma_ns.store(
            if average == 0 {
                hold
            } else {
                average - average / 8 + hold / 8
            },
            Ordering::Relaxed,
        );
        header.releases.fetch_add(1, Ordering::Release);
        if header.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let mine = header.tenure_owner.load(Ordering::Acquire) == self.token;
        let tenure_over = !mine
            || now_ns.saturating_sub(header.tenure_start_ns.load(Ordering::Acquire))
                >= self.handoff_ns.load(Ordering::Relaxed);
        let coming_back =
            self.regrab_ewma_ns.load(Ordering::Relaxed) < REGRAB_LIMIT.as_nanos() as u64;
        if mine && !tenure_over && !coming_back {
            // This connection usually pauses after a release: hand over now.
            let _ = header.tenure_owner.compare_exchange(
                self.token,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        if tenure_over || !coming_back {
            if let Some(head) = self.head(now_ns) {
                futex_wake(&self.side.slot(head).wake);
            }
        }
    }

    /// In the busy handler, after a write-lock attempt was refused or
    /// failed: joins the queue if needed and sleeps until this connection
    /// is the head and has reason to try (woken, or [`HEAD_POLL`] passed),
    /// or until `deadline_ns` (monotonic).
    pub fn wait_turn(&self, deadline_ns: u64) -> Turn {
        self.unanswered_refusals.store(0, Ordering::Relaxed);
        let mine = {
            let mut slot = self.slot.lock();
            match *slot {
                Some(index) => index,
                None => match self.claim_slot() {
                    Some(index) => {
                        *slot = Some(index);
                        index
                    }
                    None => return Turn::NoSlot,
                },
            }
        };
        let my_slot = self.side.slot(mine);
        let header = self.side.header();
        loop {
            let now = monotonic_ns();
            my_slot.heartbeat_ns.store(now, Ordering::Release);
            if now >= deadline_ns {
                self.leave();
                return Turn::Deadline;
            }
            let word = my_slot.wake.load(Ordering::Acquire);
            let is_head = self.head(now) == Some(mine);
            let my_turn = is_head && self.tenure_over(now);
            let sleep = if !my_turn {
                // Not our turn: sleep until woken (we became head, or the
                // holder handed over), at most a heartbeat, or until the
                // tenure ends if we are the head.
                if is_head {
                    self.until_tenure_end(now)
                } else {
                    HEARTBEAT
                }
            } else if word != self.last_wake_seen.load(Ordering::Relaxed) {
                return self.retry(word, now); // woken by a release
            } else if header.held.load(Ordering::Acquire) == 0 {
                // No participant holds it. Try now, unless we just tried
                // and failed (then a process without the extension holds
                // it and only polling helps).
                if now.saturating_sub(self.last_retry_ns.load(Ordering::Relaxed))
                    >= HEAD_POLL.as_nanos() as u64
                {
                    return self.retry(word, now);
                }
                HEAD_POLL
            } else {
                // Held: sleep until just before the release we expect (by
                // the average hold), then spin on the release counter, so
                // the hand-off costs no wake-up and little CPU.
                let expected = header.holder_since_ns.load(Ordering::Acquire)
                    + header.hold_ewma_ns.load(Ordering::Relaxed);
                let spin_from = expected.saturating_sub(SPIN_LEAD.as_nanos() as u64);
                if spin_from > now {
                    Duration::from_nanos(spin_from - now).min(HEAD_POLL)
                } else if self.spin_for_release(now) {
                    return self.retry(my_slot.wake.load(Ordering::Acquire), monotonic_ns());
                } else if now.saturating_sub(self.last_retry_ns.load(Ordering::Relaxed))
                    >= HEAD_POLL.as_nanos() as u64
                {
                    // Held far longer than usual: the holder may have been
                    // killed (the kernel freed its lock, but not our `held`
                    // flag). Trying costs one failed attempt per HEAD_POLL.
                    return self.retry(word, now);
                } else {
                    HEAD_POLL
                }
            };
            let timeout = sleep
                .max(Duration::from_micros(20))
                .min(Duration::from_nanos(deadline_ns.saturating_sub(now)));
            futex_wait(&my_slot.wake, word, timeout);
        }
    }

    fn retry(&self, word: u32, now_ns: u64) -> Turn {
        self.last_wake_seen.store(word, Ordering::Relaxed);
        self.last_retry_ns.store(now_ns, Ordering::Relaxed);
        Turn::Retry
    }

    /// Time until the current tenure ends, at most [`TENURE_POLL`] (to
    /// notice an idle holder early).
    fn until_tenure_end(&self, now_ns: u64) -> Duration {
        let header = self.side.header();
        let tenure_end = header.tenure_start_ns.load(Ordering::Acquire)
            + self.handoff_ns.load(Ordering::Relaxed);
        Duration::from_nanos(tenure_end.saturating_sub(now_ns)).min(TENURE_POLL)
    }

    /// Whether this connection holds the current, unexpired tenure (it may
    /// re-take the lock at once, e.g. after SQLite's snapshot bounce).
    pub fn owns_tenure(&self, now_ns: u64) -> bool {
        let header = self.side.header();
        header.tenure_owner.load(Ordering::Acquire) == self.token
            && now_ns.saturating_sub(header.tenure_start_ns.load(Ordering::Acquire))
                < self.handoff_ns.load(Ordering::Relaxed)
    }

    /// Spins on the release counter for up to [`HEAD_SPIN`]; returns
    /// whether a release was seen.
    fn spin_for_release(&self, now_ns: u64) -> bool {
        let header = self.side.header();
        let releases = header.releases.load(Ordering::Acquire);
        let until = now_ns + HEAD_SPIN.as_nanos() as u64;
        let mut spins = 0u32;
        while monotonic_ns() < until {
            if header.releases.load(Ordering::Acquire) != releases
                || header.held.load(Ordering::Acquire) == 0
            {
                return true;
            }
            spins += 1;
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        false
    }

    /// Leaves the queue (the wait gave up); wakes the next head if this
    /// connection was the head.
    pub fn leave(&self) {
        let Some(index) = self.slot.lock().take() else {
            return;
        };
        let was_head = self.head(monotonic_ns()) == Some(index);
        self.free_slot(index, self.token);
        if was_head {
            if let Some(head) = self.head(monotonic_ns()) {
                futex_wake(&self.side.slot(head).wake);
            }
        }
    }

    fn claim_slot(&self) -> Option<usize> {
        let header = self.side.header();
        let start = (self.token as usize).wrapping_mul(31) % MAX_SLOTS;
        for offset in 0..MAX_SLOTS {
            let index = (start + offset) % MAX_SLOTS;
            let slot = self.side.slot(index);
            if slot
                .owner
                .compare_exchange(0, self.token, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let now = monotonic_ns();
            // Fill the slot before its heartbeat makes it visible as live.
            slot.ticket.store(
                header.next_ticket.fetch_add(1, Ordering::AcqRel),
                Ordering::Relaxed,
            );
            slot.wait_start_ns.store(now, Ordering::Relaxed);
            slot.pid.store(std::process::id(), Ordering::Relaxed);
            slot.priority
                .store(self.priority.load(Ordering::Relaxed), Ordering::Relaxed);
            self.last_wake_seen
                .store(slot.wake.load(Ordering::Acquire), Ordering::Relaxed);
            header.waiting.fetch_add(1, Ordering::AcqRel);
            slot.heartbeat_ns.store(now, Ordering::Release);
            return Some(index);
        }
        None
    }

    /// Frees slot `index` if `owner` still owns it.
    fn free_slot(&self, index: usize, owner: u64) {
        let slot = self.side.slot(index);
        // Hide the slot (stale heartbeat) before it becomes claimable, so a
        // new owner's half-written fields are never read as live.
        slot.heartbeat_ns.store(0, Ordering::Release);
        if slot
            .owner
            .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let _ =
                self.side
                    .header()
                    .waiting
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        Some(n.saturating_sub(1))
                    });
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.leave();
    }
}

/// One waiter, for `hybrid_lock_waiters`.
#[derive(Debug, Clone, PartialEq)]
pub struct WaiterView {
    /// The waiting process.
    pub pid: u32,
    /// Its class.
    pub priority: Priority,
    /// Time waited so far.
    pub waited: Duration,
    /// Its queue ticket.
    pub ticket: u64,
    /// Whether it is the head of the queue now.
    pub is_head: bool,
    /// Whether its heartbeat is stale (skipped until it shows life or is freed).
    pub stale: bool,
}

/// Everyone queued on `side` now, in serving order (live before stale).
pub fn waiters(side: &SideFile) -> Vec<WaiterView> {
    let now = monotonic_ns();
    let mut out: Vec<((bool, u32, u64), WaiterView)> = Vec::new();
    for (_, slot) in side.slots() {
        if slot.owner.load(Ordering::Acquire) == 0 {
            continue;
        }
        let heartbeat = slot.heartbeat_ns.load(Ordering::Acquire);
        if heartbeat == 0 {
            continue;
        }
        let stale = now.saturating_sub(heartbeat) >= STALE_NS;
        let class = Handoff::slot_class(slot, now);
        let ticket = slot.ticket.load(Ordering::Relaxed);
        let view = WaiterView {
            pid: slot.pid.load(Ordering::Relaxed),
            priority: if slot.priority.load(Ordering::Relaxed) == 1 {
                Priority::Background
            } else {
                Priority::Interactive
            },
            waited: Duration::from_nanos(
                now.saturating_sub(slot.wait_start_ns.load(Ordering::Relaxed)),
            ),
            ticket,
            is_head: false,
            stale,
        };
        out.push(((stale, class, ticket), view));
    }
    out.sort_by_key(|(key, _)| *key);
    let mut views: Vec<WaiterView> = out.into_iter().map(|(_, v)| v).collect();
    if let Some(first) = views.first_mut().filter(|v| !v.stale) {
        first.is_head = true;
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn side() -> (tempfile::TempDir, Arc<SideFile>) {
        let dir = tempfile::tempdir().unwrap();
        let side = SideFile::open(dir.path().join("h.db").to_str().unwrap()).unwrap();
        (dir, side)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn uncontended_lock_is_always_tried() {
        let (_dir, side) = side();
        let a = Handoff::new(Arc::clone(&side), ms(2));
        for _ in 0..3 {
            assert!(a.may_try(monotonic_ns()));
            a.on_acquired(monotonic_ns());
            a.on_released(monotonic_ns());
        }
        assert_eq!(side.header().waiting.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn holder_may_barge_only_within_its_tenure() {
        let (_dir, side) = side();
        let holder = Handoff::new(Arc::clone(&side), ms(50));
        let waiter = Handoff::new(Arc::clone(&side), ms(50));
        // Teach the holder that it comes straight back after a release
        // (a writer in a loop), while nobody waits.
        let mut t = monotonic_ns();
        for _ in 0..40 {
            assert!(holder.may_try(t));
            holder.on_acquired(t);
            holder.on_released(t + 1_000);
            t += 11_000;
        }
        let t0 = t;
        holder.may_try(t0);
        holder.on_acquired(t0);
        waiter
            .claim_slot()
            .map(|i| *waiter.slot.lock() = Some(i))
            .unwrap();
        holder.on_released(t0 + 1_000);
        assert!(
            holder.may_try(t0 + 10_000),
            "it comes back within its tenure"
        );
        holder.on_acquired(t0 + 10_000);
        assert!(!holder.may_try(t0 + 60_000_000), "tenure over: must queue");
        assert!(waiter.may_try(t0 + 60_000_000), "the head may try");
        let newcomer = Handoff::new(Arc::clone(&side), ms(50));
        assert!(!newcomer.may_try(t0), "newcomers never jump the queue");
    }

    #[test]
    fn a_holder_that_pauses_hands_over_at_release() {
        let (_dir, side) = side();
        // A request handler: releases, then comes back much later.
        let handler = Handoff::new(Arc::clone(&side), ms(50));
        let waiter = Handoff::new(Arc::clone(&side), ms(50));
        let t0 = monotonic_ns();
        handler.may_try(t0);
        handler.on_acquired(t0);
        waiter
            .claim_slot()
            .map(|i| *waiter.slot.lock() = Some(i))
            .unwrap();
        handler.on_released(t0 + 1_000);
        assert!(
            waiter.may_try(t0 + 2_000),
            "the tenure was handed over at release"
        );
        assert!(
            !handler.may_try(t0 + 3_000),
            "and the handler queues if it comes back"
        );
    }

    #[test]
    fn a_connection_whose_handler_never_answers_stops_being_refused() {
        let (_dir, side) = side();
        let waiter = Handoff::new(Arc::clone(&side), ms(2));
        *waiter.slot.lock() = Some(waiter.claim_slot().unwrap());
        let other = Handoff::new(Arc::clone(&side), ms(2));
        let now = monotonic_ns();
        for _ in 0..UNANSWERED_REFUSALS {
            assert!(!other.may_try(now), "refused while the queue is non-empty");
        }
        assert!(
            other.may_try(now),
            "nobody answered the refusals: treated as a non-participant"
        );
        // Our handler runs for it again (it was re-installed): refused again.
        assert_eq!(other.wait_turn(monotonic_ns()), Turn::Deadline);
        assert!(!other.may_try(monotonic_ns()));
    }

    #[test]
    fn head_is_interactive_first_then_oldest_ticket() {
        let (_dir, side) = side();
        let make = |p: Priority| {
            let h = Handoff::new(Arc::clone(&side), ms(2));
            h.set_priority(p);
            let i = h.claim_slot().unwrap();
            *h.slot.lock() = Some(i);
            (h, i)
        };
        let (_bg, _) = make(Priority::Background);
        let (_i1, first_interactive) = make(Priority::Interactive);
        let (_i2, _) = make(Priority::Interactive);
        let probe = Handoff::new(Arc::clone(&side), ms(2));
        assert_eq!(probe.head(monotonic_ns()), Some(first_interactive));
        let listed = waiters(&side);
        assert_eq!(listed.len(), 3);
        assert!(listed[0].is_head && listed[0].priority == Priority::Interactive);
        assert_eq!(listed[2].priority, Priority::Background);
    }

    #[test]
    fn background_waiters_are_promoted_after_a_while() {
        let (_dir, side) = side();
        let bg = Handoff::new(Arc::clone(&side), ms(2));
        bg.set_priority(Priority::Background);
        let b = bg.claim_slot().unwrap();
        *bg.slot.lock() = Some(b);
        let it = Handoff::new(Arc::clone(&side), ms(2));
        let i = it.claim_slot().unwrap();
        *it.slot.lock() = Some(i);
        let now = monotonic_ns();
        assert_eq!(it.head(now), Some(i));
        // Pretend the background wait began long ago (heartbeats fresh).
        side.slot(b).wait_start_ns.store(
            now - BACKGROUND_PROMOTE.as_nanos() as u64 - 1,
            Ordering::Relaxed,
        );
        assert_eq!(it.head(now), Some(b), "older ticket wins once promoted");
    }

    #[test]
    fn stale_slots_are_skipped_and_dead_ones_freed() {
        let (_dir, side) = side();
        let ghost = Handoff::new(Arc::clone(&side), ms(2));
        let g = ghost.claim_slot().unwrap();
        let live = Handoff::new(Arc::clone(&side), ms(2));
        let l = live.claim_slot().unwrap();
        *live.slot.lock() = Some(l);
        let now = monotonic_ns();
        assert_eq!(live.head(now), Some(g), "the ghost's ticket is older");
        // The ghost stops heartbeating and its process is gone.
        side.slot(g)
            .heartbeat_ns
            .store(now - STALE_NS - 1, Ordering::Relaxed);
        assert_eq!(live.head(now), Some(l), "stale: skipped");
        side.slot(g)
            .heartbeat_ns
            .store(now - RECLAIM_NS - 1, Ordering::Relaxed);
        side.slot(g).pid.store(4_000_000, Ordering::Relaxed);
        live.head(now);
        assert_eq!(side.slot(g).owner.load(Ordering::Relaxed), 0, "freed");
        assert_eq!(side.header().waiting.load(Ordering::Relaxed), 1);
        std::mem::forget(ghost); // its slot was reclaimed, not left
    }

    #[test]
    fn release_after_tenure_wakes_the_head_promptly() {
        let (_dir, side) = side();
        let holder = Arc::new(Handoff::new(Arc::clone(&side), ms(0)));
        holder.on_acquired(monotonic_ns());
        let waiter = Arc::new(Handoff::new(Arc::clone(&side), ms(0)));
        let (tx, rx) = std::sync::mpsc::channel();
        let w = Arc::clone(&waiter);
        let thread = std::thread::spawn(move || {
            let deadline = monotonic_ns() + 10_000_000_000;
            let mut turns = 0;
            // The first turn comes at the head poll; keep waiting as the
            // lock is "held" until the release below.
            loop {
                let turn = w.wait_turn(deadline);
                turns += 1;
                if turn != Turn::Retry || rx.try_recv().is_ok() {
                    return (turn, turns, Instant::now());
                }
            }
        });
        std::thread::sleep(ms(50));
        assert!(waiter.is_queued());
        let released = Instant::now();
        tx.send(()).unwrap();
        holder.on_released(monotonic_ns());
        let (turn, _turns, at) = thread.join().unwrap();
        assert_eq!(turn, Turn::Retry);
        assert!(
            at.duration_since(released) < ms(20),
            "{:?}",
            at.duration_since(released)
        );
    }

    #[test]
    fn waiting_past_the_deadline_leaves_the_queue() {
        let (_dir, side) = side();
        let holder = Handoff::new(Arc::clone(&side), ms(1000));
        holder.on_acquired(monotonic_ns());
        let first = Handoff::new(Arc::clone(&side), ms(2));
        let i = first.claim_slot().unwrap();
        *first.slot.lock() = Some(i);
        let second = Handoff::new(Arc::clone(&side), ms(2));
        let start = Instant::now();
        assert_eq!(
            second.wait_turn(monotonic_ns() + 30_000_000),
            Turn::Deadline
        );
        assert!(start.elapsed() >= ms(25));
        assert!(!second.is_queued());
        assert_eq!(side.header().waiting.load(Ordering::Relaxed), 1);
    }
}
