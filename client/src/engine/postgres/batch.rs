//! Writing a batch of the write buffer's entries on PostgreSQL: one
//! transaction, consecutive entries of the same shape (table, operation,
//! columns) written by one multi-row `INSERT ... ON CONFLICT ... DO UPDATE`
//! each, in enqueue order.
//!
//! Row-level failure isolation as on SQLite: every multi-row statement runs
//! inside a savepoint; if a row of it fails (a constraint, a value the
//! column type refuses), the statement is rolled back to the savepoint and
//! its entries are written one by one, each inside its own savepoint, so
//! only the failing entries fail. (PostgreSQL aborts the whole transaction
//! on any error outside a savepoint.) A deferred constraint that fails at
//! COMMIT is narrowed down by the flusher, as on SQLite.

use std::fmt::Write as _;

use postgres::Transaction;

use super::values::execute_text;
use super::{PgEngine, error};
use crate::error::Result;
use crate::plan::Step;
use crate::plan::{Before, Columns, EntryPlan};
use crate::schema::{TableInfo, quote};

/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMS: usize = 65_535;
/// Rows per multi-row statement at most (a bigger statement saves little).
const MAX_ROWS: usize = 1000;

/// Writes the entries `live` of `batch` in one transaction, retried on
/// conflicts (`attempts` counts the tries).
pub(crate) fn write_step(
    engine: &PgEngine,
    batch: &[EntryPlan<'_>],
    live: &[usize],
    attempts: &mut u32,
) -> Result<Step> {
    engine.with_transaction(|tx| {
        *attempts += 1;
        let mut failed = Vec::new();
        let mut start = 0;
        while start < live.len() {
            let shape = Shape::of(&batch[live[start]]);
            let mut end = start + 1;
            if let Some(shape) = &shape {
                let per_statement = (MAX_PARAMS / shape.columns.len().max(1)).min(MAX_ROWS);
                while end < live.len()
                    && end - start < per_statement
                    && Shape::of(&batch[live[end]]).as_ref() == Some(shape)
                {
                    end += 1;
                }
            }
            let run = &live[start..end];
            match (&shape, run.len()) {
                (Some(shape), n) if n > 1 => write_run(tx, batch, shape, run, &mut failed)?,
                _ => write_entry(tx, batch, run[0], &mut failed)?,
            }
            start = end;
        }
        Ok(Step::Done(failed))
    })
}

/// What lets consecutive entries share one multi-row statement.
#[derive(Debug, PartialEq)]
struct Shape {
    table: usize,
    columns: Vec<usize>,
    /// The upsert's conflict target; `None` for a plain insert.
    keys: Option<Vec<usize>>,
}

impl Shape {
    /// The shape of an entry that is one INSERT or one upsert (`None` for
    /// entries that delete or update first).
    fn of(item: &EntryPlan<'_>) -> Option<Shape> {
        let table_id = |t: &TableInfo| t as *const TableInfo as usize;
        match *item {
            EntryPlan::Insert { table, columns } => Some(Shape {
                table: table_id(table),
                columns: columns.iter().map(|(c, _)| *c).collect(),
                keys: None,
            }),
            EntryPlan::Keyed {
                table,
                key_columns,
                before,
                upsert,
                ..
            } => match (before, upsert) {
                (Before::Nothing, Some(columns)) => Some(Shape {
                    table: table_id(table),
                    columns: columns.iter().map(|(c, _)| *c).collect(),
                    keys: Some(key_columns.to_vec()),
                }),
                _ => None,
            },
        }
    }
}

/// The columns an entry of a [`Shape`] writes.
fn row_columns<'a>(item: &EntryPlan<'a>) -> &'a Columns {
    match *item {
        EntryPlan::Insert { columns, .. } => columns,
        EntryPlan::Keyed { upsert, .. } => upsert.expect("a shaped entry upserts"),
    }
}

fn table_of<'a>(item: &EntryPlan<'a>) -> &'a TableInfo {
    match *item {
        EntryPlan::Insert { table, .. } | EntryPlan::Keyed { table, .. } => table,
    }
}

