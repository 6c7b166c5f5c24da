//! The extension in Debian's `sqlite3` shell (3.40.1): load, SQL surface,
//! `handler_active`, bad arguments.

use sqlite_hybrid_tests::{ext_load_arg, run_shell};

fn shell(script: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shell.db");
    let out = run_shell(&db, &format!(".load {}\n{script}", ext_load_arg()));
    assert!(
        out.status.code().is_some(),
        "sqlite3 was killed by a signal: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn loads_and_reports_version_and_one_metrics_row() {
    let (out, err) = shell(
        "SELECT hybrid_version();\n\
         SELECT count(*), sum(connections), sum(handler_active), sum(busy_events) FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%/shell.db';\n",
    );
    assert_eq!(err, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec![env!("CARGO_PKG_VERSION"), "1|1|1|0"]);
}

#[test]
fn pragma_busy_timeout_flips_handler_active_and_hybrid_busy_timeout_restores_it() {
    let (out, err) = shell(
        "SELECT handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%/shell.db';\n\
         PRAGMA busy_timeout = 250;\n\
         SELECT handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%/shell.db';\n\
         SELECT hybrid_busy_timeout(1500);\n\
         SELECT handler_active, json_extract(policy, '$.timeout_ms') FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%/shell.db';\n\
         PRAGMA busy_timeout;\n",
    );
    assert_eq!(err, "");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["1", "250", "0", "1500", "1|1500.0", "0"]
    );
}

#[test]
fn busy_config_round_trips_and_validates() {
    let (out, err) = shell(
        "SELECT hybrid_busy_config('{\"base_ms\":0.5,\"cap_ms\":8,\"jitter\":\"decorrelated\",\"timeout_ms\":900,\"max_retries\":7}');\n\
         SELECT json_extract(hybrid_busy_config(), '$.jitter'), json_extract(hybrid_busy_config(), '$.max_retries');\n",
    );
    assert_eq!(err, "");
    let lines: Vec<&str> = out.lines().collect();
    let policy: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(policy["cap_ms"], 8.0);
    assert_eq!(policy["timeout_ms"], 900.0);
    assert_eq!(lines[1], "decorrelated|7");
}

