//! PostgreSQL standbys on real servers (`make bench` runs it under
//! `scripts/postgres/with-replicas.sh`, which sets the `HYBRID_PG_*`
//! variables). Three measurements:
//!
//! * `--mode reads` (`--standbys 2` servers): read throughput of a
//!   read-heavy mix, `--threads` handles (`Database` each, like app
//!   servers), each call 90% `query` (a 100-row range sum) and 10%
//!   `transact` (one `UPDATE`), for `--window-ms`, with reads on 0, 1
//!   and 2 standbys (the same servers; 0 = a handle without standbys), and
//!   on 1 and 2 standbys with the writes through a second handle without
//!   standbys (its reads then never check a replay position),
//!   `--rounds` rounds with the configurations in turn.
//! * `--mode ryw`: the first read after a handle's own write, on a handle
//!   with one standby (waits until the standby replayed the write) and on
//!   a handle without standbys (the primary): per-read latency, 300 writes
//!   per round.
//! * `--mode failover` (`--sync` servers; kills the primary): a writer
//!   commits through the multi-host URL in a loop; the primary is killed
//!   with SIGKILL and the standby promoted at once (`pg_ctl promote`);
//!   the gap is from the kill to the first write that commits on the new
//!   primary (the killed postmaster's backends may commit a few more:
//!   they run until they notice).
//!   One kill per run (the servers are gone afterwards): `--record FILE`
//!   appends the run's figures to FILE and prints the summary of every run
//!   in FILE.
//!
//! ```text
//! scripts/postgres/with-replicas.sh --standbys 2 cargo run --release -p sqlite-hybrid \
//!     --features postgres --example replica_bench -- --mode reads
//! ```

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use sqlite_hybrid::rusqlite::params;
use sqlite_hybrid::{Database, RetryPolicy};

const ROWS: i64 = 10_000;

struct Options {
    mode: String,
    threads: usize,
    rounds: usize,
    window: Duration,
    record: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        mode: "reads".into(),
        threads: 4,
        rounds: 3,
        window: Duration::from_millis(3000),
        record: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let text = args.get(i + 1).cloned().unwrap_or_default();
        let number = text.parse::<u64>().ok();
        match args[i].as_str() {
            "--mode" => o.mode = text,
            "--threads" => o.threads = number.unwrap_or(4).max(1) as usize,
            "--rounds" => o.rounds = number.unwrap_or(3).max(1) as usize,
            "--window-ms" => o.window = Duration::from_millis(number.unwrap_or(3000)),
            "--record" => o.record = Some(text),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            eprintln!(
                "replica_bench: {name} is not set; run it under scripts/postgres/with-replicas.sh"
            );
            std::process::exit(2);
        }
    }
}

/// (median, min, max) of `values`.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn open(primary: &str, standbys: &[String]) -> Database {
    let mut builder = Database::builder(primary);
    for standby in standbys {
        builder = builder.standby(standby);
    }
    builder.open().expect("open")
}