/// `INSERT INTO t (c...) VALUES ($1, $2), ($3, $4)... [ON CONFLICT (k) DO
/// UPDATE SET c = EXCLUDED.c | DO NOTHING]`.
fn multi_row_sql(table: &TableInfo, shape: &Shape, rows: usize) -> String {
    let names: Vec<String> = shape
        .columns
        .iter()
        .map(|&c| quote(&table.columns[c].name))
        .collect();
    let mut text = format!(
        "INSERT INTO {} ({}) VALUES ",
        table.quoted_name(),
        names.join(", ")
    );
    let width = shape.columns.len();
    for row in 0..rows {
        text.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            if column > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "${}", row * width + column + 1);
        }
        text.push(')');
    }
    if let Some(keys) = &shape.keys {
        let key_names: Vec<String> = keys
            .iter()
            .map(|&k| quote(&table.columns[k].name))
            .collect();
        let updates: Vec<String> = shape
            .columns
            .iter()
            .filter(|c| !keys.contains(c))
            .map(|&c| {
                let name = quote(&table.columns[c].name);
                format!("{name} = EXCLUDED.{name}")
            })
            .collect();
        let _ = write!(text, " ON CONFLICT ({}) DO ", key_names.join(", "));
        if updates.is_empty() {
            text.push_str("NOTHING");
        } else {
            let _ = write!(text, "UPDATE SET {}", updates.join(", "));
        }
    }
    text
}

/// Writes a run of same-shaped entries with one statement; on a row-level
/// error, one by one.
fn write_run(
    tx: &mut Transaction<'_>,
    batch: &[EntryPlan<'_>],
    shape: &Shape,
    run: &[usize],
    failed: &mut Vec<(usize, String)>,
) -> Result<()> {
    let table = table_of(&batch[run[0]]);
    let text = multi_row_sql(table, shape, run.len());
    let values = run
        .iter()
        .flat_map(|&i| row_columns(&batch[i]).iter().map(|(_, v)| v));
    tx.batch_execute("SAVEPOINT hybrid_run").map_err(error)?;
    match execute_text(tx, &text, values) {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT hybrid_run")
                .map_err(error)?;
            Ok(())
        }
        Err(e) if is_row_error(&e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT hybrid_run; RELEASE SAVEPOINT hybrid_run")
                .map_err(error)?;
            for &index in run {
                write_entry(tx, batch, index, failed)?;
            }
            Ok(())
        }
        Err(e) => Err(error(e)),
    }
}

/// Writes one entry (its statements in order) inside a savepoint; a
/// row-level error fails it alone.
fn write_entry(
    tx: &mut Transaction<'_>,
    batch: &[EntryPlan<'_>],
    index: usize,
    failed: &mut Vec<(usize, String)>,
) -> Result<()> {
    tx.batch_execute("SAVEPOINT hybrid_entry").map_err(error)?;
    match apply(tx, &batch[index]) {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT hybrid_entry")
                .map_err(error)?;
            Ok(())
        }
        Err(e) if is_row_error(&e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT hybrid_entry; RELEASE SAVEPOINT hybrid_entry")
                .map_err(error)?;
            failed.push((index, error(e).to_string()));
            Ok(())
        }
        Err(e) => Err(error(e)),
    }
}

/// The statements of one entry, as on SQLite (placeholders rewritten).
fn apply(tx: &mut Transaction<'_>, item: &EntryPlan<'_>) -> Result<(), postgres::Error> {
    for statement in item.statements() {
        execute_text(tx, &statement.sql(), statement.params())?;
    }
    Ok(())
}

/// Errors that belong to one row, not to the batch: data exceptions
/// (`22xxx`: a value the column type refuses), integrity constraints
/// (`23xxx`), datatype mismatch (`42804`) and program limits (`54000`: a
/// value too big for an index).
fn is_row_error(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("22") || c.starts_with("23") || c == "42804" || c == "54000"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnInfo;
    use std::sync::Arc;

    #[test]
    fn multi_row_statements_number_every_parameter() {
        let col = |n: &str| ColumnInfo {
            name: n.into(),
            declared_type: String::new(),
            not_null: false,
            has_default: false,
        };
        let table = TableInfo {
            name: "kv".into(),
            shared_name: Arc::from("kv"),
            columns: vec![col("k"), col("v")],
            strict: false,
            rowid_alias: None,
            unique_keys: vec![vec![0]],
        };
        let shape = Shape {
            table: 0,
            columns: vec![0, 1],
            keys: Some(vec![0]),
        };
        assert_eq!(
            multi_row_sql(&table, &shape, 2),
            r#"INSERT INTO "kv" ("k", "v") VALUES ($1, $2), ($3, $4) ON CONFLICT ("k") DO UPDATE SET "v" = EXCLUDED."v""#
        );
        let insert = Shape {
            keys: None,
            ..shape
        };
        assert!(multi_row_sql(&table, &insert, 1).ends_with("VALUES ($1, $2)"));
    }
}
