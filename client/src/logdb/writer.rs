//! The log writer thread: batches records into transactions on its own
//! connection to the log file, and runs retention between batches.
//!
//! # Batches grow with the backlog
//! Every commit has a fixed cost on top of its rows: `BEGIN`, the stats
//! row, rewriting the last page of the table and of both indexes into the
//! WAL, and the checkpoints those frames lead to. Measured
//! (`log_bench --throughput`): about 2 µs of writer CPU per row in batches
//! of 50, 1.3 µs in batches of 1,000, no less in larger ones. So a batch
//! is written once it holds `batch_size` records, and it takes everything
//! already queued at that moment, up to `max_batch_size`. While the writer
//! keeps up, batches are `batch_size`; when a burst backs the queue up, the
//! same records go out in fewer, larger commits, and the writer catches up
//! instead of falling further behind and dropping lines. The bound keeps
//! every transaction short: it holds the log file's write lock, and its
//! records are lost together if the process dies before it commits.
//!
//! # Commits are paced
//! A writer that keeps up would commit every `batch_size` records: at
//! 100,000 lines/s, 2,000 commits a second, each rewriting the last page
//! of the table and of both indexes into the WAL. That traffic goes to the
//! disk the application's own commits and checkpoints use. So a
//! `batch_size` batch also waits for `min_commit_interval` (50 ms) since
//! the last commit, taking in what arrives meanwhile, unless it reaches
//! `max_batch_size` first. Measured (`log_bench --throughput`, 200,000
//! rows): the writer sent 263 MB towards the disk in batches of 50, 110 MB
//! in batches of 250, 77 MB in batches of 1,000, for a 35 MB file. Below
//! `batch_size` records per interval nothing changes.
//!
//! # Checkpoints on a cadence
//! In WAL mode with `synchronous = NORMAL` a checkpoint's two fsyncs (the
//! WAL, then the file) are the log's only ones, and they queue with the
//! app's on the same disk. SQLite's automatic checkpoint every 1,000 WAL
//! pages came about 10 times a second at 100,000 lines/s. The writer
//! checkpoints itself instead (`PASSIVE`: it never waits for readers),
//! after a commit and at most once every `CHECKPOINT_INTERVAL` (1 s); the
//! automatic one stays as a backstop at 10,000 pages, 40 MB (`sqlite.rs`).
//! The WAL then holds about a second of log writes, and is reused from its
//! start once a checkpoint has copied it all.
//!
//! # Why this is not the write buffer's flusher loop
//! Both are one thread writing batches, but they wait on different queues.
//! The buffer's is a keyed map that callers read and change in place
//! (coalescing, tickets, the in-flight view), so it sits under a mutex with
//! a condvar. Log records have no key and no ticket, and a full queue must
//! drop instead of block: a channel with a length bound, and `select!` over records,
//! control messages and a timeout is the whole loop. A shared batch-writer
//! layer would serve only these two, sharing no code beneath the loop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::options::LogOptions;
use super::record::LogRecord;
use super::sink::{Control, Counters};
use super::store::Store;
use crate::error::Result;

/// Attempts per batch before it is dropped and counted as failed.
const BATCH_ATTEMPTS: u32 = 3;
/// Pause between retention chunks, so other writers of the log file get in.
const RETENTION_PAUSE: Duration = Duration::from_millis(2);
/// Shortest time between two checkpoints of the store (see the module
/// docs).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Makes the calling thread yield the CPU to the application's threads
/// (Linux: nice +10 for this thread only). Logging is background work; on
/// a busy machine its CPU time otherwise lands on the app's latency.
/// Elsewhere a no-op (there is no portable per-thread nice).
fn lower_cpu_priority() {
    #[cfg(target_os = "linux")]
    {
        let nice = std::env::var("SQLITE_HYBRID_LOG_NICE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10);
        // SAFETY: gettid and setpriority on the calling thread only; failure
        // (e.g. a seccomp filter) just leaves the priority unchanged.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice);
        }
    }
}

/// The writer thread's state: its store, its two queues, the counters.
pub(crate) struct Writer {
    store: Box<dyn Store>,
    records: Receiver<LogRecord>,
    control: Receiver<Control>,
    counters: Arc<Counters>,
    options: LogOptions,
    /// Records per transaction at most: `max_batch_size`, never below
    /// `batch_size`.
    max_batch: usize,
    /// When the last batch was written (see `batch_due`).
    last_commit: Instant,
    /// When the store last checkpointed.
    last_checkpoint: Instant,
}

impl Writer {
    pub(crate) fn new(
        store: Box<dyn Store>,
        records: Receiver<LogRecord>,
        control: Receiver<Control>,
        counters: Arc<Counters>,
        options: LogOptions,
    ) -> Writer {
        Writer {
            store,
            records,
            control,
            counters,
            max_batch: options.max_batch(),
            last_commit: Instant::now(),
            last_checkpoint: Instant::now(),
            options,
        }
    }

