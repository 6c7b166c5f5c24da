//! [`Tx`]: a write transaction that reads the same on both engines, for
//! [`crate::Database::transact`]. Parameters are rusqlite values (what
//! `rusqlite::params!` makes), SQL uses SQLite's `?1` / `?` placeholders
//! (rewritten to `$1` for PostgreSQL), and rows come back as
//! [`rusqlite::types::Value`]s.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value};

use crate::error::{Error, Result};

/// A write transaction on either engine; see [`crate::Database::transact`].
///
/// ```
/// use sqlite_hybrid::{Database, rusqlite::params};
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::open(dir.path().join("t.db"))?;
/// let n = db.transact(|tx| {
///     tx.execute_batch("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v INTEGER)")?;
///     tx.execute("INSERT INTO kv VALUES (?1, ?2)", params!["a", 1])?;
///     let rows = tx.query("SELECT count(*) FROM kv WHERE v >= ?1", params![1])?;
///     Ok(rows[0][0].clone())
/// })?;
/// assert_eq!(n, sqlite_hybrid::rusqlite::types::Value::Integer(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Tx<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Sqlite(&'a rusqlite::Transaction<'a>),
    /// Owned: the engine takes it back to commit.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Transaction<'a>),
}

impl<'a> Tx<'a> {
    pub(crate) fn sqlite(tx: &'a rusqlite::Transaction<'a>) -> Tx<'a> {
        Tx {
            inner: Inner::Sqlite(tx),
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(tx: postgres::Transaction<'a>) -> Tx<'a> {
        Tx {
            inner: Inner::Postgres(tx),
        }
    }

    /// The PostgreSQL transaction underneath, on PostgreSQL.
    #[cfg(feature = "postgres")]
    pub(crate) fn as_postgres_mut(&mut self) -> Option<&mut postgres::Transaction<'a>> {
        match &mut self.inner {
            Inner::Postgres(tx) => Some(tx),
            Inner::Sqlite(_) => None,
        }
    }

    /// The PostgreSQL transaction back, to commit it.
    #[cfg(feature = "postgres")]
    pub(crate) fn into_postgres(self) -> Option<postgres::Transaction<'a>> {
        match self.inner {
            Inner::Postgres(tx) => Some(tx),
            Inner::Sqlite(_) => None,
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<u64> {
        let params = values(params)?;
        match &mut self.inner {
            Inner::Sqlite(tx) => Ok(tx
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?
                as u64),
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => super::postgres::values::execute(tx, sql, &params),
        }
    }

    /// Runs statements separated by `;`, without parameters.
    pub fn execute_batch(&mut self, sql: &str) -> Result<()> {
        match &mut self.inner {
            Inner::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => tx
                .batch_execute(sql)
                .map_err(super::postgres::errors::error),
        }
    }

    /// Runs one query; returns every row.
    pub fn query(&mut self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Vec<Value>>> {
        let params = values(params)?;
        match &mut self.inner {
            Inner::Sqlite(tx) => super::sqlite::query(tx, sql, &params),
            #[cfg(feature = "postgres")]
            Inner::Postgres(tx) => super::postgres::values::query(tx, sql, &params),
        }
    }

    /// Whether this transaction runs on PostgreSQL (for the rare statement
    /// whose SQL must differ).
    pub fn is_postgres(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => true,
        }
    }

    /// The rusqlite transaction underneath, on SQLite.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Transaction<'a>> {
        match &self.inner {
            Inner::Sqlite(tx) => Some(tx),
            #[cfg(feature = "postgres")]
            Inner::Postgres(_) => None,
        }
    }
}

/// The parameters as owned values (an unsupported one is an error naming
/// its position).
pub(crate) fn values(params: &[&dyn ToSql]) -> Result<Vec<Value>> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let bad = |why: String| Error::InvalidInput(format!("parameter {}: {why}", i + 1));
            match p.to_sql() {
                Ok(ToSqlOutput::Borrowed(v)) => Value::try_from(v).map_err(|e| bad(e.to_string())),
                Ok(ToSqlOutput::Owned(v)) => Ok(v),
                Ok(_) => Err(bad("unsupported value kind".into())),
                Err(e) => Err(bad(e.to_string())),
            }
        })
        .collect()
}
