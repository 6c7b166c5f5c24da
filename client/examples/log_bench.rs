//! Log database benchmark (`make bench` runs it in release mode).
//!
//! Four app writers (each its own `Database`, so they contend for the main
//! file's write lock like four processes) run short `db.write` transactions
//! while a producer emits 100,000 log lines per second (`--lines`) through
//! the `log` bridge. Writers are paced like request handlers (each
//! `--writer-rate` transactions per second, default 1000), or with
//! `--writer-rate 0` they run flat out (both cores saturated: then every
//! other thread, logging or not, shows in their latency). Modes:
//!
//! * `off`: no logging;
//! * `null sink` (SQLite only): the producer runs, but its lines are only
//!   formatted and dropped: what logging costs the app before any database
//!   (the producer's thread, the formatting), so that the log database's
//!   own share can be told apart;
//! * `log database`: the lines go to the separate log file (the design);
//! * `main file`: the same writer thread, but its file is the main database
//!   (the anti-pattern: log batches take the app's write lock).
//!
//! Each mode runs `--runs` times (default 3), the modes interleaved round by
//! round so a change in the machine's load hits all of them alike. Every
//! run is printed, then the median and range of each mode. `p99 vs off`
//! compares a run with the `off` run of its own round (target for the log
//! database: a median <= 1.10). Every run checks the accounting: lines
//! emitted = written + dropped + failed, and the rows in the file = written.
//!
//! `--overload`: the log database only. The producer's rate is raised
//! (2x, 4x, 8x, 16x `--lines`, then as fast as it can) until lines drop.
//! Each step is a burst of `--seconds`, then at once one second at a tenth
//! of `--lines` (target `after`), to show that drops are counted exactly,
//! that the app's writes carry on, and that the writer recovers once the
//! burst ends: how long until the burst's backlog is written, and that no
//! line is dropped after that (calm-phase lines that meet the queue still
//! full of the backlog are dropped and counted separately).
//!
//! `--throughput`: no app writers; how fast the writer empties a backlog
//! for several `max_batch_size` values (rows/s, writer CPU per row,
//! commits): what a commit costs.
//!
//! The header names the machine (cores, CPU model, load average), and each
//! run reports how many cores' worth of CPU other processes used meanwhile:
//! on a shared machine, the first thing to check in an outlier.
//!
//! `--engine postgres` (feature `postgres`; the server in `HYBRID_PG_URL`,
//! as `scripts/postgres/with-postgres.sh` sets it): the app writers and the
//! log database on PostgreSQL (the log in the `log` schema of the same
//! database, written on its own session); modes `off` and `log database`.
//!
//! Usage: cargo run --release -p sqlite-hybrid --example log_bench
//! [-- --seconds 5 --runs 3 --lines 100000 --writer-rate 1000 --no-main-file --no-null-sink | --overload | --throughput]
//! `LOG_BATCH` / `LOG_MAX_BATCH` override `batch_size` / `max_batch_size`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::Log;
use sqlite_hybrid::rusqlite::Connection;
use sqlite_hybrid::{Database, DbLogger, LogDatabase, LogOptions};

const WRITERS: usize = 4;
/// Seconds of the calm phase after an overload burst.
const AFTER_SECONDS: f64 = 1.0;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    NullSink,
    LogDatabase,
    MainFile,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::NullSink => "null sink",
            Mode::LogDatabase => "log database",
            Mode::MainFile => "main file",
        }
    }
}

/// What one run asks of the machine.
#[derive(Clone, Copy)]
struct Load {
    seconds: f64,
    writer_rate: f64,
    /// Log lines per second; infinite: as fast as the producer can.
    lines_per_second: f64,
    /// Lines per second of a calm phase after the burst (`--overload`).
    after_rate: Option<f64>,
}

