//! Fair, fast hand-off of a database's write lock between connections in
//! any process, through the shared side file (`shared/`).
//!
//! SQLite's write lock has no queue: whoever retries at the right instant
//! wins, and the connection that just committed (it retries at once) nearly
//! always does. This module adds a queue beside the lock. The file hooks
//! (`file_hooks.rs`) call [`Member::before_attempt`], [`Member::on_acquired`]
//! and [`Member::on_released`] around every attempt, acquisition and
//! release of the WAL write lock; the busy handler calls
//! [`Member::wait_turn`] after a failed attempt.
//!
//! # The rules
//! * **Queued waiters go in order.** A connection whose attempt failed takes
//!   a slot and a ticket. Only the *head* (interactive before background,
//!   then lowest ticket) tries the lock, and only once the current tenure is
//!   over; the others sleep on their slot's futex.
//! * **Bounded barging (lock cohorting by time).** The connection that
//!   holds the current *tenure* may re-take the lock at once after each
//!   commit (no context switch, warm caches: throughput) for `handoff_ms`,
//!   then must queue. No connection can claim more than [`MAX_HANDOFF_MS`]:
//!   waiters cap every tenure by their own clock, so a peer that asks for
//!   more (or writes garbage) gets the cap.
//! * **No attempt is ever refused.** Stock SQLite lets a connection take a
//!   free lock, and so does this queue: a connection without the hybrid
//!   busy handler (or with none) would turn a refusal into an error. Instead
//!   a connection that is not queued and finds the lock free while a head
//!   waits *yields*: it sleeps until the head has taken the lock, at most
//!   [`YIELD_MAX`], then tries (and, if the head got it, fails and queues).
//!   The releasing writer of an expired tenure does the same, which is what
//!   hands the lock over.
//! * **Wake on release.** A release that ends the tenure wakes the head. The
//!   releasing connection also predicts from its own history whether it is
//!   coming straight back; if not, it gives the tenure up at once, so a
//!   short collision costs a wake-up, not a tenure.
//! * **Nothing hangs, whatever the side file says.** A slot counts only
//!   while its process lives (a kernel lock, `shared/mapping.rs`) and its
//!   waiter moves (its beat changes, by the observer's clock); a dead one is
//!   freed, a stopped one skipped. A holder that died is noticed through its
//!   lock byte; a holder that is not a participant is polled for. Every
//!   sleep is bounded, and every value read from the file only ever delays,
//!   by a bounded amount.
//! * Background waiters older than [`BACKGROUND_PROMOTE`] count as
//!   interactive, so they cannot starve.

pub(crate) mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::budget::CpuBudget;
use crate::clock::{now_ns, now_unix_ms};
use crate::shared::SideFile;
use crate::shared::layout::{MAX_HANDOFF_MS, MAX_HANDOFF_NS, MAX_SLOTS};
use crate::shared::sys::{futex_wait, futex_wake};

/// Longest time a connection that is not queued gives the head to take a
/// free lock before trying it itself.
pub(crate) const YIELD_MAX: Duration = Duration::from_millis(2);
/// Longest sleep of a waiter (the interval of its beat).
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(20);
/// During someone else's tenure the head looks this often whether the
/// holder has gone idle (released and not coming back): the release of a
/// holder that meant to come back wakes nobody, and without this poll the
/// head slept through such gaps while non-queued writers took the lock
/// (`ext/tests/paced.rs`: paced writers in one process waited 300-500 ms).
pub(crate) const TENURE_POLL: Duration = Duration::from_micros(500);
/// A waiter whose beat has not moved for this long (observer's clock) is
/// skipped: its process is alive but not running (stopped, swapped out).
pub(crate) const STALE_NS: u64 = 100_000_000;
/// A lock free for this long after a release is idle: the holder is not
/// coming straight back (a looping writer re-takes it within µs).
pub(crate) const IDLE_GRACE_NS: u64 = 200_000;
/// How often the head tries a lock held by a process that does not take
/// part in the queue (it will not be woken at that release).
pub(crate) const HEAD_POLL: Duration = Duration::from_millis(1);
/// A connection whose release-to-next-attempt gap averages below this is
/// "coming straight back" (a writer in a loop) and keeps its tenure at
/// release. Longer than the idle grace, so scheduling noise on a busy
/// machine does not flip a looping writer into handing over every time.
const REGRAB_LIMIT_NS: u64 = 500_000;
/// Gaps are clipped to this before averaging, so one long pause (or the
/// unknown start) is forgotten after a few dozen quick cycles.
const REGRAB_CLIP_NS: u64 = 10_000_000;
/// A release this soon after the acquisition is SQLite's snapshot bounce,
/// not a transaction (taking, checking and dropping the lock takes a few µs).
const BOUNCE_NS: u64 = 25_000;
/// Background waiters waiting longer than this are served as interactive.
pub(crate) const BACKGROUND_PROMOTE: Duration = Duration::from_millis(250);

