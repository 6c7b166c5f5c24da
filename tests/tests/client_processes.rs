//! The client's write buffer flushing while other processes (Debian
//! python3 with the extension loaded) write to the same file.

use std::process::Command;
use std::time::Duration;

use sqlite_hybrid::{BufferOptions, Database, Row};
use sqlite_hybrid_tests::{ext_load_arg, last_json, py_script, python};

#[test]
fn buffer_flush_racing_other_processes_lands_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let db = Database::builder(&path)
        .write_buffer(BufferOptions {
            batch_size: 50,
            flush_interval: Duration::from_millis(100),
            ..BufferOptions::default()
        })
        .open()
        .unwrap();
    db.write(|tx| {
        Ok(tx.execute_batch(
            "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE hammer(id INTEGER PRIMARY KEY, writer INTEGER, n INTEGER);",
        )?)
    })
    .unwrap();

    let hammers: Vec<_> = (0..3)
        .map(|w| {
            Command::new(python())
                .arg(py_script("hammer.py"))
                .args([path.to_str().unwrap(), "3", &w.to_string()])
                .env("HYBRID_EXT", ext_load_arg())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    // While they write: 3000 distinct counters, each set several times.
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..4 {
        for i in 0..3000 {
            let name = format!("c{i:04}");
            let value = round * 10_000 + i;
            db.buffer()
                .upsert(
                    "counters",
                    Row::new().set("name", name.as_str()).set("value", value),
                    &["name"],
                )
                .unwrap();
            expected.insert(name, value);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    db.buffer().force_flush().unwrap();

    let mut hammer_commits = 0;
    for hammer in hammers {
        let out = hammer.wait_with_output().unwrap();
        assert!(out.status.success());
        let report = last_json(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(report["errors"], 0, "{report}");
        hammer_commits += report["commits"].as_i64().unwrap();
    }
    let stats = db.buffer().stats();
    assert_eq!(
        (stats.failed_entries, stats.failed_batches, stats.pending),
        (0, 0, 0),
        "{stats:?}"
    );

    let (rows, hammer_rows): (Vec<(String, i64)>, i64) = db
        .read(|c| {
            let rows = c
                .prepare("SELECT name, value FROM counters ORDER BY name")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok((
                rows,
                c.query_row("SELECT count(*) FROM hammer", [], |r| r.get(0))?,
            ))
        })
        .unwrap();
    assert_eq!(
        rows,
        expected.into_iter().collect::<Vec<_>>(),
        "every counter has its last value"
    );
    assert_eq!(
        hammer_rows, hammer_commits,
        "every commit the other processes saw is in the file"
    );
    assert!(
        hammer_commits > 100,
        "the processes really wrote: {hammer_commits}"
    );
    let metrics = db.lock_metrics().unwrap();
    assert!(
        metrics.busy_events > 0,
        "the flusher really contended: {metrics:?}"
    );
}

/// Issue 17: processes that open one new file at the same moment (a
/// multi-process server starting) all succeed. Switching a new file to WAL
/// answers `SQLITE_BUSY` without calling any busy handler while another
/// process does the same; `Database::open` retries it.
#[test]
fn processes_opening_a_new_file_together_all_succeed() {
    const TRIALS: usize = 25;
    const PROCESSES: usize = 4;
    let opener = env!("CARGO_BIN_EXE_opener");
    let mut failures = Vec::new();
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let mut children: Vec<sqlite_hybrid_tests::LineProcess> = (0..PROCESSES)
            .map(|_| {
                let mut command = Command::new(opener);
                command.arg(&path);
                sqlite_hybrid_tests::LineProcess::spawn(command)
            })
            .collect();
        for child in &mut children {
            assert_eq!(child.read_line(), "ready");
        }
        for child in &mut children {
            child.send_line("go");
        }
        let mut opened = 0;
        for child in &mut children {
            let line = child.read_line();
            if line == "ok" {
                opened += 1;
            } else {
                failures.push(format!("trial {trial}: {line}"));
            }
        }
        if opened > 0 {
            let rows: i64 = rusqlite::Connection::open(&path)
                .unwrap()
                .query_row("SELECT count(*) FROM starts", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, opened, "every process that opened wrote its row");
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed opens: {failures:#?}",
        failures.len()
    );
}