#[derive(Default)]
struct Outcome {
    tx_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Lines the producer logged (burst and calm phase).
    emitted: u64,
    burst_seconds: f64,
    written: u64,
    dropped: u64,
    failed: u64,
    batches: u64,
    /// `count(*)` of the entries in the file after the final flush.
    rows: u64,
    /// Bytes the log writer thread sent towards the disk (`write_bytes`
    /// of its `/proc` task: WAL appends and checkpoints), in MB: what the
    /// app's own fsyncs queue behind.
    log_disk_mb: f64,
    /// Cores' worth of CPU that other processes used during the run: on a
    /// shared machine, the first suspect for an outlier.
    others: f64,
    after: Option<After>,
}

impl Outcome {
    /// Every line emitted is written, dropped or failed, and the file holds
    /// exactly the written ones.
    fn exact(&self) -> bool {
        self.emitted == self.written + self.dropped + self.failed && self.rows == self.written
    }
}

/// The calm phase after an overload burst. It starts as the burst ends, so
/// its first lines may meet a queue still full of the burst's backlog;
/// once the backlog is written, none may be dropped.
#[derive(Default)]
struct After {
    emitted: u64,
    /// Lines of the calm phase found in the file.
    kept: u64,
    /// Drops while the burst's backlog was still being written.
    dropped_in_backlog: u64,
    /// Drops after that: the writer has not recovered (must be 0).
    dropped_after_backlog: u64,
    /// From the end of the burst until every line it got into the queue was
    /// written.
    backlog_ms: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A logger that formats each record as a log line needs (message and
/// target into owned strings) and drops it.
struct NullSink;

impl Log for NullSink {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        std::hint::black_box((record.args().to_string(), record.target().to_string()));
    }

    fn flush(&self) {}
}

/// Where the producer's lines go in one run.
#[derive(Clone, Copy)]
enum Sink<'a> {
    /// No producer at all.
    Off,
    Null,
    Database(&'a LogDatabase),
}

/// Logs `rate` lines per second (in bursts of 1,000) for `seconds`; returns
/// how many.
fn produce(logger: &dyn Log, target: &str, rate: f64, seconds: f64) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let due = (start.elapsed().as_secs_f64() * rate).min(u64::MAX as f64) as u64;
        if sent >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for _ in 0..1000 {
            logger.log(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target(target)
                    .args(format_args!("GET /orders/{sent} 200 in {} us", sent % 997))
                    .build(),
            );
            sent += 1;
        }
    }
    sent
}

/// `--engine postgres`: the server's URL.
static POSTGRES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn run(dir: &std::path::Path, round: usize, mode: Mode, load: Load) -> Outcome {
    match POSTGRES.get() {
        Some(url) => run_on_postgres(url, mode, load),
        None => run_on_sqlite(dir, round, mode, load),
    }
}

/// One run on PostgreSQL: a fresh `orders` table and `log` schema; the
/// writers and the producer as on SQLite.
fn run_on_postgres(url: &str, mode: Mode, load: Load) -> Outcome {
    let setup = Database::open(url).expect("open");
    setup
        .transact(|tx| {
            tx.execute_batch(
                "DROP TABLE IF EXISTS orders; DROP SCHEMA IF EXISTS log CASCADE; \
                 CREATE TABLE orders(id BIGSERIAL PRIMARY KEY, writer INT, amount BIGINT)",
            )
        })
        .expect("schema");
    let log_owner = (mode == Mode::LogDatabase).then(|| {
        Database::builder(url)
            .readers(1)
            .log_database(log_options())
            .open()
            .expect("log database")
    });
    let logs = log_owner.as_ref().and_then(Database::log);
    let mut out = drive(
        &|| Database::builder(url).readers(0).open().expect("writer"),
        logs.map_or(Sink::Off, Sink::Database),
        load,
    );
    if let (Some(owner), Some(logs)) = (&log_owner, logs) {
        logs.flush(Duration::from_secs(120)).expect("final flush");
        let stats = logs.stats();
        (out.written, out.dropped, out.failed, out.batches) =
            (stats.written, stats.dropped, stats.failed, stats.batches);
        let count = |sql: &str| -> u64 {
            match &owner.query(sql, &[]).expect("count")[0][0] {
                sqlite_hybrid::rusqlite::types::Value::Integer(n) => *n as u64,
                other => panic!("count: {other:?}"),
            }
        };
        out.rows = count("SELECT count(*) FROM log.entries");
        if let Some(after) = &mut out.after {
            after.kept = count("SELECT count(*) FROM log.entries WHERE target = 'after'");
        }
    }
    out
}

