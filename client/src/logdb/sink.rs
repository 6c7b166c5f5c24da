//! The producers' side of the log database: [`LogSink`] queues records
//! (at most `channel_capacity` of them) without ever blocking, [`Control`] carries flush,
//! retention and shutdown requests on a channel of their own, and
//! [`Counters`] are the counts senders, the writer and `stats()` share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use super::record::LogRecord;
use crate::error::{Error, Result};

/// Requests to the writer thread (their own channel, so a full record
/// queue never blocks a flush or a shutdown).
pub(crate) enum Control {
    Flush(Sender<Result<(), String>>),
    Retention(Sender<Result<u64, String>>),
    Shutdown(Sender<()>),
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
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
    /// An unbounded channel, bounded by `capacity` in [`LogSink::send`]:
    /// a bounded crossbeam channel allocates (and touches) every slot up
    /// front, ~180 bytes each, so a queue deep enough for a burst would
    /// cost its full size in every process that opens a log database;
    /// this one holds memory only for the records actually queued.
    records: Sender<LogRecord>,
    capacity: usize,
    control: Sender<Control>,
    counters: Arc<Counters>,
}

impl LogSink {
    pub(crate) fn new(
        records: Sender<LogRecord>,
        capacity: usize,
        control: Sender<Control>,
        counters: Arc<Counters>,
    ) -> LogSink {
        LogSink {
            records,
            capacity,
            control,
            counters,
        }
    }

    /// Queues `record`; returns false (and counts it in `dropped`) when the
    /// queue is full or the log database is closed. Never blocks.
    ///
    /// Threads sending at the same instant may each see room for one more,
    /// so the queue can exceed `channel_capacity` by at most one record per
    /// sending thread; every record is still either queued or counted.
    pub fn send(&self, record: LogRecord) -> bool {
        let refused = self.counters.closed.load(Ordering::Acquire)
            || self.records.len() >= self.capacity
            || self.records.send(record).is_err();
        if refused {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        !refused
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

    /// Sends a request to the writer (fails once it has stopped).
    pub(crate) fn control(&self, request: Control) -> Result<()> {
        self.control.send(request).map_err(|_| Error::Closed)
    }

    /// The counters this sink shares with the writer.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }
}
