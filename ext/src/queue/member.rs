//! One connection's place in its database's queue: what happens around
//! each write-lock attempt, acquisition and release (the hand-off and the
//! tenure), and how a queued connection waits for its turn (the rules in
//! `mod.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::budget::CpuBudget;
use crate::clock::{now_ns, now_unix_ms};
use crate::shared::layout::MAX_HANDOFF_NS;
use crate::shared::sys::{futex_wait, futex_wake};

use super::*;
use crate::queue::file_queue::FileQueue;
use crate::queue::priority::Settings;

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

/// One connection's place in the queue of its database.
#[derive(Debug)]
pub(crate) struct Member {
    pub(super) queue: FileQueue,
    pub(super) settings: Arc<Settings>,
    pub(super) token: u64,
    pub(super) slot: Mutex<Option<usize>>,
    /// When this connection's current tenure began (our clock; 0: none).
    pub(super) tenure_start_ns: AtomicU64,
    /// How long that tenure lasts (ns), fixed when it began.
    pub(super) tenure_len_ns: AtomicU64,
    /// When this connection last acquired the lock (our clock).
    pub(super) acquired_ns: AtomicU64,
    /// The slot's wake word when this connection last went to try the lock.
    pub(super) last_wake_seen: AtomicU32,
    /// When this connection last went to try the lock.
    pub(super) last_try_ns: AtomicU64,
    /// The header's `release_seq` and our clock at the head's last look
    /// during a tenure (for [`Member::tenure_poll`]).
    pub(super) poll_seen: Mutex<(u32, u64)>,
    /// When this connection last released the lock (0: not since its last
    /// attempt).
    pub(super) last_release_ns: AtomicU64,
    /// Moving average of how long this connection holds the lock per
    /// transaction (ns; snapshot bounces excluded).
    pub(super) hold_ewma_ns: AtomicU64,
    /// Moving average of the gap between this connection's release and its
    /// next attempt: short for a writer in a loop, long for a handler.
    pub(super) regrab_ewma_ns: AtomicU64,
    /// The last write-lock attempt failed with `SQLITE_BUSY` (read and
    /// cleared by the busy handler: the wait is for the write lock).
    pub(super) attempt_busy: AtomicBool,
    /// This attempt follows a yield in vain: the head did not take the free
    /// lock in time, so an acquisition now gets no tenure.
    pub(super) barged: AtomicBool,
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
            tenure_len_ns: AtomicU64::new(0),
            acquired_ns: AtomicU64::new(0),
            last_wake_seen: AtomicU32::new(0),
            last_try_ns: AtomicU64::new(0),
            poll_seen: Mutex::new((0, 0)),
            last_release_ns: AtomicU64::new(0),
            hold_ewma_ns: AtomicU64::new(0),
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
                < self.tenure_len_ns.load(Ordering::Relaxed)
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
            // Never above the clip: it starts there and averages clipped gaps.
            let gap = now.saturating_sub(released).min(REGRAB_CLIP_NS);
            add_to_average(&self.regrab_ewma_ns, gap);
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
        let queued = header.waiting.load(Ordering::Acquire);
        let contended = queued > 0;
        // (start, length) of the tenure this acquisition begins, if any.
        let new_tenure = if self.barged.swap(false, Ordering::Relaxed) {
            // We took a free lock the head did not take in time: one
            // transaction, no tenure (the head is woken at our release).
            Some((0, 0))
        } else if header.tenure_owner.load(Ordering::Acquire) != self.token || !contended {
            // A new tenure: we took over, or nobody waited for ours.
            let per_turn = self.hold_ewma_ns.load(Ordering::Relaxed) + HANDOFF_ALLOWANCE_NS;
            Some((now, self.settings.tenure_ns(queued, per_turn)))
        } else {
            None // ours goes on
        };
        if let Some((start_ns, length_ns)) = new_tenure {
            self.tenure_start_ns.store(start_ns, Ordering::Relaxed);
            self.tenure_len_ns.store(length_ns, Ordering::Relaxed);
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
        let held = now.saturating_sub(self.acquired_ns.load(Ordering::Relaxed));
        let bounce = held < BOUNCE_NS;
        if !bounce {
            // Clipped: one long transaction must not empty the next tenure.
            add_to_average(&self.hold_ewma_ns, held.min(MAX_HANDOFF_NS));
        }
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
                self.queue.until_tenure_end(now).min(self.tenure_poll(now))
            } else {
                let holder = header.holder.load(Ordering::Acquire);
                if holder != 0 && self.queue.side.token_alive(holder) {
                    // A participant holds it and wakes us at its release.
                    HEARTBEAT
                } else if word != self.last_wake_seen.load(Ordering::Relaxed) {
                    // Woken by a release (or by becoming the head): try.
                    match budget.handed_over(header.release_seq.load(Ordering::Acquire)) {
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
                        match budget.retry_or_pause() {
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

    /// How long the head sleeps between looks during another connection's
    /// tenure: four of the holder's transactions, between
    /// [`TENURE_POLL_MIN`] and [`TENURE_POLL`].
    ///
    /// Why: a look catches a holder that released and is not coming back
    /// (a misprediction, or the holder preempted between its transactions),
    /// which leaves the lock idle until then; but each look costs the head
    /// a wake-up (~10 µs of CPU). Short transactions make an idle lock
    /// expensive, long ones make it cheap: at hold 0 the look every 0.5 ms
    /// is worth its CPU (2 ms lost 10% of the throughput), at hold 1 ms it
    /// doubled the CPU per transaction. The holder's pace is read from how
    /// often `release_seq` moved since the last look.
    fn tenure_poll(&self, now: u64) -> Duration {
        let seq = self.queue.side.header().release_seq.load(Ordering::Acquire);
        let (seen_seq, seen_ns) = std::mem::replace(&mut *self.poll_seen.lock(), (seq, now));
        let releases = seq.wrapping_sub(seen_seq);
        if seen_ns == 0 || releases == 0 || releases > 1_000_000 {
            return TENURE_POLL;
        }
        let per_release = now.saturating_sub(seen_ns) / u64::from(releases);
        Duration::from_nanos(per_release.saturating_mul(4)).clamp(TENURE_POLL_MIN, TENURE_POLL)
    }

    /// This connection's slot: the one it holds if it still owns it, else
    /// a newly claimed one (`None`: the queue is full). Also re-asserts
    /// this process's participant record, in case a peer overwrote it.
    pub(super) fn own_slot(&self) -> Option<usize> {
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

    pub(super) fn retry(&self, word: u32, now: u64) -> Turn {
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

/// Adds `sample` to a moving average with weight 1/8. Only the owning
/// connection's thread writes either average, so load-then-store is enough.
fn add_to_average(average: &AtomicU64, sample: u64) {
    let old = average.load(Ordering::Relaxed);
    average.store(old - old / 8 + sample / 8, Ordering::Relaxed);
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
