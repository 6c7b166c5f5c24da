//! The write buffer's settings ([`BufferOptions`], [`Backpressure`]) and
//! counters ([`BufferStats`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// What an enqueue does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for room up to `timeout`, then fail with [`Error::BufferFull`].
    Block {
        /// Longest wait.
        timeout: Duration,
    },
    /// Fail at once with [`Error::BufferFull`].
    Reject,
}

/// Write-buffer settings (defaults: flush at 100 entries or every 5 s,
/// at most 1000 pending, block up to 5 s when full).
///
/// ```
/// use std::time::Duration;
/// use sqlite_hybrid::{Backpressure, BufferOptions, Database};
///
/// let dir = tempfile::tempdir()?;
/// let db = Database::builder(dir.path().join("o.db"))
///     .write_buffer(BufferOptions {
///         flush_interval: Duration::from_millis(500),
///         backpressure: Backpressure::Reject,
///         table_priority: vec![("parents".into(), 10)],
///         ..BufferOptions::default()
///     })
///     .open()?;
/// assert_eq!(db.buffer().stats().pending, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BufferOptions {
    /// Entries per transaction, and the pending count that starts a flush.
    pub batch_size: usize,
    /// Longest time an entry waits before a flush starts.
    pub flush_interval: Duration,
    /// Most entries queued or being written at once.
    pub max_pending: usize,
    /// What happens when `max_pending` is reached.
    pub backpressure: Backpressure,
    /// `(table, priority)`: higher priorities flush first (e.g. parent
    /// tables before children with foreign keys). Others have priority 0.
    pub table_priority: Vec<(String, i32)>,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            batch_size: 100,
            flush_interval: Duration::from_secs(5),
            max_pending: 1000,
            backpressure: Backpressure::Block {
                timeout: Duration::from_secs(5),
            },
            table_priority: Vec::new(),
        }
    }
}

impl BufferOptions {
    /// Checks the settings: [`Error::InvalidInput`] naming the offending
    /// field (`BufferOptions.batch_size must be at least 1`), as
    /// [`crate::DatabaseBuilder::open`] reports it.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason| Err(Error::invalid_option("BufferOptions", field, reason));
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1");
        }
        if self.max_pending == 0 {
            return invalid("max_pending", "must be at least 1");
        }
        if self.flush_interval.is_zero() {
            return invalid("flush_interval", "must be positive");
        }
        Ok(())
    }

    pub(super) fn priority(&self, table: &str) -> i32 {
        self.table_priority
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(table))
            .map_or(0, |(_, p)| *p)
    }
}

/// Counters of a [`WriteBuffer`](super::WriteBuffer).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BufferStats {
    /// Entries queued, not yet being written.
    pub pending: usize,
    /// Entries in the batch being written now.
    pub in_flight: usize,
    /// Operations accepted.
    pub enqueued: u64,
    /// Operations merged into an existing entry.
    pub coalesced: u64,
    /// Entries committed.
    pub flushed_entries: u64,
    /// Transactions committed by the flusher.
    pub flushed_batches: u64,
    /// Entries that failed (moved to `take_failed`).
    pub failed_entries: u64,
    /// Batches that failed as a whole (kept and retried).
    pub failed_batches: u64,
    /// Transaction attempts beyond the first, caused by lock errors.
    pub lock_retries: u64,
    /// Enqueues refused because the buffer was full.
    pub rejected: u64,
    /// Duration of the last committed batch.
    pub last_flush_ms: Option<f64>,
    /// Mean duration of committed batches.
    pub avg_flush_ms: Option<f64>,
    /// Longest committed batch.
    pub max_flush_ms: f64,
    /// The last error the flusher met.
    pub last_error: Option<String>,
    /// Failed entries waiting in `take_failed`.
    pub failed_kept: usize,
    /// Failed entries dropped from `take_failed` because it was full
    /// (their tickets had already reported the failure).
    pub failed_evicted: u64,
}
