//! What the buffer holds and reports, entry by entry: an entry being
//! written ([`Item`]), the view `get` returns ([`PendingRow`]) and what
//! `take_failed` returns ([`FailedEntry`]).

use std::sync::Arc;

use rusqlite::types::Value;

use super::pending::{Coalesced, Columns, KeyedOp};
use super::ticket::TicketCell;
use crate::plan::EntryPlan;
use crate::row::Row;
use crate::schema::TableInfo;

/// A pending view of one row, from [`WriteBuffer::get`](super::WriteBuffer::get).
#[derive(Debug, Clone, PartialEq)]
pub enum PendingRow {
    /// The row will be deleted.
    Deleted,
    /// The row will be inserted, or these columns updated if it exists.
    Upserted(Row),
    /// These columns will be updated, if the row exists.
    Updated(Row),
    /// The row will be deleted and inserted again with exactly these columns.
    Replaced(Row),
    /// These columns updated if it exists, then the upsert applied.
    UpdatedThenUpserted {
        /// Columns of the update.
        update: Row,
        /// Columns of the upsert.
        upsert: Row,
    },
}

/// One operation inside a failed entry.
#[derive(Debug, Clone, PartialEq)]
pub enum FailedOp {
    /// Was an insert of this row.
    Insert(Row),
    /// Was an upsert of this row.
    Upsert(Row),
    /// Was an update of these columns.
    Update(Row),
    /// Was a delete.
    Delete,
}

/// An entry the flusher could not write, with everything needed to retry it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEntry {
    /// The table.
    pub table: String,
    /// The key (empty for inserts).
    pub key: Row,
    /// The operations, in order.
    pub ops: Vec<FailedOp>,
    /// Why it failed.
    pub error: String,
}

pub(super) type EntryKey = (Arc<str>, Box<[u8]>);

#[derive(Debug, Clone)]
pub(super) enum TableMode {
    Keyed(Arc<[usize]>),
    Append,
}

/// An entry ready to be written.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Keyed {
        key: EntryKey,
        table: Arc<TableInfo>,
        key_columns: Arc<[usize]>,
        key_values: Vec<Value>,
        ops: Arc<Coalesced>,
        tickets: Vec<Arc<TicketCell>>,
    },
    Insert {
        table: Arc<TableInfo>,
        columns: Columns,
        ticket: Arc<TicketCell>,
    },
}

impl Item {
    /// The write plan an engine executes for this entry.
    pub(crate) fn plan(&self) -> EntryPlan<'_> {
        match self {
            Item::Insert { table, columns, .. } => EntryPlan::Insert { table, columns },
            Item::Keyed {
                table,
                key_columns,
                key_values,
                ops,
                ..
            } => EntryPlan::Keyed {
                table,
                key_columns,
                key_values,
                before: &ops.before,
                upsert: ops.upsert.as_ref(),
            },
        }
    }

    pub(super) fn table(&self) -> &Arc<TableInfo> {
        match self {
            Item::Keyed { table, .. } | Item::Insert { table, .. } => table,
        }
    }

    pub(super) fn cells(&self) -> &[Arc<TicketCell>] {
        match self {
            Item::Keyed { tickets, .. } => tickets,
            Item::Insert { ticket, .. } => std::slice::from_ref(ticket),
        }
    }

    pub(super) fn to_failed(&self, error: &str) -> FailedEntry {
        match self {
            Item::Insert { table, columns, .. } => FailedEntry {
                table: table.name.clone(),
                key: Row::new(),
                ops: vec![FailedOp::Insert(row_of(table, columns))],
                error: error.to_string(),
            },
            Item::Keyed {
                table,
                key_columns,
                key_values,
                ops,
                ..
            } => {
                let key: Columns = key_columns
                    .iter()
                    .copied()
                    .zip(key_values.iter().cloned())
                    .collect();
                FailedEntry {
                    table: table.name.clone(),
                    key: row_of(table, &key),
                    ops: ops
                        .ops()
                        .into_iter()
                        .map(|op| match op {
                            KeyedOp::Upsert(c) => FailedOp::Upsert(row_of(table, &c)),
                            KeyedOp::Update(c) => FailedOp::Update(row_of(table, &c)),
                            KeyedOp::Delete => FailedOp::Delete,
                        })
                        .collect(),
                    error: error.to_string(),
                }
            }
        }
    }
}

/// `columns` of `table` as a [`Row`] (for what the buffer reports).
pub(super) fn row_of(table: &TableInfo, columns: &Columns) -> Row {
    let mut row = Row::new();
    for (c, v) in columns {
        row.put(&table.columns[*c].name, v.clone());
    }
    row
}
