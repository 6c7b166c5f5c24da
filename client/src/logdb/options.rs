//! [`LogOptions`]: the settings of a log database and their checks. A leaf
//! of the log database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Settings of the log database (defaults: 100,000 queued records, batches
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
    /// Records queued at most before new ones are dropped (default
    /// 100,000: a one-second stall of the writer, e.g. a slow fsync of a
    /// checkpoint on a busy disk, at a burst of 100,000 lines/s; with
    /// 10,000 such stalls dropped 2,000-7,000 lines of 500,000). Memory
    /// is taken only for records actually queued (about 200 bytes each
    /// plus their text).
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
    /// Shortest time between two commits while fewer than
    /// `max_batch_size` records are waiting (default 50 ms): once
    /// `batch_size` records are waiting, the writer commits when this much
    /// time has passed since its last commit, taking what arrived
    /// meanwhile into the same transaction. A stream of up to 20,000
    /// lines/s then takes at most 20 commits a second instead of one per
    /// `batch_size` records (a faster one commits full batches); every
    /// commit rewrites the last page of the table and of each index, so
    /// fewer commits write less to the disk the app's own commits use. A
    /// full `max_batch_size` batch is committed at once.
    /// `Duration::ZERO`: commit as soon as `batch_size` are waiting.
    pub min_commit_interval: Duration,
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
    /// Most verbose level the `log` bridge ([`super::DbLogger`]) records.
    pub level: log::LevelFilter,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            path: None,
            channel_capacity: 100_000,
            batch_size: 50,
            max_batch_size: 1_000,
            min_commit_interval: Duration::from_millis(50),
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
    pub(crate) fn validate(&self) -> Result<()> {
        let counts = [
            ("channel_capacity", self.channel_capacity),
            ("batch_size", self.batch_size),
            ("retention_chunk", self.retention_chunk),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(Error::invalid_option(
                "LogOptions",
                field,
                "must be at least 1",
            ));
        }
        let intervals = [
            ("flush_interval", self.flush_interval),
            ("retention_check_interval", self.retention_check_interval),
        ];
        if let Some((field, _)) = intervals.iter().find(|(_, value)| value.is_zero()) {
            return Err(Error::invalid_option(
                "LogOptions",
                field,
                "must be positive",
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
