//! Helpers for the end-to-end tests: where the built extension, the
//! `sqlite3` shell and Debian's python3 are, and small wrappers that run
//! them as real processes against real files.
//!
//! The tests need `dist/libhybrid.so` (built by `make ext`; `make test` does
//! it first). Set `HYBRID_EXT` to test another build.

/// The README's Rust examples, compiled and run as doctests (here, not in
/// the client crate: a published crate must not read files outside it).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Rust examples of `docs/rust-client.md` (the client, its write
/// buffer, log database and async face), run as doctests like the README's.
#[doc = include_str!("../../docs/rust-client.md")]
#[cfg(doctest)]
pub struct RustClientDocDoctests;

/// The Rust examples of `docs/hosts.md` (loading into plain rusqlite).
#[doc = include_str!("../../docs/hosts.md")]
#[cfg(doctest)]
pub struct HostsDocDoctests;

/// The Rust examples of `docs/postgres.md` (compiled only where they need a
/// server: `rust,ignore`).
#[doc = include_str!("../../docs/postgres.md")]
#[cfg(doctest)]
pub struct PostgresDocDoctests;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every page under `docs/` (`*.md`), sorted: the documentation the README
/// links to, whose examples and links the tests check.
pub fn docs_pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(workspace_root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages
}

/// The loadable extension under test; panics with the fix if it is missing.
pub fn ext_path() -> PathBuf {
    let path = std::env::var_os("HYBRID_EXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("dist/libhybrid.so"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `make ext` (or run `make test`)",
        path.display()
    );
    path
}

/// `ext_path()` without the `.so`, as `.load` and `load_extension` take it.
pub fn ext_load_arg() -> String {
    let path = ext_path();
    path.with_extension("").to_string_lossy().into_owned()
}

/// Debian's python3 (its sqlite3 module can load extensions).
pub fn python() -> PathBuf {
    std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// A helper script under `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    workspace_root().join("tests/py").join(name)
}

/// Runs the `sqlite3` shell on `db` with `script` on stdin.
pub fn run_shell(db: &Path, script: &str) -> Output {
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell runs (scripts/check-tools.sh installs it)");
    // Feed stdin from a thread: a large script and a chatty shell would
    // otherwise fill both pipes and block each other.
    let mut stdin = child.stdin.take().expect("piped");
    let script = script.to_string();
    let feeder = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let output = child.wait_with_output().expect("sqlite3 finishes");
    feeder
        .join()
        .expect("feeder thread")
        .expect("write script to sqlite3");
    output
}

/// Runs a python helper script with arguments and waits for it.
pub fn run_python(script: &str, args: &[&str]) -> Output {
    Command::new(python())
        .arg(py_script(script))
        .args(args)
        .env("HYBRID_EXT", ext_load_arg())
        .output()
        .expect("python3 runs")
}

/// `python3 tests/py/<script> args...` with `HYBRID_EXT` set, not started.
pub fn python_command(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(py_script(script))
        .args(args)
        .env("HYBRID_EXT", ext_load_arg());
    command
}

/// `python3 tests/py/<script> args...` run under `wrapper` (e.g. `unshare
/// --pid --fork`), not started.
pub fn wrapped_python_command(wrapper: &[&str], script: &str, args: &[&str]) -> Command {
    let mut command = Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(python())
        .arg(py_script(script))
        .args(args)
        .env("HYBRID_EXT", ext_load_arg());
    command
}

/// What another, unprivileged user must read to run a helper script
/// against the extension: copies of `tests/py/<script>`s and of the
/// extension in a fresh directory under the system's temp directory, which
/// every user can enter (directory 0755, scripts 0644, library 0755).
///
/// Why copies: the checkout may sit under a directory other users cannot
/// enter (a fresh clone in root's home, mode 0700), and a test that runs
/// `runuser -u someone -- python3 <checkout>/tests/py/client.py` would then
/// fail with a child that exits before it says a word. Removed on drop.
pub struct StagedForOtherUsers {
    dir: tempfile::TempDir,
    /// The copies: the scripts and the library.
    files: Vec<PathBuf>,
}

