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
//! With `--engine postgres` (feature `postgres`; the server in
//! `HYBRID_PG_URL`, as `scripts/postgres/with-postgres.sh` sets it), the
//! flush measurements run on PostgreSQL instead, against a plain batched
//! `INSERT ... ON CONFLICT` (one row per statement, and 100 rows per
//! statement) and against `COPY` of the same rows into a staging table
//! merged with one `INSERT ... SELECT ... ON CONFLICT`, 100 rows per
//! transaction each, on the same server. Each is run `--runs` times
//! (default 3); medians and ranges are printed.
//!
//! Usage: cargo run --release -p sqlite-hybrid --example buffer_bench [-- --quick]
//!        cargo run --release -p sqlite-hybrid --features postgres --example buffer_bench -- --engine postgres

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
    let args: Vec<String> = std::env::args().collect();
    if args
        .windows(2)
        .any(|w| w[0] == "--engine" && w[1] == "postgres")
    {
        #[cfg(feature = "postgres")]
        {
            let runs = args
                .windows(2)
                .find(|w| w[0] == "--runs")
                .map_or(3, |w| w[1].parse().expect("--runs N"));
            let rows = if args.iter().any(|a| a == "--quick") {
                20_000
            } else {
                100_000
            };
            pg::run(rows, runs);
            return;
        }
        #[cfg(not(feature = "postgres"))]
        {
            eprintln!("--engine postgres needs --features postgres");
            std::process::exit(2);
        }
    }
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

#[cfg(feature = "postgres")]
mod pg {
    //! The flush measurements on PostgreSQL.

    use std::io::Write as _;
    use std::time::Instant;

    use postgres::{Client, NoTls};
    use sqlite_hybrid::{BufferOptions, Database};

    use super::row;

    const SCHEMA: &str = "DROP TABLE IF EXISTS kv; \
        CREATE TABLE kv(k TEXT PRIMARY KEY, v BIGINT NOT NULL, note TEXT)";

    fn url() -> String {
        std::env::var("HYBRID_PG_URL")
            .expect("HYBRID_PG_URL (run under scripts/postgres/with-postgres.sh)")
    }

    fn fresh() -> Client {
        let mut client = Client::connect(&url(), NoTls).expect("connect");
        client.batch_execute(SCHEMA).expect("schema");
        client
    }

    fn check(client: &mut Client, rows: usize) {
        let row = client
            .query_one("SELECT count(*), sum(v)::bigint FROM kv", &[])
            .expect("count");
        let (count, sum): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(count as usize, rows, "every row landed");
        assert_eq!(sum, (0..rows as i64).sum::<i64>(), "with its value");
    }

    /// One prepared single-row upsert per row, 100 rows per transaction.
    fn plain_single(rows: usize) -> f64 {
        let mut client = fresh();
        let start = Instant::now();
        let stmt = client
            .prepare("INSERT INTO kv(k, v, note) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note")
            .expect("prepare");
        for chunk in 0..rows.div_ceil(100) {
            let mut tx = client.transaction().expect("begin");
            for i in chunk * 100..((chunk + 1) * 100).min(rows) {
                tx.execute(&stmt, &[&format!("k{i}"), &(i as i64), &"x"])
                    .expect("insert");
            }
            tx.commit().expect("commit");
        }
        let rate = rows as f64 / start.elapsed().as_secs_f64();
        check(&mut client, rows);
        rate
    }

    /// One 100-row upsert statement per transaction.
    fn plain_multi(rows: usize) -> f64 {
        let mut client = fresh();
        let start = Instant::now();
        let mut values = String::new();
        for r in 0..100 {
            values.push_str(&format!(
                "{}(${}, ${}, ${})",
                if r == 0 { "" } else { ", " },
                3 * r + 1,
                3 * r + 2,
                3 * r + 3
            ));
        }
        let full = client
            .prepare(&format!("INSERT INTO kv(k, v, note) VALUES {values} ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v, note = EXCLUDED.note"))
            .expect("prepare");
        assert_eq!(rows % 100, 0, "whole chunks");
        for chunk in 0..rows / 100 {
            let keys: Vec<String> = (chunk * 100..(chunk + 1) * 100)
                .map(|i| format!("k{i}"))
                .collect();
            let vals: Vec<i64> = (chunk * 100..(chunk + 1) * 100).map(|i| i as i64).collect();
            let note = "x";
            let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::with_capacity(300);
            for r in 0..100 {
                params.push(&keys[r]);
                params.push(&vals[r]);
                params.push(&note);
            }
            let mut tx = client.transaction().expect("begin");
            tx.execute(&full, &params).expect("insert");
            tx.commit().expect("commit");
        }
        let rate = rows as f64 / start.elapsed().as_secs_f64();
        check(&mut client, rows);
        rate
    }