/// Every function with wrong arity, wrong types, NULL, huge and non-finite
/// numbers, bad JSON and a long string: each is an error message, the shell
/// survives, and the state is unchanged afterwards.
#[test]
fn bad_arguments_give_errors_never_a_crash() {
    let long = "x".repeat(100_000);
    let cases: Vec<(String, &str)> = vec![
        (
            "SELECT hybrid_version(1);".into(),
            "wrong number of arguments",
        ),
        (
            "SELECT hybrid_busy_config(1, 2);".into(),
            "wrong number of arguments",
        ),
        ("SELECT hybrid_busy_config(NULL);".into(), "got NULL"),
        ("SELECT hybrid_busy_config(42);".into(), "got integer 42"),
        (
            "SELECT hybrid_busy_config(x'00ff');".into(),
            "got a blob of 2 bytes",
        ),
        ("SELECT hybrid_busy_config('{');".into(), "not valid JSON"),
        (
            "SELECT hybrid_busy_config('[]');".into(),
            "must be a JSON object",
        ),
        (
            "SELECT hybrid_busy_config('{\"base_ms\":-1}');".into(),
            "base_ms",
        ),
        (
            "SELECT hybrid_busy_config('{\"base_ms\":1e999}');".into(),
            "not valid JSON",
        ),
        (
            "SELECT hybrid_busy_config('{\"cap_ms\":0.01,\"base_ms\":1}');".into(),
            "cap_ms: must be >= base_ms",
        ),
        (
            "SELECT hybrid_busy_config('{\"jitter\":\"random\"}');".into(),
            "unknown jitter 'random'",
        ),
        (
            "SELECT hybrid_busy_config('{\"max_retries\":-3}');".into(),
            "max_retries",
        ),
        (
            "SELECT hybrid_busy_config('{\"nope\":1}');".into(),
            "unknown key 'nope'",
        ),
        (
            format!("SELECT hybrid_busy_config('{{\"{long}\":1}}');"),
            "unknown key",
        ),
        (
            "SELECT hybrid_busy_timeout();".into(),
            "wrong number of arguments",
        ),
        ("SELECT hybrid_busy_timeout(NULL);".into(), "got NULL"),
        ("SELECT hybrid_busy_timeout(-1);".into(), "got integer -1"),
        (
            "SELECT hybrid_busy_timeout(9223372036854775807);".into(),
            "from 0 to",
        ),
        ("SELECT hybrid_busy_timeout(1e999);".into(), "got real inf"),
        ("SELECT hybrid_busy_timeout(0.0/0.0);".into(), "got NULL"),
        (
            "SELECT hybrid_busy_timeout('100');".into(),
            "got text '100'",
        ),
        (
            format!("SELECT hybrid_busy_timeout('{long}');"),
            "got text 'xxxx",
        ),
        (
            "SELECT hybrid_lock_metrics_reset(1);".into(),
            "scope must be 'process' or 'file'",
        ),
        (
            "SELECT hybrid_lock_metrics_reset('all');".into(),
            "got text 'all'",
        ),
        (
            "SELECT hybrid_lock_metrics_reset('file', 2);".into(),
            "wrong number of arguments",
        ),
        (
            "SELECT hybrid_priority('urgent');".into(),
            "class must be 'interactive' or 'background'",
        ),
        ("SELECT hybrid_priority(NULL);".into(), "got NULL"),
        (
            "SELECT hybrid_priority(1, 2);".into(),
            "wrong number of arguments",
        ),
        (
            "SELECT hybrid_busy_config('{\"handoff_ms\":-2}');".into(),
            "handoff_ms",
        ),
        (
            "SELECT hybrid_lock_events_capacity(0);".into(),
            "from 1 to 65536",
        ),
        (
            "SELECT hybrid_lock_events_capacity(1e10);".into(),
            "got real",
        ),
        (
            "SELECT hybrid_lock_events_capacity(1, 2);".into(),
            "wrong number of arguments",
        ),
        (
            "SELECT hybrid_health_check(1);".into(),
            "schema must be text",
        ),
        (
            "SELECT hybrid_health_check('nowhere');".into(),
            "no schema named 'nowhere'",
        ),
        (
            "SELECT hybrid_health_check('a', 'b');".into(),
            "wrong number of arguments",
        ),
        ("SELECT hybrid_tune(1);".into(), "wrong number of arguments"),
    ];
    let mut script = String::from("SELECT hybrid_busy_config('{\"timeout_ms\":1234}');\n");
    for (sql, _) in &cases {
        script.push_str(sql);
        script.push('\n');
    }
    script.push_str(
        "SELECT json_extract(hybrid_busy_config(), '$.timeout_ms'), hybrid_lock_events_capacity(), hybrid_priority();\n",
    );
    script.push_str("SELECT 'still alive';\n");
    let (out, err) = shell(&script);

    // One line per error (a parse error adds two lines echoing the SQL).
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("Parse error") || l.starts_with("Runtime error"))
        .collect();
    assert_eq!(
        errors.len(),
        cases.len(),
        "one error per bad call:\n{}",
        &err[..err.len().min(4000)]
    );
    for ((sql, expected), line) in cases.iter().zip(&errors) {
        assert!(
            line.contains(expected),
            "{}: expected '{expected}' in '{line}'",
            &sql[..sql.len().min(60)]
        );
        assert!(
            line.len() < 400,
            "error message echoes huge input: {} bytes",
            line.len()
        );
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["1234.0|256|interactive", "still alive"],
        "state unchanged after bad calls"
    );
}

#[test]
fn health_table_and_tune_report_real_settings() {
    let (out, err) = shell(
        "CREATE TABLE t(x); INSERT INTO t VALUES (1);\n\
         SELECT json_extract(hybrid_tune(), '$.journal_mode.to');\n\
         SELECT hybrid_tune();\n\
         SELECT schema, journal_mode, synchronous, foreign_keys, busy_timeout, page_count > 0, file_bytes > 0, sqlite_version FROM hybrid_health;\n\
         SELECT hybrid_health_check(), hybrid_health_check('main');\n\
         ATTACH ':memory:' AS scratch;\n\
         SELECT group_concat(schema) FROM hybrid_health;\n",
    );
    assert_eq!(err, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "wal");
    assert_eq!(lines[1], "{}", "a second hybrid_tune() changes nothing");
    assert_eq!(lines[2], "main|wal|NORMAL|1|0|1|1|3.40.1");
    assert_eq!(lines[3], "ok|ok");
    assert_eq!(lines[4], "main,scratch");
}

#[test]
fn every_connection_of_the_shell_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    let (out, err) = shell(&format!(
        ".open {}\nSELECT count(*) FROM hybrid_lock_metrics WHERE scope = 'process' AND db LIKE '%/other.db' AND handler_active = 1;\n",
        other.display()
    ));
    assert_eq!(err, "");
    assert_eq!(
        out.trim(),
        "1",
        "the auto-extension registered the connection .open made"
    );
}

