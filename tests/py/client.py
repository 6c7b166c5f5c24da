"""A scriptable database client for the hand-off tests.

Usage: client.py DB [--plain] [--policy JSON] [--priority CLASS]
                    [--no-handler] [--journal MODE]
Loads the hybrid extension ($HYBRID_EXT) unless --plain, then prints
"ready <pid>" and runs one command per stdin line. --no-handler removes
every busy handler after the load (PRAGMA busy_timeout = 0: a busy lock
is an immediate error, as in stock SQLite without a timeout); --journal
sets the journal mode (default WAL). Commands:
  begin           BEGIN IMMEDIATE; prints "began <unix_time> <waited_ms>"
                  or "error <message>"
  commit          COMMIT; prints "committed <unix_time>"
  waiters         prints the number of live, moving waiters on DB
  waiters-all     prints the number of rows in hybrid_lock_waiters for DB
  metrics         prints one JSON line: {scope: {column: value}}
  reset-file      runs hybrid_lock_metrics_reset('file'), prints "reset"
  mode            prints this connection's mode for DB
  hog SECONDS     prints "hogging", then loops BEGIN IMMEDIATE; INSERT; COMMIT
                  for SECONDS and prints "hogged <transactions>"
Times are wall-clock (time.time()) so several processes can be compared.
"""
import json
import os
import sqlite3
import sys
import time

args = sys.argv[1:]
path = os.path.realpath(args[0])
plain = "--plain" in args
policy = args[args.index("--policy") + 1] if "--policy" in args else None
priority = args[args.index("--priority") + 1] if "--priority" in args else None
journal = args[args.index("--journal") + 1] if "--journal" in args else "WAL"

db = sqlite3.connect(path, isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=" + journal)
if not plain:
    db.enable_load_extension(True)
    db.load_extension(os.environ["HYBRID_EXT"])
    if policy:
        db.execute("SELECT hybrid_busy_config(?)", (policy,))
    if priority:
        db.execute("SELECT hybrid_priority(?)", (priority,))
    if "--no-handler" in args:
        db.execute("PRAGMA busy_timeout = 0")
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who INTEGER)")
print("ready", os.getpid(), flush=True)

for line in sys.stdin:
    command = line.strip()
    try:
        if command == "begin":
            start = time.monotonic()
            db.execute("BEGIN IMMEDIATE")
            waited = (time.monotonic() - start) * 1000
            db.execute("INSERT INTO t(who) VALUES (?)", (os.getpid(),))
            print("began", repr(time.time()), round(waited, 3), flush=True)
        elif command == "commit":
            db.execute("COMMIT")
            print("committed", repr(time.time()), flush=True)
        elif command == "waiters":
            n = db.execute("SELECT count(*) FROM hybrid_lock_waiters WHERE db = ? AND stale = 0", (path,)).fetchone()[0]
            print(n, flush=True)
        elif command == "waiters-all":
            n = db.execute("SELECT count(*) FROM hybrid_lock_waiters WHERE db = ?", (path,)).fetchone()[0]
            print(n, flush=True)
        elif command == "reset-file":
            db.execute("SELECT hybrid_lock_metrics_reset('file')")
            print("reset", flush=True)
        elif command == "metrics":
            cur = db.execute("SELECT * FROM hybrid_lock_metrics WHERE db = ?", (path,))
            names = [d[0] for d in cur.description]
            rows = {r[1]: dict(zip(names, r)) for r in cur.fetchall()}
            print(json.dumps(rows), flush=True)
        elif command.startswith("hog "):
            end = time.monotonic() + float(command.split()[1])
            print("hogging", flush=True)
            n = 0
            while time.monotonic() < end:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t(who) VALUES (?)", (os.getpid(),))
                db.execute("COMMIT")
                n += 1
            print("hogged", n, flush=True)
        elif command == "mode":
            print(db.execute("SELECT mode FROM hybrid_lock_metrics WHERE db = ? AND scope = 'process'", (path,)).fetchone()[0], flush=True)
    except sqlite3.Error as e:
        print("error", str(e).replace("\n", " "), flush=True)
