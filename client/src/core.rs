//! [`Core`]: what the `Database` handle, the write buffer's flusher and the
//! batch helpers share, and the one place that chooses the engine. Every
//! operation that differs between SQLite and PostgreSQL is a method here
//! that hands over to `engine::sqlite` or `engine::postgres`; nothing above
//! this module asks which engine it runs on.

use std::path::PathBuf;
use std::sync::Arc;

use hybrid::Priority;
use rusqlite::types::Value;

use crate::engine::Step;
use crate::engine::sqlite::SqliteEngine;
use crate::engine::sqlite::health as sqlite_health;
#[cfg(feature = "postgres")]
use crate::error::Error;
use crate::error::Result;
use crate::health::{Health, LockWaiter, OptimizeOptions, OptimizeReport};
use crate::plan::EntryPlan;
use crate::schema::{SchemaCache, TableInfo};
use crate::tx::Tx;
use hybrid::LockStats;

#[cfg(feature = "postgres")]
use crate::engine::postgres::PgEngine;

/// The connections of one database, whichever engine. (One per
/// `Database`, never moved after open: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Engine {
    /// A SQLite file with the extension linked in.
    Sqlite(SqliteEngine),
    /// A PostgreSQL server.
    #[cfg(feature = "postgres")]
    Postgres(PgEngine),
}

/// What the `Database` handle, the write buffer's flusher and the batch
/// helpers share.
pub(crate) struct Core {
    /// The file, or the server's URL without its password.
    pub(crate) path: PathBuf,
    pub(crate) engine: Engine,
    pub(crate) schema: SchemaCache,
}

impl Core {
    pub(crate) fn new(path: PathBuf, engine: Engine) -> Core {
        Core {
            path,
            engine,
            schema: SchemaCache::default(),
        }
    }

    /// The SQLite engine, for calls that hand out rusqlite types
    /// (`Database::write`, `read`, `optimize`); on PostgreSQL an
    /// [`Error::InvalidInput`] naming the engine-neutral alternative.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn sqlite(&self, call: &str, instead: &str) -> Result<&SqliteEngine> {
        match &self.engine {
            Engine::Sqlite(engine) => Ok(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => Err(Error::InvalidInput(format!(
                "{call} hands out rusqlite types and works on SQLite only; on PostgreSQL use \
                 {instead}"
            ))),
        }
    }

    /// Number of read-only connections.
    pub(crate) fn reader_count(&self) -> usize {
        match &self.engine {
            Engine::Sqlite(engine) => engine.reader_count(),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.reader_count(),
        }
    }

    /// The description of `table`, from the cache or read from the schema.
    pub(crate) fn table(&self, name: &str) -> Result<Arc<TableInfo>> {
        self.schema.table(name, || match &self.engine {
            Engine::Sqlite(engine) => engine.read(|conn| crate::schema::load_table(conn, name)),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.load_table(name),
        })
    }

    /// Runs `f` in a write transaction at `priority` and commits, re-running
    /// the whole closure on lock errors until the retry deadline.
    pub(crate) fn transact<T>(
        &self,
        priority: Priority,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        match &self.engine {
            Engine::Sqlite(engine) => engine.write_as(priority, |tx| f(&mut Tx::sqlite(tx))),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.transact(&mut f),
        }
    }

    /// Runs one query on a reader, returning every row.
    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        match &self.engine {
            Engine::Sqlite(engine) => {
                engine.read(|conn| crate::tx::sqlite_query(conn, sql, params))
            }
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
        match &self.engine {
            Engine::Sqlite(engine) => {
                crate::engine::sqlite::batch::write_step(engine, batch, live, attempts)
            }
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => {
                crate::engine::postgres::batch::write_step(engine, batch, live, attempts)
            }
        }
    }

    /// Health of the database and its lock statistics.
    pub(crate) fn health(&self) -> Result<Health> {
        match &self.engine {
            Engine::Sqlite(engine) => sqlite_health::health(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.health(),
        }
    }

    /// This process's (this handle's, on PostgreSQL) waits for the lock.
    pub(crate) fn lock_metrics(&self) -> Result<LockStats> {
        match &self.engine {
            Engine::Sqlite(engine) => Ok(sqlite_health::lock_metrics(engine)),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => Ok(engine.lock_metrics()),
        }
    }

    /// Every process's waits on the file (SQLite in futex mode only).
    pub(crate) fn file_lock_metrics(&self) -> Result<Option<LockStats>> {
        match &self.engine {
            Engine::Sqlite(engine) => Ok(sqlite_health::file_lock_metrics(engine)),
            #[cfg(feature = "postgres")]
            Engine::Postgres(_) => Ok(None),
        }
    }

    /// Who waits for a lock now, and for whom.
    pub(crate) fn lock_waiters(&self) -> Result<Vec<LockWaiter>> {
        match &self.engine {
            Engine::Sqlite(engine) => sqlite_health::lock_waiters(engine),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.lock_waiters(),
        }
    }

    /// Routine maintenance.
    pub(crate) fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeReport> {
        match &self.engine {
            Engine::Sqlite(engine) => sqlite_health::optimize(engine, options),
            #[cfg(feature = "postgres")]
            Engine::Postgres(engine) => engine.optimize(),
        }
    }
}