/// The app writers and (unless `sink` is off) the producer, for one run.
fn drive(open_writer: &(dyn Fn() -> Database + Sync), sink: Sink, load: Load) -> Outcome {
    let running = AtomicBool::new(true);
    let committed = AtomicU64::new(0);
    let mut out = Outcome::default();
    let cpu_before = CpuTicks::now();
    let began = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let db = open_writer();
                let (running, committed) = (&running, &committed);
                s.spawn(move || app_writer(&db, w, load.writer_rate, running, committed))
            })
            .collect();
        match sink {
            Sink::Off => std::thread::sleep(Duration::from_secs_f64(load.seconds)),
            Sink::Null => {
                out.emitted = produce(&NullSink, "http", load.lines_per_second, load.seconds);
            }
            Sink::Database(logs) => {
                let logger = logs.logger();
                let burst_start = Instant::now();
                out.emitted = produce(&logger, "http", load.lines_per_second, load.seconds);
                out.burst_seconds = burst_start.elapsed().as_secs_f64();
                if let Some(rate) = load.after_rate {
                    out.after = Some(calm_phase(logs, &logger, out.emitted, rate));
                    out.emitted += out.after.as_ref().map_or(0, |a| a.emitted);
                }
            }
        }
        running.store(false, Ordering::Relaxed);
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer thread"))
            .collect()
    });
    let elapsed = began.elapsed().as_secs_f64();
    out.others = CpuTicks::now().others_since(&cpu_before);
    let mut latencies = latencies;
    latencies.sort_by(f64::total_cmp);
    out.tx_per_s = committed.load(Ordering::Relaxed) as f64 / elapsed;
    out.p50_ms = percentile(&latencies, 0.50);
    out.p99_ms = percentile(&latencies, 0.99);
    out.max_ms = latencies.last().copied().unwrap_or(0.0);
    out
}

fn run_on_sqlite(dir: &std::path::Path, round: usize, mode: Mode, load: Load) -> Outcome {
    let run_dir = dir.join(format!("{}-{round}", mode.name().replace(' ', "-")));
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let main = run_dir.join("app.db");
    if std::env::var_os("BENCH_NO_SIDEFILE").is_some() {
        // Diagnostic: a directory where the side file goes forces backoff mode.
        let _ = std::fs::create_dir(format!("{}-hybrid", main.display()));
    }
    let setup = Database::open(&main).expect("open");
    setup
        .transact(|tx| {
            tx.execute_batch("CREATE TABLE orders(id INTEGER PRIMARY KEY, writer INT, amount INT)")
        })
        .expect("schema");
    let log_path = match mode {
        Mode::Off | Mode::NullSink => None,
        Mode::LogDatabase => Some(run_dir.join("app-logs.db")),
        Mode::MainFile => Some(main.clone()),
    };
    let logs = log_path
        .as_ref()
        .map(|path| LogDatabase::open(path, log_options()).expect("log database"));
    let sink = match (&logs, mode) {
        (Some(logs), _) => Sink::Database(logs),
        (None, Mode::NullSink) => Sink::Null,
        (None, _) => Sink::Off,
    };
    let mut out = drive(
        &|| Database::builder(&main).readers(0).open().expect("writer"),
        sink,
        load,
    );
    if let (Some(logs), Some(path)) = (&logs, &log_path) {
        logs.flush(Duration::from_secs(120)).expect("final flush");
        let stats = logs.stats();
        (out.written, out.dropped, out.failed, out.batches) =
            (stats.written, stats.dropped, stats.failed, stats.batches);
        out.log_disk_mb = thread_write_bytes("sqlite-hybrid-l").unwrap_or(0) as f64 / 1e6;
        let conn = Connection::open(path).expect("open the log file");
        let count = |sql: &str| -> u64 {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .expect("count") as u64
        };
        out.rows = count("SELECT count(*) FROM entries");
        if let Some(after) = &mut out.after {
            after.kept = count("SELECT count(*) FROM entries WHERE target = 'after'");
        }
    }
    out
}

