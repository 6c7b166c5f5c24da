//! # sqlite-hybrid
//!
//! SQLite for many concurrent writers: the `sqlite-hybrid-ext` extension
//! linked statically (no `.so` path), connections opened with the right
//! pragmas, write transactions with `BEGIN IMMEDIATE` and whole-transaction
//! retry, batch helpers, and a coalescing write buffer.
//!
//! ```
//! use std::time::Duration;
//! use sqlite_hybrid::{Database, Row};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path().join("app.db"))?;
//! db.write(|tx| Ok(tx.execute_batch("CREATE TABLE visits(page TEXT PRIMARY KEY, n INTEGER)")?))?;
//!
//! // Many threads can enqueue; repeated upserts of one key merge.
//! let buffer = db.buffer();
//! for n in 1..=3 {
//!     buffer.upsert("visits", Row::new().set("page", "/").set("n", n), &["page"])?;
//! }
//! buffer.force_flush()?;
//! let n: i64 = db.read(|c| Ok(c.query_row("SELECT n FROM visits", [], |r| r.get(0))?))?;
//! assert_eq!(n, 3);
//! assert_eq!(buffer.stats().coalesced, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, unreachable_pub, clippy::undocumented_unsafe_blocks)]

/// The crate README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct CrateReadme;

// The modules, in layers: each imports only from layers below it, never
// from one above (and buffer/ and logdb/ not from each other); modules name
// each other by their paths (`crate::row::Row`), not through the re-exports
// below.
//
//   face          database.rs (Database, its builder, health and maintenance
//                 calls), async_db/ (feature `tokio`), batch.rs
//   services      buffer/ (the coalescing write buffer: validation, queue,
//                 tickets, flusher), logdb/ (the log database and its
//                 tracing/log faces)
//   core          core.rs: the engine and the schema cache, shared by the
//                 face and the services
//   engines       engine/mod.rs (Engine: the one place that chooses the
//                 engine), engine/tx.rs (Tx over either engine's
//                 transaction), engine/sqlite/, engine/postgres/ (feature
//                 `postgres`)
//   leaves        plan.rs (the write plan the buffer hands to an engine, and
//                 how an attempt ended), schema.rs, sql.rs, row.rs,
//                 health.rs (the report types), retry.rs, pool.rs (the
//                 reader pool of both engines), clock.rs, write_scope.rs,
//                 error.rs
//
// The face opens an engine directly (database.rs) and names Tx (async_db/);
// every other call into an engine goes through core.rs. Every
// PostgreSQL-specific arm lives under engine/, except the log database's own
// (logdb/) and the call in database.rs that opens the log database on a
// PostgreSQL server.
#[cfg(feature = "tokio")]
mod async_db;
mod batch;
pub mod buffer;
mod clock;
mod core;
mod database;
mod engine;
mod error;
mod health;
mod logdb;
mod plan;
mod pool;
mod retry;
mod row;
mod schema;
mod sql;
mod write_scope;

// The async face (feature `tokio`).
#[cfg(feature = "tokio")]
pub use async_db::AsyncDatabase;
pub use batch::BatchReport;
#[cfg(feature = "tokio")]
pub use buffer::TicketFuture;
pub use buffer::{
    Backpressure, BufferOptions, BufferStats, FailedEntry, FailedOp, PendingRow, Ticket,
    TicketStatus, WriteBuffer,
};
pub use database::{Database, DatabaseBuilder};
pub use engine::tx::Tx;
pub use error::{DbError, Error, Result, is_lock_error};
pub use health::{
    Health, LockWaiter, OptimizeOptions, OptimizeReport, SchemaHealth, ServerHealth, StandbyHealth,
};
/// Whether this build has futex mode (Linux): without it every connection
/// waits in backoff mode and [`Database::file_lock_metrics`] is `None`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let db = sqlite_hybrid::Database::open(dir.path().join("app.db"))?;
/// let expected = if sqlite_hybrid::FUTEX_QUEUE { "futex" } else { "backoff" };
/// assert_eq!(db.lock_metrics()?.mode.as_str(), expected);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use hybrid::FUTEX_QUEUE;
/// Re-exported from the extension crate because this crate's API takes or
/// returns them (`busy_policy`, `lock_metrics`): an app configures and reads
/// the busy handler without a second dependency.
pub use hybrid::{BackoffPolicy, Jitter, LockMode, LockScope, LockStats};
/// The slow-wait log of the extension: waits for the write lock longer
/// than [`log_waits`] (1 s by default) become `tracing` warnings with
/// target `sqlite_hybrid::lock` (and `sqlite3_log` messages).
pub use hybrid::{SlowWait, SlowWaitEvent, log_waits, set_log_waits};
pub use logdb::{
    DbLayer, DbLogger, LogDatabase, LogLevel, LogOptions, LogRecord, LogSink, LogStats,
};
pub use retry::RetryPolicy;
pub use row::Row;
pub use schema::{ColumnInfo, TableInfo};

/// Re-export of the rusqlite version this crate uses.
pub use rusqlite;
