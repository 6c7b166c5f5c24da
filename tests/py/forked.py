"""Connections opened after fork() in a child of a process that already has
the database open (a pre-forking web server: the app module opens a
connection at import, then the server forks its workers).

Usage: forked.py DB
The parent loads the extension and keeps a connection. Two children each
open a new connection; the first holds BEGIN IMMEDIATE while the second
waits for the lock; the parent reads `hybrid_lock_holder` and
`hybrid_lock_waiters` meanwhile. Prints one JSON line: the pids the tables
named, the children's pids, and the rows in the file at the end.
"""
import json
import os
import sqlite3
import sys
import time

path = sys.argv[1]
parent = sqlite3.connect(path, isolation_level=None, timeout=0)
parent.enable_load_extension(True)
parent.load_extension(os.environ["HYBRID_EXT"])
parent.execute("PRAGMA journal_mode=WAL")
parent.execute("CREATE TABLE IF NOT EXISTS t(who INTEGER)")


def child(role, to_parent, from_parent):
    """Runs in a forked child; never returns."""
    status = 1
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0)
        db.execute("SELECT hybrid_busy_timeout(30000)")
        if role == "holder":
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
            os.write(to_parent, b"held\n")
            os.read(from_parent, 1)  # until the parent says commit
            db.execute("COMMIT")
        else:
            os.write(to_parent, b"waiting\n")
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (os.getpid(),))
            db.execute("COMMIT")
        status = 0
    finally:
        os._exit(status)


def spawn(role):
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child(role, up_w, down_r)
    return pid, up_r, down_w


def poll(sql, want, limit=10.0):
    end = time.monotonic() + limit
    while True:
        rows = parent.execute(sql).fetchall()
        if want(rows) or time.monotonic() > end:
            return rows
        time.sleep(0.01)


holder_pid, holder_up, holder_down = spawn("holder")
assert os.read(holder_up, 16) == b"held\n"
waiter_pid, waiter_up, _ = spawn("waiter")
assert os.read(waiter_up, 16) == b"waiting\n"
waiters = poll("SELECT pid FROM hybrid_lock_waiters", lambda rows: len(rows) == 1)
holders = poll("SELECT pid FROM hybrid_lock_holder", lambda rows: rows and rows[0][0])
os.write(holder_down, b"c")
statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in (holder_pid, waiter_pid)]
rows = [r[0] for r in parent.execute("SELECT who FROM t ORDER BY rowid")]
print(json.dumps({
    "parent": os.getpid(),
    "holder": holder_pid,
    "waiter": waiter_pid,
    "holder_table": [r[0] for r in holders],
    "waiters_table": [r[0] for r in waiters],
    "exit_codes": statuses,
    "rows": rows,
}))
