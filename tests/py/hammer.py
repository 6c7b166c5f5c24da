"""A writer process: short BEGIN IMMEDIATE transactions for a while.

Usage: hammer.py DB SECONDS WRITER_ID
Loads the hybrid extension ($HYBRID_EXT), then loops
BEGIN IMMEDIATE; INSERT INTO hammer(writer, n); [1 ms]; COMMIT until time is
up. Prints one JSON line: commits and lock errors it saw.
"""
import json
import os
import sqlite3
import sys
import time

path, seconds, writer = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None, timeout=0)
db.enable_load_extension(True)
db.load_extension(os.environ["HYBRID_EXT"])
db.execute("SELECT hybrid_busy_timeout(30000)")
db.execute("CREATE TABLE IF NOT EXISTS hammer(id INTEGER PRIMARY KEY, writer INTEGER, n INTEGER)")
commits = errors = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO hammer(writer, n) VALUES (?, ?)", (writer, commits))
        time.sleep(0.001)
        db.execute("COMMIT")
        commits += 1
    except sqlite3.OperationalError:
        errors += 1
        if db.in_transaction:
            db.execute("ROLLBACK")
print(json.dumps({"writer": writer, "commits": commits, "errors": errors}))