    pub(crate) fn run(mut self) {
        lower_cpu_priority();
        // Grows to the largest batch once and is reused (`max_batch_size`
        // may be set far above what a queue ever holds).
        let mut batch: Vec<LogRecord> = Vec::new();
        let mut batch_started: Option<Instant> = None;
        let mut next_retention = Instant::now() + self.options.retention_check_interval;
        loop {
            let flush_due = batch_started.map_or(self.options.flush_interval, |t| {
                self.options.flush_interval.saturating_sub(t.elapsed())
            });
            let mut timeout =
                flush_due.min(next_retention.saturating_duration_since(Instant::now()));
            if batch.len() >= self.options.batch_size {
                // A full `batch_size` batch waiting for its commit interval.
                timeout = timeout.min(
                    self.options
                        .min_commit_interval
                        .saturating_sub(self.last_commit.elapsed()),
                );
            }
            select! {
                recv(self.records) -> record => match record {
                    Ok(record) => {
                        batch.push(record);
                        batch_started.get_or_insert_with(Instant::now);
                        // What else is queued joins now, without a trip
                        // through `select!` per record.
                        self.fill(&mut batch);
                        if self.batch_due(&batch) {
                            self.write(&mut batch);
                            batch_started = None;
                        }
                    }
                    Err(_) => {
                        let _ = self.drain(&mut batch);
                        return;
                    }
                },
                recv(self.control) -> control => match control {
                    Ok(Control::Flush(ack)) => {
                        let result = self.drain(&mut batch);
                        batch_started = None;
                        let _ = ack.send(result);
                    }
                    Ok(Control::Retention(ack)) => {
                        let _ = ack.send(self.retention().map_err(|e| e.to_string()));
                        next_retention = Instant::now() + self.options.retention_check_interval;
                    }
                    Ok(Control::Shutdown(ack)) => {
                        let _ = self.drain(&mut batch);
                        let _ = ack.send(());
                        return;
                    }
                    Err(_) => {
                        let _ = self.drain(&mut batch);
                        return;
                    }
                },
                default(timeout) => {
                    if batch_started.is_some_and(|t| t.elapsed() >= self.options.flush_interval)
                        || self.batch_due(&batch)
                    {
                        self.write(&mut batch);
                        batch_started = None;
                    }
                    if Instant::now() >= next_retention {
                        let _ = self.retention();
                        next_retention = Instant::now() + self.options.retention_check_interval;
                    }
                }
            }
        }
    }

    /// Whether `batch` is to be committed now (besides `flush_interval`,
    /// flushes and close): it is full, or it holds `batch_size` records
    /// and `min_commit_interval` has passed since the last commit (see the
    /// module docs).
    fn batch_due(&self, batch: &[LogRecord]) -> bool {
        batch.len() >= self.max_batch
            || (batch.len() >= self.options.batch_size
                && self.last_commit.elapsed() >= self.options.min_commit_interval)
    }

    /// Moves queued records into `batch`, without waiting, until it holds
    /// `max_batch` (see the module docs).
    fn fill(&self, batch: &mut Vec<LogRecord>) {
        while batch.len() < self.max_batch {
            match self.records.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => return,
            }
        }
    }

    /// Writes the current batch and everything queued, in batches.
    fn drain(&mut self, batch: &mut Vec<LogRecord>) -> std::result::Result<(), String> {
        loop {
            self.fill(batch);
            if batch.is_empty() {
                return Ok(());
            }
            let failed_before = self.counters.failed.load(Ordering::Relaxed);
            self.write(batch);
            if self.counters.failed.load(Ordering::Relaxed) > failed_before {
                return Err("a log batch could not be written (counted in `failed`)".into());
            }
        }
    }

    /// Writes `batch` in one transaction (retrying), then empties it.
    fn write(&mut self, batch: &mut Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        self.last_commit = Instant::now();
        let mut pause = Duration::from_millis(20);
        for attempt in 1..=BATCH_ATTEMPTS {
            match self.store.write(batch, &self.counters) {
                Ok(()) => {
                    batch.clear();
                    if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
                        self.store.checkpoint();
                        self.last_checkpoint = Instant::now();
                    }
                    return;
                }
                // Not logged: with our own logger installed that would feed
                // the failure back into the queue it came from.
                Err(_) if attempt == BATCH_ATTEMPTS => {
                    self.counters
                        .failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause *= 4;
                }
            }
        }
    }

    /// Deletes old entries (and those beyond `max_rows`) in short chunks.
    fn retention(&mut self) -> Result<u64> {
        let mut deleted = 0u64;
        if let Some(retention) = self.options.retention {
            let cutoff_ms =
                crate::clock::now_unix_ms().saturating_sub(retention.as_millis() as u64);
            loop {
                let n = self
                    .store
                    .delete_older_than(cutoff_ms, self.options.retention_chunk)?;
                deleted += n as u64;
                if n < self.options.retention_chunk {
                    break;
                }
                std::thread::sleep(RETENTION_PAUSE);
            }
        }
        if let Some(max_rows) = self.options.max_rows {
            loop {
                let n = self
                    .store
                    .delete_beyond(max_rows, self.options.retention_chunk)?;
                deleted += n as u64;
                if n < self.options.retention_chunk {
                    break;
                }
                std::thread::sleep(RETENTION_PAUSE);
            }
        }
        self.counters.deleted.fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }
}
