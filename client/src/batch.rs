//! Batch helpers: insert or upsert many rows in chunks, one transaction per
//! chunk, so a long import never holds the write lock for seconds.

use crate::database::Database;
use crate::error::{Error, Result};
use crate::row::Row;
use crate::sql;

/// What a batch helper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchReport {
    /// Rows written.
    pub rows: usize,
    /// Transactions committed.
    pub chunks: usize,
}

impl Database {
    /// Inserts `rows` into `table`, `chunk_size` rows per transaction.
    ///
    /// Every row is checked before its chunk starts (unknown columns, NULL
    /// in NOT NULL columns, STRICT types). On an error, the chunks already
    /// committed stay committed and the error says how many rows that was.
    ///
    /// ```
    /// use sqlite_hybrid::{Database, Row};
    /// let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path().join("b.db"))?;
    /// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")?))?;
    /// let rows = (0..250).map(|i| Row::new().set("id", i).set("v", format!("row {i}")));
    /// let report = db.insert_many("t", rows, 100)?;
    /// assert_eq!((report.rows, report.chunks), (250, 3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_many(
        &self,
        table: &str,
        rows: impl IntoIterator<Item = Row>,
        chunk_size: usize,
    ) -> Result<BatchReport> {
        self.write_chunks(table, None, rows, chunk_size)
    }

    /// Inserts or updates `rows` in `table`, matching on `key_columns`
    /// (which must be the primary key or a UNIQUE index): a row whose key
    /// exists gets the given non-key columns updated; others are inserted.
    ///
    /// ```
    /// use sqlite_hybrid::{Database, Row};
    /// let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path().join("u.db"))?;
    /// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT)")?))?;
    /// db.upsert_many("stock", &["sku"], [Row::new().set("sku", "a").set("qty", 1)], 100)?;
    /// db.upsert_many("stock", &["sku"], [Row::new().set("sku", "a").set("qty", 5)], 100)?;
    /// let qty: i64 = db.read(|c| Ok(c.query_row("SELECT qty FROM stock", [], |r| r.get(0))?))?;
    /// assert_eq!(qty, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upsert_many(
        &self,
        table: &str,
        key_columns: &[&str],
        rows: impl IntoIterator<Item = Row>,
        chunk_size: usize,
    ) -> Result<BatchReport> {
        self.write_chunks(table, Some(key_columns), rows, chunk_size)
    }

    fn write_chunks(
        &self,
        table: &str,
        key_columns: Option<&[&str]>,
        rows: impl IntoIterator<Item = Row>,
        chunk_size: usize,
    ) -> Result<BatchReport> {
        if chunk_size == 0 {
            return Err(Error::InvalidInput("chunk_size must be at least 1".into()));
        }
        let info = self.core.table(table)?;
        let keys = match key_columns {
            Some(names) => {
                let keys = info.unique_key(names)?;
                Some(keys)
            }
            None => None,
        };
        let mut report = BatchReport::default();
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut chunk = Vec::with_capacity(chunk_size);
            for row in rows.by_ref().take(chunk_size) {
                let resolved = info
                    .resolve_row(&row)
                    .map_err(|e| partial(e, report.rows))?;
                let columns: Vec<usize> = resolved.iter().map(|(c, _)| *c).collect();
                info.check_insertable(&columns)
                    .map_err(|e| partial(e, report.rows))?;
                if let Some(keys) = &keys {
                    for &key in keys {
                        info.key_value(key, &resolved)
                            .map_err(|e| partial(e, report.rows))?;
                    }
                }
                chunk.push(resolved);
            }
            self.transact(|tx| {
                for resolved in &chunk {
                    let columns: Vec<usize> = resolved.iter().map(|(c, _)| *c).collect();
                    let text = match &keys {
                        Some(keys) => sql::upsert(&info, &columns, keys),
                        None => sql::insert(&info, &columns),
                    };
                    let params: Vec<&dyn rusqlite::ToSql> = resolved
                        .iter()
                        .map(|(_, v)| v as &dyn rusqlite::ToSql)
                        .collect();
                    tx.execute(&text, &params)?;
                }
                Ok(())
            })
            .map_err(|e| partial(e, report.rows))?;
            report.rows += chunk.len();
            report.chunks += 1;
        }
        Ok(report)
    }
}

/// Adds "the first N rows were committed" to a batch error, keeping its
/// kind and the engine's code.
fn partial(error: Error, committed: usize) -> Error {
    if committed == 0 {
        return error;
    }
    let note = format!("(the first {committed} rows were committed)");
    match error {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{m} {note}")),
        Error::Schema(m) => Error::Schema(format!("{m} {note}")),
        Error::Constraint(e) => Error::Constraint(e.with_note(&note)),
        Error::Io(e) => Error::Io(e.with_note(&note)),
        Error::Database(e) => Error::Database(e.with_note(&note)),
        other => other,
    }
}
