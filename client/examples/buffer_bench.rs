//! Write-buffer benchmark (`make bench` runs it in release mode).
//!
//! 1. Enqueue rate: 4 threads call `upsert` as fast as they can.
//!    * `coalescing`: each thread cycles over 1,000 keys, so most calls
//!      merge into a queued entry (the hot path of a counter or cache);
//!    * `distinct`: every call is a new key (the buffer is sized so it never
//!      fills; this measures validation + map insert + ticket).
//! 2. Flush throughput: 100,000 distinct upserts through the buffer, until
//!    `force_flush` returns, vs. the same rows written by one connection
//!    with a prepared `INSERT ... ON CONFLICT` in transactions of 100 rows
//!    (the buffer's batch size). Reported as a ratio (target >= 0.5).
//!
//! Usage: cargo run --release -p sqlite-hybrid --example buffer_bench [-- --quick]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlite_hybrid::{BufferOptions, Database, Row};

const THREADS: usize = 4;

fn fresh(dir: &tempfile::TempDir, name: &str, options: BufferOptions) -> Database {
    let db = Database::builder(dir.path().join(name))
        .write_buffer(options)
        .open()
        .expect("open");
    db.write(|tx| {
        Ok(tx.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL, note TEXT)")?)
    })
    .expect("schema");
    db
}

/// Row `i` of the flush measurements; the plain baseline writes the same
/// values (`k{i}`, `i`, `"x"`).
fn row(i: usize) -> Row {
    Row::new()
        .set("k", format!("k{i}"))
        .set("v", i as i64)
        .set("note", "x")
}

fn enqueue_rate(
    dir: &tempfile::TempDir,
    name: &str,
    per_thread: usize,
    keys_per_thread: Option<usize>,
) -> f64 {
    let options = BufferOptions {
        max_pending: THREADS * per_thread + 1,
        batch_size: 1000,
        flush_interval: Duration::from_millis(200),
        ..BufferOptions::default()
    };
    let db = Arc::new(fresh(dir, name, options));
    db.buffer(); // start the flusher outside the timing
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let buffer = db.buffer();
                for i in 0..per_thread {
                    let key = match keys_per_thread {
                        Some(keys) => format!("t{t}-{}", i % keys),
                        None => format!("t{t}-{i}"),
                    };
                    buffer
                        .upsert("kv", Row::new().set("k", key).set("v", i as i64), &["k"])
                        .expect("enqueue");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let rate = (THREADS * per_thread) as f64 / start.elapsed().as_secs_f64();
    db.buffer().force_flush().expect("flush");
    rate
}

/// End to end: rows/s from the first enqueue (one thread) to `force_flush`
/// returning, flushes overlapping the enqueueing as in real use.
fn buffer_end_to_end_rate(dir: &tempfile::TempDir, rows: usize) -> f64 {
    let db = fresh(
        dir,
        "e2e.db",
        BufferOptions {
            max_pending: rows + 1,
            ..BufferOptions::default()
        },
    );
    let buffer = db.buffer();
    let start = Instant::now();
    for i in 0..rows {
        buffer.upsert("kv", row(i), &["k"]).expect("enqueue");
    }
    buffer.force_flush().expect("flush");
    rows as f64 / start.elapsed().as_secs_f64()
}

/// Flush only: all rows are queued while another connection holds the
/// write lock (so no flush can commit), then the lock is released and the
/// time until `force_flush` returns is measured.
fn buffer_flush_rate(dir: &tempfile::TempDir, rows: usize) -> f64 {
    let path = dir.path().join("flush.db");
    let db = fresh(
        dir,
        "flush.db",
        BufferOptions {
            max_pending: rows + 1,
            ..BufferOptions::default()
        },
    );
    let holder = rusqlite::Connection::open(&path).expect("holder");
    holder.execute_batch("BEGIN IMMEDIATE").expect("hold");
    let buffer = db.buffer();
    for i in 0..rows {
        buffer.upsert("kv", row(i), &["k"]).expect("enqueue");
    }
    let start = Instant::now();
    holder.execute_batch("COMMIT").expect("release");
    buffer.force_flush().expect("flush");
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let (stored, sum): (i64, i64) = db
        .read(|c| {
            Ok(c.query_row("SELECT count(*), sum(v) FROM kv", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
        })
        .expect("count");
    assert_eq!(stored as usize, rows, "every row landed");
    assert_eq!(sum, (0..rows as i64).sum::<i64>(), "with its value");
    rate
}

/// Sustained: 4 threads enqueue distinct rows with the default options
/// (at most 1000 pending, block when full), so the flusher is the
/// bottleneck; rows/s until `force_flush` returns.
fn buffer_sustained_rate(dir: &tempfile::TempDir, rows: usize) -> f64 {
    let db = Arc::new(fresh(dir, "sustained.db", BufferOptions::default()));
    db.buffer();
    let start = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in (t..rows).step_by(THREADS) {
                    db.buffer().upsert("kv", row(i), &["k"]).expect("enqueue");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    db.buffer().force_flush().expect("flush");
    let rate = rows as f64 / start.elapsed().as_secs_f64();
    let stored: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?))
        .expect("count");
    assert_eq!(stored as usize, rows, "every row landed");
    rate
}

fn plain_batched_rate(dir: &tempfile::TempDir, rows: usize) -> f64 {
    let db = fresh(dir, "plain.db", BufferOptions::default());
    let start = Instant::now();
    for chunk in 0..rows.div_ceil(100) {
        db.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO kv(k, v, note) VALUES (?1, ?2, ?3) ON CONFLICT(k) DO UPDATE SET v = excluded.v, note = excluded.note",
            )?;
            for i in chunk * 100..((chunk + 1) * 100).min(rows) {
                stmt.execute(rusqlite::params![format!("k{i}"), i as i64, "x"])?;
            }
            Ok(())
        })
        .expect("write");
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (per_thread, rows) = if quick {
        (50_000, 20_000)
    } else {
        (250_000, 100_000)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "# write-buffer benchmark ({THREADS} enqueue threads; {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let coalescing = enqueue_rate(&dir, "coalescing.db", per_thread, Some(1000));
    let distinct = enqueue_rate(&dir, "distinct.db", per_thread / 2, None);
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| enqueue, coalescing keys | {:.0} upserts/s | >= 500000 |",
        coalescing
    );
    println!("| enqueue, distinct keys | {:.0} upserts/s | |", distinct);
    let plain = plain_batched_rate(&dir, rows);
    let sustained = buffer_sustained_rate(&dir, rows);
    let flush = buffer_flush_rate(&dir, rows);
    let total = buffer_end_to_end_rate(&dir, rows);
    println!(
        "| plain batched upsert, 1 connection, 100 rows/tx | {:.0} rows/s | |",
        plain
    );
    println!(
        "| buffer sustained, 4 threads, default options | {:.0} rows/s | |",
        sustained
    );
    println!(
        "| buffer sustained / plain | {:.2} | >= 0.5 |",
        sustained / plain
    );
    println!(
        "| buffer flush of {rows} queued rows | {:.0} rows/s | |",
        flush
    );
    println!(
        "| buffer flush of queued rows / plain | {:.2} | |",
        flush / plain
    );
    println!(
        "| buffer end to end, 1 enqueuing thread | {:.0} rows/s | |",
        total
    );
}
