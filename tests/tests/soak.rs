//! Soak: 8 processes (4 Debian python3 with the extension, 4 Rust clients
//! that also log every transaction into one shared log database) write,
//! read and query metrics on one WAL file for SOAK_SECONDS (default
//! 30; `make soak` runs 600). Required: no lock error reaches any caller,
//! every committed row is in the file, and each process's memory is flat
//! after warm-up (anonymous RSS, i.e. heap and page caches, at 25% of the
//! run vs at the end; reported).

use std::process::{Command, Stdio};

use sqlite_hybrid_tests::{env_parse, ext_load_arg, integrity_check, last_json, py_script, python};

/// Growth allowed between warm-up and the end, per process.
const RSS_GROWTH_LIMIT_KB: i64 = 8 * 1024;

#[test]
fn eight_processes_lose_nothing_and_stay_flat() {
    let seconds: f64 = env_parse("SOAK_SECONDS").unwrap_or(30.0);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("soak.db");
    {
        let setup = sqlite_hybrid::Database::open(&db).unwrap();
        setup
            .write(|tx| {
                Ok(tx.execute_batch(
                    "CREATE TABLE rows(id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT);
                     CREATE INDEX rows_writer ON rows(writer, seq);
                     CREATE TABLE state(writer INTEGER PRIMARY KEY, seq INTEGER NOT NULL);",
                )?)
            })
            .unwrap();
    }
    let db_str = db.to_str().unwrap().to_string();
    let secs = seconds.to_string();
    let mut children = Vec::new();
    for writer in 0..8 {
        let mut command = if writer % 2 == 0 {
            let mut c = Command::new(python());
            c.arg(py_script("soak_worker.py"))
                .env("HYBRID_EXT", ext_load_arg());
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_soak_worker"))
        };
        command
            .args([&db_str, &writer.to_string(), &secs])
            .stdout(Stdio::piped());
        children.push(command.spawn().unwrap());
    }
    let reports: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "a soak worker failed: {:?}",
                out.status
            );
            last_json(&String::from_utf8_lossy(&out.stdout))
        })
        .collect();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut total = 0;
    for r in &reports {
        eprintln!("soak: {r}");
        let writer = r["writer"].as_i64().unwrap();
        assert_eq!(r["errors"], 0, "lock errors reached a caller: {r}");
        assert_eq!(r["lock_gave_up"], 0, "{r}");
        let committed = r["committed"].as_i64().unwrap();
        assert!(committed > 0, "{r}");
        let (rows, max_seq): (i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(max(seq), 0) FROM rows WHERE writer = ?1",
                [writer],
                |q| Ok((q.get(0)?, q.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (rows, max_seq),
            (committed, committed),
            "writer {writer}: committed rows missing"
        );
        total += committed;
        let growth = r["rss_end_kb"].as_i64().unwrap() - r["rss_warm_kb"].as_i64().unwrap();
        assert!(
            growth < RSS_GROWTH_LIMIT_KB,
            "writer {writer} grew {growth} KB after warm-up: {r}"
        );
    }
    // Every log line a Rust worker queued is in the shared log file.
    let logs = rusqlite::Connection::open(dir.path().join("soak-logs.db")).unwrap();
    assert_eq!(integrity_check(&logs), "ok", "log file");
    for r in reports.iter().filter(|r| r["kind"] == "rust") {
        let writer = r["writer"].as_i64().unwrap();
        let lines: i64 = logs
            .query_row(
                "SELECT count(*) FROM entries WHERE message LIKE ?1",
                [format!("w{writer} %")],
                |q| q.get(0),
            )
            .unwrap();
        assert!(lines > 0, "{r}");
        assert_eq!(
            lines,
            r["logged"].as_i64().unwrap(),
            "writer {writer}: queued log lines missing: {r}"
        );
    }
    let rust_state: i64 = conn
        .query_row("SELECT count(*) FROM state", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        rust_state, 4,
        "every Rust worker's buffered state was flushed"
    );
    assert_eq!(integrity_check(&conn), "ok");
    eprintln!("soak: {seconds} s, 8 processes, {total} committed transactions, 0 lock errors");
}
