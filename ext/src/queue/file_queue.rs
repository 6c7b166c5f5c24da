//! The queue over one database's side file: its slots and tickets, who is
//! the head, and what this process has seen of the current tenure (the
//! rules "Queued waiters go in order" and "Bounded barging" in `mod.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::now_unix_ms;
use crate::shared::SideFile;
use crate::shared::layout::{MAX_HANDOFF_NS, MAX_SLOTS};
use crate::shared::sys::futex_wake;

use super::*;
use crate::queue::priority::Priority;

/// The queue rules over one database's side file (shared by every
/// connection of the process on that database).
#[derive(Debug)]
pub(crate) struct FileQueue {
    pub(super) side: Arc<SideFile>,
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
    pub(super) fn tenure_running(&self, token: u64, now: u64) -> bool {
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

    /// How long until the running tenure ends by our observation. (How
    /// often the head looks meanwhile for an idle holder is
    /// `Member::tenure_poll`'s decision, not this one's.)
    pub(super) fn until_tenure_end(&self, now: u64) -> Duration {
        let header = self.side.header();
        let claimed = header.tenure_ns.load(Ordering::Acquire).min(MAX_HANDOFF_NS);
        let age = self
            .side
            .seen()
            .tenure_age(header.tenure_seq.load(Ordering::Acquire), now);
        Duration::from_nanos(claimed.saturating_sub(age))
    }

    /// The serving order key of a slot.
    pub(super) fn order_key(slot: &crate::shared::layout::Slot, now_unix_ms: u64) -> (u32, u64) {
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
    pub(super) fn slot_counts(&self, index: usize, owner: u64, now: u64) -> bool {
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
    pub(super) fn scan_for_head(&self, now: u64) -> Option<usize> {
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
    pub(super) fn wake(&self, index: usize) {
        let word = &self.side.slot(index).wake;
        word.fetch_add(1, Ordering::AcqRel);
        let _ = futex_wake(word, 1);
    }

    /// Claims a free slot for `token`, filled before it becomes visible.
    pub(super) fn claim_slot(&self, token: u64, priority: Priority) -> Option<usize> {
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
    pub(super) fn free_slot(&self, index: usize, owner: u64) {
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
