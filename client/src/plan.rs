//! The write plan: what the write buffer hands to an engine to write, one
//! entry at a time, and how an attempt at a batch of them ended ([`Step`]). A leaf: the buffer builds plans (`buffer/entry.rs`),
//! the engines execute them (`engine/*/batch.rs`), and neither needs the
//! other's types.
//!
//! An entry is either one insert, or, for a key, the normal form of its
//! pending operations (see `buffer/pending.rs`): `[delete | update A]?
//! [upsert B]?`, executed in that order.

use rusqlite::types::Value;

use crate::schema::TableInfo;
use crate::sql;

/// How an engine's attempt at writing a set of entries ended (the answer
/// to a batch of plans).
pub(crate) enum Step {
    /// Written; these (index, message) failed for row-level reasons.
    Done(Vec<(usize, String)>),
    /// A row error rolled the whole transaction back (`ON CONFLICT
    /// ROLLBACK`): write again without this entry.
    Restart(usize, String),
}

/// Columns and values, by column index, at most one value per column.
pub(crate) type Columns = Vec<(usize, Value)>;

/// What runs before a keyed entry's upsert.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Before {
    /// Nothing.
    #[default]
    Nothing,
    /// `DELETE ... WHERE key`.
    Delete,
    /// `UPDATE ... SET cols WHERE key`.
    Update(Columns),
}

/// One entry to write, borrowed from the buffer's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EntryPlan<'a> {
    /// One row appended with `INSERT`.
    Insert {
        /// The table.
        table: &'a TableInfo,
        /// The row's columns.
        columns: &'a Columns,
    },
    /// The pending operations on one key, in normal form.
    Keyed {
        /// The table.
        table: &'a TableInfo,
        /// The key's column indexes.
        key_columns: &'a [usize],
        /// The key's values, in `key_columns` order.
        key_values: &'a [Value],
        /// Runs first.
        before: &'a Before,
        /// Runs second, if any (includes the key columns).
        upsert: Option<&'a Columns>,
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

impl<'a> EntryPlan<'a> {
    /// Statements this entry runs (a savepoint is needed when > 1).
    pub(crate) fn statement_count(&self) -> usize {
        match *self {
            EntryPlan::Insert { .. } => 1,
            EntryPlan::Keyed { before, upsert, .. } => {
                usize::from(*before != Before::Nothing) + usize::from(upsert.is_some())
            }
        }
    }

    /// The statements this entry runs, in order: an insert; or for a key,
    /// what runs before the upsert (a delete or an update), then the upsert.
    pub(crate) fn statements(&self) -> impl Iterator<Item = EntryStatement<'a>> + use<'a> {
        let statements = match *self {
            EntryPlan::Insert { table, columns } => [
                Some(EntryStatement {
                    kind: StatementKind::Insert,
                    table,
                    columns,
                    key_columns: &[],
                    key_values: &[],
                }),
                None,
            ],
            EntryPlan::Keyed {
                table,
                key_columns,
                key_values,
                before,
                upsert,
            } => {
                let delete = EntryStatement {
                    kind: StatementKind::Delete,
                    table,
                    columns: &[],
                    key_columns,
                    key_values,
                };
                let before = match before {
                    Before::Nothing => None,
                    Before::Delete => Some(delete),
                    Before::Update(set) => Some(EntryStatement {
                        kind: StatementKind::Update,
                        columns: set,
                        ..delete
                    }),
                };
                let upsert = upsert.map(|columns| EntryStatement {
                    kind: StatementKind::Upsert,
                    columns,
                    ..delete
                });
                [before, upsert]
            }
        };
        statements.into_iter().flatten()
    }
}