/// A connection's priority class for the write lock.
///
/// ```
/// use hybrid::Priority;
/// assert_eq!(Priority::from_name("background"), Some(Priority::Background));
/// assert_eq!(Priority::Interactive.name(), "interactive");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// Request handlers: served first (the default).
    #[default]
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

    fn from_raw(raw: u32) -> Priority {
        if raw == Priority::Background as u32 {
            Priority::Background
        } else {
            Priority::Interactive
        }
    }
}

/// What the busy handler should do after [`Member::wait_turn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// This connection may try the lock now.
    Retry,
    /// The deadline passed while waiting; the slot was left.
    Deadline,
    /// No free slot: fall back to plain backoff.
    NoSlot,
    /// The `report_at` time passed (the slow-wait log speaks); still queued.
    Report,
}

/// A connection's wishes for the queue, shared with its `ConnState`.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    priority: AtomicU32,
    handoff_ns: AtomicU64,
}

impl Settings {
    pub(crate) fn new(priority: Priority, handoff_ms: f64) -> Settings {
        let settings = Settings::default();
        settings.set_priority(priority);
        settings.set_handoff_ms(handoff_ms);
        settings
    }

    pub(crate) fn priority(&self) -> Priority {
        Priority::from_raw(self.priority.load(Ordering::Relaxed))
    }

    pub(crate) fn set_priority(&self, priority: Priority) {
        self.priority.store(priority as u32, Ordering::Relaxed);
    }

    /// Sets the tenure this connection claims (capped at [`MAX_HANDOFF_MS`]).
    pub(crate) fn set_handoff_ms(&self, handoff_ms: f64) {
        let ns = (handoff_ms.clamp(0.0, MAX_HANDOFF_MS) * 1_000_000.0) as u64;
        self.handoff_ns.store(ns, Ordering::Relaxed);
    }

    fn handoff_ns(&self) -> u64 {
        self.handoff_ns.load(Ordering::Relaxed).min(MAX_HANDOFF_NS)
    }
}

/// The queue rules over one database's side file (shared by every
/// connection of the process on that database).
#[derive(Debug)]
pub(crate) struct FileQueue {
    side: Arc<SideFile>,
}