/// After a burst: logs `rate` lines/s for `AFTER_SECONDS` (target `after`)
/// while timing how long the burst's backlog takes to be written.
fn calm_phase(logs: &LogDatabase, logger: &DbLogger, burst_emitted: u64, rate: f64) -> After {
    let burst_end = Instant::now();
    // Only the producer sends, so this is exactly what the burst got into
    // the queue; the writer takes the queue in order.
    let dropped_in_burst = logs.stats().dropped;
    let accepted = burst_emitted - dropped_in_burst;
    let mut after = After::default();
    let dropped_at_recovery = std::thread::scope(|s| {
        let monitor = s.spawn(|| {
            let deadline = burst_end + Duration::from_secs(120);
            while logs.stats().written < accepted && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            let dropped = logs.stats().dropped;
            (burst_end.elapsed().as_secs_f64() * 1000.0, dropped)
        });
        after.emitted = produce(logger, "after", rate, AFTER_SECONDS);
        let (backlog_ms, dropped) = monitor.join().expect("monitor");
        after.backlog_ms = backlog_ms;
        dropped
    });
    after.dropped_in_backlog = dropped_at_recovery - dropped_in_burst;
    after.dropped_after_backlog = logs.stats().dropped - dropped_at_recovery;
    after
}

fn app_writer(
    db: &Database,
    w: usize,
    writer_rate: f64,
    running: &AtomicBool,
    committed: &AtomicU64,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut i = 0i64;
    // Writers' schedules are offset from each other, as real request
    // arrivals are (aligned schedules would collide on every request).
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
        // `transact`: the same call on both engines.
        db.transact(|tx| {
            tx.execute(
                "INSERT INTO orders(writer, amount) VALUES (?1, ?2)",
                sqlite_hybrid::rusqlite::params![w as i64, i],
            )
        })
        .expect("app write");
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        committed.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
    latencies
}

/// CPU time counters of the machine and of this process (`/proc`; zeros
/// elsewhere).
struct CpuTicks {
    /// All CPUs, every state.
    total: u64,
    /// All CPUs, busy (steal included: the hypervisor's other guests).
    busy: u64,
    /// This process, every thread.
    own: u64,
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let total = busy + field(3) + field(4);
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // After the `(comm)` field: state is the 1st, utime the 12th, stime the 13th.
        let own: u64 = own_stat
            .rsplit_once(") ")
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .map(|v| v.parse::<u64>().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0);
        CpuTicks { total, busy, own }
    }

    /// Cores' worth of CPU used by other processes since `before`.
    fn others_since(&self, before: &CpuTicks) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let others = (self.busy.saturating_sub(before.busy))
            .saturating_sub(self.own.saturating_sub(before.own)) as f64;
        others / total * cores
    }
}

/// Median and range of `values`, as `median (min–max)`.
fn spread(values: &[f64], decimals: usize) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    if v.len() == 1 {
        return format!("{median:.decimals$}");
    }
    format!(
        "{median:.decimals$} ({:.decimals$}–{:.decimals$})",
        v[0],
        v[v.len() - 1]
    )
}

