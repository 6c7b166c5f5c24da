"""Measures the CPU a connection spends waiting for a lock nobody releases.

Usage: cpu_wait.py DB JOURNAL HOLDER SECONDS
JOURNAL is the journal mode (wal or delete). HOLDER is "process" (another
process already holds the write lock: start holder.py first) or "thread" (a
second connection of this process holds it). The waiter loads the hybrid
extension ($HYBRID_EXT), waits up to SECONDS for BEGIN IMMEDIATE and prints
one JSON line: {"cpu_s": ..., "waited_s": ..., "error": ...} where cpu_s is
the waiting thread's CPU time (time.thread_time).
"""
import json
import os
import sqlite3
import sys
import time

path, journal, holder, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def connect():
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.enable_load_extension(True)
    db.load_extension(os.environ["HYBRID_EXT"])
    return db


waiter = connect()
waiter.execute("PRAGMA journal_mode=" + journal)
waiter.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT)")
if holder == "thread":
    # Another connection of this process (a server's other thread) holds it.
    held = connect()
    held.execute("BEGIN IMMEDIATE")
    held.execute("INSERT INTO t(who) VALUES ('holder')")
waiter.execute("SELECT hybrid_busy_config(?)", (json.dumps({"timeout_ms": seconds * 1000}),))
mode = waiter.execute(
    "SELECT mode FROM hybrid_lock_metrics WHERE db = ? AND scope = 'process'",
    (os.path.realpath(path),),
).fetchone()[0]
start, cpu = time.monotonic(), time.thread_time()
error = None
try:
    waiter.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as e:
    error = str(e)
print(json.dumps({
    "cpu_s": time.thread_time() - cpu,
    "waited_s": time.monotonic() - start,
    "error": error,
    "mode": mode,
}), flush=True)