impl FileQueue {
    /// The queue of `db_path`, mapping its side file (creating it if
    /// needed). Errors leave the connection in backoff mode.
    pub(crate) fn open(db_path: &str) -> std::io::Result<FileQueue> {
        let side = SideFile::open(db_path)?;
        if !side.can_queue() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not writable here", side.path().display()),
            ));
        }
        Ok(FileQueue { side })
    }

    /// The side file behind this queue.
    pub(crate) fn side(&self) -> &Arc<SideFile> {
        &self.side
    }

    /// Whether a tenure other than `token`'s still runs, by this process's
    /// observation: not over until its claimed length (capped) has passed
    /// since we first saw it, unless its holder went idle.
    fn tenure_running(&self, token: u64, now: u64) -> bool {
        let header = self.side.header();
        let owner = header.tenure_owner.load(Ordering::Acquire);
        if owner == 0 || owner == token {
            return false;
        }
        let claimed = header.tenure_ns.load(Ordering::Acquire).min(MAX_HANDOFF_NS);
        let mut seen = self.side.seen();
        if seen.tenure_age(header.tenure_seq.load(Ordering::Acquire), now) >= claimed {
            return false;
        }
        let idle = header.holder.load(Ordering::Acquire) == 0
            && seen.release_age(header.release_seq.load(Ordering::Acquire), now) >= IDLE_GRACE_NS;
        !idle
    }

    /// How long until the running tenure ends by our observation, at most
    /// [`TENURE_POLL`] (to notice an idle holder early).
    fn until_tenure_end(&self, now: u64) -> Duration {
        let header = self.side.header();
        let claimed = header.tenure_ns.load(Ordering::Acquire).min(MAX_HANDOFF_NS);
        let age = self
            .side
            .seen()
            .tenure_age(header.tenure_seq.load(Ordering::Acquire), now);
        Duration::from_nanos(claimed.saturating_sub(age)).min(TENURE_POLL)
    }

    /// The serving order key of a slot.
    fn order_key(slot: &crate::shared::layout::Slot, now_unix_ms: u64) -> (u32, u64) {
        let background = slot.priority.load(Ordering::Relaxed) == Priority::Background as u32;
        let started = slot.wait_start_unix_ms.load(Ordering::Relaxed);
        let promoted = now_unix_ms.saturating_sub(started) >= BACKGROUND_PROMOTE.as_millis() as u64;
        (
            u32::from(background && !promoted),
            slot.ticket.load(Ordering::Relaxed),
        )
    }

    /// Whether slot `index`, owned by `owner`, counts: its process lives
    /// (else the slot is freed) and its beat moved recently.
    fn slot_counts(&self, index: usize, owner: u64, now: u64) -> bool {
        let slot = self.side.slot(index);
        if !self.side.token_alive(owner) {
            self.free_slot(index, owner);
            return false;
        }
        let beat = slot.beat.load(Ordering::Acquire);
        if beat == 0 {
            return false; // being claimed or freed
        }
        self.side.seen().beat_age(index, owner, beat, now) < STALE_NS
    }

    /// The head of the queue: the counting waiter with the lowest (class,
    /// ticket). Frees slots of dead processes on the way. Trusts the
    /// `waiting` hint that nobody queues (the cheap, uncontended case).
    pub(crate) fn head(&self, now: u64) -> Option<usize> {
        if self.side.header().waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.scan_for_head(now)
    }

    /// [`FileQueue::head`] without trusting the hint: what a queued waiter
    /// uses, so a `waiting` count a peer zeroed cannot hide it.
    fn scan_for_head(&self, now: u64) -> Option<usize> {
        let unix_ms = now_unix_ms();
        let mut best: Option<((u32, u64), usize)> = None;
        for (index, slot) in self.side.slots() {
            let owner = slot.owner.load(Ordering::Acquire);
            if owner == 0 || !self.slot_counts(index, owner, now) {
                continue;
            }
            let key = Self::order_key(slot, unix_ms);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, index));
            }
        }
        best.map(|(_, index)| index)
    }

    /// Wakes the waiter in slot `index`.
    fn wake(&self, index: usize) {
        let word = &self.side.slot(index).wake;
        word.fetch_add(1, Ordering::AcqRel);
        let _ = futex_wake(word, 1);
    }

    /// Claims a free slot for `token`, filled before it becomes visible.
    fn claim_slot(&self, token: u64, priority: Priority) -> Option<usize> {
        let start = (token as usize).wrapping_mul(31) % MAX_SLOTS;
        for offset in 0..MAX_SLOTS {
            let index = (start + offset) % MAX_SLOTS;
            let slot = self.side.slot(index);
            if slot
                .owner
                .compare_exchange(0, token, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let header = self.side.header();
            slot.ticket.store(
                header
                    .next_ticket
                    .fetch_add(1, Ordering::AcqRel)
                    .wrapping_add(1),
                Ordering::Relaxed,
            );
            slot.wait_start_unix_ms
                .store(now_unix_ms(), Ordering::Relaxed);
            slot.pid.store(std::process::id(), Ordering::Relaxed);
            slot.priority.store(priority as u32, Ordering::Relaxed);
            let _ = header
                .waiting
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_add(1))
                });
            // A non-zero beat makes the slot count (release: after the fields).
            slot.beat.store(1, Ordering::Release);
            return Some(index);
        }
        None
    }

    /// Frees slot `index` if `owner` still owns it.
    fn free_slot(&self, index: usize, owner: u64) {
        let slot = self.side.slot(index);
        if slot.owner.load(Ordering::Acquire) != owner {
            return;
        }
        // Hide it first, so a new owner's half-written fields never count.
        slot.beat.store(0, Ordering::Release);
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

/// One connection's place in the queue of its database.
#[derive(Debug)]
pub(crate) struct Member {
    queue: FileQueue,
    settings: Arc<Settings>,
    token: u64,
    slot: Mutex<Option<usize>>,
    /// When this connection's current tenure began (our clock; 0: none).
    tenure_start_ns: AtomicU64,
    /// When this connection last acquired the lock (our clock).
    acquired_ns: AtomicU64,
    /// The slot's wake word when this connection last went to try the lock.
    last_wake_seen: AtomicU32,
    /// When this connection last went to try the lock.
    last_try_ns: AtomicU64,
    /// When this connection last released the lock (0: not since its last
    /// attempt).
    last_release_ns: AtomicU64,
    /// Moving average of the gap between this connection's release and its
    /// next attempt: short for a writer in a loop, long for a handler.
    regrab_ewma_ns: AtomicU64,
    /// The last write-lock attempt failed with `SQLITE_BUSY` (read and
    /// cleared by the busy handler: the wait is for the write lock).
    attempt_busy: AtomicBool,
    /// This attempt follows a yield in vain: the head did not take the free
    /// lock in time, so an acquisition now gets no tenure.
    barged: AtomicBool,
}

impl Member {
    /// A connection's membership of `queue`.
    pub(crate) fn new(queue: FileQueue, settings: Arc<Settings>) -> Member {
        let token = queue.side.new_token();
        Member {
            queue,
            settings,
            token,
            slot: Mutex::new(None),
            tenure_start_ns: AtomicU64::new(0),
            acquired_ns: AtomicU64::new(0),
            last_wake_seen: AtomicU32::new(0),
            last_try_ns: AtomicU64::new(0),
            last_release_ns: AtomicU64::new(0),
            // Unknown at first: assume it does not come straight back.
            regrab_ewma_ns: AtomicU64::new(REGRAB_CLIP_NS),
            attempt_busy: AtomicBool::new(false),
            barged: AtomicBool::new(false),
        }
    }

    /// Whether this connection holds a queue slot now.
    pub(crate) fn is_queued(&self) -> bool {
        self.slot.lock().is_some()
    }

    /// Whether this connection holds the current, unexpired tenure (it may
    /// re-take the lock at once, e.g. after SQLite's snapshot bounce).
    pub(crate) fn owns_tenure(&self, now: u64) -> bool {
        let header = self.queue.side.header();
        header.tenure_owner.load(Ordering::Acquire) == self.token
            && now.saturating_sub(self.tenure_start_ns.load(Ordering::Relaxed))
                < self.settings.handoff_ns()
    }

    /// Records that the last attempt failed (`busy`) or not.
    pub(crate) fn set_attempt_busy(&self, busy: bool) {
        self.attempt_busy.store(busy, Ordering::Relaxed);
        if busy {
            self.barged.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the busy call now running follows a failed write-lock
    /// attempt (and forgets it).
    pub(crate) fn take_attempt_busy(&self) -> bool {
        self.attempt_busy.swap(false, Ordering::Relaxed)
    }

    /// Before an attempt at the write lock. Never refuses: it may sleep
    /// (at most [`YIELD_MAX`]) to let the head of the queue take a free
    /// lock first.
    pub(crate) fn before_attempt(&self) {
        let now = now_ns();
        let released = self.last_release_ns.swap(0, Ordering::Relaxed);
        if released != 0 {
            // Weight 1/8: one slow cycle (a preemption) must not flip the
            // prediction; a changed habit shows within a dozen cycles.
            let gap = now.saturating_sub(released).min(REGRAB_CLIP_NS);
            // Never above the clip: it starts there and averages clipped gaps.
            let average = self.regrab_ewma_ns.load(Ordering::Relaxed);
            self.regrab_ewma_ns
                .store(average - average / 8 + gap / 8, Ordering::Relaxed);
        }
        let header = self.queue.side.header();
        if header.waiting.load(Ordering::Acquire) == 0
            || self.is_queued()
            || self.owns_tenure(now)
            || header.holder.load(Ordering::Acquire) != 0
        {
            return; // nobody to give way to, our turn, or the lock is held
        }
        let seq = header.acquire_seq.load(Ordering::Acquire);
        if self.queue.head(now).is_none() {
            return;
        }
        // The lock is free and a waiter is ahead of us: let it take it.
        header.yielders.fetch_add(1, Ordering::AcqRel);
        let deadline = now + YIELD_MAX.as_nanos() as u64;
        loop {
            let now = now_ns();
            if header.acquire_seq.load(Ordering::Acquire) != seq {
                break;
            }
            if now >= deadline {
                // The head did not take it: whatever we get now is not a
                // tenure of ours (see `on_acquired`).
                self.barged.store(true, Ordering::Relaxed);
                break;
            }
            let _ = futex_wait(
                &header.acquire_seq,
                seq,
                Duration::from_nanos(deadline - now),
            );
        }
        let _ = header
            .yielders
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// The write lock was acquired (called while holding it). Returns
    /// whether this connection was queued: the lock was handed to it.
    pub(crate) fn on_acquired(&self) -> bool {
        let now = now_ns();
        let had_slot = self.slot.lock().take();
        if let Some(index) = had_slot {
            self.queue.free_slot(index, self.token);
        }
        self.acquired_ns.store(now, Ordering::Relaxed);
        let header = self.queue.side.header();
        let now_ms = now_unix_ms();
        header.holder_since_unix_ms.store(now_ms, Ordering::Relaxed);
        header.holder.store(self.token, Ordering::Release);
        header.acquire_seq.fetch_add(1, Ordering::AcqRel);
        if header.yielders.load(Ordering::Acquire) > 0 {
            let _ = futex_wake(&header.acquire_seq, u32::MAX);
        }
        // The `waiting` hint, not a scan of the queue: this runs for every
        // transaction, and a wrong hint only starts or keeps a tenure.
        let contended = header.waiting.load(Ordering::Acquire) > 0;
        // (start, length) of the tenure this acquisition begins, if any.
        let new_tenure = if self.barged.swap(false, Ordering::Relaxed) {
            // We took a free lock the head did not take in time: one
            // transaction, no tenure (the head is woken at our release).
            Some((0, 0))
        } else if header.tenure_owner.load(Ordering::Acquire) != self.token || !contended {
            // A new tenure: we took over, or nobody waited for ours.
            Some((now, self.settings.handoff_ns()))
        } else {
            None // ours goes on
        };
        if let Some((start_ns, length_ns)) = new_tenure {
            self.tenure_start_ns.store(start_ns, Ordering::Relaxed);
            header.tenure_ns.store(length_ns, Ordering::Release);
            header.tenure_owner.store(self.token, Ordering::Release);
            header.tenure_since_unix_ms.store(now_ms, Ordering::Relaxed);
            header.tenure_seq.fetch_add(1, Ordering::AcqRel);
        }
        if had_slot.is_some() {
            // The next waiter is now the head: let it start watching.
            if let Some(head) = self.queue.head(now) {
                self.queue.wake(head);
            }
        }
        had_slot.is_some()
    }

    /// The write lock was released.
    pub(crate) fn on_released(&self) {
        let now = now_ns();
        self.last_release_ns.store(now.max(1), Ordering::Relaxed);
        let header = self.queue.side.header();
        let _ = header
            .holder
            .compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
        header.release_seq.fetch_add(1, Ordering::AcqRel);
        if header.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        let mine = header.tenure_owner.load(Ordering::Acquire) == self.token;
        let tenure_over = !self.owns_tenure(now);
        // SQLite takes the lock and gives it straight back when the
        // connection's snapshot is stale (SQLITE_BUSY_SNAPSHOT), then retries
        // at once: such a bounce keeps the tenure, or the connection would
        // lose its turn to the next waiter.
        let bounce = now.saturating_sub(self.acquired_ns.load(Ordering::Relaxed)) < BOUNCE_NS;
        let coming_back = bounce || self.regrab_ewma_ns.load(Ordering::Relaxed) < REGRAB_LIMIT_NS;
        if mine && (tenure_over || !coming_back) {
            // Hand over now: the head need not wait out our tenure.
            let _ = header.tenure_owner.compare_exchange(
                self.token,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        if (tenure_over || !coming_back)
            && let Some(head) = self.queue.head(now)
        {
            self.queue.wake(head);
        }
    }

    /// In the busy handler, after a failed write-lock attempt: joins the
    /// queue if needed and sleeps until this connection is the head and
    /// has reason to try, or until `deadline_ns` (our clock), or, still
    /// queued, until `report_at_ns`. Sleeps are stretched when the wait is
    /// over its CPU `budget`.
    pub(crate) fn wait_turn(
        &self,
        deadline_ns: u64,
        report_at_ns: u64,
        budget: &mut CpuBudget,
    ) -> Turn {
        let header = self.queue.side.header();
        loop {
            let now = now_ns();
            if now >= deadline_ns {
                self.leave();
                return Turn::Deadline;
            }
            if now >= report_at_ns {
                return Turn::Report;
            }
            // Our slot, claimed now, or claimed again if a peer's garbage
            // took it from us (a bounded delay: we rejoin at the back).
            let Some(mine) = self.own_slot() else {
                return Turn::NoSlot;
            };
            let my_slot = self.queue.side.slot(mine);
            let beat = my_slot.beat.load(Ordering::Relaxed);
            my_slot
                .beat
                .store(beat.wrapping_add(1).max(1), Ordering::Release);
            let word = my_slot.wake.load(Ordering::Acquire);
            let sleep = if self.queue.scan_for_head(now) != Some(mine) {
                // Not our turn: woken when we become the head.
                HEARTBEAT
            } else if self.queue.tenure_running(self.token, now) {
                self.queue.until_tenure_end(now)
            } else {
                let holder = header.holder.load(Ordering::Acquire);
                if holder != 0 && self.queue.side.token_alive(holder) {
                    // A participant holds it and wakes us at its release.
                    HEARTBEAT
                } else if word != self.last_wake_seen.load(Ordering::Relaxed) {
                    // Woken by a release (or by becoming the head): try.
                    match self.throttled(budget) {
                        Some(pause) => pause,
                        None => return self.retry(word, now),
                    }
                } else {
                    if holder != 0 {
                        // It died holding the lock: the kernel freed it.
                        let _ = header.holder.compare_exchange(
                            holder,
                            0,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                    }
                    // Free, or held by a process outside the queue that will
                    // not wake us: try at most every HEAD_POLL.
                    let since = now.saturating_sub(self.last_try_ns.load(Ordering::Relaxed));
                    if since >= HEAD_POLL.as_nanos() as u64 {
                        match self.throttled(budget) {
                            Some(pause) => pause,
                            None => return self.retry(word, now),
                        }
                    } else {
                        HEAD_POLL - Duration::from_nanos(since)
                    }
                }
            };
            let timeout =
                sleep
                    .max(Duration::from_micros(20))
                    .min(HEARTBEAT)
                    .min(Duration::from_nanos(
                        deadline_ns.min(report_at_ns).saturating_sub(now),
                    ));
            let _ = futex_wait(&my_slot.wake, word, timeout);
        }
    }

    /// A pause the CPU budget asks for before the next attempt, if any;
    /// none: the attempt goes out now, and the budget is told.
    fn throttled(&self, budget: &mut CpuBudget) -> Option<Duration> {
        budget.retry_or_pause()
    }

    /// This connection's slot: the one it holds if it still owns it, else
    /// a newly claimed one (`None`: the queue is full). Also re-asserts
    /// this process's participant record, in case a peer overwrote it.
    fn own_slot(&self) -> Option<usize> {
        self.queue.side.reassert_participant();
        let mut slot = self.slot.lock();
        if let Some(index) = *slot
            && self.queue.side.slot(index).owner.load(Ordering::Acquire) == self.token
        {
            return Some(index);
        }
        let index = self
            .queue
            .claim_slot(self.token, self.settings.priority())?;
        self.last_wake_seen.store(
            self.queue.side.slot(index).wake.load(Ordering::Acquire),
            Ordering::Relaxed,
        );
        *slot = Some(index);
        Some(index)
    }

    fn retry(&self, word: u32, now: u64) -> Turn {
        self.last_wake_seen.store(word, Ordering::Relaxed);
        self.last_try_ns.store(now, Ordering::Relaxed);
        Turn::Retry
    }

    /// Leaves the queue (the wait gave up); wakes the next head if this
    /// connection was the head.
    pub(crate) fn leave(&self) {
        let Some(index) = self.slot.lock().take() else {
            return;
        };
        let was_head = self.queue.head(now_ns()) == Some(index);
        self.queue.free_slot(index, self.token);
        if was_head && let Some(head) = self.queue.head(now_ns()) {
            self.queue.wake(head);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.leave();
        let header = self.queue.side.header();
        let _ = header.tenure_owner.compare_exchange(
            self.token,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        let _ = header
            .holder
            .compare_exchange(self.token, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(all(test, hybrid_futex))]
mod tests;