fn setup(primary: &str, standbys: &[String]) {
    let db = Database::open(primary).expect("open");
    db.transact(|tx| {
        tx.execute_batch(
            "DROP TABLE IF EXISTS kv; CREATE TABLE kv(id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        )?;
        tx.execute(
            "INSERT INTO kv SELECT g, 0 FROM generate_series(1, ?1) g",
            params![ROWS],
        )?;
        Ok(())
    })
    .expect("setup");
    // Every standby has the table before anything is measured.
    for standby in standbys {
        let reader = open(primary, std::slice::from_ref(standby));
        let started = Instant::now();
        while reader.query("SELECT count(*) FROM kv", params![]).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no table on {standby}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A cheap xorshift: which row, and read or write.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One round of the mix on `k` standbys: (reads/s, writes/s, share of the
/// reads that ran on a standby). With `split`, each thread writes through a
/// second handle without standbys, so its reads never wait for or check a
/// replay position (no read-your-writes).
fn mix_round(o: &Options, primary: &str, standbys: &[String], split: bool) -> (f64, f64, f64) {
    let handles: Vec<Database> = (0..o.threads).map(|_| open(primary, standbys)).collect();
    let writers: Vec<Option<Database>> = (0..o.threads)
        .map(|_| split.then(|| open(primary, &[])))
        .collect();
    let barrier = Arc::new(Barrier::new(o.threads + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Mutex::new(Instant::now());
    let counts: Vec<(u64, u64)> = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .zip(&writers)
            .enumerate()
            .map(|(t, (db, writer))| {
                let barrier = Arc::clone(&barrier);
                let stop = Arc::clone(&stop);
                s.spawn(move || {
                    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
                    let (mut reads, mut writes) = (0u64, 0u64);
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let r = next(&mut state);
                        let id = (r % ROWS as u64) as i64 + 1;
                        if r.is_multiple_of(10) {
                            writer
                                .as_ref()
                                .unwrap_or(db)
                                .transact(|tx| {
                                    tx.execute("UPDATE kv SET v = v + 1 WHERE id = ?1", params![id])
                                })
                                .expect("write");
                            writes += 1;
                        } else {
                            db.query(
                                "SELECT sum(v) FROM kv WHERE id BETWEEN ?1 AND ?1 + 99",
                                params![id],
                            )
                            .expect("read");
                            reads += 1;
                        }
                    }
                    (reads, writes)
                })
            })
            .collect();
        barrier.wait();
        *started.lock().unwrap() = Instant::now();
        std::thread::sleep(o.window);
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let seconds = started.lock().unwrap().elapsed().as_secs_f64();
    let reads: u64 = counts.iter().map(|c| c.0).sum();
    let writes: u64 = counts.iter().map(|c| c.1).sum();
    let on_standby: u64 = handles
        .iter()
        .filter_map(|db| db.health().ok()?.server)
        .flat_map(|server| server.standbys)
        .map(|s| s.reads)
        .sum();
    (
        reads as f64 / seconds,
        writes as f64 / seconds,
        if reads == 0 {
            0.0
        } else {
            on_standby as f64 / reads as f64
        },
    )
}

fn reads_mode(o: &Options) {
    let primary = var("HYBRID_PG_URL");
    let standbys: Vec<String> = var("HYBRID_PG_STANDBY_URLS")
        .split_whitespace()
        .map(String::from)
        .collect();
    setup(&primary, &standbys);
    // (standbys, writes through a separate handle)
    let mut configs: Vec<(usize, bool)> = (0..=standbys.len().min(2)).map(|k| (k, false)).collect();
    configs.extend((1..=standbys.len().min(2)).map(|k| (k, true)));
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); configs.len()];
    for round in 0..o.rounds {
        // Alternate the order so that no configuration always runs first.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..configs.len()).collect()
        } else {
            (0..configs.len()).rev().collect()
        };
        for i in order {
            let (k, split) = configs[i];
            let r = mix_round(o, &primary, &standbys[..k], split);
            eprintln!(
                "round {}: {}: {:.0} reads/s, {:.0} writes/s, {:.0}% of reads on standbys",
                round + 1,
                label(k, split),
                r.0,
                r.1,
                r.2 * 100.0
            );
            results[i].push(r);
        }
    }
    println!(
        "\nRead-heavy mix (90% query of a 100-row range, 10% transact of one UPDATE), {} threads \
         with a handle each, {} s windows, {} rounds: median (min-max)",
        o.threads,
        o.window.as_secs_f64(),
        o.rounds
    );
    println!("| standbys read from | reads/s | writes/s | reads that ran on a standby |");
    println!("|---|---|---|---|");
    for (&(k, split), runs) in configs.iter().zip(&results) {
        let (rm, rl, rh) = spread(&mut runs.iter().map(|r| r.0).collect::<Vec<_>>());
        let (wm, wl, wh) = spread(&mut runs.iter().map(|r| r.1).collect::<Vec<_>>());
        let (sm, sl, sh) = spread(&mut runs.iter().map(|r| r.2 * 100.0).collect::<Vec<_>>());
        println!(
            "| {} | {rm:.0} ({rl:.0}–{rh:.0}) | {wm:.0} ({wl:.0}–{wh:.0}) | {sm:.0}% ({sl:.0}–{sh:.0}%) |",
            label(k, split)
        );
    }
}

fn label(standbys: usize, split: bool) -> String {
    if split {
        format!("{standbys}, writes through a second handle (no read-your-writes check)")
    } else {
        format!("{standbys}")
    }
}

/// Latencies (ms) of the first read after each of `writes` writes.
fn first_reads(db: &Database, writes: i64) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(writes as usize);
    for i in 0..writes {
        let id = i % ROWS + 1;
        db.transact(|tx| tx.execute("UPDATE kv SET v = v + 1 WHERE id = ?1", params![id]))
            .expect("write");
        let started = Instant::now();
        db.query("SELECT v FROM kv WHERE id = ?1", params![id])
            .expect("read");
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn ryw_mode(o: &Options) {
    let primary = var("HYBRID_PG_URL");
    let standby = var("HYBRID_PG_STANDBY_URL");
    setup(&primary, std::slice::from_ref(&standby));
    let on_standby = open(&primary, std::slice::from_ref(&standby));
    let on_primary = open(&primary, &[]);
    // (median, p95) per round of each.
    let (mut s50, mut s95, mut p50, mut p95, mut extra) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let (standby_lat, primary_lat) = if round % 2 == 0 {
            let s = first_reads(&on_standby, 300);
            (s, first_reads(&on_primary, 300))
        } else {
            let p = first_reads(&on_primary, 300);
            (first_reads(&on_standby, 300), p)
        };
        let (a, b) = (percentile(&standby_lat, 0.5), percentile(&primary_lat, 0.5));
        eprintln!(
            "round {}: first read after a write: standby median {a:.3} ms p95 {:.3}; primary \
             median {b:.3} ms p95 {:.3}",
            round + 1,
            percentile(&standby_lat, 0.95),
            percentile(&primary_lat, 0.95)
        );
        s50.push(a);
        s95.push(percentile(&standby_lat, 0.95));
        p50.push(b);
        p95.push(percentile(&primary_lat, 0.95));
        extra.push(a - b);
    }
    let sent = on_standby
        .health()
        .ok()
        .and_then(|h| h.server)
        .map(|s| (s.standbys[0].reads, s.standbys[0].reads_sent_to_primary))
        .unwrap_or_default();
    println!(
        "\nFirst read after the handle's own write (300 writes per round, {} rounds): median \
         (min-max) over rounds",
        o.rounds
    );
    println!("| read on | median latency, ms | p95 latency, ms |");
    println!("|---|---|---|");
    let row = |name: &str, a: &mut Vec<f64>, b: &mut Vec<f64>| {
        let (am, al, ah) = spread(a);
        let (bm, bl, bh) = spread(b);
        println!("| {name} | {am:.3} ({al:.3}–{ah:.3}) | {bm:.3} ({bl:.3}–{bh:.3}) |");
    };
    row("standby, after waiting for replay", &mut s50, &mut s95);
    row("primary (handle without standbys)", &mut p50, &mut p95);
    let (em, el, eh) = spread(&mut extra);
    println!(
        "extra latency of read-your-writes (median difference): {em:.3} ms ({el:.3}–{eh:.3}); \
         reads on the standby {}, sent to the primary after the 100 ms wait {}",
        sent.0, sent.1
    );
}

fn failover_mode(o: &Options) {
    let multi = var("HYBRID_PG_MULTI_URL");
    let pid_file = var("HYBRID_PG_PRIMARY_PID_FILE");
    let promote = var("HYBRID_PG_PROMOTE");
    let db = Database::builder(&multi)
        .retry(RetryPolicy {
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .open()
        .expect("open");
    db.transact(|tx| tx.execute_batch("CREATE TABLE w(id BIGSERIAL PRIMARY KEY, at BIGINT)"))
        .expect("setup");
    let stop = AtomicBool::new(false);
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let old_port = db
        .query("SELECT current_setting('port')", params![])
        .expect("port")[0][0]
        .clone();
    let (gap, promote_ms, errors, late_on_old) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut errors = 0u64;
            let mut late_on_old = 0u64;
            let mut first_after_kill = None;
            while !stop.load(Ordering::Relaxed) {
                // Only a write begun after the kill counts: one begun
                // before may have committed on the old primary.
                let began = Instant::now();
                let outcome = db.transact(|tx| {
                    tx.execute("INSERT INTO w(at) VALUES (1)", params![])?;
                    tx.query("SELECT current_setting('port')", params![])
                });
                let done = Instant::now();
                match outcome {
                    Ok(port) => {
                        let kill = *killed_at.lock().unwrap();
                        let Some(kill) = kill else { continue };
                        if port[0][0] == old_port {
                            // SIGKILL of the postmaster leaves its backends
                            // running until they notice: they may commit.
                            if began > kill {
                                late_on_old += 1;
                            }
                        } else if first_after_kill.is_none() {
                            first_after_kill = Some(done - kill);
                        }
                    }
                    // CommitOutcomeUnknown for the commit in flight at the
                    // kill: counted, not re-run.
                    Err(_) => errors += 1,
                }
            }
            (first_after_kill, errors, late_on_old)
        });
        // Write load for a second, then the kill.
        std::thread::sleep(Duration::from_secs(1));
        let pid = std::fs::read_to_string(&pid_file).expect("pid file");
        let pid = pid.lines().next().unwrap_or_default().trim().to_string();
        let killed = Command::new("kill").args(["-KILL", &pid]).status();
        // After kill(1) returned: the signal has been sent.
        *killed_at.lock().unwrap() = Some(Instant::now());
        assert!(killed.is_ok_and(|s| s.success()), "kill -KILL {pid}");
        let promote_started = Instant::now();
        let promoted = Command::new(&promote).output().expect("promote");
        assert!(promoted.status.success(), "promote: {promoted:?}");
        let promote_ms = promote_started.elapsed().as_secs_f64() * 1000.0;
        // Writes go on for a second after the promotion.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let (gap, errors, late_on_old) = writer.join().unwrap();
        (gap, promote_ms, errors, late_on_old)
    });
    let gap_ms = gap
        .expect("no write committed on the new primary")
        .as_secs_f64()
        * 1000.0;
    eprintln!(
        "failover: first write on the new primary {gap_ms:.0} ms after the kill; pg_ctl promote \
         -w took {promote_ms:.0} ms; {errors} write(s) failed (commit outcome unknown); \
         {late_on_old} write(s) begun after the kill committed on the old primary's backends"
    );
    let Some(record) = &o.record else {
        return;
    };
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)
            .expect("record file");
        writeln!(file, "{gap_ms:.1} {promote_ms:.1} {errors} {late_on_old}").expect("record");
    }
    let text = std::fs::read_to_string(record).expect("record file");
    let runs: Vec<Vec<f64>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .filter(|v: &Vec<f64>| v.len() == 4)
        .collect();
    let (gm, gl, gh) = spread(&mut runs.iter().map(|r| r[0]).collect::<Vec<_>>());
    let (pm, pl, ph) = spread(&mut runs.iter().map(|r| r[1]).collect::<Vec<_>>());
    let unknown: f64 = runs.iter().map(|r| r[2]).sum();
    let late: f64 = runs.iter().map(|r| r[3]).sum();
    println!(
        "\nFailover, {} run(s) so far (synchronous standby, SIGKILL of the primary, pg_ctl \
         promote at once): median (min-max)",
        runs.len()
    );
    println!(
        "| kill → first write committed on the new primary, ms | pg_ctl promote -w, ms | \
         commits with unknown outcome | writes begun after the kill that the old primary's \
         backends committed |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {gm:.0} ({gl:.0}–{gh:.0}) | {pm:.0} ({pl:.0}–{ph:.0}) | {unknown:.0} in {n} runs | \
         {late:.0} in {n} runs |",
        n = runs.len()
    );
}

fn main() {
    let o = options();
    match o.mode.as_str() {
        "reads" => reads_mode(&o),
        "ryw" => ryw_mode(&o),
        "failover" => failover_mode(&o),
        other => {
            eprintln!("unknown mode {other} (reads, ryw, failover)");
            std::process::exit(2);
        }
    }
}
