//! Memory safety across the FFI boundary: Debian's sqlite3 shell, with the
//! extension loaded, under valgrind memcheck for a scripted session (load,
//! configure, real contention from another process, every table and
//! function, reset, bad arguments). Zero errors required.

use std::process::{Command, Stdio};
use std::time::Duration;

use sqlite_hybrid_tests::{LineProcess, ext_load_arg};

#[test]
fn shell_session_under_memcheck_has_no_errors() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.as_ref().is_ok_and(|o| o.status.success()),
        "valgrind is required (scripts/check-tools.sh installs it: apt-get install valgrind)"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vg.db");
    let db_str = db.to_str().unwrap();
    // A second process takes the write lock and releases it only once an
    // observer sees the shell queued for it, so the session really waits
    // however slowly valgrind starts.
    let mut holder = LineProcess::python("holder.py", &[db_str]);
    holder.expect_line("held");
    let mut observer = LineProcess::python("client.py", &[db_str]);
    assert!(observer.read_line().starts_with("ready"));
    let releaser = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        loop {
            observer.send_line("waiters");
            if observer.read_line() == "1" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the shell never queued for the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        holder.send_line("release");
        holder.expect_line("released");
        (holder, observer)
    });
    let script = format!(
        ".load {ext}\n\
         SELECT hybrid_version();\n\
         SELECT hybrid_busy_config('{{\"timeout_ms\":20000,\"jitter\":\"decorrelated\"}}');\n\
         SELECT hybrid_priority('background'), hybrid_priority('interactive');\n\
         SELECT hybrid_lock_events_capacity(16);\n\
         BEGIN IMMEDIATE;\n\
         INSERT INTO t(who) VALUES ('valgrind');\n\
         COMMIT;\n\
         SELECT 'waits', busy_events, acquired FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%vg.db';\n\
         SELECT count(*) FROM hybrid_lock_metrics;\n\
         SELECT count(*) FROM hybrid_lock_events;\n\
         SELECT count(*) FROM hybrid_lock_waiters;\n\
         SELECT count(*) FROM hybrid_health;\n\
         SELECT hybrid_health_check();\n\
         SELECT hybrid_tune();\n\
         SELECT hybrid_busy_config('{{bad');\n\
         SELECT hybrid_busy_timeout('x');\n\
         SELECT hybrid_priority(42);\n\
         SELECT hybrid_busy_timeout(5000);\n\
         PRAGMA busy_timeout = 10;\n\
         SELECT handler_active FROM hybrid_lock_metrics WHERE scope = 'process';\n\
         SELECT hybrid_lock_metrics_reset('file');\n\
         .open {db2}\n\
         SELECT count(*) FROM hybrid_lock_metrics;\n",
        ext = ext_load_arg(),
        db2 = dir.path().join("second.db").display()
    );
    let mut child = Command::new("valgrind")
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "sqlite3",
        ])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let _holder = releaser.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr
        .lines()
        .find(|l| l.contains("ERROR SUMMARY"))
        .unwrap_or("no summary");
    assert!(
        summary.contains("ERROR SUMMARY: 0 errors"),
        "{summary}\n{stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(99),
        "valgrind found errors:\n{stderr}"
    );
    // The session did what it should (the bad calls are the 3 errors).
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("Runtime error"))
            .count(),
        3,
        "{stderr}"
    );
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let waits = stdout
        .lines()
        .find(|l| l.starts_with("waits|"))
        .expect("metrics line");
    assert_eq!(
        waits, "waits|1|1",
        "the session waited once for the holder and got the lock"
    );
    let waited: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t WHERE who = 'valgrind'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        waited, 1,
        "the transaction committed after waiting for the holder"
    );
}
