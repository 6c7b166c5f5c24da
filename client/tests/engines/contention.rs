//! Issue 25: ordinary contention never surfaces an error before the retry
//! deadline, on either engine. Read-modify-write increments of one row
//! (`SELECT v ...; UPDATE ... SET v = ?`) from many handles, in one process
//! and across processes: every call succeeds and the count is exact. (On
//! PostgreSQL most attempts of such a workload fail with `40001`; they
//! used to use up `RetryPolicy::max_attempts` in a few hundred ms.)

use std::process::Command;
use std::sync::{Arc, Barrier};

use rusqlite::params;
use rusqlite::types::Value;
use sqlite_hybrid::{Database, Error};

use crate::fixture::{Fixture, Kind};

const HANDLES: usize = 8;
const CALLS: usize = 150;
const TRIALS: usize = 3;

/// Set in a child process: where to increment (the child test below).
const CHILD_LOCATION: &str = "HYBRID_TEST_RMW_LOCATION";

fn counter(f: &Fixture) {
    f.db.transact(|tx| {
        tx.execute_batch(
            "DROP TABLE IF EXISTS c; CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             INSERT INTO c VALUES (1, 0)",
        )
    })
    .unwrap();
}

fn counter_value(db: &Database) -> i64 {
    match db.query("SELECT v FROM c WHERE id = 1", params![]).unwrap()[0][0] {
        Value::Integer(v) => v,
        ref other => panic!("{other:?}"),
    }
}

/// `handles` handles on `location`, one thread each, `CALLS` increments
/// each; returns every error's message.
fn increment_from(location: &str, handles: usize) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(handles));
    let threads: Vec<_> = (0..handles)
        .map(|_| {
            let db = Database::open(location).unwrap();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut errors = Vec::new();
                for _ in 0..CALLS {
                    let outcome = db.transact(|tx| {
                        let v = match tx.query("SELECT v FROM c WHERE id = 1", params![])?[0][0] {
                            Value::Integer(v) => v,
                            ref other => {
                                return Err(Error::InvalidInput(format!("v is {other:?}")));
                            }
                        };
                        tx.execute("UPDATE c SET v = ?1 WHERE id = 1", params![v + 1])?;
                        Ok(())
                    });
                    if let Err(e) = outcome {
                        errors.push(e.to_string());
                    }
                }
                errors
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

pub fn contended_increments_from_eight_handles_all_succeed(kind: Kind) {
    let f = Fixture::open(kind);
    for trial in 0..TRIALS {
        counter(&f);
        let errors = increment_from(f.location(), HANDLES);
        assert!(
            errors.is_empty(),
            "trial {trial}: {} of {} calls failed, e.g. {:?}",
            errors.len(),
            HANDLES * CALLS,
            errors.first()
        );
        assert_eq!(counter_value(&f.db), (HANDLES * CALLS) as i64);
    }
}

pub fn contended_increments_from_two_processes_all_succeed(kind: Kind) {
    const PROCESSES: usize = 2;
    let f = Fixture::open(kind);
    let me = std::env::current_exe().unwrap();
    for trial in 0..TRIALS - 1 {
        counter(&f);
        // Both children run at once (each prints its own outcome).
        let running: Vec<_> = (0..PROCESSES)
            .map(|_| {
                Command::new(&me)
                    .args([
                        "contention::rmw_child",
                        "--exact",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CHILD_LOCATION, f.location())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut done = 0;
        for child in running {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "trial {trial}: child failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("rmw-child: ").map(|(_, report)| report))
                .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
            assert_eq!(line, "0 errors", "trial {trial}");
            done += 1;
        }
        assert_eq!(done, PROCESSES);
        assert_eq!(
            counter_value(&f.db),
            (PROCESSES * HANDLES / 2 * CALLS) as i64,
            "trial {trial}"
        );
    }
}

/// The child of the test above (does nothing in a normal run): 4 handles
/// × `CALLS` increments, then `rmw-child: N errors` and the first error.
#[test]
fn rmw_child() {
    let Ok(location) = std::env::var(CHILD_LOCATION) else {
        return;
    };
    let errors = increment_from(&location, HANDLES / 2);
    println!("rmw-child: {} errors", errors.len());
    if let Some(first) = errors.first() {
        println!("first: {first}");
    }
}
