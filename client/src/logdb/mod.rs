//! The log database: application logs in their own SQLite file, written by
//! one background thread in batches, so logging never competes with the
//! application's writers for the main database's write lock.
//!
//! # How it fits together
//! * Records come from the `log` crate ([`DbLogger`]) or from `tracing`
//!   ([`DbLayer`]) and go through a bounded crossbeam channel. Sending never
//!   blocks: when the channel is full (or the log database is closed) the
//!   record is dropped and counted in `dropped`.
//! * One writer thread with its own connection to the log file takes them
//!   in arrival order (so each producing thread's records keep their
//!   order), and writes a transaction once `batch_size` are waiting, at
//!   least every `flush_interval`, plus on `flush()` and on close. When the
//!   queue is backed up, one transaction takes what is queued, up to
//!   `max_batch_size`: fewer commits let it catch up with a burst
//!   (`writer.rs`).
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
//! under overload they may be dropped, never waited for: a bounded channel
//! with `try_send` is exactly that, lock-free for the producers. The write
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

mod layer;
mod logger;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
mod writer;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use parking_lot::Mutex;

use crate::error::{Error, Result};
pub use layer::DbLayer;
pub use logger::DbLogger;

use crate::clock::now_unix_ms;

/// The last millisecond `humantime` can write (9999-12-31T23:59:59.999Z):
/// later times are stored as this one, so an absurd `ts_unix_ms` can
/// neither fail its batch nor break the text's sort order.
const MAX_UNIX_MS: u64 = 253_402_300_799_999;

/// Unix milliseconds as ISO-8601 UTC text with milliseconds
/// (`2026-11-25T10:00:00.123Z`): sorts as text, and SQLite's date functions
/// read it.
pub(crate) fn iso8601_utc(unix_ms: u64) -> String {
    Timestamps::default().format(unix_ms).to_string()
}

/// Formats timestamps like [`iso8601_utc`], reusing one buffer. Log
/// records come in runs from the same second, so the text up to the second
/// is formatted once per second and only the milliseconds per record
/// (formatting every timestamp in full was 6% of the writer's CPU under
/// `log_bench`).
#[derive(Debug, Default)]
pub(crate) struct Timestamps {
    /// The second `text` starts with.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`, then the milliseconds last
    /// formatted.
    text: String,
}

impl Timestamps {
    /// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub(crate) fn format(&mut self, unix_ms: u64) -> &str {
        let unix_ms = unix_ms.min(MAX_UNIX_MS);
        let second = unix_ms / 1000;
        if self.second != Some(second) {
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
            self.text.clear();
            // Cannot fail: `second` is within humantime's range.
            let _ = write!(self.text, "{whole}");
            self.second = Some(second);
        }
        let millis = unix_ms % 1000;
        self.text.truncate(19); // `YYYY-MM-DDTHH:MM:SS`
        self.text.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.text.push(char::from(b'0' + digit as u8));
        }
        self.text.push('Z');
        &self.text
    }
}

/// Settings of the log database (defaults: 10,000 queued records, batches
/// of 50 at least every 2 s and of up to 1,000 when the queue is backed up,
/// 7 days of retention checked every minute).
///
/// ```
/// use std::time::Duration;
/// use sqlite_hybrid::{Database, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::builder(dir.path().join("app.db"))
///     .log_database(LogOptions { retention: Some(Duration::from_secs(3 * 86_400)), ..LogOptions::default() })
///     .open()?;
/// assert!(db.log().unwrap().path().ends_with("app-logs.db"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The log file; default `<main file name without extension>-logs.db`
    /// next to the main file.
    pub path: Option<PathBuf>,
    /// Records queued at most before new ones are dropped.
    pub channel_capacity: usize,
    /// Records that start a transaction (default 50): the writer commits
    /// once this many are waiting (or `flush_interval` passed).
    pub batch_size: usize,
    /// Records per transaction when the queue is backed up (default
    /// 1,000): a batch takes everything already queued, up to this many.
    /// Each commit has a fixed cost, so under a burst fewer, larger
    /// commits keep up where `batch_size` ones fall behind and drop lines;
    /// the bound keeps one transaction short (it holds the log file's write
    /// lock, and a crash before it commits loses it whole). Below
    /// `batch_size`, `batch_size` is the bound (no adaptive batching).
    pub max_batch_size: usize,
    /// Longest time a record waits before it is written.
    pub flush_interval: Duration,
    /// Delete entries older than this (`None`: keep them).
    pub retention: Option<Duration>,
    /// Keep at most this many entries (`None`: no limit).
    pub max_rows: Option<u64>,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Rows deleted per retention transaction.
    pub retention_chunk: usize,
    /// Most verbose level the `log` bridge ([`DbLogger`]) records.
    pub level: log::LevelFilter,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            path: None,
            channel_capacity: 10_000,
            batch_size: 50,
            max_batch_size: 1_000,
            flush_interval: Duration::from_secs(2),
            retention: Some(Duration::from_secs(7 * 86_400)),
            max_rows: None,
            retention_check_interval: Duration::from_secs(60),
            retention_chunk: 500,
            level: log::LevelFilter::Info,
        }
    }
}

