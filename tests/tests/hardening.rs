//! The extension as a guest in hostile or unlucky environments (issue 19):
//! connections without a busy handler, peers that die in other PID or time
//! namespaces, garbage in the side file, a full disk, a planted symlink,
//! other users, rollback-journal databases, long waits and their CPU cost.
//!
//! Each test sets up the situation with real processes and checks what a
//! user would see: statements succeed or fail as in stock SQLite, waits stay
//! bounded, no file outside the side file changes, no process crashes.
//! Tests that need root (namespaces, mounts, other users) print why and
//! return when not root; CI runs as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlite_hybrid_tests::{
    LineProcess, StagedForOtherUsers, is_root, last_json, python_command, signal,
    wrapped_python_command,
};

/// A `tests/py/client.py` process (see its docs for the commands).
struct Client(LineProcess);

impl Client {
    fn start(db: &str, extra: &[&str]) -> Client {
        let mut args = vec![db];
        args.extend_from_slice(extra);
        Client::ready(LineProcess::spawn(python_command("client.py", &args)))
    }

    fn ready(mut process: LineProcess) -> Client {
        let ready = process.read_line();
        assert!(ready.starts_with("ready "), "{ready}");
        Client(process)
    }

    fn ask(&mut self, command: &str) -> String {
        self.0.send_line(command);
        self.0.read_line()
    }

    /// BEGIN IMMEDIATE: Ok(waited ms) or Err(error message).
    fn begin(&mut self) -> Result<f64, String> {
        let line = self.ask("begin");
        match line.strip_prefix("began ") {
            Some(rest) => Ok(rest.split(' ').nth(1).unwrap().parse().unwrap()),
            None => Err(line),
        }
    }

    fn commit(&mut self) {
        let line = self.ask("commit");
        assert!(line.starts_with("committed "), "{line}");
    }

    fn metrics(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.ask("metrics")).unwrap()
    }
}

fn db_in(dir: &Path) -> String {
    dir.join("h.db").to_str().unwrap().to_string()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of the only child of `pid` (the process `unshare --fork` runs).
fn only_child(pid: u32) -> u32 {
    let mut children = String::new();
    wait_until("unshare's child", Duration::from_secs(10), || {
        children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        !children.trim().is_empty()
    });
    children.split_whitespace().next().unwrap().parse().unwrap()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (namespaces, mounts or other users)");
    true
}

/// Item 4: stock SQLite lets a connection take a free write lock at once;
/// so must we, even while a (stopped) waiter heads the queue, and even for
/// a connection with no busy handler at all.
#[test]
fn a_connection_without_a_busy_handler_is_never_refused_a_free_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let mut holder = Client::start(&db, &["--plain"]);
    let mut observer = Client::start(&db, &[]);
    let mut head = Client::start(&db, &[]);
    let mut bare = Client::start(&db, &["--no-handler"]);
    holder.begin().unwrap();
    head.0.send_line("begin");
    wait_until("the head queued", Duration::from_secs(10), || {
        observer.ask("waiters") == "1"
    });
    signal(head.0.pid(), "STOP"); // queued at the head, and not running
    holder.commit();
    for _ in 0..20 {
        let waited = bare
            .begin()
            .expect("a free lock is taken, not refused, without a busy handler");
        assert!(waited < 1000.0, "waited {waited} ms for a free lock");
        bare.commit();
    }
    signal(head.0.pid(), "CONT");
    let line = head.0.read_line();
    assert!(
        line.starts_with("began "),
        "the stopped head still gets its turn: {line}"
    );
}

