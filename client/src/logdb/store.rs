//! [`Store`]: where the writer thread puts records. The log file
//! (`sqlite.rs`) and, with feature `postgres`, the `log` schema of a
//! PostgreSQL database (`postgres.rs`) implement it; the writer's batching,
//! retries and counters are the same for both, and know neither.

use super::record::LogRecord;
use super::sink::Counters;
use crate::error::Result;

/// A destination of log batches, owned by the writer thread.
pub(crate) trait Store: Send {
    /// Writes `batch` and the `writer_stats` row (from
    /// [`Counters::stats_row`]) in one transaction, then records the commit
    /// in `counters` ([`Counters::committed`]).
    fn write(
        &mut self,
        batch: &[LogRecord],
        counters: &Counters,
    ) -> std::result::Result<(), String>;

    /// Deletes up to `chunk` entries older than `cutoff_ms` (Unix ms);
    /// returns how many.
    fn delete_older_than(&mut self, cutoff_ms: u64, chunk: usize) -> Result<usize>;

    /// Deletes up to `chunk` of the oldest entries beyond the newest
    /// `keep`; returns how many.
    fn delete_beyond(&mut self, keep: u64, chunk: usize) -> Result<usize>;

    /// Moves committed writes to their final place, if the store has such
    /// a step (the log file's WAL checkpoint; nothing on PostgreSQL, whose
    /// server checkpoints by itself). Called by the writer at most every
    /// `CHECKPOINT_INTERVAL`, after a commit. Best effort: what it cannot
    /// do now, the next call does.
    fn checkpoint(&mut self) {}
}

/// How `stats()` measures what a store takes on disk, from the caller's
/// thread (the store itself belongs to the writer thread).
pub(crate) type SizeProbe = Box<dyn Fn() -> u64 + Send + Sync>;
