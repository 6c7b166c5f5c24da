"""Every host of sqlite-hybrid, from the installed wheel. Run by hosts/run.sh.

Runs with the test venv's python (the wheel and the hosts' packages installed
there). This process never loads the extension itself: each host runs in its
own child process, because a process may load the library into one SQLite
library only. Prints PASS / SKIP / FAIL per check and, last,
"N passed, N failed, N skipped"; exits 1 if any check failed.

Environment (set by run.sh):
  HOSTS_TMP          scratch directory (removed by run.sh)
  HYBRID_VERSION     the version the wheel must report
  HOSTS_MISSING      JSON {package: reason} for packages run.sh could not install
  NODE_WORKER        command (JSON list) of the Node worker, if set up, else
  NODE_SKIP          why not (and how to enable it)
  GO_WORKER, GO_SKIP the same for Go
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
BIN = os.path.dirname(PY)
TMP = os.environ.get("HOSTS_TMP") or os.path.join("/tmp", f"hosts-{os.getpid()}")
os.makedirs(TMP, exist_ok=True)
VERSION = os.environ["HYBRID_VERSION"]
MISSING = json.loads(os.environ.get("HOSTS_MISSING") or "{}")
NODE_WORKER = json.loads(os.environ["NODE_WORKER"]) if os.environ.get("NODE_WORKER") else None
GO_WORKER = json.loads(os.environ["GO_WORKER"]) if os.environ.get("GO_WORKER") else None
SKIP_REASONS = {
    "node": os.environ.get("NODE_SKIP") or "the Node worker is not set up (run hosts/run.sh)",
    "go": os.environ.get("GO_SKIP") or "the Go worker is not set up (run hosts/run.sh)",
}
WORKER = [PY, os.path.join(HERE, "worker.py")]
SCENARIOS = [PY, os.path.join(HERE, "scenarios.py")]
WEB = [PY, os.path.join(HERE, "web_scenarios.py")]
DJANGO_PROJECT = os.path.join(os.path.dirname(HERE), "django_project")
DJANGO_OLD = os.environ.get("DJANGO_OLD_PATH", "")  # a pip --target dir with Django < 5.1
SQLALCHEMY14 = os.environ.get("SQLALCHEMY14_PATH", "")  # a pip --target dir with SQLAlchemy 1.4
STEP_TIMEOUT = 60.0

results: list = []


class Skip(Exception):
    pass


def report(name: str, status: str, detail: str = "") -> None:
    results.append((name, status))
    print(f"{status:4} {name}" + (f": {detail}" if detail else ""), flush=True)


def run_check(name: str, fn, *args) -> None:
    started = time.monotonic()
    try:
        detail = fn(*args)
        report(name, "PASS", f"{detail or ''} ({time.monotonic() - started:.1f} s)".strip())
    except Skip as skip:
        report(name, "SKIP", str(skip))
    except Exception as error:
        report(name, "FAIL", f"{type(error).__name__}: {error}")
        traceback.print_exc(file=sys.stdout)


def have_module(name: str) -> bool:
    probe = subprocess.run([PY, "-c", f"import {name}"], capture_output=True, timeout=STEP_TIMEOUT)
    return probe.returncode == 0


# host -> (module to import, PyPI package)
MODULES = {
    "stdlib": ("sqlite3", None), "connect": ("sqlite3", None), "apsw": ("apsw", "apsw"),
    "pysqlite3": ("pysqlite3", "pysqlite3-binary"), "sqlean": ("sqlean", "sqlean.py"),
    "sqlalchemy": ("sqlalchemy", "sqlalchemy"), "sqlalchemy-async": ("aiosqlite", "aiosqlite"),
    "fastapi": ("fastapi", "fastapi"), "uvicorn": ("uvicorn", "uvicorn"), "django": ("django", "django"),
}


def require(host: str) -> None:
    module, package = MODULES[host]
    if not have_module(module):
        reason = MISSING.get(package or "", "not installed in the test venv")
        raise Skip(f"{package or module}: {reason}")


# --- processes ----------------------------------------------------------------


class Proc:
    """A child speaking the worker protocol: lines on stdout, "go" on stdin."""

    def __init__(self, argv: list, name: str, env: dict | None = None):
        self.name = name
        self.log_path = os.path.join(TMP, f"{name}.stderr")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env or os.environ.copy(), cwd=TMP,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def stderr(self) -> str:
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-2000:]

    def expect(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.name}: no '{prefix}' within {timeout} s; stderr: {self.stderr()}")
            if line is None:
                raise AssertionError(f"{self.name} exited ({self.proc.wait()}) before '{prefix}': {self.stderr()}")
            if line.startswith(prefix):
                return line[len(prefix):]

    def result(self) -> dict:
        return json.loads(self.expect("result "))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 20.0) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout} s")
        assert rc == 0, f"{self.name} exited {rc}: {self.stderr()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def one_shot(argv: list, name: str) -> dict:
    proc = Proc(argv, name)
    try:
        out = proc.result()
        proc.finish()
        return out
    finally:
        proc.kill()


def new_db(name: str) -> str:
    path = os.path.join(TMP, f"{name}.db")
    conn = sqlite3.connect(path)  # plain stdlib, no extension in this process
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT)")
    conn.close()
    return os.path.realpath(path)


def contend(holder: list, waiter: list, db: str, name: str) -> tuple:
    """Holder takes the write lock and keeps it ~300 ms; waiter waits, then commits."""
    h = Proc(holder + [db], f"{name}-holder")
    w = Proc(waiter + [db], f"{name}-waiter")
    try:
        h.expect("ready")
        w.expect("ready")
        h.send("go")
        h.expect("locked")
        w.send("go")
        waited = w.result()
        held = h.result()
        h.finish()
        w.finish()
    finally:
        h.kill()
        w.kill()
    conn = sqlite3.connect(db)
    who = [r[0] for r in conn.execute("SELECT who FROM t ORDER BY id")]
    conn.close()
    assert len(who) == 2 and who[0].endswith("holder") and who[1].endswith("waiter"), who
    return waited, held


def assert_loaded(out: dict, connections: int | None = 1) -> dict:
    assert out["hybrid_version"] == VERSION, (out["hybrid_version"], VERSION)
    process = out["metrics"]["process"]
    assert process["handler_active"] >= 1, process
    if connections is not None:
        assert process["connections"] == connections, process
        assert process["handler_active"] == connections, process
    return process


def assert_waited(waited: dict, min_wait_ms: float = 100.0) -> str:
    process = assert_loaded(waited, connections=None)
    assert process["handler_active"] == process["connections"], process
    assert process["mode"] == "futex", process
    assert process["busy_events"] >= 1 and process["acquired"] >= 1, process
    assert process["gave_up"] == 0, process
    file_row = waited["metrics"].get("file")
    assert file_row, f"no scope='file' row: {waited['metrics']}"
    assert file_row["busy_events"] >= 1 and file_row["acquired"] >= 1, file_row
    assert waited["waited_ms"] >= min_wait_ms, f"waited only {waited['waited_ms']:.1f} ms"
    return (f"SQLite {waited['sqlite_version']}, waited {waited['waited_ms']:.0f} ms, "
            f"process busy_events={process['busy_events']} acquired={process['acquired']}, "
            f"file busy_events={file_row['busy_events']} acquired={file_row['acquired']}")


# --- Python hosts -----------------------------------------------------------------


def check_load(host: str) -> str:
    require(host)
    seen = []
    for form in ([], ["--so"]):
        db = new_db(f"load-{host}{'-so' if form else ''}")
        out = one_shot(WORKER + [host, "info", db] + form, f"load-{host}")
        assert_loaded(out)
        assert out["policy"]["timeout_ms"] == 5000.0, out["policy"]
        seen.append(out["sqlite_version"])
    return f"SQLite {seen[0]}, handler_active 1, path with and without .so"


def check_contend(host: str, other: str | None = None) -> str:
    require(host)
    if other:
        require(other)
    db = new_db(f"contend-{host}-{other or host}")
    waited, _ = contend(WORKER + [host, "holder"], WORKER + [other or host, "waiter"], db, f"contend-{host}")
    return assert_waited(waited)


def check_gotcha() -> str:
    out = one_shot(SCENARIOS + ["gotcha", TMP], "gotcha")
    assert out["first"] == [1, 1], out
    assert out["first_timeout_ms"] == 5000.0, out
    assert out["plain_has_functions"] == VERSION, out
    assert out["after_plain"] == [2, 1], f"plain sqlite3.connect(timeout=5) should not have our handler: {out}"
    assert out["after_second"] == [3, 2], out
    assert out["second_timeout_ms"] == 2000.0, out
    assert out["load_plain"]["timeout_ms"] == 1500.0 and out["load_plain"]["jitter"] == "equal", out
    assert out["after_load_plain"] == [3, 3], out
    assert out["after_reload"] == [3, 3], f"a second load() registered twice: {out}"
    assert "hybrid_busy_config" in out["bad_policy"], out
    assert "nonsense" in out["unknown_key"], out
    return "connect(timeout=5/2) -> handler_active 1, timeout_ms 5000/2000; plain connect -> 0 until load()"


def check_one_library() -> str:
    out = one_shot(SCENARIOS + ["one-library", TMP], "one-library")
    if out["second"] is None:
        raise Skip("no second SQLite library (apsw, pysqlite3, sqlean) in the venv")
    assert out["error"] and "different SQLite library" in out["error"], out
    assert out["first_still_works"] == [1, 1], out
    return f"stdlib {out['first_sqlite']} then {out['second']}: refused ({out['error'][:60]}...)"


def check_pool() -> str:
    require("sqlalchemy")
    out = one_shot(SCENARIOS + ["pool", TMP], "pool")
    assert out["versions"] == [VERSION] * 4, out
    assert out["process_row"] == [4, 4], f"connections, handler_active: {out}"
    assert out["timeouts"] == [2500.0] * 4, out
    assert out["process_row_again"] == [4, 4], out
    return "4 pooled connections: connections 4, handler_active 4, timeout_ms 2500 each"


def check_async() -> str:
    require("sqlalchemy-async")
    db = new_db("async")
    out = one_shot(WORKER + ["sqlalchemy-async", "info", db], "async")
    process = assert_loaded(out, connections=2)
    assert out["policy"]["timeout_ms"] == 4000.0, out
    return f"aiosqlite on SQLite {out['sqlite_version']}: 2 connections, handler_active {process['handler_active']}"


# --- Datasette and sqlite-utils ---------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def check_datasette() -> str:
    if not os.path.exists(os.path.join(BIN, "datasette")):
        raise Skip("datasette: " + MISSING.get("datasette", "not installed in the test venv"))
    require("stdlib")
    db = new_db("datasette")
    contend(WORKER + ["stdlib", "holder"], WORKER + ["stdlib", "waiter"], db, "datasette-contend")
    port = free_port()
    env = os.environ.copy()
    env["SQLITE_HYBRID_POLICY"] = json.dumps({"timeout_ms": 3000})
    log = open(os.path.join(TMP, "datasette.log"), "w")
    server = subprocess.Popen(
        [os.path.join(BIN, "datasette"), "serve", db, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=TMP, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http_json(f"{base}/-/versions.json", timeout=2)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    raise AssertionError("datasette did not start: " + open(log.name).read()[-2000:])
                time.sleep(0.2)
        plugins = http_json(f"{base}/-/plugins.json")
        assert any("hybrid" in p.get("name", "") for p in plugins), plugins

        def query(sql: str) -> list:
            qs = urllib.parse.urlencode({"sql": sql, "_shape": "array"})
            return http_json(f"{base}/datasette.json?{qs}")

        row = query("SELECT hybrid_version() AS v, sqlite_version() AS s, "
                    "json_extract(hybrid_busy_config(), '$.timeout_ms') AS t")[0]
        assert row["v"] == VERSION and row["t"] == 3000, row
        file_rows = query("SELECT scope, mode, busy_events, acquired, gave_up FROM hybrid_lock_metrics "
                          "WHERE scope = 'file'")
        assert len(file_rows) == 1, file_rows
        f = file_rows[0]
        assert f["busy_events"] >= 1 and f["acquired"] >= 1 and f["gave_up"] == 0, f
        process = query("SELECT connections, handler_active FROM hybrid_lock_metrics "
                        "WHERE scope = 'process'")[0]
        assert process["handler_active"] >= 1 and process["handler_active"] == process["connections"], process
        return (f"SQLite {row['s']} (read-only connections), file row busy_events={f['busy_events']} "
                f"acquired={f['acquired']}, process handler_active {process['handler_active']}/"
                f"{process['connections']}, policy from SQLITE_HYBRID_POLICY")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def check_sqlite_utils() -> str:
    cli = os.path.join(BIN, "sqlite-utils")
    if not os.path.exists(cli):
        raise Skip("sqlite-utils: " + MISSING.get("sqlite-utils", "not installed in the test venv"))
    db = new_db("sqlite-utils")
    sql = ("SELECT hybrid_version() AS v, sqlite_version() AS s, "
           "(SELECT handler_active FROM hybrid_lock_metrics WHERE scope = 'process') AS a, "
           "json_extract(hybrid_busy_config(), '$.timeout_ms') AS t")
    env = os.environ.copy()
    env["SQLITE_HYBRID_POLICY"] = json.dumps({"timeout_ms": 2500})
    done = subprocess.run([cli, "query", db, sql], capture_output=True, text=True, env=env,
                          timeout=STEP_TIMEOUT, cwd=TMP)
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[0]
    assert row["v"] == VERSION and row["a"] == 1 and row["t"] == 2500, row
    env["SQLITE_HYBRID_PLUGINS"] = "0"
    off = subprocess.run([cli, "query", db, "SELECT hybrid_version()"], capture_output=True, text=True,
                         env=env, timeout=STEP_TIMEOUT, cwd=TMP)
    assert off.returncode != 0 and "hybrid_version" in off.stderr + off.stdout, (off.stdout, off.stderr)
    return f"CLI query on SQLite {row['s']}: hybrid_version {row['v']}, handler_active 1; off with SQLITE_HYBRID_PLUGINS=0"


# --- the sqlite3 shell -------------------------------------------------------------------


def check_shell() -> str:
    import shutil

    shell = shutil.which("sqlite3")
    if shell is None or not os.environ.get("HYBRID_LIB"):
        raise Skip("no sqlite3 shell (apt-get install sqlite3)")
    db = new_db("shell")
    sql = ("SELECT hybrid_version(), sqlite_version(), handler_active, mode FROM hybrid_lock_metrics "
           "WHERE scope = 'process'")
    done = subprocess.run([shell, db, f".load {os.environ['HYBRID_LIB']}", sql], capture_output=True,
                          text=True, timeout=STEP_TIMEOUT, cwd=TMP)
    assert done.returncode == 0 and not done.stderr, done.stderr
    version, sqlite_version, active, mode = done.stdout.strip().split("|")
    assert version == VERSION and active == "1" and mode == "futex", done.stdout
    return f"sqlite3 {sqlite_version}: .load of the wheel's library, handler_active 1, futex mode"


# --- Node and Go -----------------------------------------------------------------------


def check_pattern(worker: list | None, label: str) -> str:
    if worker is None:
        raise Skip(SKIP_REASONS[label])
    db = new_db(f"{label}-check")
    out = one_shot(worker + ["check", db], f"{label}-check")
    assert out["hybrid_version"] == VERSION, out
    for key, value in out["checks"].items():
        assert value, f"{key} failed: {out}"
    return f"SQLite {out['sqlite_version']}: " + ", ".join(out["notes"])


def check_worker_contend(worker: list | None, label: str, waiter: list | None = None) -> str:
    if worker is None:
        raise Skip(SKIP_REASONS["node" if label.startswith("node") else "go"])
    if label == "node-go" and GO_WORKER is None:
        raise Skip(SKIP_REASONS["go"])
    db = new_db(f"{label}-contend{'-mixed' if waiter else ''}")
    waited, _ = contend(worker + ["holder"], (waiter or worker) + ["waiter"], db, f"{label}-contend")
    return assert_waited(waited)


# --- web apps: SQLAlchemy attach()/writer(), retry, FastAPI + uvicorn, Django -----------------


def check_doctests() -> str:
    """The examples in the package's docstrings (retry, retrying, sqlite_error_code) run."""
    code = ("import doctest, json, sqlite_hybrid._retry as r, sqlite_hybrid._errors as e; "
            "print('result ' + json.dumps([tuple(doctest.testmod(m)) for m in (r, e)]))")
    out = one_shot([PY, "-c", code], "doctests")
    assert all(failed == 0 for failed, _ in out) and all(attempted > 0 for _, attempted in out), out
    return f"sqlite_hybrid._retry: {out[0][1]} examples, sqlite_hybrid._errors: {out[1][1]}, all pass"


