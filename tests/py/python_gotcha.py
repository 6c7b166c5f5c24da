"""Shows what Python's connect(timeout=...) does to the hybrid handler.

Prints one JSON line with handler_active for the loading connection, for a
connection opened later (auto-extension, then Python's own busy timeout),
and for that connection after hybrid_busy_timeout() re-installs ours.
"""
import json
import os
import sqlite3
import tempfile

ext = os.environ["HYBRID_EXT"]
tmp = tempfile.mkdtemp()
first_path = os.path.join(tmp, "first.db")
later_path = os.path.join(tmp, "later.db")

first = sqlite3.connect(first_path)
first.enable_load_extension(True)
first.load_extension(ext)


def active(conn, path):
    return conn.execute("SELECT handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?",
                        (os.path.realpath(path),)).fetchone()[0]


report = {"loading_connection_active": active(first, first_path)}
later = sqlite3.connect(later_path, timeout=5.0)
report["later_connection_has_functions"] = later.execute("SELECT hybrid_version()").fetchone()[0] != ""
report["later_connection_active_after_connect"] = active(later, later_path)
later.execute("SELECT hybrid_busy_timeout(5000)")
report["later_connection_active_after_reinstall"] = active(later, later_path)
print(json.dumps(report))
