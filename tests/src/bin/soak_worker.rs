//! A Rust soak worker: for SECONDS it writes rows through `Database::write`
//! and state through the write buffer, reads, and checks health; then
//! prints one JSON line with what it did.
//!
//! Usage: soak_worker DB WRITER_ID SECONDS

use std::time::{Duration, Instant};

use sqlite_hybrid::{Database, LogLevel, LogOptions, LogRecord, Row};

/// Anonymous resident memory (heap, SQLite's page caches) in KB. File
/// pages (the mmap'd database) are left out: they are the OS's cache.
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, writer, seconds): (&str, i64, f64) = (&args[1], args[2].parse()?, args[3].parse()?);
    // All Rust workers log into one shared log file (several processes
    // writing it, like several app instances).
    let db = Database::builder(path)
        .log_database(LogOptions::default())
        .open()?;
    let logs = db.log().ok_or("no log database")?.sink();
    let mut logged = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let warm = start + Duration::from_secs_f64(seconds / 4.0);
    let (mut committed, mut errors, mut reads, mut rss_warm) = (0i64, 0u64, 0u64, 0u64);
    let mut seq = 0i64;
    while Instant::now() < end {
        seq += 1;
        match db.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO rows(writer, seq, payload) VALUES (?1, ?2, ?3)",
                (writer, seq, "rust"),
            )?)
        }) {
            Ok(_) => {
                committed = seq;
                if logs.send(LogRecord::new(
                    LogLevel::Info,
                    "soak",
                    format!("w{writer} {seq}"),
                )) {
                    logged += 1;
                }
            }
            Err(e) => {
                errors += 1;
                eprintln!("soak_worker {writer}: {e}");
                seq -= 1;
            }
        }
        db.buffer().upsert(
            "state",
            Row::new().set("writer", writer).set("seq", seq),
            &["writer"],
        )?;
        if seq % 10 == 0 {
            // An index seek: a bounded working set, so memory stays flat.
            let n: i64 = db.read(|c| {
                Ok(c.query_row(
                    "SELECT coalesce(max(seq), 0) FROM rows WHERE writer = ?1",
                    [writer],
                    |r| r.get(0),
                )?)
            })?;
            assert!(n >= committed, "read {n}, committed {committed}");
            reads += 1;
        }
        if seq % 500 == 0 {
            db.health()?;
        }
        if rss_warm == 0 && Instant::now() >= warm {
            rss_warm = rss_kb();
        }
    }
    db.buffer().force_flush()?;
    db.log()
        .ok_or("no log database")?
        .flush(Duration::from_secs(60))?;
    let dropped = db.log().map_or(0, |l| l.stats().dropped);
    let metrics = db.lock_metrics()?;
    println!(
        "{{\"writer\":{writer},\"kind\":\"rust\",\"committed\":{committed},\"errors\":{errors},\"reads\":{reads},\
         \"lock_gave_up\":{},\"logged\":{logged},\"log_dropped\":{dropped},\"rss_warm_kb\":{rss_warm},\"rss_end_kb\":{}}}",
        metrics.gave_up,
        rss_kb()
    );
    Ok(())
}