    /// COPY of 100 rows into a staging table, merged by one statement, per
    /// transaction.
    fn copy_merge(rows: usize) -> f64 {
        let mut client = fresh();
        client
            .batch_execute("CREATE TEMP TABLE kv_stage(k TEXT, v BIGINT, note TEXT)")
            .expect("stage");
        let start = Instant::now();
        for chunk in 0..rows.div_ceil(100) {
            let mut tx = client.transaction().expect("begin");
            {
                let mut writer = tx.copy_in("COPY kv_stage FROM STDIN").expect("copy");
                for i in chunk * 100..((chunk + 1) * 100).min(rows) {
                    writeln!(writer, "k{i}\t{i}\tx").expect("row");
                }
                writer.finish().expect("finish");
            }
            tx.batch_execute(
                "INSERT INTO kv SELECT k, v, note FROM kv_stage ON CONFLICT (k) DO UPDATE \
                 SET v = EXCLUDED.v, note = EXCLUDED.note; TRUNCATE kv_stage",
            )
            .expect("merge");
            tx.commit().expect("commit");
        }
        let rate = rows as f64 / start.elapsed().as_secs_f64();
        check(&mut client, rows);
        rate
    }

    /// The write buffer with default options (100 rows per flush
    /// transaction): all rows queued while another session holds the
    /// table locked, then released; rows/s until `force_flush` returns.
    fn buffer_flush(rows: usize) -> f64 {
        let mut holder = fresh();
        let db = Database::builder(url())
            .write_buffer(BufferOptions {
                max_pending: rows + 1,
                ..BufferOptions::default()
            })
            .open()
            .expect("open");
        holder
            .batch_execute("BEGIN; LOCK TABLE kv IN EXCLUSIVE MODE")
            .expect("lock");
        let buffer = db.buffer();
        for i in 0..rows {
            buffer.upsert("kv", row(i), &["k"]).expect("enqueue");
        }
        let start = Instant::now();
        holder.batch_execute("COMMIT").expect("release");
        buffer.force_flush().expect("flush");
        let rate = rows as f64 / start.elapsed().as_secs_f64();
        check(&mut holder, rows);
        rate
    }

    fn summary(values: &mut [f64]) -> String {
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        format!(
            "{median:.0} [{:.0}–{:.0}]",
            values[0],
            values[values.len() - 1]
        )
    }

    pub fn run(rows: usize, runs: usize) {
        let mut server = Client::connect(&url(), NoTls).expect("connect");
        let version: String = server
            .query_one("SHOW server_version", &[])
            .expect("version")
            .get(0);
        println!(
            "# write-buffer flush on PostgreSQL {version} ({} cores), {rows} distinct upserts, {runs} runs, median [min–max] rows/s",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let (mut single, mut multi, mut copy, mut buffer) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            single.push(plain_single(rows));
            multi.push(plain_multi(rows));
            copy.push(copy_merge(rows));
            buffer.push(buffer_flush(rows));
        }
        let ratio =
            |b: &[f64], p: &[f64]| -> Vec<f64> { b.iter().zip(p).map(|(b, p)| b / p).collect() };
        let mut vs_single = ratio(&buffer, &single);
        let mut vs_multi = ratio(&buffer, &multi);
        let mut vs_copy = ratio(&buffer, &copy);
        println!("| measure (100 rows per transaction) | rows/s |");
        println!("|---|---|");
        println!(
            "| plain upsert, one row per statement | {} |",
            summary(&mut single)
        );
        println!(
            "| plain upsert, 100 rows per statement | {} |",
            summary(&mut multi)
        );
        println!(
            "| COPY into a staging table + one merge | {} |",
            summary(&mut copy)
        );
        println!(
            "| write buffer flush (default options) | {} |",
            summary(&mut buffer)
        );
        let fmt = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            format!("{:.2} [{:.2}–{:.2}]", v[v.len() / 2], v[0], v[v.len() - 1])
        };
        println!(
            "| buffer / plain one-row upsert | {} (target >= 0.5) |",
            fmt(&mut vs_single)
        );
        println!("| buffer / plain 100-row upsert | {} |", fmt(&mut vs_multi));
        println!("| buffer / COPY + merge | {} |", fmt(&mut vs_copy));
    }
}
