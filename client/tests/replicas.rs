//! Reads on a streaming standby and read-your-writes, on real servers: a
//! primary and a standby started by `scripts/postgres/with-replicas.sh`
//! (`make test` runs it), which sets `HYBRID_PG_URL`,
//! `HYBRID_PG_ADMIN_URL` and `HYBRID_PG_STANDBY_URL`. Without them the
//! server tests say they are skipped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::params;
use rusqlite::types::Value;
use sqlite_hybrid::{Database, Error, Row, StandbyHealth};

/// Pausing the standby's replay affects every database on it: tests that
/// rely on replay take turns.
static REPLAY: Mutex<()> = Mutex::new(());

/// A database of its own on the primary, and its URL on the standby once
/// the standby has it; dropped afterwards.
struct Scratch {
    primary: String,
    standby: String,
    name: String,
    admin: String,
}

impl Scratch {
    fn create(tag: &str) -> Option<Scratch> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(primary), Some(admin), Some(standby)) = (
            var("HYBRID_PG_URL"),
            var("HYBRID_PG_ADMIN_URL"),
            var("HYBRID_PG_STANDBY_URL"),
        ) else {
            eprintln!("skipped: HYBRID_PG_STANDBY_URL is not set (make test starts the servers)");
            return None;
        };
        let name = format!("r_{}_{tag}", std::process::id());
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = |url: &str| url.rsplit_once('/').expect("a database").0.to_string();
        let scratch = Scratch {
            primary: format!("{}/{name}", base(&primary)),
            standby: format!("{}/{name}", base(&standby)),
            name,
            admin,
        };
        // The standby has the database once it replayed its creation.
        let started = Instant::now();
        while postgres::Client::connect(&scratch.standby, postgres::NoTls).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the standby never got {}",
                scratch.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(scratch)
    }

    fn open(&self) -> Database {
        Database::builder(&self.primary)
            .standby(&self.standby)
            .open()
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Pauses the standby's WAL replay until dropped.
struct ReplayPaused(postgres::Client);

impl ReplayPaused {
    fn on(standby_url: &str) -> ReplayPaused {
        let mut client = postgres::Client::connect(standby_url, postgres::NoTls).unwrap();
        client
            .batch_execute("SELECT pg_wal_replay_pause()")
            .unwrap();
        ReplayPaused(client)
    }
}

impl Drop for ReplayPaused {
    fn drop(&mut self) {
        let _ = self.0.batch_execute("SELECT pg_wal_replay_resume()");
    }
}

fn single(db: &Database, sql: &str) -> Value {
    db.query(sql, params![]).unwrap().remove(0).remove(0)
}

fn standby_of(db: &Database) -> StandbyHealth {
    let health = db.health().unwrap();
    let server = health.server.expect("a server");
    assert_eq!(server.standbys.len(), 1, "{server:?}");
    server.standbys[0].clone()
}

#[test]
fn reads_run_on_the_standby_and_a_handle_reads_its_own_writes() {
    let _turn = REPLAY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(scratch) = Scratch::create("ryw") else {
        return;
    };
    let writer = scratch.open();
    writer
        .transact(|tx| tx.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        .unwrap();
    // A handle that never wrote reads on the standby.
    let reader = scratch.open();
    assert_eq!(
        single(&reader, "SELECT pg_is_in_recovery()"),
        Value::Integer(1)
    );
    // Every read right after the handle's own write sees it, through the
    // write buffer's tickets as through transact.
    const ROUNDS: i64 = 200;
    for i in 0..ROUNDS {
        if i % 2 == 0 {
            writer
                .transact(|tx| tx.execute("INSERT INTO t VALUES (?1, 'tx')", params![i]))
                .unwrap();
        } else {
            let ticket = writer
                .buffer()
                .insert("t", Row::new().set("id", i).set("v", "buffer"))
                .unwrap();
            ticket.wait(Duration::from_secs(30)).unwrap();
        }
        let seen = writer
            .query("SELECT count(*) FROM t WHERE id = ?1", params![i])
            .unwrap();
        assert_eq!(seen, vec![vec![Value::Integer(1)]], "write {i} not seen");
    }
    let standby = standby_of(&writer);
    assert_eq!(
        standby.reads + standby.reads_sent_to_primary,
        ROUNDS as u64,
        "{standby:?}"
    );
    assert_eq!(
        single(&writer, "SELECT count(*) FROM t"),
        Value::Integer(ROUNDS)
    );
}

#[test]
fn a_lagging_standby_shows_its_lag_and_reads_of_own_writes_go_to_the_primary() {
    let _turn = REPLAY.lock().unwrap_or_else(|e| e.into_inner());
    let Some(scratch) = Scratch::create("lag") else {
        return;
    };
    let db = Database::builder(&scratch.primary)
        .standby(&scratch.standby)
        .standby_wait(Duration::from_millis(20))
        .open()
        .unwrap();
    db.transact(|tx| tx.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)"))
        .unwrap();
    let bystander = scratch.open();
    // Wait (bounded) until the bystander, which reads on the standby, sees
    // the table: the standby has caught up before replay is paused.
    let started = Instant::now();
    while bystander
        .query("SELECT count(*) FROM t", params![])
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no table on the standby"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let paused = ReplayPaused::on(&scratch.standby);
    db.transact(|tx| tx.execute("INSERT INTO t VALUES (1)", params![]))
        .unwrap();
    // The writer sees its row (from the primary) ...
    assert_eq!(
        single(&db, "SELECT count(*) FROM t WHERE id = 1"),
        Value::Integer(1)
    );
    let standby = standby_of(&db);
    assert!(standby.reads_sent_to_primary >= 1, "{standby:?}");
    assert!(standby.lag_bytes.is_some_and(|b| b > 0), "{standby:?}");
    assert!(standby.lag_ms.is_some(), "{standby:?}");
    // lock_metrics() shows the same lag (the largest of the standbys').
    let metrics = db.lock_metrics().unwrap();
    assert!(
        metrics.standby_lag_bytes.is_some_and(|b| b > 0),
        "{metrics:?}"
    );
    assert!(metrics.standby_lag_ms.is_some(), "{metrics:?}");
    // ... while a handle that did not write reads the paused standby,
    // which does not have it yet.
    assert_eq!(
        single(&bystander, "SELECT count(*) FROM t WHERE id = 1"),
        Value::Integer(0)
    );
    drop(paused);
    // Replayed again: the lag goes back to zero (bounded wait).
    let started = Instant::now();
    loop {
        let standby = standby_of(&db);
        let metrics = db.lock_metrics().unwrap();
        if standby.lag_bytes == Some(0) && metrics.standby_lag_bytes == Some(0) {
            assert_eq!(standby.lag_ms, Some(0.0));
            assert_eq!(metrics.standby_lag_ms, Some(0.0), "{metrics:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{standby:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        single(&bystander, "SELECT count(*) FROM t WHERE id = 1"),
        Value::Integer(1)
    );
    // A handle without standbys has no standby lag.
    let alone = Database::open(&scratch.primary).unwrap();
    let metrics = alone.lock_metrics().unwrap();
    assert_eq!(
        (metrics.standby_lag_bytes, metrics.standby_lag_ms),
        (None, None)
    );
}

#[test]
fn a_sqlite_file_refuses_standbys() {
    let dir = tempfile::tempdir().unwrap();
    let err = Database::builder(dir.path().join("a.db"))
        .standby("postgresql://u@h/db")
        .open()
        .err()
        .expect("an error");
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("standby")),
        "{err:?}"
    );
}
