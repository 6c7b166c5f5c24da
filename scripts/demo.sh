#!/usr/bin/env bash
# `make demo`: the extension in Debian's sqlite3 shell, against real
# contention from other processes, then a short benchmark against SQLite's
# own busy handler. About 40 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
db="$dir/demo.db"
sqlite3 "$db" "PRAGMA journal_mode=WAL; CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT);" >/dev/null

echo "== 1. Waiting for a lock another process holds"
echo "   Another process (plain python3, no extension) takes the write lock three times:"
echo "   from 0.0 to 0.6 s, from 0.8 to 1.4 s and from 1.6 to 3.6 s."
echo "   Meanwhile the sqlite3 shell, with the extension loaded, inserts three rows."
echo "   'Run Time: real N' after each statement is how long it took, in seconds."
echo
"$PYTHON" - "$db" <<'PY' &
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
for hold in (0.6, 0.6, 2.0):
    db.execute("BEGIN IMMEDIATE"); time.sleep(hold); db.execute("COMMIT"); time.sleep(0.2)
PY
holder=$!
sleep 0.1

# The third insert is meant to fail: its deadline (500 ms) is shorter than
# the 2 s hold, and "database is locked" is what a caller must then see.
sqlite3 "$db" <<'SQL' 2>&1 || true
.load ./dist/libhybrid
.print '   the extension version, and the policy of this connection:'
SELECT hybrid_version() AS version, hybrid_busy_config() AS policy;
.timer on
.print ''
.print '-- insert 1, at 0.1 s: the lock is held until 0.6 s, so it waits about 0.5 s'
INSERT INTO orders(item) VALUES ('first');
.shell sleep 0.3
.print '-- insert 2, at about 0.9 s: held until 1.4 s, so it waits about 0.5 s'
INSERT INTO orders(item) VALUES ('second');
.timer off
.shell sleep 0.5
.print '-- the deadline is now 500 ms (hybrid_busy_timeout):'
SELECT hybrid_busy_timeout(500) AS new_deadline_ms;
.print '-- insert 3, at about 1.9 s: held until 3.6 s, longer than the 500 ms deadline,'
.print '   so it gives up after 500 ms with "database is locked" (intended: the'
.print '   caller learns it could not write, and nothing was written):'
.timer on
INSERT INTO orders(item) VALUES ('third');
.timer off
.print ''
.mode box
.print '   rows written (2 of 3: the third gave up):'
SELECT count(*) AS rows_written FROM orders;
.print '   the waits of this process and of every process on the file (hybrid_lock_metrics, ms):'
SELECT scope, mode, busy_events AS waits, acquired, gave_up, round(wait_max_ms,1) AS longest_wait_ms,
       round(wait_p50_ms,1) AS median_wait_ms, failure_rate FROM hybrid_lock_metrics WHERE db LIKE '%demo.db';
.print '   each wait (hybrid_lock_events):'
SELECT at, outcome, round(wait_ms,1) AS wait_ms, retries, pid FROM hybrid_lock_events;
.print '   the file (hybrid_health):'
SELECT schema, journal_mode, synchronous, page_count, wal_bytes, busy_timeout, sqlite_version FROM hybrid_health;
SQL
wait "$holder"

echo
echo "== 2. Who holds the lock, and who waits, seen from a third process"
echo "   A holder with the extension keeps the lock; two waiters queue (one background,"
echo "   one interactive: interactive waiters are served first)."
"$PYTHON" - "$db" <<'PY'
import os, sqlite3, subprocess, sys, time
db, ext = sys.argv[1], os.path.abspath("dist/libhybrid")
def connect():
    c = sqlite3.connect(db, isolation_level=None)
    c.enable_load_extension(True); c.load_extension(ext)
    return c
holder = connect()
holder.execute("BEGIN IMMEDIATE")
waiter = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1],isolation_level=None); "
          "c.enable_load_extension(True); c.load_extension(sys.argv[2]); "
          "c.execute('SELECT hybrid_priority(?)', (sys.argv[3],)); "
          "c.execute('BEGIN IMMEDIATE'); c.execute('COMMIT')")
procs = [subprocess.Popen([sys.executable, "-c", waiter, db, ext, p]) for p in ("background", "interactive")]
time.sleep(0.15)  # background waiters count as interactive after 250 ms
viewer = connect()
for pid, held, queued in viewer.execute("SELECT pid, round(held_ms), queued FROM hybrid_lock_holder"):
    print(f"   holder: pid {pid} (the process above: {os.getpid()}), holding for {held:.0f} ms, "
          f"{queued} queued")
for row in viewer.execute("SELECT position, pid, priority, round(waited_ms) AS waited_ms, is_head "
                          "FROM hybrid_lock_waiters"):
    print("   queue position %d: pid %d, %s, waited %d ms so far, head of the queue: %s"
          % (row[:4] + ("yes" if row[4] else "no",)))
holder.execute("COMMIT")
for p in procs:
    p.wait()
print("   after the holder committed, both waiters wrote and left:",
      viewer.execute("SELECT count(*) FROM hybrid_lock_waiters").fetchone()[0], "queued")
PY

echo
echo "== 3. 8 writer processes, each holding the lock 1 ms per transaction:"
echo "   SQLite's default handler vs the extension, 3 rounds of 3 s each, alternating."
echo "   tx/s = committed transactions per second; max wait = the longest BEGIN IMMEDIATE;"
echo "   Jain = fairness of commits across writers (1 = even, 0.125 = one writer got all);"
echo "   each figure is the median with the range over the rounds in brackets."
echo "   (make bench runs the full suite.)"
"$PYTHON" scripts/contention_bench.py --ext dist/libhybrid.so --writers 8 --hold-ms 1 \
    --duration 3 --rounds 3 --modes default,hybrid | grep -v ' | round '