WEB_DIR = {"dir": TMP, "label": "web"}  # where the web scenarios put their files


def web(name: str) -> dict:
    directory = os.path.join(WEB_DIR["dir"], name)
    os.makedirs(directory, exist_ok=True)
    return one_shot(WEB + [name, directory], f"{WEB_DIR['label']}-{name}")


def check_sqlalchemy14() -> str:
    """The same four checks on SQLAlchemy 1.4 (a --target dir first on PYTHONPATH)."""
    if not SQLALCHEMY14:
        raise Skip("no SQLAlchemy 1.4 set up (hosts/run.sh installs one into a --target dir; pip failed)")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = SQLALCHEMY14 + (os.pathsep + saved if saved else "")
    WEB_DIR.update(dir=os.path.join(TMP, "sqlalchemy14"), label="web14")
    try:
        version = subprocess.run([PY, "-c", "import sqlalchemy; print(sqlalchemy.__version__)"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        assert version.startswith("1.4"), version
        for check in (check_listener_order, check_timeout, check_read_then_write, check_bad_input):
            check()
    finally:
        WEB_DIR.update(dir=TMP, label="web")
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return f"SQLAlchemy {version}: listener order, timeout, read-then-write/writer()/retry, bad input all pass"


def check_listener_order() -> str:
    require("sqlalchemy")
    require("sqlalchemy-async")
    out = web("listener-order")
    for key, value in out.items():
        assert value["process_row"] == [4, 4], f"{key}: connections, handler_active = {value['process_row']}"
        assert value["timeouts"] == [500.0] * 4, f"{key}: the app's 500 ms should be the deadline: {value}"
        assert value.get("pragma", [0] * 4) == [0] * 4, f"{key}: SQLite's own handler still installed: {value}"
    return "app's PRAGMA busy_timeout=500 listener before/after attach(), sync and aiosqlite: handler_active 4/4, deadline 500 ms"


def check_timeout() -> str:
    require("sqlalchemy")
    out = web("timeout")
    assert out["python-default"]["timeouts"] == [5000.0] * 2, out
    assert out["connect_args"]["timeouts"] == [2000.0] * 2, out
    assert out["pragma"]["timeouts"] == [750.0] * 2, out
    assert out["policy-wins"]["timeouts"] == [1234.0] * 2, out
    for key in ("python-default", "connect_args", "pragma", "policy-wins"):
        assert out[key]["process_row"] == [2, 2], (key, out[key])
    deadline = out["deadline"]
    assert deadline["is_lock_error"] and deadline["error_code"] & 0xFF == 5, deadline
    assert deadline["metrics"]["gave_up"] == 1, deadline
    return (f"deadline = Python default 5000 / connect_args 2000 / pragma 750 / timeout_ms 1234 ms; "
            f"500 ms deadline vs a 1.5 s holder: SQLITE_BUSY after {deadline['waited_s']:.2f} s, gave_up 1")


def check_read_then_write() -> str:
    require("sqlalchemy")
    require("sqlalchemy-async")
    out = web("read-then-write")
    assert out["deferred"] == {"code": 517, "is_lock_error": True}, f"expected SQLITE_BUSY_SNAPSHOT: {out}"
    assert out["writer_sync"] == 1001, out   # the holder's +1000 and our +1, none lost
    assert out["writer_async"] == 1004, out
    assert out["retry"]["attempts"] == 2 and out["retry"]["retries"] == 1, out
    assert out["retry"]["final_is_last_read_plus_one"], out
    if out["retry"]["has_note_function"]:  # the library counts application retries
        assert out["retry"]["noted"] == 1 and out["retry"]["app_retries"] >= 1, out
    else:  # an older library: "no such function" tolerated, nothing noted
        assert out["retry"]["noted"] == 0, out
    assert out["non_lock"] == {"calls": 1, "type": "OperationalError", "is_lock_error": False}, out
    lock_timeout = out["lock_timeout"]
    assert lock_timeout["is_operational"] and lock_timeout["is_lock_error"] and lock_timeout["attempts"] >= 1, out
    return ("deferred read-then-write: SQLITE_BUSY_SNAPSHOT at once; writer() (BEGIN IMMEDIATE) waits for a "
            "holder, sync and 4 aiosqlite tasks, no update lost; retry re-runs once; a non-lock error runs once; "
            f"LockTimeout after {lock_timeout['attempts']} attempts")


def check_bad_input() -> str:
    require("sqlalchemy")
    out = web("bad-input")
    assert out["unknown_key"].startswith("TypeError") and "timeout" in out["unknown_key"], out
    assert out["bad_begin"].startswith("ValueError"), out
    assert out["writer_unattached"].startswith("ValueError") and "attach" in out["writer_unattached"], out
    assert out["not_an_engine"].startswith("TypeError"), out
    assert out["other_database"].startswith("TypeError") and "postgresql" in out["other_database"], out
    assert out["twice"].startswith("TypeError") and out["reattach_after_detach"] is None, out
    assert len(out["late_warning"]) == 1 and "next checkout" in out["late_warning"][0], out
    assert out["late_loaded"] == VERSION and out["late_row"] == [1, 1], out
    assert out["retry_bad_args"].startswith("ValueError"), out
    return "unknown key, bad begin, non-SQLite engine, double attach, writer() unattached: errors; late attach: warning + loaded at checkout"


def check_fastapi() -> str:
    for host in ("sqlalchemy-async", "fastapi", "uvicorn"):
        require(host)
    sys.path.insert(0, HERE)
    import webload

    env = os.environ.copy()
    env["WEBAPP_SCAN_ROW_MS"] = "0.5"
    out = webload.run("hybrid", TMP, python=PY, workers=3, writers=2, scan_rows=300, scan_period=1.0,
                      rate=45.0, seconds=15.0, clients=6, env=env)
    api = out["api"]
    assert api["errors"] == {}, f"API errors: {api['errors']}"
    assert api["writes"]["n"] >= 20 and api["reads"]["n"] >= 40, api
    assert out["acked_plays_missing"] == 0 and out["plays_in_file"] == out["acked_plays"], out
    assert out["plays_counter"] == out["acked_plays"], f"a read-then-write increment was lost: {out}"
    bg = out["background"]
    assert bg["errors"] == 0 and bg["missing"] == 0 and bg["in_file"] == bg["acked"] and bg["acked"] > 0, bg
    scan = out["scan"]
    assert scan["errors"] == 0 and scan["acked"] >= 1 and scan["tracks_in_file"] == scan["tracks_expected"], scan
    metrics = out["metrics"]
    assert metrics.get("gave_up") == 0, metrics
    return (f"uvicorn x3 + 2 writers + scan, 15 s over HTTP: {api['writes']['n']} writes + {api['reads']['n']} reads, "
            f"0 errors; {bg['acked']} background writes, {scan['acked']} scans of 300 rows, all in the file; "
            f"file-wide busy_events {metrics.get('busy_events')}, gave_up 0")


def run_django(extra_path: str = "") -> str:
    require("django")
    data = os.path.join(TMP, "django-data" + ("-old" if extra_path else ""))
    env = os.environ.copy()
    env["DJANGO_DATA_DIR"] = data
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([PY, "manage.py", "test", "tracks", "-v", "2", "--noinput"], cwd=DJANGO_PROJECT,
                          env=env, capture_output=True, text=True, timeout=180)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    ran = [l for l in tail.splitlines() if l.startswith("Ran ")]
    version = subprocess.run([PY, "-c", "import django; print(django.get_version())"], env=env,
                             capture_output=True, text=True, timeout=60).stdout.strip()
    return f"Django {version}: manage.py test: {ran[-1] if ran else '?'}, OK"


def check_django() -> str:
    return run_django()


def check_django_old() -> str:
    if not DJANGO_OLD:
        raise Skip("no Django < 5.1 set up (hosts/run.sh installs one into a --target dir; pip failed or was skipped)")
    return run_django(DJANGO_OLD)


def main() -> None:
    print(f"hosts: wheel version {VERSION}, python {sys.version.split()[0]}, scratch {TMP}", flush=True)
    for host in ("stdlib", "apsw", "pysqlite3", "sqlean"):
        run_check(f"python/{host}: load()", check_load, host)
    run_check("python: connect(timeout=...) and the busy-timeout gotcha", check_gotcha)
    run_check("python: one SQLite library per process", check_one_library)
    for host in ("stdlib", "connect", "apsw", "pysqlite3", "sqlean"):
        run_check(f"python/{host}: lock wait between two processes", check_contend, host)
    run_check("python: apsw holder (SQLite 3.54) vs stdlib waiter (3.40), one queue",
              check_contend, "apsw", "stdlib")
    run_check("datasette: plugin, HTTP JSON API, file-wide row on read-only connections", check_datasette)
    run_check("sqlite-utils: plugin through the CLI", check_sqlite_utils)
    run_check("sqlalchemy: pool, every connection with the handler", check_pool)
    run_check("sqlalchemy: lock wait between two processes' engines", check_contend, "sqlalchemy")
    run_check("sqlalchemy: async engine on aiosqlite", check_async)
    run_check("python: the package's docstring examples (doctest)", check_doctests)
    run_check("sqlalchemy: the app's busy_timeout listener, either order", check_listener_order)
    run_check("sqlalchemy: whose timeout is the deadline", check_timeout)
    run_check("sqlalchemy: read-then-write, writer() and sqlite_hybrid.retry", check_read_then_write)
    run_check("sqlalchemy: bad input refused or warned about", check_bad_input)
    run_check("sqlalchemy 1.4: the same four checks", check_sqlalchemy14)
    run_check("fastapi: uvicorn workers, background writers and a scan over HTTP", check_fastapi)
    run_check("django: sqlite_hybrid.django under manage.py test", check_django)
    run_check("django < 5.1: TRANSACTION_MODE without OPTIONS['transaction_mode']", check_django_old)
    run_check("sqlite3 shell: .load", check_shell)
    run_check("node/better-sqlite3: per-connection pattern", check_pattern, NODE_WORKER, "node")
    run_check("node/better-sqlite3: lock wait between two processes", check_worker_contend, NODE_WORKER, "node")
    run_check("go/mattn-go-sqlite3: per-connection pattern (ConnectHook)", check_pattern, GO_WORKER, "go")
    run_check("go/mattn-go-sqlite3: lock wait between two processes", check_worker_contend, GO_WORKER, "go")
    run_check("node holder (its own SQLite) vs go waiter (Debian's), one queue",
              check_worker_contend, NODE_WORKER, "node-go", GO_WORKER)
    passed = sum(1 for _, s in results if s == "PASS")
    failed = sum(1 for _, s in results if s == "FAIL")
    skipped = sum(1 for _, s in results if s == "SKIP")
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