#[test]
fn tune_on_an_in_memory_database_reports_what_it_cannot_apply() {
    let out = run_shell(
        std::path::Path::new(":memory:"),
        &format!(".load {}\nSELECT hybrid_tune();\n", ext_load_arg()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["not_applied"]["journal_mode"],
        "wanted wal, still \"memory\""
    );
    assert_eq!(
        result["not_applied"]["mmap_size"],
        "not supported for this database"
    );
    assert_eq!(result["synchronous"]["to"], 1);
}

/// A wait past `hybrid_log_waits` is written through `sqlite3_log` (the
/// shell's `.log stdout`), naming the holder; `hybrid_lock_holder` shows
/// that holder while it holds. The holder is a Python process with the
/// extension (tests/py/client.py), so its pid is known.
#[test]
fn a_slow_wait_is_logged_with_its_holder_and_the_holder_is_a_table() {
    use sqlite_hybrid_tests::LineProcess;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("slow.db");
    let db_text = db.to_str().unwrap();
    let mut holder = LineProcess::python("client.py", &[db_text]);
    let ready = holder.read_line();
    let holder_pid = ready.strip_prefix("ready ").expect(&ready).to_string();
    holder.send_line("begin");
    assert!(holder.read_line().starts_with("began "));
    // Release after the waiter has crossed the threshold (100 ms).
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(600));
        holder.send_line("commit");
        let line = holder.read_line();
        (holder, line)
    });
    let out = run_shell(
        &db,
        &format!(
            ".log stdout\n.load {}\n\
             SELECT hybrid_log_waits(100);\n\
             SELECT hybrid_busy_timeout(20000);\n\
             SELECT 'holder', pid, held_ms >= 0, tenure_ms >= 0, queued FROM hybrid_lock_holder;\n\
             BEGIN IMMEDIATE;\nCOMMIT;\n\
             SELECT 'after', count(*), count(pid) FROM hybrid_lock_holder;\n\
             SELECT 'off', hybrid_log_waits(0);\n",
            ext_load_arg()
        ),
    );
    let (_holder, released) = releaser.join().unwrap();
    assert!(released.starts_with("committed "), "{released}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{stdout}");
    assert!(
        stdout.contains(&format!("holder|{holder_pid}|1|1|0")),
        "the holder table names the holding process:\n{stdout}"
    );
    let still = stdout
        .lines()
        .find(|l| l.contains("still waiting for the write lock"))
        .unwrap_or_else(|| panic!("no slow-wait report:\n{stdout}"));
    assert!(
        still.contains(&format!("held by process {holder_pid}")) && still.contains("1 queued"),
        "{still}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("acquired the write lock")),
        "the end of the slow wait is reported too:\n{stdout}"
    );
    assert!(
        stdout.contains("after|1|0"),
        "nobody holds it now:\n{stdout}"
    );
    assert!(stdout.contains("off|0.0"), "{stdout}");
}

/// Every `SQLITE_BUSY*` the shell's user sees is counted exactly once:
/// two connections of one shell (`.connection`), a transaction that read
/// then writes while the other holds the lock (twice), one whose snapshot
/// went stale, and a wait from outside a transaction that gives up. The
/// errors on stderr equal `busy_in_read_tx + busy_snapshot + gave_up`, per
/// process and file-wide, and each has its event.
#[test]
fn every_lock_error_the_user_sees_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shell.db");
    let script = format!(
        ".load {load}\n\
         PRAGMA journal_mode=WAL;\n\
         CREATE TABLE t(x); INSERT INTO t VALUES (1);\n\
         .connection 1\n\
         .open {db}\n\
         BEGIN IMMEDIATE;\n\
         .connection 0\n\
         BEGIN;\n\
         SELECT count(*) FROM t;\n\
         UPDATE t SET x = x + 1;\n\
         UPDATE t SET x = x + 1;\n\
         ROLLBACK;\n\
         BEGIN;\n\
         SELECT count(*) FROM t;\n\
         .connection 1\n\
         UPDATE t SET x = 5;\n\
         COMMIT;\n\
         .connection 0\n\
         UPDATE t SET x = x + 1;\n\
         ROLLBACK;\n\
         .connection 1\n\
         BEGIN IMMEDIATE;\n\
         .connection 0\n\
         SELECT hybrid_busy_timeout(50);\n\
         UPDATE t SET x = x + 1;\n\
         .connection 1\n\
         COMMIT;\n\
         .connection 0\n\
         SELECT hybrid_note_retry();\n\
         SELECT scope, busy_in_read_tx, busy_snapshot, gave_up, app_retries, busy_events\n\
           FROM hybrid_lock_metrics WHERE db LIKE '%/shell.db' ORDER BY scope;\n\
         SELECT group_concat(outcome, ',') FROM hybrid_lock_events WHERE db LIKE '%/shell.db';\n\
         SELECT x FROM t;\n",
        load = ext_load_arg(),
        db = db.display()
    );
    let out = sqlite_hybrid_tests::run_shell(&db, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("database is locked"))
        .count();
    assert_eq!(errors, 4, "stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        errors,
        "no other error; stderr: {stderr}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            "wal",
            "1",
            "1",
            "50",
            "1",
            // 2 + 1 + 1 = the 4 errors; the wait that gave up is the only
            // busy event.
            "file|2|1|1|1|1",
            "process|2|1|1|1|1",
            "busy_in_read_tx,busy_in_read_tx,busy_snapshot,gave_up",
            "5",
        ],
        "stderr: {stderr}"
    );
}
