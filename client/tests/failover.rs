//! Failover on real servers: a primary and a synchronous streaming standby
//! (`scripts/postgres/with-replicas.sh --sync`, which `make test` runs for
//! this file alone: the test kills its primary). Writers go through a
//! multi-host URL with `target_session_attrs=read-write`, through
//! `transact` and through the write buffer; the primary is killed with
//! SIGKILL under that load and the standby promoted with `pg_ctl promote`.
//! The client must find the new primary and go on, never re-run a
//! transaction whose COMMIT went unanswered (that is
//! `Error::CommitOutcomeUnknown`), and every write it acknowledged must be
//! on the new primary.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::params;
use sqlite_hybrid::{Database, Error, RetryPolicy, Row};

/// Long enough for a failover on a loaded machine (it takes well under a
/// second here); it bounds the test, it is not what the test measures.
const DEADLINE: Duration = Duration::from_secs(30);
const WRITERS: i64 = 4;
/// Acknowledged writes before the kill, and after it.
const BEFORE: u64 = 200;
const AFTER: u64 = 200;

#[derive(Default)]
struct Outcomes {
    /// (writer, seq) that `transact` acknowledged.
    acknowledged: BTreeSet<(i64, i64)>,
    /// (writer, seq) whose COMMIT went unanswered.
    unknown: BTreeSet<(i64, i64)>,
    /// Buffer keys whose ticket resolved as committed.
    buffered: BTreeSet<i64>,
    /// Anything else (must stay empty).
    errors: Vec<String>,
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_acknowledged_write_survives_a_failover_with_synchronous_replication() {
    // HYBRID_FAILOVER_MEASURE=1 under with-replicas.sh without --sync:
    // the same run on asynchronous replication, reporting (not asserting)
    // how many acknowledged writes the failover lost.
    let measure_async = std::env::var("HYBRID_PG_SYNC").as_deref() == Ok("0")
        && std::env::var("HYBRID_FAILOVER_MEASURE").as_deref() == Ok("1");
    if std::env::var("HYBRID_PG_SYNC").as_deref() != Ok("1") && !measure_async {
        eprintln!(
            "skipped: needs scripts/postgres/with-replicas.sh --sync (make test runs it; the \
             test kills the primary)"
        );
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let multi = var("HYBRID_PG_MULTI_URL");
    let standby = var("HYBRID_PG_STANDBY_URL");
    let open = || {
        Database::builder(&multi)
            .retry(RetryPolicy {
                deadline: DEADLINE,
                ..RetryPolicy::default()
            })
            .open()
            .unwrap()
    };
    let setup = open();
    setup
        .transact(|tx| {
            tx.execute_batch(
                "CREATE TABLE t(writer INTEGER, seq INTEGER, PRIMARY KEY (writer, seq));
                 CREATE TABLE b(k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
            )
        })
        .unwrap();
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for writer in 0..WRITERS {
        let db = open();
        let (outcomes, acks, stop) = (outcomes.clone(), acks.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut seq = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let result = db.transact(|tx| {
                    tx.execute("INSERT INTO t VALUES (?1, ?2)", params![writer, seq])
                });
                let mut o = outcomes.lock().unwrap();
                match result {
                    Ok(_) => {
                        o.acknowledged.insert((writer, seq));
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::CommitOutcomeUnknown(_)) => {
                        o.unknown.insert((writer, seq));
                    }
                    Err(e) => o.errors.push(format!("transact ({writer}, {seq}): {e}")),
                }
                seq += 1;
            }
        }));
    }
    {
        // The write buffer: keyed upserts (idempotent, so a batch whose
        // COMMIT went unanswered can be written again).
        let db = open();
        let (outcomes, acks, stop) = (outcomes.clone(), acks.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) {
                // 20 at a time, then wait for their tickets.
                let tickets: Vec<_> = (k..k + 20)
                    .map(|key| {
                        let row = Row::new().set("k", key).set("v", key);
                        (key, db.buffer().upsert("b", row, &["k"]))
                    })
                    .collect();
                k += 20;
                for (key, ticket) in tickets {
                    let result = ticket.and_then(|t| t.wait(DEADLINE * 2));
                    let mut o = outcomes.lock().unwrap();
                    match result {
                        Ok(()) => {
                            o.buffered.insert(key);
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => o.errors.push(format!("buffer {key}: {e}")),
                    }
                }
            }
        }));
    }
    wait_for("writes before the kill", Duration::from_secs(120), || {
        acks.load(Ordering::Relaxed) >= BEFORE
    });
    let pid = std::fs::read_to_string(var("HYBRID_PG_PRIMARY_PID_FILE")).unwrap();
    let pid = pid.lines().next().unwrap().trim().to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
    let at_kill = acks.load(Ordering::Relaxed);
    let promoted = Command::new(var("HYBRID_PG_PROMOTE")).output().unwrap();
    assert!(
        promoted.status.success(),
        "promote: {}",
        String::from_utf8_lossy(&promoted.stderr)
    );
    wait_for(
        "writes after the failover",
        Duration::from_secs(120),
        || acks.load(Ordering::Relaxed) >= at_kill + AFTER,
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let o = outcomes.lock().unwrap();
    assert!(o.errors.is_empty(), "{:#?}", o.errors);
    // Everything acknowledged is on the new primary (the old standby).
    let mut new_primary = postgres::Client::connect(&standby, postgres::NoTls).unwrap();
    let in_recovery: bool = new_primary
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(!in_recovery, "the standby was promoted");
    let rows: BTreeSet<(i64, i64)> = new_primary
        .query("SELECT writer::int8, seq::int8 FROM t", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let missing: Vec<_> = o.acknowledged.difference(&rows).collect();
    let keys: BTreeSet<i64> = new_primary
        .query("SELECT k::int8 FROM b", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing_buffered: Vec<_> = o.buffered.difference(&keys).collect();
    if measure_async {
        eprintln!(
            "asynchronous failover: {} of {} acknowledged transact writes and {} of {} \
             acknowledged buffered upserts lost",
            missing.len(),
            o.acknowledged.len(),
            missing_buffered.len(),
            o.buffered.len()
        );
        return;
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // Nothing was written that was neither acknowledged nor unknown (no
    // transaction ran twice or out of nowhere).
    let stray: Vec<_> = rows
        .iter()
        .filter(|r| !o.acknowledged.contains(r) && !o.unknown.contains(r))
        .collect();
    assert!(stray.is_empty(), "rows nobody wrote: {stray:?}");
    assert!(
        missing_buffered.is_empty(),
        "buffered, acknowledged, lost: {missing_buffered:?}"
    );
    eprintln!(
        "failover: {} transact writes acknowledged, {} with an unknown outcome, {} buffered \
         upserts acknowledged; all on the new primary",
        o.acknowledged.len(),
        o.unknown.len(),
        o.buffered.len()
    );
}
