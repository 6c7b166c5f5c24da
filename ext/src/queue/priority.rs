//! A connection's priority class and the tenure it claims: the settings
//! the queue's rules (`mod.rs`) read for each member.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::shared::layout::{MAX_HANDOFF_MS, MAX_HANDOFF_NS};

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

    pub(super) fn handoff_ns(&self) -> u64 {
        self.handoff_ns.load(Ordering::Relaxed).min(MAX_HANDOFF_NS)
    }
}
