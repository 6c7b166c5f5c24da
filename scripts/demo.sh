#!/usr/bin/env bash
# `make demo`: the extension in Debian's sqlite3 shell, against real
# contention from another process. Takes about 15 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
db="$dir/demo.db"
sqlite3 "$db" "PRAGMA journal_mode=WAL; CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT);" >/dev/null

echo "== Another process (plain python3, no extension) takes the write lock three times:"
echo "   0.0-0.6 s, 0.8-1.4 s and 1.6-3.6 s."
"$PYTHON" - "$db" <<'PY' &
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for hold in (0.6, 0.6, 2.0):
    db.execute("BEGIN IMMEDIATE"); time.sleep(hold); db.execute("COMMIT"); time.sleep(0.2)
PY
holder=$!
sleep 0.1

echo "== The sqlite3 shell loads the extension and writes while the lock is taken:"
sqlite3 "$db" <<'SQL' || true
.load ./dist/libhybrid
.timer on
SELECT hybrid_version() AS version, hybrid_busy_config() AS policy;
INSERT INTO orders(item) VALUES ('first: waits for the 1st hold');
SELECT 'pause' WHERE 0; -- let the holder take the lock again
.shell sleep 0.3
INSERT INTO orders(item) VALUES ('second: waits for the 2nd hold');
.shell sleep 0.5
SELECT hybrid_busy_timeout(500) AS new_deadline_ms;
INSERT INTO orders(item) VALUES ('third: gives up after 500 ms');
.timer off
.mode box
SELECT count(*) AS rows_written FROM orders;
SELECT scope, mode, busy_events, retries, acquired, gave_up, in_flight, round(wait_max_ms,1) AS wait_max_ms,
       round(wait_p50_ms,1) AS wait_p50_ms, failure_rate FROM hybrid_lock_metrics WHERE db LIKE '%demo.db';
SELECT at, outcome, round(wait_ms,1) AS wait_ms, retries, pid FROM hybrid_lock_events;
SELECT schema, journal_mode, synchronous, page_count, wal_bytes, busy_timeout, sqlite_version FROM hybrid_health;
SQL
wait "$holder"

echo
echo "== The queue, seen from a third process while two others wait (futex mode):"
"$PYTHON" - "$db" <<'PY'
import os, sqlite3, subprocess, sys, time
db, ext = sys.argv[1], os.path.abspath("dist/libhybrid")
holder = sqlite3.connect(db, isolation_level=None)
holder.execute("BEGIN IMMEDIATE")
waiter = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1],isolation_level=None); c.enable_load_extension(True); c.load_extension(sys.argv[2]); c.execute(\"SELECT hybrid_priority(?)\", (sys.argv[3],)); c.execute('BEGIN IMMEDIATE'); c.execute('COMMIT')"
procs = [subprocess.Popen([sys.executable, "-c", waiter, db, ext, p]) for p in ("background", "interactive")]
time.sleep(0.15)  # background waiters count as interactive after 250 ms
viewer = sqlite3.connect(db); viewer.enable_load_extension(True); viewer.load_extension(ext)
for row in viewer.execute("SELECT position, pid, priority, round(waited_ms) AS waited_ms, is_head FROM hybrid_lock_waiters"):
    print("  position %d: pid %d, %s, waited %d ms, head=%d" % row)
holder.execute("COMMIT")
for p in procs: p.wait()
PY

echo
echo "== A 2-second taste of the benchmark (make bench runs the full one):"
"$PYTHON" scripts/contention_bench.py --ext dist/libhybrid.so --writers 8 --hold-ms 1 --duration 2 --modes default,backoff,hybrid
