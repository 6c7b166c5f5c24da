//! The client's behaviour on both engines, one suite: every test here runs
//! on a fresh SQLite file and (feature `postgres`, with `HYBRID_PG_URL` set,
//! as `make test` does with a throw-away server) on a fresh PostgreSQL
//! database. Retried write transactions, errors, the write buffer, the
//! batch helpers, metrics and health, concurrency.

mod contention;
mod fixture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;
use rusqlite::types::Value;
use sqlite_hybrid::{
    Database, Error, LogLevel, LogOptions, LogRecord, RetryPolicy, Row, TicketStatus,
};

use contention::{
    contended_increments_from_eight_handles_all_succeed,
    contended_increments_from_two_processes_all_succeed,
};
use fixture::{Fixture, Kind};

/// One `#[test]` per engine for each function: `sqlite::name` and
/// `postgres::name` (the latter skipped, saying so, without a server).
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(super::fixture::Kind::Sqlite);
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if super::fixture::postgres_url().is_none() {
                        eprintln!("skipped: HYBRID_PG_URL is not set (make test starts a server)");
                        return;
                    }
                    super::$name(super::fixture::Kind::Postgres);
                }
            )*
        }
    };
}

on_both_engines!(
    transact_commits_or_rolls_back_whole,
    errors_have_the_same_kinds,
    query_returns_values,
    a_held_lock_is_waited_out,
    a_lock_held_past_the_deadline_is_a_lock_timeout,
    writers_on_two_handles_lose_no_update,
    buffer_upserts_coalesce_and_tickets_commit,
    buffer_deletes_and_updates_in_order,
    a_bad_row_fails_alone,
    a_deferred_constraint_fails_only_its_entries,
    bad_input_is_refused_at_the_call,
    batch_helpers_write_in_chunks,
    health_and_metrics_describe_the_engine,
    write_and_read_are_sqlite_only,
    the_log_database_keeps_every_flushed_line,
    contended_increments_from_eight_handles_all_succeed,
    contended_increments_from_two_processes_all_succeed,
);

fn schema(f: &Fixture) {
    f.db.transact(|tx| {
        tx.execute_batch(
            "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL DEFAULT 0 CHECK (v >= 0), note TEXT);
             CREATE TABLE items(id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, qty INTEGER);",
        )
    })
    .unwrap();
}

fn count(db: &Database, table: &str) -> i64 {
    match &db
        .query(&format!("SELECT count(*) FROM {table}"), params![])
        .unwrap()[0][0]
    {
        Value::Integer(n) => *n,
        other => panic!("count: {other:?}"),
    }
}

fn value_of(db: &Database, key: &str) -> Option<i64> {
    let rows = db
        .query("SELECT v FROM kv WHERE k = ?1", params![key])
        .unwrap();
    rows.first().map(|r| match r[0] {
        Value::Integer(v) => v,
        ref other => panic!("v: {other:?}"),
    })
}

fn transact_commits_or_rolls_back_whole(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    f.db.transact(|tx| {
        tx.execute("INSERT INTO kv(k, v) VALUES (?1, ?2)", params!["a", 1])?;
        tx.execute("INSERT INTO kv(k, v) VALUES (?, ?)", params!["b", 2])?;
        Ok(())
    })
    .unwrap();
    let failed: Result<(), Error> = f.db.transact(|tx| {
        tx.execute("INSERT INTO kv(k, v) VALUES (?1, ?2)", params!["c", 3])?;
        Err(Error::InvalidInput("changed my mind".into()))
    });
    assert!(matches!(failed, Err(Error::InvalidInput(_))), "{failed:?}");
    assert_eq!(count(&f.db, "kv"), 2, "the failed transaction left nothing");
    // A statement error rolls back the statements before it too.
    let dup = f.db.transact(|tx| {
        tx.execute("INSERT INTO kv(k, v) VALUES (?1, ?2)", params!["d", 4])?;
        tx.execute("INSERT INTO kv(k, v) VALUES (?1, ?2)", params!["a", 5])?;
        Ok(())
    });
    assert!(matches!(dup, Err(Error::Constraint(_))), "{dup:?}");
    assert_eq!(value_of(&f.db, "d"), None);
    assert_eq!(value_of(&f.db, "a"), Some(1));
}

