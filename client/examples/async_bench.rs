//! Async write benchmark (`make bench` runs it in release mode).
//!
//! 64 tasks on a tokio runtime with 2 worker threads each write 1,000 rows,
//! one `INSERT` per transaction, closed loop (a task's next write starts
//! when its last one has committed), two ways:
//!
//! * `write().await`: [`AsyncDatabase::write`], the closure on the handle's
//!   writer thread;
//! * `spawn_blocking`: the sync [`Database::write`] inside
//!   `tokio::task::spawn_blocking`, the usual way to call a blocking API
//!   from async code (a blocking-pool thread per waiting write).
//!
//! Reported per mode: throughput (writes/s) and per-write latency (p50,
//! p99, as seen by the task: queueing included), median and range of 3
//! runs, the modes alternating, each run on a fresh database file.
//!
//! Usage: cargo run --release -p sqlite-hybrid --features tokio --example async_bench [-- --quick]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlite_hybrid::{AsyncDatabase, Database};

const TASKS: usize = 64;
const RUNS: usize = 3;
const SCHEMA: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, task INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL)";
const INSERT: &str = "INSERT INTO t(task, seq, payload) VALUES (?1, ?2, ?3)";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Async,
    SpawnBlocking,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Async => "write().await",
            Mode::SpawnBlocking => "spawn_blocking(write)",
        }
    }
}

/// One run's figures.
struct Sample {
    writes_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let per_task: usize = if quick { 20 } else { 1000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let modes = [Mode::Async, Mode::SpawnBlocking];
    let mut samples: Vec<Vec<Sample>> = modes.iter().map(|_| Vec::new()).collect();
    for run in 0..RUNS {
        for (m, &mode) in modes.iter().enumerate() {
            let path = dir.path().join(format!("bench-{run}-{m}.db"));
            let db = Database::open(&path)?;
            db.write(|tx| Ok(tx.execute_batch(SCHEMA)?))?;
            let sample = runtime.block_on(measure(mode, db, per_task))?;
            samples[m].push(sample);
        }
    }

    println!("async_bench — {}", machine());
    println!(
        "{TASKS} tasks x {per_task} writes (one INSERT per transaction, closed loop), \
         tokio multi-thread runtime with 2 workers; median [min-max] of {RUNS} runs"
    );
    println!(
        "{:<24} {:>26} {:>22} {:>22}",
        "mode", "writes/s", "p50 latency ms", "p99 latency ms"
    );
    for (mode, samples) in modes.iter().zip(&samples) {
        println!(
            "{:<24} {:>26} {:>22} {:>22}",
            mode.name(),
            summary(samples, |s| s.writes_per_s, 0),
            summary(samples, |s| s.p50_ms, 2),
            summary(samples, |s| s.p99_ms, 2),
        );
    }
    Ok(())
}

/// Runs the 64 tasks against `db` in `mode`; checks every row landed.
async fn measure(mode: Mode, db: Database, per_task: usize) -> sqlite_hybrid::Result<Sample> {
    let total = TASKS * per_task;
    let (latencies, elapsed, rows) = match mode {
        Mode::Async => {
            let db = Arc::new(AsyncDatabase::new(db)?);
            let writer = Arc::clone(&db);
            let (latencies, elapsed) = run_tasks(per_task, move |task, seq| {
                let db = Arc::clone(&writer);
                async move { db.write(move |tx| insert(tx, task, seq)).await }
            })
            .await?;
            let rows = db.read(count).await?;
            Arc::try_unwrap(db)
                .map_err(|_| sqlite_hybrid::Error::InvalidInput("handle still shared".into()))?
                .close()
                .await?;
            (latencies, elapsed, rows)
        }
        Mode::SpawnBlocking => {
            let db = Arc::new(db);
            let writer = Arc::clone(&db);
            let (latencies, elapsed) = run_tasks(per_task, move |task, seq| {
                let db = Arc::clone(&writer);
                async move {
                    tokio::task::spawn_blocking(move || db.write(|tx| insert(tx, task, seq)))
                        .await
                        .expect("blocking task")
                }
            })
            .await?;
            let rows = db.read(count)?;
            (latencies, elapsed, rows)
        }
    };
    assert_eq!(rows, total as i64, "every write committed");
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Ok(Sample {
        writes_per_s: total as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&ms, 0.50),
        p99_ms: percentile(&ms, 0.99),
    })
}

fn insert(tx: &rusqlite::Transaction<'_>, task: usize, seq: usize) -> sqlite_hybrid::Result<()> {
    tx.prepare_cached(INSERT)?.execute((
        task as i64,
        seq as i64,
        "payload of a typical small row, about a hundred bytes long: xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ))?;
    Ok(())
}

fn count(conn: &rusqlite::Connection) -> sqlite_hybrid::Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
}

/// Spawns the tasks, each making `per_task` writes through `write`, one
/// after the other; returns every write's latency and the wall time of
/// the whole.
async fn run_tasks<F, Fut>(
    per_task: usize,
    write: F,
) -> sqlite_hybrid::Result<(Vec<Duration>, Duration)>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = sqlite_hybrid::Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let tasks: Vec<tokio::task::JoinHandle<sqlite_hybrid::Result<Vec<Duration>>>> = (0..TASKS)
        .map(|task| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for seq in 0..per_task {
                    let began = Instant::now();
                    write(task, seq).await?;
                    latencies.push(began.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(TASKS * per_task);
    for task in tasks {
        all.extend(task.await.expect("benchmark task")?);
    }
    Ok((all, start.elapsed()))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `median [min-max]` of one figure over the runs.
fn summary(samples: &[Sample], figure: impl Fn(&Sample) -> f64, decimals: usize) -> String {
    let mut values: Vec<f64> = samples.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{median:.decimals$} [{:.decimals$}-{:.decimals$}]",
        values[0],
        values[values.len() - 1]
    )
}

/// Cores and CPU model, from the OS.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}