/// `cores, CPU model, load average`: the numbers mean little without them.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cores} cores, {model}, load average {} at start",
        load.join(" ")
    )
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
    let load = Load {
        seconds: flag("--seconds", 5.0),
        writer_rate: flag("--writer-rate", 1000.0),
        lines_per_second: flag("--lines", 100_000.0),
        after_rate: None,
    };
    let runs = flag("--runs", 3.0).max(1.0) as usize;
    let on_postgres = args
        .windows(2)
        .any(|w| w[0] == "--engine" && w[1] == "postgres");
    if on_postgres {
        if !cfg!(feature = "postgres") {
            eprintln!("--engine postgres needs --features postgres");
            std::process::exit(2);
        }
        let url = std::env::var("HYBRID_PG_URL")
            .expect("HYBRID_PG_URL (run under scripts/postgres/with-postgres.sh)");
        let _ = POSTGRES.set(url);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let options = log_options();
    println!("# machine: {}", machine());
    println!(
        "# {WRITERS} app writers ({}), {} log lines/s, {} s per run; batch_size {}, max_batch_size {}, channel_capacity {}",
        if load.writer_rate > 0.0 {
            format!("{} tx/s each", load.writer_rate)
        } else {
            "flat out".to_string()
        },
        load.lines_per_second,
        load.seconds,
        options.batch_size,
        options.max_batch_size,
        options.channel_capacity,
    );
    if args.iter().any(|a| a == "--throughput") {
        throughput(dir.path(), flag("--lines-total", 300_000.0) as u64);
    } else if args.iter().any(|a| a == "--overload") {
        overload(dir.path(), load);
    } else {
        // On PostgreSQL the log is always in the application's database.
        let mut modes = vec![Mode::Off, Mode::LogDatabase];
        if !on_postgres {
            // The null sink and the main file are SQLite-side comparisons.
            if !args.iter().any(|a| a == "--no-null-sink") {
                modes.insert(1, Mode::NullSink);
            }
            if !args.iter().any(|a| a == "--no-main-file") {
                modes.push(Mode::MainFile);
            }
        }
        run_modes(dir.path(), load, runs, &modes);
    }
}

fn run_modes(dir: &std::path::Path, load: Load, runs: usize, modes: &[Mode]) {
    println!();
    println!(
        "| run | mode | app tx/s | app p50 ms | app p99 ms | app max ms | p99 vs off | lines emitted | lines written | lines dropped | avg batch | exact | other processes (cores) | log writer MB to disk |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // (mode, outcome, p99 ratio against the round's `off`)
    let mut all: Vec<(Mode, Outcome, f64)> = Vec::new();
    for round in 1..=runs {
        let mut off_p99 = None;
        for &mode in modes {
            let o = run(dir, round, mode, load);
            let ratio = o.p99_ms / *off_p99.get_or_insert(o.p99_ms);
            println!(
                "| {round} | {} | {:.0} | {:.3} | {:.3} | {:.1} | {ratio:.2} | {} | {} | {} | {:.0} | {} | {:.2} | {:.0} |",
                mode.name(),
                o.tx_per_s,
                o.p50_ms,
                o.p99_ms,
                o.max_ms,
                o.emitted,
                o.written,
                o.dropped,
                o.written as f64 / o.batches.max(1) as f64,
                if matches!(mode, Mode::Off | Mode::NullSink) {
                    "-"
                } else if o.exact() {
                    "yes"
                } else {
                    "NO"
                },
                o.others,
                o.log_disk_mb,
            );
            all.push((mode, o, ratio));
        }
    }
    println!();
    println!("Median (range) of {runs} runs:");
    println!();
    println!(
        "| mode | app tx/s | app p50 ms | app p99 ms | app max ms | p99 vs off | lines written | lines dropped | log writer MB to disk |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &mode in modes {
        let of: Vec<&(Mode, Outcome, f64)> = all.iter().filter(|(m, ..)| *m == mode).collect();
        let col = |f: &dyn Fn(&Outcome) -> f64, d: usize| {
            spread(&of.iter().map(|(_, o, _)| f(o)).collect::<Vec<_>>(), d)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mode.name(),
            col(&|o| o.tx_per_s, 0),
            col(&|o| o.p50_ms, 3),
            col(&|o| o.p99_ms, 3),
            col(&|o| o.max_ms, 1),
            spread(&of.iter().map(|(.., r)| *r).collect::<Vec<_>>(), 2),
            col(&|o| o.written as f64, 0),
            col(&|o| o.dropped as f64, 0),
            col(&|o| o.log_disk_mb, 0),
        );
    }
}

fn overload(dir: &std::path::Path, load: Load) {
    println!("# overload: the producer's rate is raised until lines drop");
    let off = run(dir, 0, Mode::Off, load);
    println!(
        "# off (no logging): app {:.0} tx/s, p99 {:.3} ms",
        off.tx_per_s, off.p99_ms
    );
    println!();
    println!(
        "| lines/s asked | lines/s emitted | app tx/s | app p99 ms | lines emitted | written | dropped | failed | rows in file | exact | backlog written ms after the burst | calm phase: emitted | kept | dropped while backlog queued | dropped after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let base = load.lines_per_second;
    let rates = [
        2.0 * base,
        4.0 * base,
        8.0 * base,
        16.0 * base,
        f64::INFINITY,
    ];
    for (step, rate) in rates.into_iter().enumerate() {
        let step_load = Load {
            lines_per_second: rate,
            after_rate: Some(base / 10.0),
            ..load
        };
        let o = run(dir, step + 1, Mode::LogDatabase, step_load);
        let after = o.after.as_ref().expect("calm phase");
        let burst_emitted = o.emitted - after.emitted;
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            if rate.is_finite() {
                format!("{rate:.0}")
            } else {
                "max".to_string()
            },
            burst_emitted as f64 / o.burst_seconds,
            o.tx_per_s,
            o.p99_ms,
            o.emitted,
            o.written,
            o.dropped,
            o.failed,
            o.rows,
            if o.exact() { "yes" } else { "NO" },
            after.backlog_ms,
            after.emitted,
            after.kept,
            after.dropped_in_backlog,
            after.dropped_after_backlog,
        );
        if o.dropped > 0 {
            return;
        }
    }
    println!("# no lines dropped even with the producer flat out");
}

/// `write_bytes` of this process's thread named `name` (Linux `/proc`).
fn thread_write_bytes(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let io = std::fs::read_to_string(task.path().join("io")).ok()?;
            return io
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

/// CPU time of this process's thread named `name`, if there is one.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
            return Some(Duration::from_nanos(ns));
        }
    }
    None
}