/// Item 5 (a reboot, or a process in another time namespace): a waiter
/// killed while queued, whose clock reads far ahead of ours, must not
/// become a permanent head.
#[test]
fn a_waiter_killed_with_another_clock_does_not_stall_writers() {
    if skip_unless_root("a_waiter_killed_with_another_clock_does_not_stall_writers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let (mut holder, _observer, doomed) =
        queued_in_namespace(&db, &["--time", "--monotonic", "1000000"]);
    signal(only_child(doomed.0.pid()), "KILL");
    let mut writer = Client::start(&db, &["--policy", r#"{"timeout_ms": 4000}"#]);
    writer.0.send_line("begin");
    std::thread::sleep(Duration::from_millis(100));
    holder.commit();
    let line = writer.0.read_line();
    assert!(line.starts_with("began "), "{line}");
    writer.commit();
    for _ in 0..10 {
        holder.begin().unwrap();
        writer.0.send_line("begin");
        std::thread::sleep(Duration::from_millis(20));
        holder.commit();
        let line = writer.0.read_line();
        assert!(line.starts_with("began "), "{line}");
        writer.commit();
    }
}

/// Item 5: random bytes over a side file in use cost a bounded delay:
/// contended writers keep committing, none fails.
#[test]
fn garbage_in_a_live_side_file_costs_a_bounded_delay() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let mut hog = Client::start(&db, &[]);
    let mut newcomer = Client::start(&db, &["--policy", r#"{"timeout_ms": 5000}"#]);
    newcomer.begin().unwrap();
    newcomer.commit();
    let side = format!("{db}-hybrid");
    let len = std::fs::metadata(&side).unwrap().len() as usize;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let garbage: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&side, &garbage).unwrap();
    hog.0.send_line("hog 3");
    assert_eq!(hog.0.read_line(), "hogging");
    let mut worst: f64 = 0.0;
    for _ in 0..20 {
        let waited = newcomer.begin().expect("no lock error after garbage");
        newcomer.commit();
        worst = worst.max(waited);
    }
    let hogged = hog.0.read_line();
    assert!(hogged.starts_with("hogged "), "{hogged}");
    assert!(worst < 2000.0, "worst wait {worst} ms after garbage");
}

/// A plain holder with the write lock, an observer, and a waiter queued
/// for the lock from new namespaces (`unshare <namespaces> --fork`).
fn queued_in_namespace(db: &str, namespaces: &[&str]) -> (Client, Client, Client) {
    let mut holder = Client::start(db, &["--plain"]);
    let mut observer = Client::start(db, &[]);
    holder.begin().unwrap();
    let mut unshare = vec!["unshare"];
    unshare.extend_from_slice(namespaces);
    unshare.extend_from_slice(&["--fork", "--kill-child"]);
    let mut waiter = Client::ready(LineProcess::spawn(wrapped_python_command(
        &unshare,
        "client.py",
        &[db],
    )));
    waiter.0.send_line("begin");
    wait_until(
        "the namespaced waiter queued",
        Duration::from_secs(10),
        || observer.ask("waiters") == "1",
    );
    (holder, observer, waiter)
}

/// Items 6 and 11: a waiter killed in another PID namespace (its pid means
/// nothing here) is recognised as dead: its slot and its wait in progress
/// go away at once.
#[test]
fn a_waiter_killed_in_another_pid_namespace_is_reclaimed() {
    if skip_unless_root("a_waiter_killed_in_another_pid_namespace_is_reclaimed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let (mut holder, mut observer, container) = queued_in_namespace(&db, &["--pid"]);
    assert_eq!(observer.metrics()["file"]["in_flight"], 1);
    signal(only_child(container.0.pid()), "KILL");
    wait_until("its slot freed", Duration::from_secs(2), || {
        observer.ask("waiters-all") == "0"
    });
    let file = &observer.metrics()["file"];
    assert_eq!(file["in_flight"], 0, "{file}");
    assert_eq!(
        file["busy_events"].as_i64().unwrap(),
        file["acquired"].as_i64().unwrap() + file["gave_up"].as_i64().unwrap(),
        "{file}"
    );
    holder.commit();
}

/// Item 11: a file-wide reset while waits are in progress keeps
/// `busy_events = acquired + gave_up + in_flight` in every read.
#[test]
fn file_wide_reset_during_waits_keeps_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let mut hogs: Vec<Client> = (0..3).map(|_| Client::start(&db, &[])).collect();
    for hog in &mut hogs {
        hog.0.send_line("hog 2");
    }
    for hog in &mut hogs {
        assert_eq!(hog.0.read_line(), "hogging");
    }
    let mut reader = Client::start(&db, &[]);
    let mut reads = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        reader.ask("reset-file");
        let file = reader.metrics()["file"].clone();
        let (busy, acquired, gave_up, in_flight) = (
            file["busy_events"].as_i64().unwrap(),
            file["acquired"].as_i64().unwrap(),
            file["gave_up"].as_i64().unwrap(),
            file["in_flight"].as_i64().unwrap(),
        );
        assert_eq!(busy, acquired + gave_up + in_flight, "{file}");
        reads += 1;
    }
    for hog in &mut hogs {
        assert!(hog.0.read_line().starts_with("hogged "));
    }
    assert!(reads > 10);
}

/// Item 7: a full disk never reaches the host as SIGBUS: the side file is
/// not mapped without its blocks, and the connection stays in backoff mode.
#[test]
fn a_full_disk_never_crashes_the_host() {
    if skip_unless_root("a_full_disk_never_crashes_the_host") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("tiny");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let db = db_in(&mount);
    // The database, its -wal and -shm exist before the disk fills up.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT); \
         INSERT INTO t(who) VALUES ('before');",
    )
    .unwrap();
    let filler = mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096", "count=100000"])
        .arg(format!("of={}", filler.display()))
        .output();
    let mut client = Client::start(&db, &[]);
    assert_eq!(client.ask("mode"), "backoff", "no side file without blocks");
    let _ = client.begin(); // may fail with "disk is full": that is SQLite's answer
    let _ = client.ask("commit");
    assert!(
        !Path::new(&format!("{db}-hybrid")).exists() || {
            let len = std::fs::metadata(format!("{db}-hybrid")).unwrap().len();
            len == 0
        }
    );
    let (status, _) = client.0.finish();
    assert!(status.success(), "the host survived: {status:?}");
    drop(conn);
}

/// Item 8: a planted symlink at the side file's path is never followed:
/// the file it points to is untouched and the connection uses backoff.
#[test]
fn a_planted_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"alice's private notes\n").unwrap();
    let db = db_in(dir.path());
    symlink(&notes, format!("{db}-hybrid")).unwrap();
    let before = std::fs::metadata(&notes).unwrap();
    let mut client = Client::start(&db, &[]);
    let mut other = Client::start(&db, &[]);
    for _ in 0..5 {
        client.begin().unwrap();
        other.0.send_line("begin");
        std::thread::sleep(Duration::from_millis(20));
        client.commit();
        assert!(other.0.read_line().starts_with("began "));
        other.commit();
    }
    assert_eq!(client.ask("mode"), "backoff");
    assert_eq!(std::fs::read(&notes).unwrap(), b"alice's private notes\n");
    let after = std::fs::metadata(&notes).unwrap();
    assert_eq!((after.len(), after.mtime()), (before.len(), before.mtime()));
}

