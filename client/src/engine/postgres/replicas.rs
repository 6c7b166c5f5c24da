//! Reads on streaming standbys, and read-your-writes.
//!
//! A handle with standbys ([`crate::DatabaseBuilder::standby`]) runs
//! `query` on one of them (round robin) and everything that writes on the
//! primary. Invariant: **a read after this handle's write sees that
//! write.** After every committed write transaction the engine records the
//! primary's WAL position (`pg_current_wal_lsn()`, read on the writer
//! session after `COMMIT` returned, so at or past the commit record) in
//! [`ReadYourWrites`]. A read on a standby first asks the standby's
//! `pg_last_wal_replay_lsn()`; when that has reached the recorded position,
//! the read runs there, **in a new statement** (a statement's snapshot is
//! taken when it starts, so checking and reading in one statement could
//! miss the write). Otherwise it asks again with short growing sleeps, up
//! to the handle's bound (`standby_wait`), and then runs on the primary.
//! A standby that cannot be reached, or one that is no longer in recovery
//! (promoted: `pg_last_wal_replay_lsn()` is NULL), is not read from.
//!
//! What this does not promise: reads see *other* handles' writes on a
//! standby only once replayed (asynchronous replication); two reads of one
//! handle on two standbys may see the other handles' writes out of order.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, Config};

use super::errors::error;
use super::sessions::{connect_reader, redact, with_session};
use crate::error::{Error, Result};
use crate::pool::ReaderPool;

/// The position of this handle's newest write; `UNKNOWN` when a write
/// committed but its position could not be read (every read goes to the
/// primary until the next write records one).
pub(crate) struct ReadYourWrites {
    lsn: AtomicU64,
}

impl ReadYourWrites {
    const UNKNOWN: u64 = u64::MAX;

    pub(crate) fn new() -> ReadYourWrites {
        ReadYourWrites {
            lsn: AtomicU64::new(0),
        }
    }

    /// After a committed write: read the primary's position on the
    /// writer session that committed it.
    pub(crate) fn record_after_commit(&self, writer: &mut Client) {
        let position = current_lsn(writer).unwrap_or(Self::UNKNOWN);
        if position == Self::UNKNOWN {
            self.lsn.store(Self::UNKNOWN, Ordering::Release);
        } else {
            // Writes of other threads of this handle may be newer: keep
            // the largest (an UNKNOWN stays until a write records one).
            let _ = self
                .lsn
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                    (old == Self::UNKNOWN || old < position).then_some(position)
                });
        }
    }

    fn target(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }
}

/// One standby: its sessions and what this handle read there.
pub(crate) struct Standby {
    config: Config,
    pub(crate) display: String,
    pool: ReaderPool<Client>,
    reads: AtomicU64,
    reads_sent_to_primary: AtomicU64,
}

/// The standbys of one handle.
pub(crate) struct Standbys {
    list: Vec<Standby>,
    next: AtomicUsize,
    wait: Duration,
}

