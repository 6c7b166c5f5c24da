"""Holds the write lock of a database until told to release it.

Usage: holder.py DB [JOURNAL]
Opens DB (in WAL mode, or JOURNAL), runs BEGIN IMMEDIATE, prints "held".
Each line on stdin:
  "release" -> COMMIT, print "released"
  "hold"    -> BEGIN IMMEDIATE again, print "held"
EOF closes the connection (releasing any lock) and exits. Uses plain
Python sqlite3: no extension, like any other app sharing the file.
"""
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=" + (sys.argv[2] if len(sys.argv) > 2 else "WAL"))
db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT)")
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO t(who) VALUES ('holder')")
print("held", flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "release":
        db.execute("COMMIT")
        print("released", flush=True)
    elif command == "hold":
        db.execute("BEGIN IMMEDIATE")
        print("held", flush=True)
db.close()