/// Item 8, other planted files: a FIFO (which a read-only open would wait
/// on forever), a directory or a hard link at the side file's path never
/// block or break the host. Every statement works, in backoff mode, and the
/// tables answer at once.
#[test]
fn a_planted_fifo_directory_or_hard_link_never_blocks_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"alice's private notes\n").unwrap();
    for what in ["fifo", "directory", "hard link"] {
        let db = dir.path().join(format!("{}.db", what.replace(' ', "_")));
        let side = std::path::PathBuf::from(format!("{}-hybrid", db.display()));
        match what {
            "fifo" => run(Command::new("mkfifo").arg(&side)),
            "directory" => std::fs::create_dir(&side).unwrap(),
            _ => std::fs::hard_link(&notes, &side).unwrap(),
        }
        let mut shell = Command::new("timeout");
        shell
            .args(["--signal=KILL", "60", "sqlite3"])
            .arg(&db)
            .arg(format!(".load {}", sqlite_hybrid_tests::ext_load_arg()))
            .arg("PRAGMA journal_mode=WAL")
            .arg("CREATE TABLE t(x)")
            .arg("BEGIN IMMEDIATE")
            .arg("INSERT INTO t VALUES (1)")
            .arg("COMMIT")
            .arg("SELECT mode, count(*) FROM hybrid_lock_metrics")
            .arg("SELECT count(*) FROM hybrid_lock_waiters")
            .arg("SELECT count(*) FROM t");
        let output = shell.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{what}: the shell failed or hung: {output:?}"
        );
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            ["wal", "backoff|1", "0", "1"],
            "{what}: {output:?}"
        );
    }
    assert_eq!(std::fs::read(&notes).unwrap(), b"alice's private notes\n");
}

