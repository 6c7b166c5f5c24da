//! Forcing a flush: ask the flusher for one, then wait until every entry
//! enqueued before the call has been written or has failed, or a batch has
//! failed as a whole ([`crate::WriteBuffer::force_flush`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::state::Shared;
use super::ticket::{TicketCell, TicketStatus};
use crate::error::{Error, Result};

impl Shared {
    /// Flushes everything enqueued so far and waits for it, up to
    /// `timeout`.
    pub(super) fn force_flush(&self, timeout: Duration) -> Result<()> {
        let shared = self;
        let failures_before = shared.batch_failures.load(Ordering::Acquire);
        // One ticket per entry: all tickets of an entry resolve together,
        // so its first one stands for it (and `failed` counts entries).
        let cells: Vec<Arc<TicketCell>> = {
            let mut state = shared.state.lock();
            let mut cells: Vec<Arc<TicketCell>> = state
                .queue
                .iter()
                .map(|i| Arc::clone(&i.cells()[0]))
                .collect();
            cells.extend(
                state
                    .in_flight_views
                    .iter()
                    .map(|v| Arc::clone(&v.first_cell)),
            );
            state.flush_requested = true;
            shared.wake.notify_one();
            cells
        };
        let batch_failed = || shared.batch_failures.load(Ordering::Acquire) > failures_before;
        // Entries resolve roughly in queue order, so a cursor that only moves
        // forward checks each one about once (rescanning from the start on
        // every batch was quadratic in the queue length).
        let mut first_unresolved = 0;
        let done = shared.board.wait_until(timeout, || {
            while first_unresolved < cells.len()
                && cells[first_unresolved].status() != TicketStatus::Pending
            {
                first_unresolved += 1;
            }
            batch_failed() || first_unresolved == cells.len()
        });
        let failed: Vec<String> = cells
            .iter()
            .filter_map(|c| match c.status() {
                TicketStatus::Failed(m) => Some(m),
                _ => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            return Err(Error::FlushFailed {
                failed: failed.len(),
                first_error: first.clone(),
            });
        }
        let still_pending = cells
            .iter()
            .filter(|c| c.status() == TicketStatus::Pending)
            .count();
        if still_pending == 0 {
            return Ok(());
        }
        if batch_failed() {
            let error = shared
                .state
                .lock()
                .stats
                .last_error
                .clone()
                .unwrap_or_default();
            return Err(Error::FlushFailed {
                failed: still_pending,
                first_error: format!("batch kept for retry: {error}"),
            });
        }
        debug_assert!(!done);
        Err(Error::Timeout { waited: timeout })
    }
}