fn errors_have_the_same_kinds(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let constraint =
        f.db.transact(|tx| tx.execute("INSERT INTO kv(k, v) VALUES ('x', -1)", params![]));
    assert!(
        matches!(constraint, Err(Error::Constraint(_))),
        "{constraint:?}"
    );
    let schema_error =
        f.db.transact(|tx| tx.execute("INSERT INTO nope VALUES (1)", params![]));
    assert!(
        matches!(schema_error, Err(Error::Schema(_))),
        "{schema_error:?}"
    );
    let column = f.db.query("SELECT missing FROM kv", params![]);
    assert!(matches!(column, Err(Error::Schema(_))), "{column:?}");
    let syntax = f.db.transact(|tx| tx.execute_batch("SELEC 1"));
    assert!(matches!(syntax, Err(Error::Database(_))), "{syntax:?}");
    // The engine's own code travels with the error.
    match (kind, constraint.unwrap_err()) {
        (Kind::Sqlite, e) => assert_eq!(e.sqlite_code(), Some(275)), // SQLITE_CONSTRAINT_CHECK
        (Kind::Postgres, e) => assert_eq!(e.sqlstate(), Some("23514")),
    }
}

fn query_returns_values(kind: Kind) {
    let f = Fixture::open(kind);
    f.db.transact(|tx| {
        tx.execute_batch(
            "CREATE TABLE v(i INTEGER, r REAL, t TEXT, b BLOB, n INTEGER)"
                .replace("BLOB", if tx.is_postgres() { "BYTEA" } else { "BLOB" })
                .replace(
                    "REAL",
                    if tx.is_postgres() {
                        "DOUBLE PRECISION"
                    } else {
                        "REAL"
                    },
                )
                .as_str(),
        )?;
        tx.execute(
            "INSERT INTO v VALUES (?1, ?2, ?3, ?4, ?5)",
            params![42, 2.5, "héllo", vec![0u8, 255], Option::<i64>::None],
        )?;
        Ok(())
    })
    .unwrap();
    let rows =
        f.db.query("SELECT i, r, t, b, n FROM v WHERE i = ?1", params![42])
            .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Value::Integer(42),
            Value::Real(2.5),
            Value::Text("héllo".into()),
            Value::Blob(vec![0, 255]),
            Value::Null
        ]]
    );
}

fn a_held_lock_is_waited_out(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let blocker = f.hold_write_lock("kv", Duration::from_millis(400));
    let started = Instant::now();
    f.db.transact(|tx| tx.execute("INSERT INTO kv(k, v) VALUES ('w', 1)", params![]))
        .unwrap();
    let waited = started.elapsed();
    blocker.join();
    assert!(
        waited >= Duration::from_millis(300),
        "did not wait: {waited:?}"
    );
    assert_eq!(value_of(&f.db, "w"), Some(1));
}

fn a_lock_held_past_the_deadline_is_a_lock_timeout(kind: Kind) {
    let f = Fixture::open_with(kind, |b| {
        b.retry(RetryPolicy {
            deadline: Duration::from_millis(300),
            ..RetryPolicy::default()
        })
    });
    schema(&f);
    let blocker = f.hold_write_lock("kv", Duration::from_secs(3));
    let started = Instant::now();
    let err =
        f.db.transact(|tx| tx.execute("INSERT INTO kv(k, v) VALUES ('late', 1)", params![]))
            .unwrap_err();
    let waited = started.elapsed();
    blocker.join();
    assert!(matches!(err, Error::LockTimeout { .. }), "{err:?}");
    assert!(err.is_lock_error());
    assert!(waited < Duration::from_secs(2), "gave up after {waited:?}");
    assert_eq!(value_of(&f.db, "late"), None);
    let metrics = f.db.lock_metrics().unwrap();
    assert!(metrics.gave_up >= 1, "{metrics:?}");
}

