"""Single-process Python scenarios for hosts/python/test_hosts.py.

    scenarios.py gotcha DIR        connect(timeout=...) vs sqlite3.connect(timeout=...)
    scenarios.py one-library DIR   a second SQLite library in the process is refused
    scenarios.py pool DIR          a SQLAlchemy pool: every connection has the handler

Each prints one line "result <json>"; the assertions live in test_hosts.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys

import sqlite_hybrid

PROCESS_ROW = (
    "SELECT connections, handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?"
)


def result(value: dict) -> None:
    print("result " + json.dumps(value), flush=True)


def new_db(path: str) -> str:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, who TEXT)")
    conn.close()
    return os.path.realpath(path)


def gotcha(directory: str) -> None:
    """The busy-timeout gotcha, and connect() fixing it."""
    path = new_db(os.path.join(directory, "gotcha.db"))
    out = {}
    first = sqlite_hybrid.connect(path, timeout=5)
    out["first"] = first.execute(PROCESS_ROW, (path,)).fetchone()
    out["first_timeout_ms"] = json.loads(first.execute("SELECT hybrid_busy_config()").fetchone()[0])["timeout_ms"]
    # A plain connect after the load: the auto-extension registers it, then
    # Python's timeout=5 installs SQLite's own handler over ours.
    plain = sqlite3.connect(path, timeout=5)
    out["plain_has_functions"] = plain.execute("SELECT hybrid_version()").fetchone()[0]
    out["after_plain"] = plain.execute(PROCESS_ROW, (path,)).fetchone()
    # connect() gives the handler back, with timeout= as its deadline.
    second = sqlite_hybrid.connect(path, timeout=2)
    out["after_second"] = second.execute(PROCESS_ROW, (path,)).fetchone()
    out["second_timeout_ms"] = json.loads(second.execute("SELECT hybrid_busy_config()").fetchone()[0])["timeout_ms"]
    # load() on the plain one fixes it too; policy keys go through.
    out["load_plain"] = sqlite_hybrid.load(plain, timeout_ms=1500, jitter="equal")
    out["after_load_plain"] = plain.execute(PROCESS_ROW, (path,)).fetchone()
    # A second load() is harmless: no second registration.
    sqlite_hybrid.load(first)
    out["after_reload"] = first.execute(PROCESS_ROW, (path,)).fetchone()
    try:
        sqlite_hybrid.load(first, timeout_ms=-1)
        out["bad_policy"] = "accepted"
    except sqlite3.Error as error:
        out["bad_policy"] = str(error)
    try:
        sqlite_hybrid.load(first, nonsense=1)
        out["unknown_key"] = "accepted"
    except TypeError as error:
        out["unknown_key"] = str(error)
    result(out)


def one_library(directory: str) -> None:
    """stdlib first, then any other SQLite library the venv has: refused, stdlib unharmed."""
    path = new_db(os.path.join(directory, "one.db"))
    first = sqlite3.connect(path)
    sqlite_hybrid.load(first)
    out = {"first_sqlite": sqlite3.sqlite_version, "second": None}
    for name in ("apsw", "pysqlite3", "sqlean"):
        try:
            if name == "apsw":
                import apsw

                second = apsw.Connection(path)
            elif name == "pysqlite3":
                from pysqlite3 import dbapi2

                second = dbapi2.connect(path)
            else:
                import sqlean

                second = sqlean.connect(path)
        except ImportError:
            continue
        out["second"] = name
        try:
            sqlite_hybrid.load(second)
            out["error"] = None
        except Exception as error:  # each driver has its own exception type
            out["error"] = str(error)
            out["notes"] = list(getattr(error, "__notes__", []))
        break
    out["first_still_works"] = first.execute(PROCESS_ROW, (path,)).fetchone()
    result(out)


def pool(directory: str) -> None:
    """Four pooled connections checked out at once: each registered, each with our handler."""
    from sqlalchemy import create_engine, text

    from sqlite_hybrid.sqlalchemy import attach

    path = new_db(os.path.join(directory, "pool.db"))
    engine = create_engine(f"sqlite:///{path}", pool_size=4, max_overflow=0)
    attach(engine, timeout_ms=2500)
    conns = [engine.connect() for _ in range(4)]
    out = {"versions": [c.execute(text("SELECT hybrid_version()")).scalar() for c in conns]}
    out["process_row"] = list(conns[0].exec_driver_sql(PROCESS_ROW, (path,)).one())
    out["timeouts"] = [
        json.loads(c.execute(text("SELECT hybrid_busy_config()")).scalar())["timeout_ms"] for c in conns
    ]
    out["pool"] = engine.pool.status()
    for c in conns:
        c.close()
    # Returned to the pool and checked out again: still registered, not twice.
    again = [engine.connect() for _ in range(4)]
    out["process_row_again"] = list(again[0].exec_driver_sql(PROCESS_ROW, (path,)).one())
    for c in again:
        c.close()
    engine.dispose()
    result(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    {"gotcha": gotcha, "one-library": one_library, "pool": pool}[sys.argv[1]](sys.argv[2])
