"""A Python soak worker (Debian python3 with the extension): for SECONDS it
writes rows in short transactions, reads, and queries the metrics; then
prints one JSON line with what it did.

Usage: soak_worker.py DB WRITER_ID SECONDS
"""
import json
import os
import sqlite3
import sys
import time


def rss_kb():
    with open("/proc/self/status") as f:
        # Anonymous memory only (heap, page cache); file pages are the OS's.
        return next(int(l.split()[1]) for l in f if l.startswith("RssAnon:"))


path, writer, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None)
db.enable_load_extension(True)
db.load_extension(os.environ["HYBRID_EXT"])
start = time.monotonic()
end, warm = start + seconds, start + seconds / 4
committed = errors = reads = rss_warm = 0
seq = 0
while time.monotonic() < end:
    seq += 1
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO rows(writer, seq, payload) VALUES (?, ?, 'python')", (writer, seq))
        db.execute("COMMIT")
        committed = seq
    except sqlite3.OperationalError as e:
        errors += 1
        seq -= 1
        print(f"soak_worker {writer}: {e}", file=sys.stderr)
        if db.in_transaction:
            db.execute("ROLLBACK")
    if seq % 10 == 0:
        n = db.execute("SELECT coalesce(max(seq), 0) FROM rows WHERE writer = ?", (writer,)).fetchone()[0]
        assert n >= committed, (n, committed)
        reads += 1
    if seq % 500 == 0:
        db.execute("SELECT * FROM hybrid_lock_metrics").fetchall()
        db.execute("SELECT * FROM hybrid_lock_events").fetchall()
    if rss_warm == 0 and time.monotonic() >= warm:
        rss_warm = rss_kb()
gave_up = db.execute("SELECT gave_up FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?",
                     (os.path.realpath(path),)).fetchone()[0]
print(json.dumps({"writer": writer, "kind": "python", "committed": committed, "errors": errors, "reads": reads,
                  "lock_gave_up": gave_up, "rss_warm_kb": rss_warm, "rss_end_kb": rss_kb()}))
