//! The log writer thread: batches records into transactions on its own
//! connection to the log file, and runs retention between batches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{Control, Counters, LogOptions, LogRecord, schema};
use crate::error::Result;

/// Attempts per batch before it is dropped and counted as failed.
const BATCH_ATTEMPTS: u32 = 3;
/// Pause between retention chunks, so other writers of the log file get in.
const RETENTION_PAUSE: Duration = Duration::from_millis(2);

/// Makes the calling thread yield the CPU to the application's threads
/// (Linux: nice +10 for this thread only). Logging is background work; on
/// a busy machine its CPU time otherwise lands on the app's latency.
fn lower_cpu_priority() {
    let nice = std::env::var("SQLITE_HYBRID_LOG_NICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority on the calling thread only; failure
    // (e.g. a seccomp filter) just leaves the priority unchanged.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

/// Opens the log file: WAL, the hybrid busy handler, the schema (lock
/// errors while another process sets up the same file are retried).
pub(crate) fn open_connection(path: &Path, retry: &crate::RetryPolicy) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    let state = hybrid::register(&conn)?;
    // Log writes yield to anything interactive on the same file.
    state.set_priority(hybrid::Priority::Background);
    crate::retry::retry_lock_errors(retry, || {
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        schema::create(&conn)
    })?;
    Ok(conn)
}

pub(crate) struct Writer {
    conn: Connection,
    records: Receiver<LogRecord>,
    control: Receiver<Control>,
    counters: Arc<Counters>,
    options: LogOptions,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        records: Receiver<LogRecord>,
        control: Receiver<Control>,
        counters: Arc<Counters>,
        options: LogOptions,
    ) -> Writer {
        Writer {
            conn,
            records,
            control,
            counters,
            options,
        }
    }

    pub(crate) fn run(self) {
        lower_cpu_priority();
        let mut batch: Vec<LogRecord> = Vec::with_capacity(self.options.batch_size);
        let mut batch_started: Option<Instant> = None;
        let mut next_retention = Instant::now() + self.options.retention_check_interval;
        loop {
            let flush_due = batch_started.map_or(self.options.flush_interval, |t| {
                self.options.flush_interval.saturating_sub(t.elapsed())
            });
            let timeout = flush_due.min(next_retention.saturating_duration_since(Instant::now()));
            select! {
                recv(self.records) -> record => match record {
                    Ok(record) => {
                        batch.push(record);
                        batch_started.get_or_insert_with(Instant::now);
                        if batch.len() >= self.options.batch_size {
                            self.write(&mut batch);
                            batch_started = None;
                        }
                    }
                    Err(_) => {
                        self.write(&mut batch);
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
                    if batch_started.is_some_and(|t| t.elapsed() >= self.options.flush_interval) {
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

    /// Writes the current batch and everything queued, in batches.
    fn drain(&self, batch: &mut Vec<LogRecord>) -> std::result::Result<(), String> {
        loop {
            while batch.len() < self.options.batch_size {
                match self.records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
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
    fn write(&self, batch: &mut Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let mut pause = Duration::from_millis(20);
        for attempt in 1..=BATCH_ATTEMPTS {
            match self.try_write(batch) {
                Ok(()) => {
                    batch.clear();
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

    fn try_write(&self, batch: &[LogRecord]) -> rusqlite::Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(schema::INSERT_ENTRY)?;
            for r in batch {
                let fields = r
                    .fields
                    .as_ref()
                    .map(|f| serde_json::Value::Object(f.clone()).to_string());
                insert.execute(rusqlite::params![
                    super::iso8601_utc(r.ts_unix_ms),
                    r.level.as_str(),
                    r.target,
                    r.message,
                    fields,
                    r.module,
                    r.file,
                    r.line,
                    r.thread,
                ])?;
            }
        }
        let now = super::now_unix_ms();
        let c = &self.counters;
        tx.execute(
            schema::UPSERT_STATS,
            rusqlite::params![
                (c.written.load(Ordering::Relaxed) + batch.len() as u64) as i64,
                (c.batches.load(Ordering::Relaxed) + 1) as i64,
                c.dropped.load(Ordering::Relaxed) as i64,
                c.failed.load(Ordering::Relaxed) as i64,
                c.deleted.load(Ordering::Relaxed) as i64,
                super::iso8601_utc(now),
                std::process::id(),
            ],
        )?;
        tx.commit()?;
        c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.last_flush_unix_ms.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes old entries (and those beyond `max_rows`) in short chunks.
    fn retention(&self) -> Result<u64> {
        let mut deleted = 0u64;
        if let Some(retention) = self.options.retention {
            let cutoff_ms = super::now_unix_ms().saturating_sub(retention.as_millis() as u64);
            let cutoff = super::iso8601_utc(cutoff_ms);
            loop {
                let n =
                    schema::delete_older_than(&self.conn, &cutoff, self.options.retention_chunk)?;
                deleted += n as u64;
                if n < self.options.retention_chunk {
                    break;
                }
                std::thread::sleep(RETENTION_PAUSE);
            }
        }
        if let Some(max_rows) = self.options.max_rows {
            loop {
                let n = schema::delete_beyond(&self.conn, max_rows, self.options.retention_chunk)?;
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