fn writers_on_two_handles_lose_no_update(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    f.db.transact(|tx| tx.execute("INSERT INTO kv(k, v) VALUES ('n', 0)", params![]))
        .unwrap();
    let other = Arc::new(f.reopen());
    let mine = Arc::new(f.reopen());
    let threads: Vec<_> = [other, mine]
        .into_iter()
        .flat_map(|db| (0..3).map(move |_| Arc::clone(&db)))
        .map(|db| {
            std::thread::spawn(move || {
                for _ in 0..40 {
                    db.transact(|tx| {
                        // Read-modify-write: a lost update would show.
                        let v = match &tx.query("SELECT v FROM kv WHERE k = 'n'", params![])?[0][0]
                        {
                            Value::Integer(v) => *v,
                            _ => unreachable!(),
                        };
                        tx.execute(
                            "UPDATE kv SET v = ?1 WHERE k = 'n' AND v = ?2",
                            params![v + 1, v],
                        )
                        .and_then(|changed| {
                            if changed == 1 {
                                Ok(())
                            } else {
                                Err(Error::InvalidInput(format!("lost update at {v}")))
                            }
                        })
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(value_of(&f.db, "n"), Some(240));
}

fn buffer_upserts_coalesce_and_tickets_commit(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let buffer = f.db.buffer();
    let mut tickets = Vec::new();
    for v in 1..=3 {
        tickets.push(
            buffer
                .upsert("kv", Row::new().set("k", "a").set("v", v), &["k"])
                .unwrap(),
        );
    }
    for i in 0..250 {
        tickets.push(
            buffer
                .upsert(
                    "kv",
                    Row::new().set("k", format!("key{i}")).set("v", i),
                    &["k"],
                )
                .unwrap(),
        );
    }
    buffer.force_flush().unwrap();
    assert!(
        tickets
            .iter()
            .all(|t| t.status() == TicketStatus::Committed)
    );
    assert_eq!(value_of(&f.db, "a"), Some(3));
    assert_eq!(value_of(&f.db, "key249"), Some(249));
    assert_eq!(count(&f.db, "kv"), 251);
    assert_eq!(buffer.stats().coalesced, 2);
    // Upserting again updates, and only the columns given.
    f.db.transact(|tx| tx.execute("UPDATE kv SET note = 'kept' WHERE k = 'a'", params![]))
        .unwrap();
    buffer
        .upsert("kv", Row::new().set("k", "a").set("v", 10), &["k"])
        .unwrap()
        .wait(Duration::from_secs(30))
        .unwrap();
    let rows =
        f.db.query("SELECT v, note FROM kv WHERE k = 'a'", params![])
            .unwrap();
    assert_eq!(
        rows,
        vec![vec![Value::Integer(10), Value::Text("kept".into())]]
    );
}

fn buffer_deletes_and_updates_in_order(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let buffer = f.db.buffer();
    buffer
        .upsert(
            "items",
            Row::new().set("id", 1).set("sku", "one").set("qty", 1),
            &["id"],
        )
        .unwrap();
    buffer
        .upsert(
            "items",
            Row::new().set("id", 2).set("sku", "two").set("qty", 2),
            &["id"],
        )
        .unwrap();
    buffer.force_flush().unwrap();
    buffer
        .update("items", Row::new().set("id", 1), Row::new().set("qty", 11))
        .unwrap();
    buffer.delete("items", Row::new().set("id", 2)).unwrap();
    buffer
        .upsert(
            "items",
            Row::new()
                .set("id", 2)
                .set("sku", "two again")
                .set("qty", 22),
            &["id"],
        )
        .unwrap();
    buffer.force_flush().unwrap();
    let rows =
        f.db.query("SELECT id, sku, qty FROM items ORDER BY id", params![])
            .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Integer(1),
                Value::Text("one".into()),
                Value::Integer(11)
            ],
            vec![
                Value::Integer(2),
                Value::Text("two again".into()),
                Value::Integer(22)
            ],
        ]
    );
}

fn a_bad_row_fails_alone(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let buffer = f.db.buffer();
    let good1 = buffer
        .upsert("kv", Row::new().set("k", "g1").set("v", 1), &["k"])
        .unwrap();
    let bad = buffer
        .upsert("kv", Row::new().set("k", "bad").set("v", -5), &["k"])
        .unwrap();
    let good2 = buffer
        .upsert("kv", Row::new().set("k", "g2").set("v", 2), &["k"])
        .unwrap();
    let flushed = buffer.force_flush();
    assert!(
        matches!(flushed, Err(Error::FlushFailed { failed: 1, .. })),
        "{flushed:?}"
    );
    assert_eq!(good1.status(), TicketStatus::Committed);
    assert_eq!(good2.status(), TicketStatus::Committed);
    assert!(
        matches!(bad.status(), TicketStatus::Failed(_)),
        "{:?}",
        bad.status()
    );
    let failed = buffer.take_failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].table, "kv");
    assert_eq!(
        (
            value_of(&f.db, "g1"),
            value_of(&f.db, "bad"),
            value_of(&f.db, "g2")
        ),
        (Some(1), None, Some(2))
    );
}

fn a_deferred_constraint_fails_only_its_entries(kind: Kind) {
    let f = Fixture::open(kind);
    f.db.transact(|tx| {
        tx.execute_batch(
            "CREATE TABLE parent(id INTEGER PRIMARY KEY);
             CREATE TABLE child(id INTEGER PRIMARY KEY,
               parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
             INSERT INTO parent VALUES (1);",
        )
    })
    .unwrap();
    let buffer = f.db.buffer();
    let tickets: Vec<_> = [(1, 1), (2, 99), (3, 1), (4, 1)]
        .into_iter()
        .map(|(id, parent)| {
            buffer
                .insert("child", Row::new().set("id", id).set("parent", parent))
                .unwrap()
        })
        .collect();
    let flushed = buffer.force_flush();
    assert!(
        matches!(flushed, Err(Error::FlushFailed { failed: 1, .. })),
        "{flushed:?}"
    );
    let statuses: Vec<bool> = tickets
        .iter()
        .map(|t| t.status() == TicketStatus::Committed)
        .collect();
    assert_eq!(statuses, vec![true, false, true, true]);
    assert_eq!(count(&f.db, "child"), 3);
}

fn bad_input_is_refused_at_the_call(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let buffer = f.db.buffer();
    let unknown_table = buffer.upsert("nope", Row::new().set("k", "a"), &["k"]);
    assert!(
        matches!(unknown_table, Err(Error::Schema(_))),
        "{unknown_table:?}"
    );
    let unknown_column = buffer.upsert("kv", Row::new().set("k", "a").set("zzz", 1), &["k"]);
    assert!(
        matches!(unknown_column, Err(Error::Schema(_))),
        "{unknown_column:?}"
    );
    let not_unique = buffer.upsert("kv", Row::new().set("k", "a").set("v", 1), &["v"]);
    assert!(
        matches!(not_unique, Err(Error::InvalidInput(_))),
        "{not_unique:?}"
    );
    let null_key = buffer.upsert(
        "kv",
        Row::new().set("k", Option::<String>::None).set("v", 1),
        &["k"],
    );
    assert!(
        matches!(null_key, Err(Error::InvalidInput(_))),
        "{null_key:?}"
    );
    let missing = buffer.insert("items", Row::new().set("id", 1));
    assert!(
        matches!(missing, Err(Error::InvalidInput(_))),
        "NOT NULL sku missing: {missing:?}"
    );
    assert_eq!(buffer.stats().enqueued, 0, "nothing was queued");
    // Table names are not pasted into SQL: an injection is an unknown table.
    let injection = buffer.insert("kv; DROP TABLE kv; --", Row::new().set("k", "a"));
    assert!(matches!(injection, Err(Error::Schema(_))), "{injection:?}");
    assert_eq!(count(&f.db, "kv"), 0);
}

fn batch_helpers_write_in_chunks(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let rows = (0..250).map(|i| {
        Row::new()
            .set("id", i)
            .set("sku", format!("sku{i}"))
            .set("qty", i)
    });
    let report = f.db.insert_many("items", rows, 100).unwrap();
    assert_eq!((report.rows, report.chunks), (250, 3));
    let again = (0..10).map(|i| {
        Row::new()
            .set("id", i)
            .set("sku", format!("sku{i}"))
            .set("qty", 1000)
    });
    f.db.upsert_many("items", &["id"], again, 100).unwrap();
    let rows =
        f.db.query("SELECT count(*), sum(qty) FROM items", params![])
            .unwrap();
    let total: i64 = (10..250).sum::<i64>() + 10 * 1000;
    assert_eq!(rows[0][0], Value::Integer(250));
    assert_eq!(
        match &rows[0][1] {
            Value::Integer(n) => *n,
            Value::Text(t) => t.parse().unwrap(), // PostgreSQL's sum(integer) is numeric... or bigint
            other => panic!("{other:?}"),
        },
        total
    );
    // A bad row in a later chunk: the earlier chunks stay, the error says so.
    let mixed = (300..320).map(|i| {
        let sku = if i == 315 {
            "sku0".to_string()
        } else {
            format!("sku{i}")
        };
        Row::new().set("id", i).set("sku", sku)
    });
    let err = f.db.insert_many("items", mixed, 10).unwrap_err();
    assert!(matches!(err, Error::Constraint(_)), "{err:?}");
    assert!(
        err.to_string().contains("the first 10 rows were committed"),
        "{err}"
    );
    assert_eq!(count(&f.db, "items"), 260);
}

fn health_and_metrics_describe_the_engine(kind: Kind) {
    let f = Fixture::open(kind);
    schema(&f);
    let health = f.db.health().unwrap();
    let metrics = f.db.lock_metrics().unwrap();
    match kind {
        Kind::Sqlite => {
            assert_eq!(health.schemas[0].journal_mode, "wal");
            assert!(health.server.is_none());
            let mode = if sqlite_hybrid::FUTEX_QUEUE {
                sqlite_hybrid::LockMode::Futex
            } else {
                sqlite_hybrid::LockMode::Backoff
            };
            assert_eq!(metrics.mode, mode);
        }
        Kind::Postgres => {
            let server = health.server.expect("the server's health");
            assert!(
                server.version.starts_with(|c: char| c.is_ascii_digit()),
                "{server:?}"
            );
            assert!(
                server.database_bytes > 0 && server.connections >= 1,
                "{server:?}"
            );
            assert!(health.schemas.is_empty());
            assert_eq!(metrics.mode, sqlite_hybrid::LockMode::Postgres);
            assert!(f.db.file_lock_metrics().unwrap().is_none());
        }
    }
    assert_eq!(metrics.busy_events, 0);
    assert!(f.db.lock_waiters().unwrap().is_empty());
    f.db.optimize(Default::default()).unwrap();
}

fn write_and_read_are_sqlite_only(kind: Kind) {
    let f = Fixture::open(kind);
    let write =
        f.db.write(|tx| Ok(tx.execute_batch("CREATE TABLE w(x INTEGER)")?));
    let read =
        f.db.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?));
    match kind {
        Kind::Sqlite => {
            write.unwrap();
            assert_eq!(read.unwrap(), 1);
        }
        Kind::Postgres => {
            let message = write.unwrap_err().to_string();
            assert!(message.contains("Database::transact"), "{message}");
            assert!(matches!(read, Err(Error::InvalidInput(m)) if m.contains("Database::query")));
        }
    }
}

fn the_log_database_keeps_every_flushed_line(kind: Kind) {
    let f = Fixture::open_with(kind, |b| b.log_database(LogOptions::default()));
    let log = f.db.log().expect("a log database");
    let sink = log.sink();
    for i in 0..1234 {
        let mut record = LogRecord::new(LogLevel::Info, "engines", format!("line {i}"));
        let mut fields = serde_json::Map::new();
        fields.insert("n".into(), serde_json::Value::from(i));
        record.fields = Some(fields);
        assert!(sink.send(record), "line {i} dropped");
    }
    let awkward = "tab\there\nnew line, back\\slash, quote ' and \"json\"";
    assert!(sink.send(LogRecord::new(LogLevel::Warn, "awkward", awkward)));
    log.flush(Duration::from_secs(30)).unwrap();
    let stored =
        f.db.query(
            "SELECT message, level FROM log.entries WHERE target = 'awkward'",
            params![],
        )
        .unwrap();
    assert_eq!(
        stored,
        vec![vec![
            Value::Text(awkward.into()),
            Value::Text("WARN".into())
        ]]
    );
    // Read through the application's own readers: the same SQL on both
    // engines (SQLite attaches the log file as `log`; PostgreSQL has the
    // `log` schema).
    let rows =
        f.db.query(
            "SELECT count(*), count(DISTINCT message) FROM log.entries WHERE target = ?1",
            params!["engines"],
        )
        .unwrap();
    assert_eq!(rows, vec![vec![Value::Integer(1234), Value::Integer(1234)]]);
    let fields =
        f.db.query(
            "SELECT fields FROM log.entries WHERE message = 'line 7'",
            params![],
        )
        .unwrap();
    let Value::Text(json) = &fields[0][0] else {
        panic!("{fields:?}")
    };
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap(),
        serde_json::json!({"n": 7})
    );
    let written =
        f.db.query("SELECT written FROM log.writer_stats", params![])
            .unwrap();
    assert_eq!(written, vec![vec![Value::Integer(1235)]]);
    let stats = log.stats();
    assert_eq!((stats.written, stats.dropped, stats.failed), (1235, 0, 0));
    assert!(stats.file_bytes > 0, "{stats:?}");
    // Retention deletes by age: nothing is older than a week yet.
    assert_eq!(log.run_retention(Duration::from_secs(30)).unwrap(), 0);
}
