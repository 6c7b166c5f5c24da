"""Waits for the write lock with the hybrid extension, then reports.

Usage: waiter.py DB POLICY_JSON
Loads the extension ($HYBRID_EXT), sets the policy, and runs
BEGIN IMMEDIATE; INSERT; COMMIT. A second thread watches
hybrid_lock_metrics and prints "waiting" once this process has a wait in
flight, so the test knows the wait really started. At the end prints one
JSON line: outcome ("committed" or the error), elapsed seconds, and the
metrics row of DB.
"""
import json
import os
import sqlite3
import sys
import threading
import time

path, policy = sys.argv[1], sys.argv[2]
ext = os.environ["HYBRID_EXT"]

db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
db.enable_load_extension(True)
db.load_extension(ext)
db.execute("SELECT hybrid_busy_config(?)", (policy,))

COLUMNS = ("connections", "handler_active", "busy_events", "retries", "acquired",
           "gave_up", "in_flight", "wait_max_ms", "failure_rate")
QUERY = "SELECT %s FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?" % ", ".join(COLUMNS)
real_path = os.path.realpath(path)


def watch():
    # Opened after the load, so the auto-extension registered it too.
    watcher = sqlite3.connect(":memory:")
    while True:
        row = watcher.execute(QUERY, (real_path,)).fetchone()
        if row and row[COLUMNS.index("in_flight")] >= 1:
            print("waiting", flush=True)
            return
        time.sleep(0.005)


threading.Thread(target=watch, daemon=True).start()
start = time.monotonic()
try:
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t(who) VALUES ('waiter')")
    db.execute("COMMIT")
    outcome = "committed"
except sqlite3.OperationalError as e:
    outcome = str(e)
elapsed = time.monotonic() - start
row = db.execute(QUERY, (real_path,)).fetchone()
print(json.dumps({"outcome": outcome, "elapsed_s": elapsed,
                  "metrics": dict(zip(COLUMNS, row)) if row else None}), flush=True)
