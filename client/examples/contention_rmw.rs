//! Read-modify-write contention through `Database::transact`, the same code
//! on either engine: N handles (`Database::open` each, like N app servers),
//! one thread each, every call `SELECT v ...; UPDATE ... SET v = ?` on one
//! row.
//!
//! Two measurements per run:
//! * **fixed work**: each handle makes `--calls` increments; errors per
//!   call and whether the final count is exact;
//! * **fixed time** (`--window-ms`): each handle increments as fast as it
//!   can for the window; the per-handle counts give Jain's fairness index
//!   `(sum x)^2 / (n * sum x^2)` (1.0 = perfectly even, 1/n = one handle
//!   did everything) and the slowest call.
//!
//! ```text
//! scripts/postgres/with-postgres.sh cargo run --release -p sqlite-hybrid \
//!     --features postgres --example contention_rmw -- --engine postgres
//! cargo run --release -p sqlite-hybrid --example contention_rmw    # SQLite file
//! ```
//! Options: `--handles 8 --calls 150 --trials 5 --window-ms 2000`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sqlite_hybrid::rusqlite::params;
use sqlite_hybrid::rusqlite::types::Value;
use sqlite_hybrid::{Database, Error};

struct Options {
    postgres: bool,
    handles: usize,
    calls: usize,
    trials: usize,
    window: Duration,
}

fn options() -> Options {
    let mut o = Options {
        postgres: false,
        handles: 8,
        calls: 150,
        trials: 5,
        window: Duration::from_millis(2000),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--engine" => o.postgres = args.get(i + 1).map(String::as_str) == Some("postgres"),
            "--handles" => o.handles = value(i).unwrap_or(8) as usize,
            "--calls" => o.calls = value(i).unwrap_or(150) as usize,
            "--trials" => o.trials = value(i).unwrap_or(5) as usize,
            "--window-ms" => o.window = Duration::from_millis(value(i).unwrap_or(2000)),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

/// A fresh counter table at `location`.
fn reset(location: &str) -> Result<(), Error> {
    Database::open(location)?.transact(|tx| {
        tx.execute_batch(
            "DROP TABLE IF EXISTS c; CREATE TABLE c(id INTEGER PRIMARY KEY, v INTEGER NOT NULL); \
             INSERT INTO c VALUES (1, 0)",
        )
    })
}

fn increment(db: &Database) -> Result<(), Error> {
    db.transact(|tx| {
        let v = match tx.query("SELECT v FROM c WHERE id = 1", params![])?[0][0] {
            Value::Integer(v) => v,
            _ => 0,
        };
        tx.execute("UPDATE c SET v = ?1 WHERE id = 1", params![v + 1])?;
        Ok(())
    })
}

fn final_count(location: &str) -> i64 {
    match Database::open(location)
        .and_then(|db| db.query("SELECT v FROM c WHERE id = 1", params![]))
        .map(|rows| rows[0][0].clone())
    {
        Ok(Value::Integer(v)) => v,
        _ => -1,
    }
}

/// Per handle: (successes, errors, slowest call).
fn run(
    location: &str,
    o: &Options,
    until: impl Fn(usize, Instant) -> bool + Send + Sync + 'static,
) -> Vec<(u64, u64, Duration, Option<String>)> {
    let barrier = Arc::new(Barrier::new(o.handles));
    let until = Arc::new(until);
    let threads: Vec<_> = (0..o.handles)
        .map(|_| {
            let db = Database::open(location).expect("open");
            let (barrier, until) = (Arc::clone(&barrier), Arc::clone(&until));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let (mut ok, mut errors, mut slowest, mut first_error) =
                    (0u64, 0u64, Duration::ZERO, None);
                let mut calls = 0;
                while !until(calls, start) {
                    let t = Instant::now();
                    match increment(&db) {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    slowest = slowest.max(t.elapsed());
                    calls += 1;
                }
                (ok, errors, slowest, first_error)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&x| x as f64).sum();
    let squares: f64 = counts.iter().map(|&x| (x as f64).powi(2)).sum();
    if squares == 0.0 {
        return 0.0;
    }
    sum * sum / (counts.len() as f64 * squares)
}

fn main() {
    let o = options();
    let _dir;
    let location = if o.postgres {
        std::env::var("HYBRID_PG_URL").expect("HYBRID_PG_URL (run under with-postgres.sh)")
    } else {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rmw.db").to_string_lossy().into_owned();
        _dir = dir;
        path
    };
    let engine = if o.postgres { "postgres" } else { "sqlite" };
    println!(
        "engine {engine}, {} handles x {} read-modify-write calls, {} trials",
        o.handles, o.calls, o.trials
    );
    for trial in 1..=o.trials {
        reset(&location).expect("reset");
        let calls = o.calls;
        let per = run(&location, &o, move |n, _| n >= calls);
        let errors: u64 = per.iter().map(|p| p.1).sum();
        let ok: u64 = per.iter().map(|p| p.0).sum();
        let slowest = per.iter().map(|p| p.2).max().unwrap_or_default();
        let count = final_count(&location);
        println!(
            "  fixed work, trial {trial}: {errors} errors in {} calls, final count {count} \
             (exact: {}), slowest call {:.0} ms{}",
            o.handles * o.calls,
            count == ok as i64,
            slowest.as_secs_f64() * 1000.0,
            per.iter()
                .find_map(|p| p.3.clone())
                .map(|e| format!(", e.g. {e}"))
                .unwrap_or_default()
        );
    }
    for trial in 1..=o.trials {
        reset(&location).expect("reset");
        let window = o.window;
        let per = run(&location, &o, move |_, start| start.elapsed() >= window);
        let counts: Vec<u64> = per.iter().map(|p| p.0).collect();
        let errors: u64 = per.iter().map(|p| p.1).sum();
        let slowest = per.iter().map(|p| p.2).max().unwrap_or_default();
        println!(
            "  fixed time, trial {trial}: {} commits in {:?}, per handle {counts:?}, Jain {:.3}, \
             {errors} errors, slowest call {:.0} ms",
            counts.iter().sum::<u64>(),
            window,
            jain(&counts),
            slowest.as_secs_f64() * 1000.0
        );
    }
}
