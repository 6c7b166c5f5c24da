//! Read-your-writes: what the buffer holds for one row, queued or being
//! written, combined in the order it will be written
//! ([`crate::WriteBuffer::get`]).

use std::sync::Arc;

use rusqlite::types::Value;

use super::entry::{EntryKey, Item, PendingRow, row_of};
use super::pending::{Before, Coalesced, Columns, encode_key};
use super::state::Shared;
use super::ticket::TicketStatus;
use crate::schema::TableInfo;

impl Shared {
    /// What is pending for the row of `info` whose key is `key_values`
    /// (normalised, in key order); `None` if nothing is, in which case the
    /// database has the current value.
    pub(super) fn pending_row(&self, info: &TableInfo, key_values: &[Value]) -> Option<PendingRow> {
        let entry_key: EntryKey = (Arc::clone(&info.shared_name), encode_key(key_values));
        let state = self.state.lock();
        let in_flight = state
            .in_flight_index
            .get(&entry_key)
            .and_then(|&p| state.in_flight_views.get(p))
            .filter(|view| view.first_cell.status() == TicketStatus::Pending)
            .and_then(|view| view.ops.as_ref());
        let queued = match state
            .queue_index
            .get(&entry_key)
            .and_then(|&p| state.queue.get(p))
        {
            Some(Item::Keyed { ops, .. }) => Some(ops),
            _ => None,
        };
        let combined: Coalesced = match (in_flight, queued) {
            (None, None) => return None,
            (Some(a), None) => (**a).clone(),
            (None, Some(b)) => (**b).clone(),
            (Some(a), Some(b)) => {
                let mut c = (**a).clone();
                c.then(b);
                c
            }
        };
        drop(state);
        let row = |columns: &Columns| row_of(info, columns);
        Some(match (combined.before, combined.upsert) {
            (Before::Delete, None) => PendingRow::Deleted,
            (Before::Delete, Some(u)) => PendingRow::Replaced(row(&u)),
            (Before::Nothing, Some(u)) => PendingRow::Upserted(row(&u)),
            (Before::Update(a), None) => PendingRow::Updated(row(&a)),
            (Before::Update(a), Some(u)) => PendingRow::UpdatedThenUpserted {
                update: row(&a),
                upsert: row(&u),
            },
            (Before::Nothing, None) => return None,
        })
    }
}
