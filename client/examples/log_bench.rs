//! Log database benchmark (`make bench` runs it in release mode).
//!
//! Four app writers (each its own `Database`, so they contend for the main
//! file's write lock like four processes) run short `db.write` transactions
//! for the run's length, while a producer emits 100,000 log lines per second
//! through the `log` bridge. Writers are paced like request handlers (each
//! --writer-rate transactions per second, default 1000), or with
//! --writer-rate 0 they run flat out (both cores saturated: then every
//! other thread, logging or not, shows in their latency). Three modes, in
//! one run:
//!
//! * `off`: no logging;
//! * `log database`: the lines go to the separate log file (the design);
//! * `main file`: the same writer thread, but its file is the main database
//!   (the anti-pattern: log batches take the app's write lock).
//!
//! Reported per mode: the app writers' transactions/s and p50/p99/max latency,
//! lines written and dropped, and the p99 ratio against `off` (target for the
//! log database: <= 1.10).
//!
//! Usage: cargo run --release -p sqlite-hybrid --example log_bench [-- --seconds 5]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::Log;
use sqlite_hybrid::{Database, LogDatabase, LogOptions};

const WRITERS: usize = 4;
const LINES_PER_SECOND: u64 = 100_000;

struct Outcome {
    tx_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    written: u64,
    dropped: u64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn run(dir: &std::path::Path, mode: &str, seconds: f64, writer_rate: f64) -> Outcome {
    let main = dir.join(format!("{}.db", mode.replace(' ', "-")));
    if std::env::var_os("BENCH_NO_SIDEFILE").is_some() {
        // Diagnostic: a directory where the side file goes forces backoff mode.
        let _ = std::fs::create_dir(format!("{}-hybrid", main.display()));
    }
    let setup = Database::open(&main).expect("open");
    setup
        .write(|tx| {
            Ok(tx.execute_batch(
                "CREATE TABLE orders(id INTEGER PRIMARY KEY, writer INT, amount INT)",
            )?)
        })
        .expect("schema");
    let logs = match mode {
        "off" => None,
        "log database" => {
            Some(LogDatabase::open(dir.join("app-logs.db"), log_options()).expect("logs"))
        }
        _ => Some(LogDatabase::open(&main, log_options()).expect("logs in main")),
    };
    let running = Arc::new(AtomicBool::new(true));
    let producer = logs.as_ref().map(|logs| {
        let logger = logs.logger();
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0u64;
            while running.load(Ordering::Relaxed) {
                // Keep to LINES_PER_SECOND on average, in bursts of 1,000.
                let due = (start.elapsed().as_secs_f64() * LINES_PER_SECOND as f64) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                for _ in 0..1000 {
                    logger.log(
                        &log::Record::builder()
                            .level(log::Level::Info)
                            .target("http")
                            .args(format_args!("GET /orders/{sent} 200 in {} us", sent % 997))
                            .build(),
                    );
                    sent += 1;
                }
            }
            sent
        })
    });
    let committed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db = Database::builder(&main).readers(0).open().expect("writer");
            let (running, committed) = (Arc::clone(&running), Arc::clone(&committed));
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut i = 0i64;
                // Writers' schedules are offset from each other, as real
                // request arrivals are (aligned schedules would collide on
                // every request).
                let began = Instant::now()
                    + Duration::from_secs_f64(w as f64 / (WRITERS as f64 * writer_rate.max(1.0)));
                while running.load(Ordering::Relaxed) {
                    if writer_rate > 0.0 {
                        // The next request arrives on schedule.
                        let due = began + Duration::from_secs_f64(i as f64 / writer_rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let start = Instant::now();
                    db.write(|tx| {
                        Ok(tx.execute(
                            "INSERT INTO orders(writer, amount) VALUES (?1, ?2)",
                            (w as i64, i),
                        )?)
                    })
                    .expect("app write");
                    latencies.push(start.elapsed().as_secs_f64() * 1000.0);
                    committed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    running.store(false, Ordering::Relaxed);
    let mut latencies: Vec<f64> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    if let Some(p) = producer {
        p.join().expect("producer");
    }
    let (written, dropped) = match &logs {
        Some(logs) => {
            let _ = logs.flush(Duration::from_secs(60));
            let stats = logs.stats();
            (stats.written, stats.dropped)
        }
        None => (0, 0),
    };
    latencies.sort_by(f64::total_cmp);
    Outcome {
        tx_per_s: committed.load(Ordering::Relaxed) as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: *latencies.last().unwrap_or(&0.0),
        written,
        dropped,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let seconds = flag("--seconds", 5.0);
    let writer_rate = flag("--writer-rate", 1000.0);
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "# log database benchmark: {WRITERS} app writers ({}), {LINES_PER_SECOND} log lines/s, {seconds} s per mode, {} cores",
        if writer_rate > 0.0 {
            format!("{writer_rate} tx/s each")
        } else {
            "flat out".to_string()
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| mode | app tx/s | app p50 ms | app p99 ms | app max ms | p99 vs off | lines written | lines dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut off_p99 = None;
    for mode in ["off", "log database", "main file"] {
        let o = run(dir.path(), mode, seconds, writer_rate);
        let base = *off_p99.get_or_insert(o.p99_ms);
        println!(
            "| {mode} | {:.0} | {:.3} | {:.3} | {:.1} | {:.2} | {} | {} |",
            o.tx_per_s,
            o.p50_ms,
            o.p99_ms,
            o.max_ms,
            o.p99_ms / base,
            o.written,
            o.dropped
        );
    }
}

/// LOG_BATCH overrides the batch size (default: the library's 50).
fn log_options() -> LogOptions {
    let batch_size = std::env::var("LOG_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LogOptions::default().batch_size);
    LogOptions {
        batch_size,
        ..LogOptions::default()
    }
}
