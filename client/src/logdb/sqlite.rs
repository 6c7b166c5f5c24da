//! The log file: a SQLite database of its own (WAL), opened by the writer
//! thread's connection. Its SQL lives in `schema.rs`; this module opens the
//! file and writes batches into it.

use std::path::{Path, PathBuf};

use rusqlite::{CachedStatement, Connection, OpenFlags, TransactionBehavior};

use super::record::LogRecord;
use super::schema;
use super::sink::Counters;
use super::store::{SizeProbe, Store};
use super::timestamp::{Timestamps, iso8601_utc};
use crate::error::Result;

/// WAL pages after which a commit checkpoints by itself (SQLite's
/// default is 1,000): a backstop, should the writer's own checkpoints
/// (every `CHECKPOINT_INTERVAL`, `writer.rs`) fall behind. In WAL mode with
/// `synchronous = NORMAL` the checkpoints are the only fsyncs: at 1,000
/// pages (4 MB) a log written at 100,000 lines/s checkpointed about 10
/// times a second, and each pair of fsyncs queues with the app's own on
/// the same disk.
const AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Opens the log file: WAL, the hybrid busy handler, the schema (lock
/// errors while another process sets up the same file are retried).
pub(crate) fn open_connection(
    path: &Path,
    retry: &crate::retry::RetryPolicy,
) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    let state = hybrid::register(&conn)?;
    // Log writes yield to anything interactive on the same file.
    state.set_priority(hybrid::Priority::Background);
    crate::retry::retry_lock_errors(retry, || {
        // temp_store: a multi-row insert keeps a statement journal (to undo
        // just that statement), in memory rather than a temporary file.
        // wal_autocheckpoint: the writer checkpoints on its own cadence
        // (`Store::checkpoint`); SQLite's automatic one is only a backstop
        // (see `AUTOCHECKPOINT_PAGES`).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES};"
        ))?;
        schema::create(&conn)
    })?;
    Ok(conn)
}

/// The bytes of the log file at `path` and of its WAL, measured each call.
pub(crate) fn size_probe(path: &Path) -> SizeProbe {
    let files = [
        path.to_path_buf(),
        PathBuf::from(format!("{}-wal", path.display())),
    ];
    Box::new(move || {
        files
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    })
}

/// The log file's connection and its two insert statements' text.
pub(crate) struct SqliteStore {
    conn: Connection,
    /// The multi-row insert (`schema::ROWS_PER_INSERT` rows) and the
    /// one-row insert for the rest of a batch.
    insert_rows_sql: String,
    insert_one_sql: String,
}

impl SqliteStore {
    pub(crate) fn new(conn: Connection) -> SqliteStore {
        SqliteStore {
            conn,
            insert_rows_sql: schema::insert_entries(schema::ROWS_PER_INSERT),
            insert_one_sql: schema::insert_entries(1),
        }
    }

    fn try_write(&self, batch: &[LogRecord], c: &Counters) -> rusqlite::Result<()> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        {
            // Full chunks through the multi-row statement, the rest one by
            // one: two cached statements instead of one per batch length.
            let mut ts = Timestamps::default();
            let mut chunks = batch.chunks_exact(schema::ROWS_PER_INSERT);
            if chunks.len() > 0 {
                let mut insert = tx.prepare_cached(&self.insert_rows_sql)?;
                for chunk in &mut chunks {
                    for (i, r) in chunk.iter().enumerate() {
                        bind_entry(&mut insert, i * schema::ENTRY_PARAMS + 1, r, &mut ts)?;
                    }
                    insert.raw_execute()?;
                }
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut insert = tx.prepare_cached(&self.insert_one_sql)?;
                for r in rest {
                    bind_entry(&mut insert, 1, r, &mut ts)?;
                    insert.raw_execute()?;
                }
            }
        }
        let now = crate::clock::now_unix_ms();
        let [written, batches, dropped, failed, deleted] = c.stats_row(batch.len());
        tx.prepare_cached(schema::UPSERT_STATS)?
            .execute(rusqlite::params![
                written,
                batches,
                dropped,
                failed,
                deleted,
                iso8601_utc(now),
                std::process::id(),
            ])?;
        tx.commit()?;
        c.committed(batch.len(), now);
        Ok(())
    }
}

impl Store for SqliteStore {
    fn write(
        &mut self,
        batch: &[LogRecord],
        counters: &Counters,
    ) -> std::result::Result<(), String> {
        self.try_write(batch, counters).map_err(|e| e.to_string())
    }

    fn delete_older_than(&mut self, cutoff_ms: u64, chunk: usize) -> Result<usize> {
        schema::delete_older_than(&self.conn, &iso8601_utc(cutoff_ms), chunk)
    }

    fn delete_beyond(&mut self, keep: u64, chunk: usize) -> Result<usize> {
        schema::delete_beyond(&self.conn, keep, chunk)
    }

    /// `PASSIVE`: copies what it can without waiting for readers (an
    /// attached reader's snapshot keeps its frames for a later one) and
    /// never blocks the app. A failure leaves the frames for the next
    /// checkpoint.
    fn checkpoint(&mut self) {
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
    }
}

/// Binds one record to the `schema::ENTRY_PARAMS` parameters of `insert`
/// starting at `first` (SQLite copies bound text, so `ts` reuses its
/// buffer for every row).
fn bind_entry(
    insert: &mut CachedStatement<'_>,
    first: usize,
    r: &LogRecord,
    ts: &mut Timestamps,
) -> rusqlite::Result<()> {
    // Serializing a map of JSON values cannot fail; were it ever to, the
    // entry keeps its message without fields rather than failing its batch.
    let fields = r
        .fields
        .as_ref()
        .and_then(|f| serde_json::to_string(f).ok());
    insert.raw_bind_parameter(first, ts.format(r.ts_unix_ms))?;
    insert.raw_bind_parameter(first + 1, r.level.as_str())?;
    insert.raw_bind_parameter(first + 2, r.target.as_str())?;
    insert.raw_bind_parameter(first + 3, r.message.as_str())?;
    insert.raw_bind_parameter(first + 4, fields)?;
    insert.raw_bind_parameter(first + 5, r.module.as_deref())?;
    insert.raw_bind_parameter(first + 6, r.file.as_deref())?;
    insert.raw_bind_parameter(first + 7, r.line)?;
    insert.raw_bind_parameter(first + 8, r.thread.as_str())?;
    Ok(())
}
