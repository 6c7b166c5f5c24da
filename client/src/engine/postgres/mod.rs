//! The PostgreSQL engine: one writer session and a pool of reader sessions
//! on a server, through the synchronous `postgres` driver.
//!
//! What carries over from SQLite, and how:
//! * **Retried write transactions**, `SERIALIZABLE` like SQLite's: the
//!   whole closure runs again on the
//!   errors retrying can cure: serialization failure (`40001`), deadlock
//!   (`40P01`) and lock not available (`55P03`, the writer session's
//!   `lock_timeout`, set to the retry deadline), under the same
//!   [`RetryPolicy`]; after the deadline, [`Error::LockTimeout`]. A lock
//!   wait itself happens in the server's fair lock queue, not in a busy
//!   loop of ours. Conflicts (`40001`, `40P01`) are contention, not rare
//!   errors: they do not use up `max_attempts`, and the delays between
//!   attempts age so that no session starves (`retry.rs`).
//! * **Failover**: a lost session is reopened on next use (through the
//!   URL's hosts in order; with `target_session_attrs=read-write` the one
//!   that is the primary now). A write transaction whose session was lost
//!   before `COMMIT` runs again until the deadline (`retry.rs`); one lost
//!   during `COMMIT` (no answer, `08xxx`, `57P0x`) is
//!   [`Error::CommitOutcomeUnknown`], as is a commit the server reports as
//!   "committed locally" after cancelling its wait for the synchronous
//!   standby. Reads on the primary are run again on a new session.
//! * **Standbys** (`replicas.rs`): reads with read-your-writes.
//! * **Errors** are classified by SQLSTATE into the same kinds: `23xxx`
//!   constraint, undefined table/column schema, `22xxx` data exceptions
//!   invalid input, connection failures I/O (the session is reopened on
//!   the next call).
//! * **Lock statistics** are this handle's own: each transaction that met
//!   a retryable conflict is a wait, with its length and outcome (`mode =
//!   "postgres"`); the server's view is [`PgEngine::lock_waiters`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hybrid::{LockMode, LockScope, LockStats, WaitTotals};
use parking_lot::{Mutex, MutexGuard};
use postgres::{Client, Config};
use rusqlite::types::Value;

use crate::engine::tx::Tx;
use crate::error::{DbError, Error, Result};
use crate::health::{Health, LockWaiter, OptimizeReport, ServerHealth, StandbyHealth};
use crate::pool::ReaderPool;
use crate::retry::RetryPolicy;
use crate::schema::TableInfo;

pub(crate) mod batch;
pub(crate) mod errors;
mod replicas;
mod retry;
mod schema;
mod sessions;
pub(crate) mod values;

pub(crate) use errors::error;
use errors::{ClientNote, commit_error};
use sessions::{connect_reader, connect_writer, redact, with_session};

/// One PostgreSQL database.
pub(crate) struct PgEngine {
    config: Config,
    /// The URL without its password, for people.
    display: String,
    /// `None` after the session was lost: reopened on next use.
    writer: Mutex<Option<Client>>,
    readers: ReaderPool<Client>,
    retry: RetryPolicy,
    /// Waits for the lock this handle has seen (for `lock_metrics`).
    waits: Mutex<WaitTotals>,
    /// Where `query` runs when there are any (`replicas.rs`).
    standbys: replicas::Standbys,
    /// This handle's newest write, for read-your-writes on standbys.
    writes: replicas::ReadYourWrites,
    /// Set by the sessions' notice callback when the server warns that it
    /// cancelled a commit's wait for the synchronous standby.
    sync_wait_cancelled: Arc<AtomicBool>,
}

