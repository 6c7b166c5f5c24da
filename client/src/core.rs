//! [`Core`]: what the `Database` handle, the write buffer's flusher and the
//! batch helpers share: the database's engine and the cache of its tables'
//! descriptions. Every operation that differs between SQLite and PostgreSQL
//! is a method of [`Engine`] (`engine/mod.rs`); nothing here or above asks
//! which engine it runs on.

use std::path::PathBuf;
use std::sync::Arc;

use hybrid::{LockStats, Priority};
use rusqlite::types::Value;

use crate::engine::Engine;
use crate::engine::sqlite::SqliteEngine;
use crate::engine::tx::Tx;
use crate::error::Result;
use crate::health::{Health, LockWaiter, OptimizeOptions, OptimizeReport};
use crate::plan::{EntryPlan, Step};
use crate::schema::{SchemaCache, TableInfo};

/// What the `Database` handle, the write buffer's flusher and the batch
/// helpers share.
pub(crate) struct Core {
    /// The file, or the server's URL without its password.
    pub(crate) path: PathBuf,
    engine: Engine,
    schema: SchemaCache,
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
    /// [`crate::Error::InvalidInput`] naming the engine-neutral alternative.
    pub(crate) fn sqlite(&self, call: &str, instead: &str) -> Result<&SqliteEngine> {
        self.engine.sqlite(call, instead)
    }

    /// Number of read-only connections.
    pub(crate) fn reader_count(&self) -> usize {
        self.engine.reader_count()
    }

    /// The description of `table`, from the cache or read from the schema.
    pub(crate) fn table(&self, name: &str) -> Result<Arc<TableInfo>> {
        self.schema.table(name, || self.engine.load_table(name))
    }

    /// Forgets the cached table descriptions.
    pub(crate) fn forget_schema(&self) {
        self.schema.clear();
    }

    /// Runs `f` in a write transaction at `priority` and commits, re-running
    /// the whole closure on lock errors until the retry deadline.
    pub(crate) fn transact<T>(
        &self,
        priority: Priority,
        f: impl FnMut(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        self.engine.transact(priority, f)
    }

    /// Runs one query on a reader, returning every row.
    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        self.engine.query(sql, params)
    }

    /// Writes the entries `live` of a write-buffer batch in one transaction
    /// (see `buffer/flusher.rs` for what the outcome means).
    pub(crate) fn write_batch_step(
        &self,
        batch: &[EntryPlan<'_>],
        live: &[usize],
        attempts: &mut u32,
    ) -> Result<Step> {
        self.engine.write_batch_step(batch, live, attempts)
    }

    /// Health of the database and its lock statistics.
    pub(crate) fn health(&self) -> Result<Health> {
        self.engine.health()
    }

    /// This process's (this handle's, on PostgreSQL) waits for the lock.
    pub(crate) fn lock_metrics(&self) -> Result<LockStats> {
        Ok(self.engine.lock_metrics())
    }

    /// Every process's waits on the file (SQLite in futex mode only).
    pub(crate) fn file_lock_metrics(&self) -> Result<Option<LockStats>> {
        Ok(self.engine.file_lock_metrics())
    }

    /// Who waits for a lock now, and for whom.
    pub(crate) fn lock_waiters(&self) -> Result<Vec<LockWaiter>> {
        self.engine.lock_waiters()
    }

    /// Routine maintenance.
    pub(crate) fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeReport> {
        self.engine.optimize(options)
    }
}
