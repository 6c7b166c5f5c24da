//! Which thread is inside [`crate::Database::write`]: waiting for the write
//! buffer there would deadlock (the flusher needs the writer connection the
//! caller holds), so `force_flush` and `Ticket::wait` check this first.

use std::cell::Cell;

thread_local! {
    /// Set while this thread runs a `write()` closure.
    static IN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside a write transaction of ours.
pub(crate) fn in_write() -> bool {
    IN_WRITE.with(Cell::get)
}

/// Marks the current thread as writing until dropped (nesting restores the
/// outer value).
pub(crate) struct InWriteGuard(bool);

impl InWriteGuard {
    pub(crate) fn enter() -> InWriteGuard {
        InWriteGuard(IN_WRITE.with(|f| f.replace(true)))
    }
}

impl Drop for InWriteGuard {
    fn drop(&mut self) {
        IN_WRITE.with(|f| f.set(self.0));
    }
}
