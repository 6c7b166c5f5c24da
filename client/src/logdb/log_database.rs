//! [`LogDatabase`]: the handle an application holds. It starts the writer
//! thread on a store, hands out senders and the `log`/`tracing` faces, and
//! reports [`LogStats`]. (The PostgreSQL constructor,
//! `LogDatabase::open_postgres`, sits with that store in `postgres.rs`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, unbounded};
use parking_lot::Mutex;

use super::layer::DbLayer;
use super::logger::DbLogger;
use super::options::LogOptions;
use super::record::LogRecord;
use super::sink::{Control, Counters, LogSink};
use super::sqlite::{self, SqliteStore};
use super::store::{SizeProbe, Store};
use super::timestamp::iso8601_utc;
use super::writer::Writer;
use crate::error::{Error, Result};

/// Counters of a [`LogDatabase`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LogStats {
    /// Entries written.
    pub written: u64,
    /// Transactions that wrote them.
    pub batches: u64,
    /// Records dropped because the queue was full or the database closed.
    pub dropped: u64,
    /// Records lost because their batch could not be written (after retries).
    pub failed: u64,
    /// Entries deleted by retention.
    pub deleted: u64,
    /// Records waiting in the queue now.
    pub queue_depth: usize,
    /// When the last batch committed (ISO-8601 UTC).
    pub last_flush_at: Option<String>,
    /// Size of the log file plus its WAL (on PostgreSQL: of the log
    /// tables and their indexes).
    pub file_bytes: u64,
}

/// The log database: owns the writer thread. See the module docs.
pub struct LogDatabase {
    path: PathBuf,
    /// Measures `stats().file_bytes`.
    size: SizeProbe,
    sink: LogSink,
    records_rx: Receiver<LogRecord>,
    writer: Mutex<Option<JoinHandle<()>>>,
    options: LogOptions,
}

impl std::fmt::Debug for LogDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDatabase")
            .field("path", &self.path)
            .finish()
    }
}

impl LogDatabase {
    /// Opens (creating) the log file at `path` and starts its writer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlite_hybrid::{LogDatabase, LogLevel, LogOptions, LogRecord};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let logs = LogDatabase::open(dir.path().join("logs.db"), LogOptions::default())?;
    /// logs.sink().send(LogRecord::new(LogLevel::Info, "app", "hello"));
    /// logs.flush(Duration::from_secs(5))?;
    /// assert_eq!(logs.stats().written, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, options: LogOptions) -> Result<LogDatabase> {
        LogDatabase::open_retrying(path, options, &crate::retry::RetryPolicy::default())
    }

    /// [`LogDatabase::open`], retrying lock errors of the set-up (another
    /// process creating the same log file) under `retry`.
    pub(crate) fn open_retrying(
        path: impl AsRef<Path>,
        options: LogOptions,
        retry: &crate::retry::RetryPolicy,
    ) -> Result<LogDatabase> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let conn = sqlite::open_connection(&path, retry)?;
        let size = sqlite::size_probe(&path);
        LogDatabase::start(path, Box::new(SqliteStore::new(conn)), size, options)
    }

    /// Starts the writer thread on `store`; `path` is what [`Self::path`]
    /// shows, `size` measures [`LogStats::file_bytes`].
    pub(crate) fn start(
        path: PathBuf,
        store: Box<dyn Store>,
        size: SizeProbe,
        options: LogOptions,
    ) -> Result<LogDatabase> {
        let (records_tx, records_rx) = unbounded();
        let (control_tx, control_rx) = unbounded();
        let counters = Arc::new(Counters::default());
        let sink = LogSink::new(
            records_tx,
            options.channel_capacity,
            control_tx,
            Arc::clone(&counters),
        );
        let thread = Writer::new(
            store,
            records_rx.clone(),
            control_rx,
            counters,
            options.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("sqlite-hybrid-log".into())
            .spawn(move || thread.run())
            .map_err(Error::Spawn)?;
        Ok(LogDatabase {
            path,
            size,
            sink,
            records_rx,
            writer: Mutex::new(Some(handle)),
            options,
        })
    }

    /// The log file (on PostgreSQL: the server's URL, without password,
    /// and the schema).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A sender of records (for custom integrations).
    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// A `log::Log` implementation writing here, at the options' level.
    pub fn logger(&self) -> DbLogger {
        DbLogger::new(self.sink(), self.options.level)
    }

    /// Installs [`LogDatabase::logger`] as the process's `log` logger (one
    /// line at start-up). Fails if a logger is already installed.
    pub fn install_logger(&self) -> Result<()> {
        log::set_boxed_logger(Box::new(self.logger())).map_err(|e| {
            Error::InvalidInput(format!("a `log` logger is already installed: {e}"))
        })?;
        log::set_max_level(self.options.level);
        Ok(())
    }

    /// A `tracing_subscriber::Layer` writing here:
    /// `tracing_subscriber::registry().with(logs.tracing_layer())`.
    pub fn tracing_layer(&self) -> DbLayer {
        DbLayer::new(self.sink())
    }

    /// Writes every record sent before this call; waits up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.sink.flush(timeout)
    }

    /// Runs retention now (instead of waiting for its interval) and
    /// returns how many entries it deleted.
    pub fn run_retention(&self, timeout: Duration) -> Result<u64> {
        let (ack, done) = bounded(1);
        self.sink.control(Control::Retention(ack))?;
        match done.recv_timeout(timeout) {
            Ok(Ok(deleted)) => Ok(deleted),
            Ok(Err(message)) => Err(Error::InvalidInput(format!("retention failed: {message}"))),
            Err(_) => Err(Error::Timeout { waited: timeout }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> LogStats {
        let c = self.sink.counters();
        let last = c.last_flush_unix_ms.load(Ordering::Relaxed);
        LogStats {
            written: c.written.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            queue_depth: self.records_rx.len(),
            last_flush_at: (last > 0).then(|| iso8601_utc(last)),
            file_bytes: (self.size)(),
        }
    }

    /// Writes what is queued and stops the writer. Records sent afterwards
    /// are dropped (and counted). Also done on drop.
    pub fn close(&self) -> Result<()> {
        let Some(handle) = self.writer.lock().take() else {
            return Ok(());
        };
        let (ack, done) = bounded(1);
        let _ = self.sink.control(Control::Shutdown(ack));
        let _ = done.recv_timeout(Duration::from_secs(60));
        let counters = self.sink.counters();
        counters.closed.store(true, Ordering::Release);
        let _ = handle.join();
        // Anything that slipped in between the final drain and `closed`.
        let late = self.records_rx.try_iter().count() as u64;
        counters.dropped.fetch_add(late, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for LogDatabase {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
