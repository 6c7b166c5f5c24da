//! The log database: application logs in their own SQLite file, written by
//! one background thread in batches, so logging never competes with the
//! application's writers for the main database's write lock.
//!
//! # How it fits together
//! * Records come from the `log` crate ([`DbLogger`]) or from `tracing`
//!   ([`DbLayer`]) and go through a crossbeam channel holding at most
//!   `channel_capacity` records. Sending never blocks: when it is full (or
//!   the log database is closed) the record is dropped and counted in
//!   `dropped`.
//! * One writer thread with its own connection to the log file takes them
//!   in arrival order (so each producing thread's records keep their
//!   order), and writes a transaction once `batch_size` are waiting and
//!   `min_commit_interval` has passed since its last commit, at least every
//!   `flush_interval`, plus on `flush()` and on close. A transaction takes
//!   what is queued, up to `max_batch_size`: fewer commits let it catch up
//!   with a burst and write less to the disk the app uses (`writer.rs`).
//! * Retention deletes entries older than `retention` (and beyond
//!   `max_rows`) in chunks of `retention_chunk` rows, one short transaction
//!   each, so it never holds the log file's lock for long.
//! * The file is ATTACHed as `log` on the [`crate::Database`]'s read-only
//!   reader connections, so `db.read` can join `log.entries` with app
//!   tables. It is deliberately **not** attached to the writer connection:
//!   `BEGIN IMMEDIATE` opens a write transaction on every attached database
//!   whose schema the connection has read (measured: with the log file's
//!   lock held elsewhere, an app write on a connection that had queried
//!   `log.entries` waited and failed), so an attached log file would put
//!   app writes back in line behind the log writer, the very contention
//!   this exists to avoid.
//!
//! # Why a channel, when the write buffer uses a locked map
//! The two background writers look alike but want opposite things. Log
//! records never merge, nobody reads them back before they are written, and
//! under overload they may be dropped, never waited for: a channel with a
//! length check before each send is exactly that, lock-free for the
//! producers. The write
//! buffer must merge operations on one key, answer `get` from what is
//! pending, and never drop anything: that needs one keyed view behind a lock
//! (`buffer/mod.rs`).
//!
//! # Guarantees
//! A record is in the file once `flush()` returned `Ok` after it was sent,
//! or once a batch containing it committed. A crash loses at most what was
//! not yet committed: the records queued (at most `channel_capacity`) and
//! the batch being written (at most `max_batch_size`); the file itself is
//! a WAL-mode SQLite database and is never corrupted by a crash. A batch
//! that cannot be written (disk full, ...) is retried 3 times, then dropped
//! and counted in `failed`: logs are best effort, never a reason to block
//! the app.

// The modules, each importing only those listed before it:
//   timestamp.rs, record.rs, options.rs   leaves: the stored time format,
//                                         a record, the settings
//   sink.rs        the producers' side: LogSink, Control, Counters
//   logger.rs, layer.rs   the `log` and `tracing` faces, over a LogSink
//   store.rs       the Store trait: where the writer puts batches
//   schema.rs, sqlite.rs  the log file: its SQL, its connection and Store
//   writer.rs      the writer thread: batching, retries, retention
//   log_database.rs   LogDatabase: starts the writer, LogStats
//   postgres.rs    (feature `postgres`) the `log` schema of a PostgreSQL
//                  database: its Store and LogDatabase::open_postgres, the
//                  only PostgreSQL-specific code of the log database
mod layer;
mod log_database;
mod logger;
mod options;
#[cfg(feature = "postgres")]
mod postgres;
mod record;
mod schema;
mod sink;
mod sqlite;
mod store;
mod timestamp;
mod writer;

pub use layer::DbLayer;
pub use log_database::{LogDatabase, LogStats};
pub use logger::DbLogger;
pub use options::LogOptions;
pub use record::{LogLevel, LogRecord};
pub use sink::LogSink;
