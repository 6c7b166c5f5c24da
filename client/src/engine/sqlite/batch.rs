//! Writing a batch of the write buffer's entries on SQLite: one
//! transaction, statements prepared once per batch and shape, each entry
//! that runs two statements inside a savepoint. SQLite's default conflict
//! action (ABORT) undoes only the failing statement, so a row-level error
//! fails its entry alone and the batch goes on.

use std::collections::HashMap;
use std::sync::Arc;

use hybrid::Priority;
use rusqlite::{Transaction, ffi, params_from_iter};

use super::{Attempt, SqliteEngine};
use crate::error::Result;
use crate::plan::Step;
use crate::plan::{EntryPlan, EntryStatement, StatementKind};

const SAVEPOINT: &str = "hybrid_buffer_entry";

/// Writes the entries `live` of `batch` in one write transaction (retried
/// on lock errors; `attempts` counts the tries).
pub(crate) fn write_step(
    engine: &SqliteEngine,
    batch: &[EntryPlan<'_>],
    live: &[usize],
    attempts: &mut u32,
) -> Result<Step> {
    engine.write_attempts(Priority::Background, |tx| {
        *attempts += 1;
        let mut statements = Statements::new(tx);
        let mut failed = Vec::new();
        for &index in live {
            let item = &batch[index];
            let statement_count = item.statement_count();
            if statement_count > 1 {
                tx.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
            }
            match apply(&mut statements, item) {
                Ok(()) => {
                    if statement_count > 1 {
                        tx.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
                    }
                }
                Err(error) if is_row_error(&error) => {
                    if tx.is_autocommit() {
                        // The error rolled back the whole transaction.
                        return Ok(Attempt::RolledBack(Step::Restart(index, error.to_string())));
                    }
                    if statement_count > 1 {
                        tx.execute_batch(&format!("ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"))?;
                    }
                    failed.push((index, error.to_string()));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Attempt::Commit(Step::Done(failed)))
    })
}

/// Prepared statements for one batch, by (table, kind, columns): the SQL
/// text is built and prepared once per batch, not once per entry (a
/// `prepare_cached` lookup per entry cost more than the insert itself).
struct Statements<'tx> {
    tx: &'tx Transaction<'tx>,
    by_shape: HashMap<(usize, StatementKind), Vec<Prepared<'tx>>>,
}

/// A prepared statement and the column indexes it binds.
type Prepared<'tx> = (Vec<usize>, rusqlite::CachedStatement<'tx>);

impl<'tx> Statements<'tx> {
    fn new(tx: &'tx Transaction<'tx>) -> Self {
        Statements {
            tx,
            by_shape: HashMap::new(),
        }
    }

    /// The prepared form of `statement`'s shape, prepared the first time
    /// it is needed in this batch.
    fn get(
        &mut self,
        statement: &EntryStatement<'_>,
    ) -> rusqlite::Result<&mut rusqlite::CachedStatement<'tx>> {
        let table = Arc::as_ptr(&statement.table.shared_name) as *const u8 as usize;
        let columns = statement.columns;
        let shapes = self.by_shape.entry((table, statement.kind)).or_default();
        let found = shapes
            .iter()
            .position(|(cols, _)| cols.iter().copied().eq(columns.iter().map(|(c, _)| *c)));
        let index = match found {
            Some(index) => index,
            None => {
                let cols: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
                let statement = self.tx.prepare_cached(&statement.sql())?;
                shapes.push((cols, statement));
                shapes.len() - 1
            }
        };
        Ok(&mut shapes[index].1)
    }
}

fn apply(statements: &mut Statements<'_>, item: &EntryPlan<'_>) -> rusqlite::Result<()> {
    for statement in item.statements() {
        statements
            .get(&statement)?
            .execute(params_from_iter(statement.params()))?;
    }
    Ok(())
}

/// Errors that belong to one row, not to the batch.
fn is_row_error(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.extended_code & 0xff,
            ffi::SQLITE_CONSTRAINT
                | ffi::SQLITE_MISMATCH
                | ffi::SQLITE_TOOBIG
                | ffi::SQLITE_RANGE
                | ffi::SQLITE_ERROR
        ),
        rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::InvalidParameterCount(..) => {
            true
        }
        _ => false,
    }
}
