//! What the buffer holds and reports, entry by entry: an entry being
//! written ([`Item`]), the view `get` returns ([`PendingRow`]) and what
//! `take_failed` returns ([`FailedEntry`]).

use std::sync::Arc;

use rusqlite::types::Value;

use super::pending::{Before, Coalesced, Columns, KeyedOp};
use super::ticket::TicketCell;
use crate::Row;
use crate::schema::TableInfo;
use crate::sql;

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

/// What one statement of an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StatementKind {
    Insert,
    Delete,
    Update,
    Upsert,
}

/// One statement of an entry, the same for both engines: its SQL from
/// `sql.rs` and its parameters in placeholder order.
#[derive(Clone, Copy)]
pub(crate) struct EntryStatement<'a> {
    pub(crate) kind: StatementKind,
    pub(crate) table: &'a TableInfo,
    /// The columns it writes, with their values (none for a delete).
    pub(crate) columns: &'a [(usize, Value)],
    key_columns: &'a [usize],
    key_values: &'a [Value],
}

impl<'a> EntryStatement<'a> {
    /// Its SQL text, with SQLite's `?N` placeholders.
    pub(crate) fn sql(&self) -> String {
        let cols: Vec<usize> = self.columns.iter().map(|(c, _)| *c).collect();
        match self.kind {
            StatementKind::Insert => sql::insert(self.table, &cols),
            StatementKind::Upsert => sql::upsert(self.table, &cols, self.key_columns),
            StatementKind::Update => sql::update(self.table, &cols, self.key_columns),
            StatementKind::Delete => sql::delete(self.table, self.key_columns),
        }
    }

    /// Its parameters in placeholder order: the written columns' values,
    /// then, for an update or a delete, the key's (an upsert's key is among
    /// its columns).
    pub(crate) fn params(&self) -> impl Iterator<Item = &'a Value> + use<'a> {
        let key: &'a [Value] = match self.kind {
            StatementKind::Update | StatementKind::Delete => self.key_values,
            StatementKind::Insert | StatementKind::Upsert => &[],
        };
        self.columns.iter().map(|(_, v)| v).chain(key)
    }
}

impl Item {
    /// The statements this entry runs, in order: an insert; or for a key,
    /// what runs before the upsert (a delete or an update), then the upsert.
    pub(crate) fn statements(&self) -> impl Iterator<Item = EntryStatement<'_>> {
        let statements = match self {
            Item::Insert { table, columns, .. } => [
                Some(EntryStatement {
                    kind: StatementKind::Insert,
                    table,
                    columns,
                    key_columns: &[],
                    key_values: &[],
                }),
                None,
            ],
            Item::Keyed {
                table,
                key_columns,
                key_values,
                ops,
                ..
            } => {
                let delete = EntryStatement {
                    kind: StatementKind::Delete,
                    table,
                    columns: &[],
                    key_columns,
                    key_values,
                };
                let before = match &ops.before {
                    Before::Nothing => None,
                    Before::Delete => Some(delete),
                    Before::Update(set) => Some(EntryStatement {
                        kind: StatementKind::Update,
                        columns: set,
                        ..delete
                    }),
                };
                let upsert = ops.upsert.as_ref().map(|columns| EntryStatement {
                    kind: StatementKind::Upsert,
                    columns,
                    ..delete
                });
                [before, upsert]
            }
        };
        statements.into_iter().flatten()
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
        let row_of = |table: &TableInfo, columns: &Columns| {
            let mut row = Row::new();
            for (c, v) in columns {
                row.put(&table.columns[*c].name, v.clone());
            }
            row
        };
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
