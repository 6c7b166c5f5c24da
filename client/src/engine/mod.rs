//! The database engines behind [`crate::Database`]. Everything that differs
//! between SQLite and PostgreSQL lives under this module, and [`Engine`] is
//! the one place that chooses between them: `core.rs` and everything above
//! it call its methods and never name an engine.
//!
//! * `sqlite`: a file, the extension linked in, one writer connection and a
//!   pool of readers (the original engine, unchanged).
//! * `postgres` (feature `postgres`): a server, one writer session and a
//!   pool of reader sessions through the `postgres` driver.
//! * `tx`: [`crate::Tx`], the write transaction that reads the same on
//!   both engines.

use std::sync::Arc;

use hybrid::{LockStats, Priority};
use rusqlite::types::Value;

use crate::error::Result;
use crate::health::{Health, LockWaiter, OptimizeOptions, OptimizeReport};
use crate::plan::{EntryPlan, Step};
use crate::schema::TableInfo;

pub(crate) mod sqlite;
pub(crate) mod tx;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;

use sqlite::SqliteEngine;
use sqlite::health as sqlite_health;
use tx::Tx;

/// The connections of one database, whichever engine. (One per
/// `Database`, never moved after open: the variants' sizes do not matter.)
///
/// Each method hands over to `sqlite` or `postgres`; this enum is the one
/// place that matches on the engine, so nothing above `engine/` names one.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Engine {
    /// A SQLite file with the extension linked in.
    Sqlite(SqliteEngine),
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgEngine),
}

impl Engine {
    /// The SQLite engine, for calls that hand out rusqlite types
    /// (`Database::write`, `read`, `optimize`); on PostgreSQL an
    /// [`crate::Error::InvalidInput`] naming the engine-neutral alternative.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn sqlite(&self, call: &str, instead: &str) -> Result<&SqliteEngine> {
        match self {
            Engine::Sqlite(engine) => Ok(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => Err(crate::error::Error::InvalidInput(format!(
                "{call} hands out rusqlite types and works on SQLite only; on PostgreSQL use \
                 {instead}"
            ))),
        }
    }

    /// Number of read-only connections.
    pub(crate) fn reader_count(&self) -> usize {
        match self {
            Engine::Sqlite(engine) => engine.reader_count(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.reader_count(),
        }
    }

    /// The description of table `name`, read from the schema.
    pub(crate) fn load_table(&self, name: &str) -> Result<Arc<TableInfo>> {
        match self {
            Engine::Sqlite(engine) => engine.read(|conn| crate::schema::load_table(conn, name)),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.load_table(name),
        }
    }

    /// Runs `f` in a write transaction at `priority` and commits, re-running
    /// the whole closure on lock errors until the retry deadline.
    pub(crate) fn transact<T>(
        &self,
        priority: Priority,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match self {
            Engine::Sqlite(engine) => engine.write_as(priority, |tx| f(&mut Tx::sqlite(tx))),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.transact(&mut f),
        }
    }

    /// Runs one query on a reader, returning every row.
    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        match self {
            Engine::Sqlite(engine) => engine.read(|conn| sqlite::query(conn, sql, params)),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.query(sql, params),
        }
    }

    /// Writes the entries `live` of a write-buffer batch in one transaction
    /// (see `buffer/flusher.rs` for what the outcome means).
    pub(crate) fn write_batch_step(
        &self,
        batch: &[EntryPlan<'_>],
        live: &[usize],
        attempts: &mut u32,
    ) -> Result<Step> {
        match self {
            Engine::Sqlite(engine) => sqlite::batch::write_step(engine, batch, live, attempts),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => postgres::batch::write_step(engine, batch, live, attempts),
        }
    }

    /// Health of the database and its lock statistics.
    pub(crate) fn health(&self) -> Result<Health> {
        match self {
            Engine::Sqlite(engine) => sqlite_health::health(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.health(),
        }
    }

    /// This process's (this handle's, on PostgreSQL) waits for the lock.
    pub(crate) fn lock_metrics(&self) -> LockStats {
        match self {
            Engine::Sqlite(engine) => sqlite_health::lock_metrics(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.lock_metrics(),
        }
    }

    /// Every process's waits on the file (SQLite in futex mode only).
    pub(crate) fn file_lock_metrics(&self) -> Option<LockStats> {
        match self {
            Engine::Sqlite(engine) => sqlite_health::file_lock_metrics(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => None,
        }
    }

    /// Who waits for a lock now, and for whom.
    pub(crate) fn lock_waiters(&self) -> Result<Vec<LockWaiter>> {
        match self {
            Engine::Sqlite(engine) => sqlite_health::lock_waiters(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.lock_waiters(),
        }
    }

    /// Routine maintenance.
    pub(crate) fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeReport> {
        match self {
            Engine::Sqlite(engine) => sqlite_health::optimize(engine, options),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.optimize(),
        }
    }
}

/// Whether `location` names a PostgreSQL server (`postgres://` or
/// `postgresql://`) rather than a SQLite file.
pub(crate) fn is_postgres_url(location: &str) -> bool {
    let lower = location.get(..13).unwrap_or(location).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::is_postgres_url;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@%2Ftmp/db"));
        assert!(!is_postgres_url("app.db"));
        assert!(!is_postgres_url("./postgres/app.db"));
        assert!(!is_postgres_url("file:app.db?mode=memory"));
    }
}