impl PgEngine {
    /// Connects to `url` (a `postgres://` or `postgresql://` URL): one
    /// writer session and `readers` reader sessions; and to each of
    /// `standbys` (`readers` sessions each), where reads then go.
    pub(crate) fn open(
        url: &str,
        readers: usize,
        retry: &RetryPolicy,
        standbys: &[String],
        standby_wait: Duration,
    ) -> Result<PgEngine> {
        let mut config: Config = url
            .parse()
            .map_err(|e| Error::InvalidInput(format!("PostgreSQL URL: {e}")))?;
        config.application_name("sqlite-hybrid");
        let sync_wait_cancelled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&sync_wait_cancelled);
        config.notice_callback(move |notice| {
            if notice
                .message()
                .contains("wait for synchronous replication")
            {
                flag.store(true, Ordering::Relaxed);
            } else {
                log::info!("PostgreSQL {}: {}", notice.severity(), notice.message());
            }
        });
        let standbys = replicas::Standbys::open(standbys, readers, standby_wait)?;
        // Connect now, so a wrong URL or a server that is down is an error
        // at open, like a missing directory is for SQLite.
        let writer = connect_writer(&config, retry)?;
        let readers = (0..readers)
            .map(|_| connect_reader(&config))
            .collect::<Result<Vec<_>>>()?;
        Ok(PgEngine {
            sync_wait_cancelled,
            display: redact(url),
            writer: Mutex::new(Some(writer)),
            readers: ReaderPool::new(readers),
            retry: *retry,
            waits: Mutex::new(WaitTotals::default()),
            standbys,
            writes: replicas::ReadYourWrites::new(),
            config,
        })
    }

    /// The URL without its password.
    pub(crate) fn display_url(&self) -> &str {
        &self.display
    }

    /// The connection settings (for the log database on the same server).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn reader_count(&self) -> usize {
        self.readers.size()
    }

    /// The writer session, reopened if it was lost.
    fn writer<'a>(&self, guard: &'a mut MutexGuard<'_, Option<Client>>) -> Result<&'a mut Client> {
        if guard.as_ref().is_none_or(Client::is_closed) {
            **guard = Some(connect_writer(&self.config, &self.retry)?);
        }
        Ok(guard.as_mut().expect("just set"))
    }

    /// Runs `f` in a transaction on the writer session and commits; the
    /// whole closure again on retryable conflicts, until the deadline.
    pub(crate) fn with_transaction<T>(
        &self,
        mut f: impl FnMut(&mut postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.transact(&mut |tx: &mut Tx<'_>| {
            let pg = tx.as_postgres_mut().expect("a PostgreSQL transaction");
            f(pg)
        })
    }

    /// Runs `f` in a write transaction (see [`crate::Database::transact`]).
    pub(crate) fn transact<T>(&self, f: &mut impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut guard = self.writer.lock();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut conflicted = false;
        let result = retry::retry_transaction(&self.retry, || {
            attempts += 1;
            let outcome = (|| {
                let client = self.writer(&mut guard)?;
                // SERIALIZABLE: what a SQLite write transaction is, so code
                // that reads and then writes behaves the same on both
                // engines; a conflict is 40001 and the closure runs again.
                let tx = client
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::Serializable)
                    .start()
                    .map_err(error)?;
                let mut tx = Tx::postgres(tx);
                let value = f(&mut tx)?;
                self.sync_wait_cancelled.store(false, Ordering::Relaxed);
                tx.into_postgres()
                    .expect("a PostgreSQL transaction")
                    .commit()
                    .map_err(commit_error)?;
                if self.sync_wait_cancelled.swap(false, Ordering::Relaxed) {
                    // Committed here, perhaps not on the synchronous
                    // standby: not acknowledged (POSTGRES-NOTES pitfall 1).
                    return Err(Error::CommitOutcomeUnknown(DbError::from(ClientNote(
                        "the server cancelled the wait for the synchronous standby: committed \
                         on the primary, perhaps not replicated",
                    ))));
                }
                Ok(value)
            })();
            if outcome.as_ref().is_err_and(Error::is_lock_error) && !conflicted {
                conflicted = true;
                self.waits.lock().in_flight += 1;
            }
            outcome
        });
        if conflicted {
            self.count_wait(started.elapsed(), attempts, result.is_ok());
        }
        if result.is_ok()
            && !self.standbys.is_empty()
            && let Some(writer) = guard.as_mut()
        {
            self.writes.record_after_commit(writer);
        }
        result
    }

    fn count_wait(&self, waited: Duration, attempts: u32, acquired: bool) {
        let us = waited.as_micros() as u64;
        let mut w = self.waits.lock();
        w.in_flight = w.in_flight.saturating_sub(1);
        w.retries += u64::from(attempts.saturating_sub(1));
        if acquired {
            w.acquired += 1;
        } else {
            w.gave_up += 1;
        }
        w.wait_total_us += us;
        w.wait_max_us = w.wait_max_us.max(us);
        w.last_event_unix_ms = Some(crate::clock::now_unix_ms());
    }

    /// Runs `f` on a reader session of the primary (the writer's when
    /// there are none).
    fn with_reader<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        if self.readers.size() == 0 {
            let mut guard = self.writer.lock();
            return f(self.writer(&mut guard)?);
        }
        with_session(&self.readers, self.retry.deadline, &self.config, f)
    }

    /// A read on the primary, run again on a new session while the
    /// connection is lost (a failover), until the retry deadline: reads
    /// change nothing, so running one twice is harmless.
    fn read_primary<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.with_reader(&mut f) {
                Err(e)
                    if retry::is_connection_lost(&e)
                        && started.elapsed() + pause < self.retry.deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(self.retry.cap);
                }
                other => return other,
            }
        }
    }

    /// Every row of one query, on a reader.
    /// On a standby that has this handle's writes, if there is one
    /// (`replicas.rs`); otherwise on the primary.
    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        if let Some(rows) = self
            .standbys
            .read(&self.writes, self.retry.deadline, |client| {
                values::query(client, sql, params)
            })?
        {
            return Ok(rows);
        }
        self.read_primary(|client| values::query(client, sql, params))
    }

    /// The description of `name` from the server's catalog.
    pub(crate) fn load_table(&self, name: &str) -> Result<Arc<TableInfo>> {
        self.with_reader(|client| schema::load_table(client, name))
    }

    /// This handle's waits for locks and, with standbys, their largest
    /// lag (which asks the primary and each standby: one short query each).
    pub(crate) fn lock_metrics(&self) -> LockStats {
        let lag = if self.standbys.is_empty() {
            None
        } else {
            let primary_lsn = self
                .with_reader(|client| Ok(replicas::current_lsn(client)))
                .ok()
                .flatten();
            let lags: Vec<_> = self
                .standbys
                .iter()
                .map(|standby| standby.lag(primary_lsn))
                .collect();
            replicas::largest_lag(primary_lsn, &lags)
        };
        self.lock_stats(lag)
    }

    /// The lock statistics row, with the standbys' largest lag.
    fn lock_stats(&self, standby_lag: Option<(i64, f64)>) -> LockStats {
        let mut stats = LockStats::from_wait_totals(
            self.display.clone(),
            LockScope::Process,
            LockMode::Postgres,
            Some(1 + self.readers.size() as u64),
            &self.waits.lock(),
        );
        stats.standby_lag_bytes = standby_lag.map(|(bytes, _)| bytes);
        stats.standby_lag_ms = standby_lag.map(|(_, ms)| ms);
        stats
    }

    /// The server's view: version, size, sessions, lock waits.
    pub(crate) fn health(&self) -> Result<Health> {
        let mut primary_lsn = None;
        let mut server = self.with_reader(|client| {
            primary_lsn = replicas::current_lsn(client);
            let row = values::query(
                client,
                "SELECT current_setting('server_version'), pg_database_size(current_database()), \
                 (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()), \
                 current_setting('max_connections')::int, \
                 (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                  AND wait_event_type = 'Lock')",
                &[],
            )?;
            let int = |v: &Value| match v {
                Value::Integer(i) => *i,
                _ => 0,
            };
            let row = row
                .first()
                .ok_or_else(|| Error::InvalidInput("no health row".into()))?;
            Ok(ServerHealth {
                version: match &row[0] {
                    Value::Text(t) => t.clone(),
                    other => format!("{other:?}"),
                },
                database_bytes: int(&row[1]),
                connections: int(&row[2]),
                max_connections: int(&row[3]),
                lock_waits: int(&row[4]),
                standbys: Vec::new(),
            })
        })?;
        let lags: Vec<_> = self
            .standbys
            .iter()
            .map(|standby| standby.lag(primary_lsn))
            .collect();
        server.standbys = self
            .standbys
            .iter()
            .zip(&lags)
            .map(|(standby, &lag)| {
                let (reads, reads_sent_to_primary) = standby.reads();
                StandbyHealth {
                    url: standby.display.clone(),
                    lag_bytes: lag.map(|(bytes, _)| bytes),
                    lag_ms: lag.map(|(_, ms)| ms),
                    reads,
                    reads_sent_to_primary,
                }
            })
            .collect();
        Ok(Health {
            schemas: Vec::new(),
            locks: vec![self.lock_stats(replicas::largest_lag(primary_lsn, &lags))],
            server: Some(server),
        })
    }

    /// Sessions of this database waiting for a lock, with who blocks them.
    pub(crate) fn lock_waiters(&self) -> Result<Vec<LockWaiter>> {
        let rows = self.with_reader(|client| {
            values::query(
                client,
                "SELECT pid, extract(epoch FROM clock_timestamp() - coalesce(state_change, \
                 query_start)) * 1000, array_to_string(pg_blocking_pids(pid), ','), \
                 wait_event_type || ':' || wait_event, query FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' ORDER BY pid",
                &[],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|row| LockWaiter {
                pid: match row[0] {
                    Value::Integer(p) => p as u32,
                    _ => 0,
                },
                waited_ms: match &row[1] {
                    Value::Real(r) => *r,
                    Value::Text(t) => t.parse().unwrap_or(0.0),
                    _ => 0.0,
                },
                blocked_by: match &row[2] {
                    Value::Text(t) => t.split(',').filter_map(|p| p.parse().ok()).collect(),
                    _ => Vec::new(),
                },
                wait: match &row[3] {
                    Value::Text(t) => t.clone(),
                    _ => String::new(),
                },
                query: match &row[4] {
                    Value::Text(t) => Some(t.clone()),
                    _ => None,
                },
            })
            .collect())
    }

    /// `ANALYZE` (the planner's statistics); PostgreSQL's autovacuum does
    /// the rest.
    pub(crate) fn optimize(&self) -> Result<OptimizeReport> {
        let mut guard = self.writer.lock();
        self.writer(&mut guard)?
            .batch_execute("ANALYZE")
            .map_err(error)?;
        Ok(OptimizeReport {
            checkpoint_busy: false,
            wal_frames: 0,
            checkpointed_frames: 0,
            vacuumed_pages: 0,
        })
    }
}
