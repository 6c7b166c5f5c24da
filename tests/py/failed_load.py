"""A load of the extension that fails half-way must not leave the host
calling into an unloaded library.

The connection already has its own function `hybrid_tune()` with a
statement still running over it, so SQLite refuses to replace it
("unable to delete/modify user-function due to active statements") after
the extension registered its other functions, and refuses to remove those
again while the statement runs. The load fails and SQLite unloads the
library: the functions left behind must still work (the library pinned
itself) and closing the connection must not crash. Prints the error, then
"closed" once the connection closed cleanly.
"""
import os
import sqlite3

db = sqlite3.connect(":memory:")
# Every arity an extension might register it with (fixed 0, or variadic).
db.create_function("hybrid_tune", 0, lambda: "mine")
db.create_function("hybrid_tune", -1, lambda *args: "mine")
running = db.execute("SELECT hybrid_tune() FROM (SELECT 1 UNION ALL SELECT 2)")
print("first row", running.fetchone()[0], flush=True)
db.enable_load_extension(True)
try:
    db.load_extension(os.environ["HYBRID_EXT"])
    print("loaded", flush=True)
except sqlite3.OperationalError as e:
    print("load failed:", e, flush=True)
print("second row", running.fetchone()[0], flush=True)
running.close()
# Our own function is still ours; what the extension could not remove
# still answers.
print("mine still", db.execute("SELECT hybrid_tune()").fetchone()[0], flush=True)
try:
    print("hybrid_version", db.execute("SELECT hybrid_version()").fetchone()[0], flush=True)
except sqlite3.OperationalError as e:
    print("no hybrid_version:", e, flush=True)
db.close()
print("closed", flush=True)