impl LogOptions {
    fn validate(&self) -> Result<()> {
        if self.channel_capacity == 0 || self.batch_size == 0 || self.retention_chunk == 0 {
            return Err(Error::InvalidInput(
                "LogOptions: channel_capacity, batch_size and retention_chunk must be at least 1"
                    .into(),
            ));
        }
        if self.flush_interval.is_zero() || self.retention_check_interval.is_zero() {
            return Err(Error::InvalidInput(
                "LogOptions: intervals must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Records per transaction at most.
    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch_size.max(self.batch_size)
    }

    /// The log file for a main database at `main`.
    pub fn path_for(&self, main: &Path) -> PathBuf {
        if let Some(path) = &self.path {
            return path.clone();
        }
        let stem = main
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into());
        main.with_file_name(format!("{stem}-logs.db"))
    }
}

/// Severity, as stored in `entries.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `ERROR`
    Error,
    /// `WARN`
    Warn,
    /// `INFO`
    Info,
    /// `DEBUG`
    Debug,
    /// `TRACE`
    Trace,
}

impl LogLevel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN",
            LogLevel::Info => "INFO",
            LogLevel::Debug => "DEBUG",
            LogLevel::Trace => "TRACE",
        }
    }
}

/// One log entry on its way to the file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// When it was logged (Unix ms).
    pub ts_unix_ms: u64,
    /// Severity.
    pub level: LogLevel,
    /// The `log`/`tracing` target (usually the module path).
    pub target: String,
    /// The message.
    pub message: String,
    /// Structured fields, stored as a JSON object.
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    /// Module path, source file and line, if known.
    pub module: Option<String>,
    /// Source file.
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// The logging thread's name (or id).
    pub thread: String,
}

impl LogRecord {
    /// A record of `level` and `message` from the current thread, now.
    pub fn new(level: LogLevel, target: &str, message: impl Into<String>) -> LogRecord {
        LogRecord {
            ts_unix_ms: now_unix_ms(),
            level,
            target: target.to_string(),
            message: message.into(),
            fields: None,
            module: None,
            file: None,
            line: None,
            thread: current_thread(),
        }
    }
}

pub(crate) fn current_thread() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => name.to_string(),
        None => format!("{:?}", thread.id()),
    }
}

/// Requests to the writer thread (their own channel, so a full record
/// queue never blocks a flush or a shutdown).
pub(crate) enum Control {
    Flush(Sender<Result<(), String>>),
    Retention(Sender<Result<u64, String>>),
    Shutdown(Sender<()>),
}

/// Counters shared by senders, the writer and `stats()`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) last_flush_unix_ms: AtomicU64,
    pub(crate) closed: AtomicBool,
}

impl Counters {
    /// The counts of the `writer_stats` row written in the transaction of
    /// a batch of `rows`, as they stand once it commits: written, batches,
    /// dropped, failed, deleted.
    pub(crate) fn stats_row(&self, rows: usize) -> [i64; 5] {
        [
            (self.written.load(Ordering::Relaxed) + rows as u64) as i64,
            (self.batches.load(Ordering::Relaxed) + 1) as i64,
            self.dropped.load(Ordering::Relaxed) as i64,
            self.failed.load(Ordering::Relaxed) as i64,
            self.deleted.load(Ordering::Relaxed) as i64,
        ]
    }

