"""One Python host process for hosts/python/test_hosts.py.

    worker.py HOST ROLE DB [--so]

HOST: stdlib | connect | apsw | pysqlite3 | sqlean | sqlalchemy | sqlalchemy-async
ROLE:
  info    open DB, load the extension the way HOST does, print one JSON line
  holder  print "ready"; on "go" from stdin: BEGIN IMMEDIATE, insert, print
          "locked", hold the write lock HOLD_MS (300), commit, print JSON
  waiter  print "ready"; on "go": BEGIN IMMEDIATE (waits for the holder),
          insert, commit, print JSON with the wait and hybrid_lock_metrics

--so loads with loadable_path() + ".so" instead of the bare path.

Every process loads the extension into ONE SQLite library (the host's).
Output lines are "ready", "locked" and "result <json>".
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import sqlite_hybrid

HOLD_MS = float(os.environ.get("HOLD_MS", "300"))
METRIC_COLUMNS = (
    "scope", "mode", "connections", "handler_active", "busy_events", "acquired", "gave_up",
    "in_flight", "wait_max_ms",
)
METRICS_SQL = f"SELECT {', '.join(METRIC_COLUMNS)} FROM hybrid_lock_metrics WHERE db = ?"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected 'go' on stdin, got {line!r}")


class Dbapi:
    """A sqlite3-style or apsw connection in autocommit mode."""

    def __init__(self, host: str, db: str, so: bool):
        self.host = host
        if host == "connect":
            # timeout=5 installs SQLite's own handler; connect() puts ours back.
            self.conn = sqlite_hybrid.connect(db, timeout=5, isolation_level=None)
            return
        if host == "stdlib":
            import sqlite3 as module
        elif host == "pysqlite3":
            from pysqlite3 import dbapi2 as module
        elif host == "sqlean":
            import sqlean as module
        elif host == "apsw":
            module = None
        else:
            raise SystemExit(f"unknown host {host}")
        if module is None:
            import apsw

            self.conn = apsw.Connection(db)
        else:
            self.conn = module.connect(db, isolation_level=None)
        if so:
            # The explicit file name must work too: load by hand, then load()
            # finds the extension registered and only applies the handler.
            self.conn.enable_load_extension(True)
            self.conn.load_extension(sqlite_hybrid.loadable_path() + ".so")
            self.conn.enable_load_extension(False)
        sqlite_hybrid.load(self.conn)

    def rows(self, sql: str, params: tuple = ()) -> list:
        cursor = self.conn.cursor()
        return [tuple(r) for r in cursor.execute(sql, params)]

    def run(self, sql: str, params: tuple = ()) -> None:
        self.rows(sql, params)

    def close(self) -> None:
        self.conn.close()


class Alchemy:
    """A SQLAlchemy engine with attach(); BEGIN IMMEDIATE through engine.begin()."""

    def __init__(self, db: str):
        from sqlalchemy import create_engine, event

        from sqlite_hybrid.sqlalchemy import attach

        self.engine = create_engine(f"sqlite:///{db}")
        attach(self.engine, timeout_ms=5000)

        # SQLAlchemy's documented recipe for SQLite transactions it controls.
        @event.listens_for(self.engine, "connect")
        def autocommit_driver(dbapi_connection, record):
            dbapi_connection.isolation_level = None

        @event.listens_for(self.engine, "begin")
        def begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        # Two pooled connections, opened (and given the extension) up front,
        # so the timed transaction does not include a connect.
        warm = [self.engine.connect() for _ in range(2)]
        for conn in warm:
            conn.close()
        # Metrics are read on a raw pooled DBAPI connection: a SQLAlchemy
        # Connection would autobegin, and the recipe makes that BEGIN IMMEDIATE.
        self.conn = self.engine.raw_connection()

    def rows(self, sql: str, params: tuple = ()) -> list:
        cursor = self.conn.cursor()
        try:
            return [tuple(r) for r in cursor.execute(sql, params).fetchall()]
        finally:
            cursor.close()

    def transaction(self):
        return self.engine.begin()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def metrics(rows_fn, db: str) -> dict:
    out = {}
    for row in rows_fn(METRICS_SQL, (os.path.realpath(db),)):
        out[row[0]] = dict(zip(METRIC_COLUMNS, row))
    return out


def facts(rows_fn, db: str) -> dict:
    version, sqlite_version, policy = rows_fn(
        "SELECT hybrid_version(), sqlite_version(), hybrid_busy_config()"
    )[0]
    return {
        "hybrid_version": version,
        "sqlite_version": sqlite_version,
        "policy": json.loads(policy),
        "metrics": metrics(rows_fn, db),
        "library": sqlite_hybrid.loadable_path(),
    }


def run_dbapi(host: str, role: str, db: str, so: bool) -> None:
    conn = Dbapi(host, db, so)
    if role == "info":
        say("result " + json.dumps(facts(conn.rows, db)))
    elif role == "holder":
        say("ready")
        wait_for_go()
        conn.run("BEGIN IMMEDIATE")
        conn.run("INSERT INTO t(who) VALUES (?)", (f"{host}-holder",))
        say("locked")
        time.sleep(HOLD_MS / 1000)
        conn.run("COMMIT")
        say("result " + json.dumps(facts(conn.rows, db)))
    elif role == "waiter":
        say("ready")
        wait_for_go()
        start = time.monotonic()
        conn.run("BEGIN IMMEDIATE")
        waited_ms = (time.monotonic() - start) * 1000
        conn.run("INSERT INTO t(who) VALUES (?)", (f"{host}-waiter",))
        conn.run("COMMIT")
        result = facts(conn.rows, db)
        result["waited_ms"] = waited_ms
        say("result " + json.dumps(result))
    else:
        raise SystemExit(f"unknown role {role}")
    conn.close()


def run_alchemy(role: str, db: str) -> None:
    from sqlalchemy import text

    alchemy = Alchemy(db)
    if role == "info":
        say("result " + json.dumps(facts(alchemy.rows, db)))
    elif role in ("holder", "waiter"):
        say("ready")
        wait_for_go()
        start = time.monotonic()
        with alchemy.transaction() as tx:  # BEGIN IMMEDIATE on a pooled connection
            waited_ms = (time.monotonic() - start) * 1000
            tx.execute(text("INSERT INTO t(who) VALUES (:who)"), {"who": f"sqlalchemy-{role}"})
            if role == "holder":
                say("locked")
                time.sleep(HOLD_MS / 1000)
        result = facts(alchemy.rows, db)
        if role == "waiter":
            result["waited_ms"] = waited_ms
        say("result " + json.dumps(result))
    else:
        raise SystemExit(f"unknown role {role}")
    alchemy.close()


def run_alchemy_async(role: str, db: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from sqlite_hybrid.sqlalchemy import attach

    if role != "info":
        raise SystemExit("sqlalchemy-async supports the info role")

    async def main() -> dict:
        engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
        attach(engine, timeout_ms=4000)
        try:
            async with engine.connect() as a, engine.connect() as b:
                for conn in (a, b):
                    await conn.execute(text("SELECT hybrid_version()"))

                async def rows(sql, params=()):
                    result = await a.exec_driver_sql(sql, params)
                    return [tuple(r) for r in result.all()]

                version, sqlite_version, policy = (await rows(
                    "SELECT hybrid_version(), sqlite_version(), hybrid_busy_config()"))[0]
                got = {}
                for row in await rows(METRICS_SQL, (os.path.realpath(db),)):
                    got[row[0]] = dict(zip(METRIC_COLUMNS, row))
                return {"hybrid_version": version, "sqlite_version": sqlite_version,
                        "policy": json.loads(policy), "metrics": got}
        finally:
            await engine.dispose()

    say("result " + json.dumps(asyncio.run(main())))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--so"]
    so = "--so" in sys.argv[1:]
    if len(args) != 3:
        raise SystemExit(__doc__)
    host, role, db = args
    if host == "sqlalchemy":
        run_alchemy(role, db)
    elif host == "sqlalchemy-async":
        run_alchemy_async(role, db)
    else:
        run_dbapi(host, role, db, so)


if __name__ == "__main__":
    main()
