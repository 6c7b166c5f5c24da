//! Crash safety of the write buffer and the log database: a client process
//! is killed with SIGKILL at a random moment while it enqueues, flushes and
//! logs. Afterwards every acknowledged write and log line is there, and on
//! SQLite `PRAGMA integrity_check` is `ok` on both files. Runs CRASH_RUNS
//! times (default 12; `make soak` runs 200) with random kill points; the
//! seed is printed for reproduction. The same test runs on PostgreSQL (a
//! fresh database per run) when `HYBRID_PG_URL` is set, as `make test`
//! does.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use sqlite_hybrid_tests::{env_parse, integrity_check};

const KEYS: u64 = 5000;
/// How long a child may take to open its database and say READY: far
/// more than it needs, so that only a child that is stuck or failed trips it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

/// The number on the child's last line that starts with `prefix`: its
/// latest acknowledgement of that kind.
fn last_number(lines: &[String], prefix: &str) -> Option<u64> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|s| s.parse().unwrap())
}

#[test]
fn killed_mid_flush_keeps_every_acknowledged_write() {
    crash_runs(Engine::Sqlite);
}

#[test]
fn killed_mid_flush_on_postgres_keeps_every_acknowledged_write() {
    if std::env::var("HYBRID_PG_URL").is_err() {
        eprintln!("skipped: HYBRID_PG_URL is not set (make test starts a server)");
        return;
    }
    crash_runs(Engine::Postgres);
}

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database for one run, dropped afterwards.
struct PgDatabase {
    url: String,
    name: String,
    admin: String,
}

impl PgDatabase {
    fn create(run: u32) -> PgDatabase {
        let url = std::env::var("HYBRID_PG_URL").unwrap();
        let admin = std::env::var("HYBRID_PG_ADMIN_URL").unwrap();
        let name = format!("crash_{}_{run}", std::process::id());
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let base = url.rsplit_once('/').unwrap().0;
        PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn crash_runs(engine: Engine) {
    let runs: u32 = env_parse("CRASH_RUNS").unwrap_or(12);
    let mut seed = env_parse("CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let name = if engine == Engine::Postgres {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    eprintln!("crash test ({name}): {runs} runs, CRASH_SEED={seed}");
    let (mut total_acks, mut total_tickets, mut total_log_acks) = (0u64, 0u64, 0u64);
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let pg = (engine == Engine::Postgres).then(|| PgDatabase::create(run));
        let db = match &pg {
            Some(pg) => std::path::PathBuf::from(&pg.url),
            None => dir.path().join("crash.db"),
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_buffer_child"))
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Lines go through a channel so that the kill timer can start when
        // the child says READY: opening a database (and, on PostgreSQL,
        // creating the log schema) takes as long as a loaded machine makes
        // it take, and a kill before READY would test nothing.
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = line_tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let first = line_rx.recv_timeout(READY_TIMEOUT);
        if first.as_deref() != Ok("READY") {
            let _ = child.kill();
            let status = child.wait().unwrap();
            drop(line_rx);
            let _ = stdout_reader.join();
            panic!(
                "run {run}: the child did not say READY within {READY_TIMEOUT:?} \
                 (first line: {first:?}, {status}); its stderr:\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        }
        // Kill a random 50..550 ms after READY.
        let kill_after = Duration::from_millis(50 + next(&mut seed) % 500);
        std::thread::sleep(kill_after);
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "run {run}: the child exited by itself ({status}) before it was killed; its stderr:\n{}",
                stderr_reader.join().unwrap_or_default()
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stdout_reader.join().unwrap();
        let _ = stderr_reader.join();
        let lines: Vec<String> = std::iter::once("READY".to_string())
            .chain(line_rx.try_iter())
            .collect();

        let mut values = vec![-1i64; KEYS as usize];
        // Read back through the client itself: the same SQL on both engines.
        // With the log database, so its entries are readable as `log.*`.
        let reader = sqlite_hybrid::Database::builder(&db)
            .log_database(sqlite_hybrid::LogOptions::default())
            .open()
            .unwrap();
        if engine == Engine::Sqlite {
            let conn = rusqlite::Connection::open(&db).unwrap();
            assert_eq!(
                integrity_check(&conn),
                "ok",
                "run {run} (seed {seed}): file damaged after SIGKILL"
            );
        }
        for row in reader.query("SELECT id, value FROM items", &[]).unwrap() {
            match (&row[0], &row[1]) {
                (Value::Integer(id), Value::Integer(value)) => values[*id as usize] = *value,
                other => panic!("{other:?}"),
            }
        }
        // ACK <seq>: for every id, the value is at least the last write to it up to seq.
        if let Some(acked) = last_number(&lines, "ACK ") {
            total_acks += 1;
            for id in 0..KEYS.min(acked + 1) {
                let last_write = acked - ((acked - id) % KEYS);
                assert!(
                    values[id as usize] >= last_write as i64,
                    "run {run} (seed {seed}): id {id} is {} but {last_write} was acknowledged (ACK {acked})",
                    values[id as usize]
                );
            }
        }
        for line in lines.iter().filter_map(|l| l.strip_prefix("TICKET ")) {
            total_tickets += 1;
            let mut parts = line.split(' ').map(|p| p.parse::<u64>().unwrap());
            let (id, value) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                values[id as usize] >= value as i64,
                "run {run} (seed {seed}): ticket for id {id} = {value} reported committed, file has {}",
                values[id as usize]
            );
        }
        // The log: intact, and every acknowledged log line present.
        if engine == Engine::Sqlite {
            let logs = rusqlite::Connection::open(dir.path().join("crash-logs.db")).unwrap();
            assert_eq!(
                integrity_check(&logs),
                "ok",
                "run {run} (seed {seed}): log file damaged after SIGKILL"
            );
        }
        if let Some(acked) = last_number(&lines, "LOGACK ") {
            total_log_acks += 1;
            let expected = acked / 50 + 1;
            let present = reader
                .query(
                    "SELECT count(DISTINCT message) FROM log.entries \
                     WHERE CAST(substr(message, 4) AS INTEGER) <= ?1",
                    &[&(acked as i64)],
                )
                .unwrap();
            assert_eq!(
                present,
                vec![vec![Value::Integer(expected as i64)]],
                "run {run} (seed {seed}): acknowledged log lines missing (LOGACK {acked})"
            );
        }
        drop(reader);
    }
    eprintln!(
        "crash test: {runs} kills, {total_acks} runs with force_flush acks, {total_tickets} committed tickets, \
         {total_log_acks} runs with log flush acks verified"
    );
    assert!(
        total_acks > 0 && total_tickets > 0 && total_log_acks > 0,
        "the child acknowledged nothing; the test checked nothing"
    );
}