impl Standbys {
    /// Sessions on each of `urls` (`readers` each, at least one), opened
    /// now so that a wrong URL is an error at open.
    pub(crate) fn open(urls: &[String], readers: usize, wait: Duration) -> Result<Standbys> {
        let mut list = Vec::with_capacity(urls.len());
        for url in urls {
            let mut config: Config = url
                .parse()
                .map_err(|e| Error::InvalidInput(format!("standby URL: {e}")))?;
            config.application_name("sqlite-hybrid");
            let idle = (0..readers.max(1))
                .map(|_| connect_reader(&config))
                .collect::<Result<Vec<_>>>()?;
            list.push(Standby {
                config,
                display: redact(url),
                pool: ReaderPool::new(idle),
                reads: AtomicU64::new(0),
                reads_sent_to_primary: AtomicU64::new(0),
            });
        }
        Ok(Standbys {
            list,
            next: AtomicUsize::new(0),
            wait,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Standby> {
        self.list.iter()
    }

    /// Runs `f` on a standby that has replayed `writes`' newest position;
    /// `Ok(None)` when no standby could take the read (it belongs on the
    /// primary). Errors of `f` itself (bad SQL) are returned.
    pub(crate) fn read<T>(
        &self,
        writes: &ReadYourWrites,
        checkout_deadline: Duration,
        f: impl FnOnce(&mut Client) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.list.is_empty() {
            return Ok(None);
        }
        let target = writes.target();
        let standby = &self.list[self.next.fetch_add(1, Ordering::Relaxed) % self.list.len()];
        if target == ReadYourWrites::UNKNOWN {
            standby
                .reads_sent_to_primary
                .fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let outcome = with_session(
            &standby.pool,
            checkout_deadline,
            &standby.config,
            |client| {
                if target > 0 && !replayed(client, target, self.wait)? {
                    return Ok(None);
                }
                f(client).map(Some)
            },
        );
        match outcome {
            Ok(Some(value)) => {
                standby.reads.fetch_add(1, Ordering::Relaxed);
                Ok(Some(value))
            }
            Ok(None) => {
                standby
                    .reads_sent_to_primary
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            // Lost, or a query cancelled by a conflict with recovery
            // (40001 on a standby): the primary answers instead.
            Err(e) if should_fall_back(&e) => {
                standby
                    .reads_sent_to_primary
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Standby {
    /// (lag in bytes behind `primary_lsn`, lag in ms), or `None` when the
    /// standby could not be asked.
    pub(crate) fn lag(&self, primary_lsn: Option<u64>) -> Option<(i64, f64)> {
        with_session(&self.pool, Duration::from_secs(1), &self.config, |client| {
            let row = client
                .query_one(
                    "SELECT pg_last_wal_replay_lsn()::text, coalesce(extract(epoch FROM \
                             now() - pg_last_xact_replay_timestamp()) * 1000, 0)::float8",
                    &[],
                )
                .map_err(error)?;
            let replayed = row.get::<_, Option<String>>(0).and_then(|t| parse_lsn(&t));
            let age_ms: f64 = row.get(1);
            Ok(replayed.map(|replayed| {
                let behind = primary_lsn.map_or(0, |p| p.saturating_sub(replayed));
                let lag_ms = if behind == 0 { 0.0 } else { age_ms.max(0.0) };
                (i64::try_from(behind).unwrap_or(i64::MAX), lag_ms)
            }))
        })
        .ok()
        .flatten()
    }

    pub(crate) fn reads(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.reads_sent_to_primary.load(Ordering::Relaxed),
        )
    }
}

/// The largest of the standbys' lags (bytes, ms) for `lock_metrics`:
/// `None` when the primary's position is unknown (a lag of 0 would be a
/// guess) or no standby answered.
pub(crate) fn largest_lag(
    primary_lsn: Option<u64>,
    lags: &[Option<(i64, f64)>],
) -> Option<(i64, f64)> {
    primary_lsn?;
    lags.iter()
        .flatten()
        .copied()
        .reduce(|(bytes, ms), (b, m)| (bytes.max(b), ms.max(m)))
}

fn should_fall_back(e: &Error) -> bool {
    match e {
        Error::Io(_) | Error::Timeout { .. } => true,
        Error::Database(db) => db.sqlstate() == Some("40001"),
        _ => false,
    }
}

/// Whether the standby on `client` replays `target` within `wait`
/// (asked again after 0.1, 0.2, ... up to 5 ms sleeps). A server that is
/// not in recovery answers NULL: `false`.
fn replayed(client: &mut Client, target: u64, wait: Duration) -> Result<bool> {
    let start = Instant::now();
    let mut sleep = Duration::from_micros(100);
    loop {
        let row = client
            .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
            .map_err(error)?;
        match row.get::<_, Option<String>>(0).and_then(|t| parse_lsn(&t)) {
            Some(replayed) if replayed >= target => return Ok(true),
            Some(_) => {}
            None => return Ok(false),
        }
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(false);
        }
        std::thread::sleep(sleep.min(left));
        sleep = (sleep * 2).min(Duration::from_millis(5));
    }
}

/// The server's current WAL write position.
pub(crate) fn current_lsn(client: &mut Client) -> Option<u64> {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .ok()
        .and_then(|row| row.get::<_, Option<String>>(0))
        .and_then(|t| parse_lsn(&t))
}

/// `16/B374D848` as a number.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::{largest_lag, parse_lsn};

    #[test]
    fn the_largest_lag_needs_the_primary_and_an_answer() {
        let lags = [Some((10, 0.5)), None, Some((3, 7.0))];
        assert_eq!(largest_lag(Some(100), &lags), Some((10, 7.0)));
        assert_eq!(largest_lag(None, &lags), None);
        assert_eq!(largest_lag(Some(100), &[None, None]), None);
        assert_eq!(largest_lag(Some(100), &[]), None);
    }

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert!(parse_lsn("0/3000060") < parse_lsn("1/0"));
        assert_eq!(parse_lsn("bogus"), None);
        assert_eq!(parse_lsn("1/zz"), None);
    }
}