    /// A batch of `rows` committed at `now_unix_ms`.
    pub(crate) fn committed(&self, rows: usize, now_unix_ms: u64) {
        self.written.fetch_add(rows as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.last_flush_unix_ms
            .store(now_unix_ms, Ordering::Relaxed);
    }
}

/// Where records go: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct LogSink {
    records: Sender<LogRecord>,
    control: Sender<Control>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl LogSink {
    /// Queues `record`; returns false (and counts it in `dropped`) when the
    /// queue is full or the log database is closed. Never blocks.
    pub fn send(&self, record: LogRecord) -> bool {
        if self.counters.closed.load(Ordering::Acquire) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.records.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Asks the writer to write everything queued and waits up to
    /// `timeout` for it.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let (ack, done) = bounded(1);
        self.control
            .send(Control::Flush(ack))
            .map_err(|_| Error::Closed)?;
        match done.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(Error::FlushFailed {
                failed: 0,
                first_error: message,
            }),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(Error::Timeout { waited: timeout })
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }
}

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
    /// The server, when the log is on PostgreSQL (for `stats`' size).
    #[cfg(feature = "postgres")]
    server: Option<::postgres::Config>,
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
        LogDatabase::open_retrying(path, options, &crate::RetryPolicy::default())
    }

    /// [`LogDatabase::open`], retrying lock errors of the set-up (another
    /// process creating the same log file) under `retry`.
    pub(crate) fn open_retrying(
        path: impl AsRef<Path>,
        options: LogOptions,
        retry: &crate::RetryPolicy,
    ) -> Result<LogDatabase> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let conn = writer::open_connection(&path, retry)?;
        LogDatabase::start(
            path,
            writer::Store::Sqlite(writer::SqliteStore::new(conn)),
            options,
        )
    }

    /// The log database of a PostgreSQL application database: the `log`
    /// schema there (`log.entries`, `log.writer_stats`), written by the same
    /// writer thread on a session of its own.
    #[cfg(feature = "postgres")]
    pub(crate) fn open_postgres(
        config: &::postgres::Config,
        display: &str,
        options: LogOptions,
        retry: &crate::RetryPolicy,
    ) -> Result<LogDatabase> {
        options.validate()?;
        let store = postgres::PgStore::open(config, retry)?;
        let mut log = LogDatabase::start(
            PathBuf::from(format!("{display} (schema log)")),
            writer::Store::Postgres(store),
            options,
        )?;
        log.server = Some(config.clone());
        Ok(log)
    }

    /// Starts the writer thread on `store`.
    fn start(path: PathBuf, store: writer::Store, options: LogOptions) -> Result<LogDatabase> {
        let (records_tx, records_rx) = bounded(options.channel_capacity);
        let (control_tx, control_rx) = unbounded();
        let counters = Arc::new(Counters::default());
        let sink = LogSink {
            records: records_tx,
            control: control_tx,
            counters: Arc::clone(&counters),
        };
        let thread = writer::Writer::new(
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
            #[cfg(feature = "postgres")]
            server: None,
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
        self.sink
            .control
            .send(Control::Retention(ack))
            .map_err(|_| Error::Closed)?;
        match done.recv_timeout(timeout) {
            Ok(Ok(deleted)) => Ok(deleted),
            Ok(Err(message)) => Err(Error::InvalidInput(format!("retention failed: {message}"))),
            Err(_) => Err(Error::Timeout { waited: timeout }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> LogStats {
        let c = &self.sink.counters;
        let last = c.last_flush_unix_ms.load(Ordering::Relaxed);
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        #[cfg(feature = "postgres")]
        let file_bytes = match &self.server {
            Some(config) => postgres::PgStore::size(config),
            None => size(&self.path) + size(&wal),
        };
        #[cfg(not(feature = "postgres"))]
        let file_bytes = size(&self.path) + size(&wal);
        LogStats {
            written: c.written.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            queue_depth: self.records_rx.len(),
            last_flush_at: (last > 0).then(|| iso8601_utc(last)),
            file_bytes,
        }
    }

    /// Writes what is queued and stops the writer. Records sent afterwards
    /// are dropped (and counted). Also done on drop.
    pub fn close(&self) -> Result<()> {
        let Some(handle) = self.writer.lock().take() else {
            return Ok(());
        };
        let (ack, done) = bounded(1);
        let _ = self.sink.control.send(Control::Shutdown(ack));
        let _ = done.recv_timeout(Duration::from_secs(60));
        self.sink.counters.closed.store(true, Ordering::Release);
        let _ = handle.join();
        // Anything that slipped in between the final drain and `closed`.
        let late = self.records_rx.try_iter().count() as u64;
        self.sink
            .counters
            .dropped
            .fetch_add(late, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for LogDatabase {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime_across_seconds_days_and_leap_days() {
        let mut ts = Timestamps::default();
        // Epoch, 2000-02-29 (leap day), 2100-03-01 (no leap day in 2100),
        // a recent day, and runs of milliseconds across second boundaries.
        let mut samples = vec![0, 951_782_400_000, 4_107_542_400_000, 1_795_576_962_976];
        samples.extend((0..3_000).map(|i| 1_795_576_961_000 + i * 7));
        samples.extend((0..100).map(|i| 86_400_000 * i + 86_399_999));
        for ms in samples {
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                .to_string();
            assert_eq!(ts.format(ms), expected, "{ms}");
        }
    }

    #[test]
    fn timestamps_past_year_9999_are_clamped() {
        assert_eq!(iso8601_utc(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601_utc(MAX_UNIX_MS), "9999-12-31T23:59:59.999Z");
    }
}