impl StagedForOtherUsers {
    /// Copies `scripts` (names under `tests/py/`) and the extension.
    pub fn new(scripts: &[&str]) -> StagedForOtherUsers {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("hybrid-staged-")
            .tempdir()
            .expect("a temp directory");
        let set_mode = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
        };
        set_mode(dir.path(), 0o755);
        let mut files = Vec::new();
        for script in scripts {
            let copy = dir.path().join(script);
            std::fs::copy(py_script(script), &copy)
                .unwrap_or_else(|e| panic!("copy tests/py/{script}: {e}"));
            set_mode(&copy, 0o644);
            files.push(copy);
        }
        let library = dir.path().join("libhybrid.so");
        std::fs::copy(ext_path(), &library)
            .unwrap_or_else(|e| panic!("copy {}: {e}", ext_path().display()));
        set_mode(&library, 0o755);
        files.push(library);
        StagedForOtherUsers { dir, files }
    }

    /// The directory holding the copies (a working directory every user
    /// can enter, too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The copy of `tests/py/<name>`.
    pub fn script(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The copy of the extension without its `.so`, as `ext_load_arg()`.
    pub fn ext_load_arg(&self) -> String {
        self.dir
            .path()
            .join("libhybrid")
            .to_string_lossy()
            .into_owned()
    }

    /// `runuser -u user -- python3 <staged script> args...`, in the staged
    /// directory, with `HYBRID_EXT` naming the staged library; not started.
    pub fn python_as(&self, user: &str, script: &str, args: &[&OsStr]) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", user, "--"])
            .arg(python())
            .arg(self.script(script))
            .args(args)
            .current_dir(self.dir())
            .env("HYBRID_EXT", self.ext_load_arg());
        command
    }

    /// Why `user` cannot use the staged files, or enter every directory in
    /// `dirs` (None when it can): say, the temp directory itself sits where
    /// the user cannot reach it (`TMPDIR` under a private directory).
    pub fn unreachable_for(&self, user: &str, dirs: &[&Path]) -> Option<String> {
        let mut check = Command::new("runuser");
        check
            .args(["-u", user, "--", "sh", "-c"])
            .arg(concat!(
                r#"for p in "$@"; do if [ -d "$p" ]; then [ -x "$p" ]; else [ -r "$p" ]; fi "#,
                r#"|| { echo "cannot reach $p"; exit 1; }; done"#
            ))
            .arg("sh")
            .arg(self.dir())
            .args(&self.files)
            .args(dirs)
            .current_dir(self.dir());
        match check.output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "user {user}: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Some(format!("runuser does not run: {e}")),
        }
    }
}

/// Whether this process runs as root (namespaces, mounts and other users
/// need it); tests that need root say so and skip otherwise.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Sends `signal` (e.g. "STOP", "CONT", "KILL") to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A child process we talk to line by line.
pub struct LineProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LineProcess {
    /// Starts `python3 tests/py/<script> args...`.
    pub fn python(script: &str, args: &[&str]) -> LineProcess {
        LineProcess::spawn(python_command(script, args))
    }

    /// Starts `command` (stdin and stdout piped, stderr inherited).
    pub fn spawn(mut command: Command) -> LineProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child process starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        LineProcess {
            child,
            stdin,
            stdout,
        }
    }

    /// The next line of output (without the newline); panics at EOF.
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read child stdout");
        assert!(
            n > 0,
            "child closed stdout early (status {:?})",
            self.child.try_wait()
        );
        line.trim_end().to_string()
    }

    /// Reads lines until one equals `wanted`; returns the time it took.
    pub fn expect_line(&mut self, wanted: &str) -> Duration {
        let start = Instant::now();
        loop {
            let line = self.read_line();
            if line == wanted {
                return start.elapsed();
            }
        }
    }

    /// Sends one line to the child.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes stdin and waits for the exit status; returns the rest of stdout.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).expect("read rest");
        let status = self.child.wait().expect("child exits");
        (status, rest)
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        // A failed test must not leave a lock holder running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses the last line of `text` that is a JSON object.
pub fn last_json(text: &str) -> serde_json::Value {
    text.lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v.is_object())
        })
        .unwrap_or_else(|| panic!("no JSON object line in output:\n{text}"))
}

/// `PRAGMA integrity_check` of `conn`'s main database: "ok" when intact.
pub fn integrity_check(conn: &rusqlite::Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check runs")
}

/// The environment variable `name` parsed as a `T` (None when unset or not
/// a `T`): the knobs `make soak` turns up, such as SOAK_SECONDS.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