/// `--throughput`: the writer's CPU per row while it empties a backlog (no
/// app writers), for several `max_batch_size` values: the price of a
/// commit, measured. (Rows per second end to end would measure the
/// producer here, which is faster than the writer only in short bursts.)
fn throughput(dir: &std::path::Path, lines: u64) {
    println!();
    println!(
        "| max_batch_size | commits | writer CPU µs/row | rows per writer CPU second | file MB | writer MB to disk |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, max) in [50usize, 100, 250, 500, 1000, 2000, 5000]
        .into_iter()
        .enumerate()
    {
        let path = dir.join(format!("throughput-{i}.db"));
        let logs = LogDatabase::open(
            &path,
            LogOptions {
                channel_capacity: lines as usize,
                max_batch_size: max,
                ..log_options()
            },
        )
        .expect("log database");
        let logger = logs.logger();
        let cpu_before = thread_cpu("sqlite-hybrid-l").unwrap_or_default();
        let disk_before = thread_write_bytes("sqlite-hybrid-l").unwrap_or_default();
        for sent in 0..lines {
            logger.log(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target("http")
                    .args(format_args!("GET /orders/{sent} 200 in {} us", sent % 997))
                    .build(),
            );
        }
        logs.flush(Duration::from_secs(600)).expect("flush");
        let cpu = thread_cpu("sqlite-hybrid-l").unwrap_or_default() - cpu_before;
        let disk = thread_write_bytes("sqlite-hybrid-l").unwrap_or_default() - disk_before;
        let stats = logs.stats();
        assert_eq!(stats.written, lines, "{stats:?}");
        let per_row = cpu.as_secs_f64() / lines as f64;
        println!(
            "| {max} | {} | {:.2} | {:.0} | {:.1} | {:.1} |",
            stats.batches,
            per_row * 1e6,
            1.0 / per_row.max(1e-12),
            stats.file_bytes as f64 / 1e6,
            disk as f64 / 1e6,
        );
    }
}

/// `LOG_BATCH` / `LOG_MAX_BATCH` override the batch sizes (default: the
/// library's).
fn log_options() -> LogOptions {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let defaults = LogOptions::default();
    LogOptions {
        batch_size: env("LOG_BATCH", defaults.batch_size),
        max_batch_size: env("LOG_MAX_BATCH", defaults.max_batch_size),
        ..defaults
    }
}
