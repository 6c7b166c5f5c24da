//! Who is queued on a side file right now, in serving order, and who holds
//! the write lock: the tables `hybrid_lock_waiters` and `hybrid_lock_holder`
//! and the slow-wait log. Views for people: the times in them come from
//! the side file (wall clock) and are never used to decide anything.

use std::sync::atomic::Ordering;

use crate::clock::{now_ns, now_unix_ms};
use crate::queue::STALE_NS;
use crate::queue::file_queue::FileQueue;
use crate::queue::priority::Priority;
use crate::shared::SideFile;
use crate::shared::layout::{MAX_HANDOFF_NS, participant_of};

/// One waiter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WaiterView {
    /// The waiting process (for people; never compared).
    pub(crate) pid: u32,
    /// Its class.
    pub(crate) priority: Priority,
    /// Time waited so far, by the wall clock.
    pub(crate) waited_ms: f64,
    /// Its queue ticket.
    pub(crate) ticket: u64,
    /// Whether it is the head of the queue now.
    pub(crate) is_head: bool,
    /// Whether its process is alive but its waiter has not moved for
    /// [`STALE_NS`] (a stopped process): skipped until it moves again.
    pub(crate) stale: bool,
}

/// Everyone queued on `side` whose process lives, in serving order (live
/// before stale).
pub(crate) fn waiters(side: &SideFile) -> Vec<WaiterView> {
    let now = now_ns();
    let now_ms = now_unix_ms();
    // Serving order: live before stale, then (class, ticket).
    type Order = (bool, (u32, u64));
    let mut out: Vec<(Order, WaiterView)> = Vec::new();
    for (index, slot) in side.slots() {
        let owner = slot.owner.load(Ordering::Acquire);
        let beat = slot.beat.load(Ordering::Acquire);
        if owner == 0 || beat == 0 || !side.token_alive(owner) {
            continue;
        }
        let stale = side.seen().beat_age(index, owner, beat, now) >= STALE_NS;
        let key = FileQueue::order_key(slot, now_ms);
        let view = WaiterView {
            pid: slot.pid.load(Ordering::Relaxed),
            priority: Priority::from_raw(slot.priority.load(Ordering::Relaxed)),
            waited_ms: now_ms.saturating_sub(slot.wait_start_unix_ms.load(Ordering::Relaxed))
                as f64,
            ticket: key.1,
            is_head: false,
            stale,
        };
        out.push(((stale, key), view));
    }
    out.sort_by_key(|(key, _)| *key);
    let mut views: Vec<WaiterView> = out.into_iter().map(|(_, v)| v).collect();
    if let Some(first) = views.first_mut().filter(|v| !v.stale) {
        first.is_head = true;
    }
    views
}

/// The process holding the write lock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HolderView {
    /// The holding process (for people; never compared).
    pub(crate) pid: u32,
    /// How long it has held the lock, by the wall clock.
    pub(crate) held_ms: f64,
    /// The length of its tenure (it may re-take the lock within it while
    /// others wait), ms; 0 when it holds no tenure.
    pub(crate) tenure_ms: f64,
    /// How long ago that tenure began, ms (0 without a tenure).
    pub(crate) tenure_elapsed_ms: f64,
}

/// The holder of `side`'s write lock, if a live process with the extension
/// holds it (`None`: free, or held by a connection outside the queue).
pub(crate) fn holder(side: &SideFile) -> Option<HolderView> {
    let header = side.header();
    let token = header.holder.load(Ordering::Acquire);
    if token == 0 || !side.token_alive(token) {
        return None;
    }
    let now_ms = now_unix_ms();
    let since = |at: &std::sync::atomic::AtomicU64| {
        now_ms.saturating_sub(at.load(Ordering::Relaxed)) as f64
    };
    let in_tenure = header.tenure_owner.load(Ordering::Acquire) == token;
    Some(HolderView {
        pid: side
            .participant(participant_of(token))
            .pid
            .load(Ordering::Relaxed),
        held_ms: since(&header.holder_since_unix_ms),
        tenure_ms: if in_tenure {
            header.tenure_ns.load(Ordering::Relaxed).min(MAX_HANDOFF_NS) as f64 / 1e6
        } else {
            0.0
        },
        tenure_elapsed_ms: if in_tenure {
            since(&header.tenure_since_unix_ms)
        } else {
            0.0
        },
    })
}
