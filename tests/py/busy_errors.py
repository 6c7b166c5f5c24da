"""Counts every lock error this process sees, and prints the metrics.

Usage: busy_errors.py DB ROUNDS

Two connections of this process on one WAL file: `writer` commits or holds
the write lock, `app` runs transactions that read and then write. Each
round makes, at `app`, one SQLITE_BUSY inside a read transaction (the lock
is held), one SQLITE_BUSY_SNAPSHOT (another commit since its read), and one
SQLITE_BUSY of a wait that gives up (from outside a transaction). After
each error the unit of work is rolled back, reported with
hybrid_note_retry() and re-run with BEGIN IMMEDIATE, as a retry decorator
does. Errors are recognised by result code (sqlite_errorcode), never by text.

Prints one JSON line: the errors seen by extended code, the retries, and
the process and file rows of hybrid_lock_metrics for the file.
"""
import json
import os
import sqlite3
import sys

SQLITE_BUSY = 5
db_path, rounds = sys.argv[1], int(sys.argv[2])
ext = os.environ["HYBRID_EXT"]

app = sqlite3.connect(db_path, isolation_level=None)
app.enable_load_extension(True)
app.load_extension(ext)
app.execute("PRAGMA journal_mode=WAL")
app.execute("CREATE TABLE IF NOT EXISTS t(x)")
if app.execute("SELECT count(*) FROM t").fetchone()[0] == 0:
    app.execute("INSERT INTO t VALUES (0)")
# Opened after the load: the auto-extension registers it. Its own
# busy timeout is kept short: it never waits in this script.
writer = sqlite3.connect(db_path, isolation_level=None)
writer.execute("SELECT hybrid_busy_timeout(5000)")

errors = {}
retries = 0


def attempt(body):
    """Runs body() once; on a lock error counts it, rolls back, reports the
    retry and re-runs the unit of work with BEGIN IMMEDIATE."""
    global retries
    try:
        body()
        return
    except sqlite3.OperationalError as e:
        code = e.sqlite_errorcode
        if code & 0xFF != SQLITE_BUSY:
            raise
        errors[str(code)] = errors.get(str(code), 0) + 1
        if app.in_transaction:
            app.execute("ROLLBACK")
    retries = app.execute("SELECT hybrid_note_retry()").fetchone()[0]
    return "retry"


def read_then_write():
    app.execute("BEGIN")
    app.execute("SELECT count(*) FROM t").fetchone()
    app.execute("UPDATE t SET x = x + 1")
    app.execute("COMMIT")


def immediate_write():
    app.execute("BEGIN IMMEDIATE")
    app.execute("UPDATE t SET x = x + 1")
    app.execute("COMMIT")


for _ in range(rounds):
    # 1. The lock is held by `writer`: SQLITE_BUSY at once, no wait.
    writer.execute("BEGIN IMMEDIATE")
    assert attempt(read_then_write) == "retry"
    writer.execute("COMMIT")
    attempt(immediate_write)

    # 2. `writer` commits after `app` read: SQLITE_BUSY_SNAPSHOT.
    def stale():
        app.execute("BEGIN")
        app.execute("SELECT count(*) FROM t").fetchone()
        writer.execute("UPDATE t SET x = x + 10")
        app.execute("UPDATE t SET x = x + 1")
        app.execute("COMMIT")

    assert attempt(stale) == "retry"
    attempt(immediate_write)

    # 3. From outside a transaction the handler waits, and gives up.
    writer.execute("BEGIN IMMEDIATE")
    app.execute("SELECT hybrid_busy_timeout(30)")
    assert attempt(lambda: app.execute("UPDATE t SET x = x + 1")) == "retry"
    writer.execute("COMMIT")
    app.execute("SELECT hybrid_busy_timeout(5000)")
    attempt(immediate_write)

columns = ["busy_in_read_tx", "busy_snapshot", "gave_up", "busy_events", "app_retries"]
rows = {}
for row in app.execute(
    f"SELECT scope, {', '.join(columns)} FROM hybrid_lock_metrics WHERE db = ?",
    (os.path.realpath(db_path),),
):
    rows[row[0]] = dict(zip(columns, row[1:]))
outcomes = [r[0] for r in app.execute(
    "SELECT outcome FROM hybrid_lock_events WHERE db = ?", (os.path.realpath(db_path),))]
print(json.dumps({"errors": errors, "retries": retries, "pid": os.getpid(),
                  "process": rows.get("process"), "file": rows.get("file"),
                  "outcomes": outcomes}))