/// Item 9: the side file gets the database file's mode (a group-writable
/// database gives a group-writable side file, so a second user of the group
/// queues too) and, when root creates it, the database file's owner.
///
/// The two users run copies of `client.py` and the extension staged where
/// they can read them (the checkout may be private to root), and every
/// command they run starts in that directory.
#[test]
fn the_side_file_takes_the_database_files_mode_and_owner() {
    const TEST: &str = "the_side_file_takes_the_database_files_mode_and_owner";
    if skip_unless_root(TEST) {
        return;
    }
    let users = TestUsers::create();
    let staged = StagedForOtherUsers::new(&["client.py"]);
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    run(Command::new("chown")
        .arg(format!("{}:{}", users.a, users.group))
        .arg(&shared));
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
    for user in [&users.a, &users.b] {
        if let Some(reason) = staged.unreachable_for(user, &[&shared]) {
            eprintln!("{TEST}: skipped, the test users cannot reach the temp directory: {reason}");
            return;
        }
    }
    let db = db_in(&shared);
    // User a creates a group-writable database (umask 002, as in a shared
    // project directory), then both users write to it.
    let as_user = |user: &str| {
        let mut command = Command::new("runuser");
        command.args(["-u", user, "--"]).current_dir(staged.dir());
        command
    };
    run(as_user(&users.a).args(["sh", "-c"]).arg(format!(
        "sqlite3 '{db}' 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT);' \
         && chmod 664 '{db}'"
    )));
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o664);
    let spawn_as = |user: &str| {
        let command = staged.python_as(user, "client.py", &[db.as_ref()]);
        Client::ready(LineProcess::spawn(command))
    };
    let mut a = spawn_as(&users.a);
    a.begin().unwrap();
    a.commit();
    let side = std::fs::metadata(format!("{db}-hybrid")).unwrap();
    assert_eq!(side.mode() & 0o777, 0o664, "the database file's mode");
    let mut b = spawn_as(&users.b);
    assert_eq!(
        b.ask("mode"),
        "futex",
        "the second user of the group queues too"
    );
    b.begin().unwrap();
    b.commit();
    drop((a, b));

    // Root touches a user's database first: the side file is the user's.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    run(Command::new("chown").arg(&users.a).arg(&private));
    let db2 = db_in(&private);
    run(as_user(&users.a)
        .arg("sqlite3")
        .arg(&db2)
        .arg("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT);"));
    let mut root = Client::start(&db2, &[]);
    root.begin().unwrap();
    root.commit();
    drop(root);
    let uid_a = std::fs::metadata(&db2).unwrap().uid();
    assert_eq!(
        std::fs::metadata(format!("{db2}-hybrid")).unwrap().uid(),
        uid_a,
        "root gave the side file to the database's owner"
    );
    let mut a_again = Client::ready(LineProcess::spawn(staged.python_as(
        &users.a,
        "client.py",
        &[db2.as_ref()],
    )));
    assert_eq!(a_again.ask("mode"), "futex", "the user is not locked out");
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
}

/// Two unprivileged users in one group, removed again when dropped.
struct TestUsers {
    group: String,
    a: String,
    b: String,
}

impl TestUsers {
    fn create() -> TestUsers {
        let users = TestUsers {
            group: "hybridtest".into(),
            a: "hybridtest_a".into(),
            b: "hybridtest_b".into(),
        };
        let _ = Command::new("groupadd").arg(&users.group).output();
        for user in [&users.a, &users.b] {
            let _ = Command::new("useradd")
                .args(["-M", "-N", "-g", &users.group, "-s", "/usr/sbin/nologin"])
                .arg(user)
                .output();
        }
        users
    }
}

