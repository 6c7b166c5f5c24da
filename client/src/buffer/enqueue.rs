//! Admission into the queue: one key per table, merging into a queued
//! entry of the same key, and backpressure when the buffer is full.

use std::sync::Arc;
use std::time::Instant;

use super::entry::{Item, TableMode};
use super::keys::same_columns;
use super::options::Backpressure;
use super::pending::{Coalesced, encode_key};
use super::state::Shared;
use super::ticket::TicketCell;
use super::validate::NewOp;
use crate::error::{Error, Result};

impl Shared {
    /// Puts `op` into the queue, its ticket `cell` with it: merged into the
    /// queued entry of the same key if there is one (which never needs
    /// room), else as a new entry once there is room (see the module docs
    /// of `buffer/` for backpressure). Refused when the table is already
    /// used with another key, or append-only, in this buffer.
    pub(super) fn enqueue(&self, op: NewOp, cell: &Arc<TicketCell>) -> Result<()> {
        let shared = self;
        let mut state = shared.state.lock();
        let deadline = match shared.options.backpressure {
            Backpressure::Block { timeout } => Some(Instant::now() + timeout),
            Backpressure::Reject => None,
        };
        let (table, mode) = match &op {
            NewOp::Keyed {
                table, key_columns, ..
            } => (table, TableMode::Keyed(Arc::clone(key_columns))),
            NewOp::Insert { table, .. } => (table, TableMode::Append),
        };
        let name: Arc<str> = Arc::clone(&table.shared_name);
        match (state.modes.get(&name), &mode) {
            (None, _) => {
                state.modes.insert(Arc::clone(&name), mode);
            }
            (Some(TableMode::Keyed(fixed)), TableMode::Keyed(wanted))
                if same_columns(fixed, wanted) => {}
            (Some(TableMode::Append), TableMode::Append) => {}
            (Some(existing), _) => {
                let describe = |m: &TableMode| match m {
                    TableMode::Append => "append-only (insert)".to_string(),
                    TableMode::Keyed(k) => {
                        let cols: Vec<&str> =
                            k.iter().map(|c| table.columns[*c].name.as_str()).collect();
                        format!("keyed on ({})", cols.join(", "))
                    }
                };
                return Err(Error::InvalidInput(format!(
                    "table {} is {} in this write buffer; this call is {}",
                    table.name,
                    describe(existing),
                    describe(&mode)
                )));
            }
        }
        let entry_key = match &op {
            NewOp::Keyed { key_values, .. } => Some((Arc::clone(&name), encode_key(key_values))),
            NewOp::Insert { .. } => None,
        };
        let mut op = Some(op);
        loop {
            if state.closed {
                return Err(Error::Closed);
            }
            // Merging never needs room.
            if let Some(key) = &entry_key {
                let position = state.queue_index.get(key).copied();
                if let Some(Item::Keyed { ops, tickets, .. }) =
                    position.and_then(|p| state.queue.get_mut(p))
                {
                    if let Some(NewOp::Keyed { op: keyed_op, .. }) = op.take() {
                        // Queued entries are not shared, so this never clones.
                        Arc::make_mut(ops).apply(keyed_op);
                    }
                    tickets.push(Arc::clone(cell));
                    state.stats.coalesced += 1;
                    state.stats.enqueued += 1;
                    return Ok(());
                }
            }
            if state.pending_count() + state.in_flight < shared.options.max_pending {
                break;
            }
            // Full: make room as soon as possible, whatever the mode.
            state.flush_requested = true;
            shared.wake.notify_one();
            let full = Error::BufferFull {
                capacity: shared.options.max_pending,
            };
            match deadline {
                None => {
                    state.stats.rejected += 1;
                    return Err(full);
                }
                Some(deadline) => {
                    if shared.room.wait_until(&mut state, deadline).timed_out()
                        && state.pending_count() + state.in_flight >= shared.options.max_pending
                    {
                        state.stats.rejected += 1;
                        return Err(full);
                    }
                }
            }
        }
        let item = match op.take() {
            Some(NewOp::Keyed {
                table,
                key_columns,
                key_values,
                op,
            }) => Item::Keyed {
                key: entry_key.clone().expect("keyed ops have a key"),
                table,
                key_columns,
                key_values,
                ops: Arc::new(Coalesced::of(op)),
                tickets: vec![Arc::clone(cell)],
            },
            Some(NewOp::Insert { table, columns }) => Item::Insert {
                table,
                columns,
                ticket: Arc::clone(cell),
            },
            None => {
                return Err(Error::InvalidInput(
                    "internal: operation consumed twice".into(),
                ));
            }
        };
        if let Some(key) = entry_key {
            let position = state.queue.len();
            state.queue_index.insert(key, position);
        }
        state.queue.push(item);
        state.oldest_pending.get_or_insert_with(Instant::now);
        state.stats.enqueued += 1;
        if state.pending_count() >= shared.options.batch_size {
            shared.wake.notify_one();
        }
        Ok(())
    }
}
