//! A connection's priority class and the tenure it claims: the settings
//! the queue's rules (`mod.rs`) read for each member.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shared::layout::{MAX_HANDOFF_MS, MAX_HANDOFF_NS};

/// The shortest tenure `max_wait_ms` sizes (see [`Settings::tenure_ns`]).
pub(crate) const MIN_TENURE_NS: u64 = 2_000_000;

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

    pub(super) fn from_raw(raw: u32) -> Priority {
        if raw == Priority::Background as u32 {
            Priority::Background
        } else {
            Priority::Interactive
        }
    }
}

/// A connection's wishes for the queue, shared with its `ConnState`.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    priority: AtomicU32,
    handoff_ns: AtomicU64,
    max_wait_ns: AtomicU64,
}

impl Settings {
    pub(crate) fn new(priority: Priority, handoff_ms: f64, max_wait_ms: f64) -> Settings {
        let settings = Settings::default();
        settings.set_priority(priority);
        settings.set_tenure(handoff_ms, max_wait_ms);
        settings
    }

    pub(crate) fn priority(&self) -> Priority {
        Priority::from_raw(self.priority.load(Ordering::Relaxed))
    }

    pub(crate) fn set_priority(&self, priority: Priority) {
        self.priority.store(priority as u32, Ordering::Relaxed);
    }

    /// Sets the longest tenure this connection claims (`handoff_ms`, capped
    /// at [`MAX_HANDOFF_MS`]) and the wait it aims to keep the queue within
    /// (`max_wait_ms`, see [`Settings::tenure_ns`]).
    pub(crate) fn set_tenure(&self, handoff_ms: f64, max_wait_ms: f64) {
        let ns = (handoff_ms.clamp(0.0, MAX_HANDOFF_MS) * 1_000_000.0) as u64;
        self.handoff_ns.store(ns, Ordering::Relaxed);
        let ns = (max_wait_ms.max(0.0) * 1_000_000.0) as u64;
        self.max_wait_ns.store(ns, Ordering::Relaxed);
    }

    /// The tenure to claim when `queued` connections wait for the lock and
    /// each turn costs `per_turn_ns` on top of its tenure.
    ///
    /// A newcomer waits for the current holder and every waiter ahead of it:
    /// about `queued + 1` turns. A turn is the tenure, plus the transaction
    /// that runs past its end (a tenure ends at a release), plus the
    /// hand-off; the caller passes the last two as `per_turn_ns`. So
    /// `max_wait / (queued + 1) - per_turn_ns` keeps the wait within
    /// `max_wait_ms`. Longer tenures mean fewer hand-offs, and every
    /// hand-off costs the next holder its warm caches (~0.25 ms measured at
    /// 8 writers, hold 0): the tenure is as long as the wait allows, up to
    /// `handoff_ms`.
    ///
    /// But never below [`MIN_TENURE_NS`] (unless `handoff_ms` is lower):
    /// with a long queue, shorter tenures cost more in hand-offs than they
    /// save in waiting. Measured with 64 writer processes: 0.5 ms tenures
    /// committed 0.41x SQLite's handler with a longest wait of 304 ms; 2 ms
    /// tenures 0.79x and 199 ms. So past about 20 writers queued the wait
    /// grows with the queue, about 2.3 ms per writer ahead.
    pub(super) fn tenure_ns(&self, queued: u32, per_turn_ns: u64) -> u64 {
        let max_wait = self.max_wait_ns.load(Ordering::Relaxed);
        let share = (max_wait / (u64::from(queued) + 1)).saturating_sub(per_turn_ns);
        let longest = self.handoff_ns.load(Ordering::Relaxed).min(MAX_HANDOFF_NS);
        share.max(MIN_TENURE_NS).min(longest)
    }
}