impl Drop for TestUsers {
    fn drop(&mut self) {
        for user in [&self.a, &self.b] {
            let _ = Command::new("userdel").arg(user).output();
        }
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

/// Item 10: no connection can claim a tenure that starves the others.
#[test]
fn one_connection_cannot_claim_a_long_tenure() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    // SAFETY: loading our own extension into our own connection.
    unsafe {
        let _guard = rusqlite::LoadExtensionGuard::new(&conn).unwrap();
        conn.load_extension(sqlite_hybrid_tests::ext_load_arg(), None::<&str>)
            .unwrap();
    }
    let err = conn
        .query_row(
            r#"SELECT hybrid_busy_config('{"handoff_ms":60000}')"#,
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("handoff_ms"), "{err}");
    drop(conn);
    // The most a connection may ask for, against three others.
    let mut hog = Client::start(
        &db,
        &["--policy", r#"{"handoff_ms": 10, "max_wait_ms": 60000}"#],
    );
    hog.0.send_line("hog 3");
    assert_eq!(hog.0.read_line(), "hogging");
    let mut others: Vec<Client> = (0..3)
        .map(|_| Client::start(&db, &["--policy", r#"{"timeout_ms": 5000}"#]))
        .collect();
    let mut worst: f64 = 0.0;
    for _ in 0..15 {
        for other in &mut others {
            let waited = other.begin().unwrap();
            other.commit();
            worst = worst.max(waited);
        }
    }
    assert!(hog.0.read_line().starts_with("hogged "));
    assert!(
        worst < 500.0,
        "worst wait behind a 10 ms tenure: {worst} ms"
    );
}

/// Item 12: a rollback-journal database gets no side file, and its mode
/// says backoff.
#[test]
fn a_rollback_journal_database_gets_no_side_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_in(dir.path());
    let mut a = Client::start(&db, &["--journal", "DELETE"]);
    let mut b = Client::start(
        &db,
        &["--journal", "DELETE", "--policy", r#"{"timeout_ms": 5000}"#],
    );
    for _ in 0..5 {
        a.begin().unwrap();
        b.0.send_line("begin");
        std::thread::sleep(Duration::from_millis(20));
        a.commit();
        assert!(b.0.read_line().starts_with("began "));
        b.commit();
    }
    assert_eq!(a.ask("mode"), "backoff");
    assert!(b.metrics().get("file").is_none());
    assert!(
        !Path::new(&format!("{db}-hybrid")).exists(),
        "no side file for a rollback-journal database"
    );
}

/// Item 13: a connection that waits 5 s for a lock nobody releases uses at
/// most 2% of a core (0.1 s of CPU), whatever the mode and wherever the
/// holder is. Measured as the waiting thread's CPU time, not wall time.
#[test]
fn a_long_wait_costs_at_most_two_percent_of_a_core() {
    let cases = [("delete", "process"), ("wal", "process"), ("wal", "thread")];
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = cases
        .iter()
        .map(|&(journal, holder)| {
            let db = dir
                .path()
                .join(format!("cpu-{journal}-{holder}.db"))
                .to_str()
                .unwrap()
                .to_string();
            let held = (holder == "process").then(|| {
                let mut p = LineProcess::python("holder.py", &[&db, journal]);
                p.expect_line("held");
                p
            });
            let waiter = python_command("cpu_wait.py", &[&db, journal, holder, "5"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (journal, holder, held, waiter)
        })
        .collect();
    for (journal, holder, held, waiter) in runs {
        let out = waiter.wait_with_output().unwrap();
        drop(held);
        let result = last_json(&String::from_utf8_lossy(&out.stdout));
        eprintln!("{journal}/{holder}: {result}");
        let cpu = result["cpu_s"].as_f64().unwrap();
        let waited = result["waited_s"].as_f64().unwrap();
        assert!(
            result["error"].as_str().unwrap_or("").contains("locked"),
            "{journal}/{holder}: {result}"
        );
        assert!(waited >= 4.5, "{journal}/{holder}: {result}");
        assert!(
            cpu <= 0.1,
            "{journal}/{holder}: {cpu:.3} s of CPU for a {waited:.1} s wait ({result})"
        );
    }
}
