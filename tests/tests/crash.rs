//! Crash safety of the write buffer and the log database: a client process
//! is killed with SIGKILL at a random moment while it enqueues, flushes and
//! logs. Afterwards `PRAGMA integrity_check` is `ok` on both files and every
//! acknowledged write and log line is there. Runs CRASH_RUNS times (default 12; `make soak` runs 200) with
//! random kill points; the seed is printed for reproduction.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlite_hybrid_tests::{env_parse, integrity_check};

const KEYS: u64 = 5000;

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
    let runs: u32 = env_parse("CRASH_RUNS").unwrap_or(12);
    let mut seed = env_parse("CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("crash test: {runs} runs, CRASH_SEED={seed}");
    let (mut total_acks, mut total_tickets, mut total_log_acks) = (0u64, 0u64, 0u64);
    for run in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crash.db");
        let mut child = Command::new(env!("CARGO_BIN_EXE_buffer_child"))
            .arg(&db)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Kill after READY plus a random 50..550 ms.
        let kill_after = Duration::from_millis(50 + next(&mut seed) % 500);
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(300) + kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert_eq!(
            lines.first().map(String::as_str),
            Some("READY"),
            "run {run}: child did not start"
        );

        let conn = rusqlite::Connection::open(&db).unwrap();
        assert_eq!(
            integrity_check(&conn),
            "ok",
            "run {run} (seed {seed}): file damaged after SIGKILL"
        );
        let mut values = vec![-1i64; KEYS as usize];
        let mut stmt = conn.prepare("SELECT id, value FROM items").unwrap();
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .unwrap()
        {
            let (id, value) = row.unwrap();
            values[id as usize] = value;
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
        // The log file: intact, and every acknowledged log line present.
        let logs = rusqlite::Connection::open(dir.path().join("crash-logs.db")).unwrap();
        assert_eq!(
            integrity_check(&logs),
            "ok",
            "run {run} (seed {seed}): log file damaged after SIGKILL"
        );
        if let Some(acked) = last_number(&lines, "LOGACK ") {
            total_log_acks += 1;
            let expected = acked / 50 + 1;
            let present: u64 = logs
                .query_row(
                    "SELECT count(DISTINCT message) FROM entries WHERE CAST(substr(message, 4) AS INTEGER) <= ?1",
                    [acked as i64],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                present, expected,
                "run {run} (seed {seed}): acknowledged log lines missing (LOGACK {acked})"
            );
        }
        let _ = start;
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
