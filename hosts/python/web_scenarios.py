"""Single-process scenarios of the web-app integration, for hosts/python/test_hosts.py.

    web_scenarios.py listener-order DIR    attach() and the app's PRAGMA busy_timeout listener, both orders
    web_scenarios.py timeout DIR           the app's timeout is the deadline; a policy overrides it
    web_scenarios.py read-then-write DIR   deferred fails at once, writer() waits, retry re-runs
    web_scenarios.py bad-input DIR         the mistakes attach()/writer()/retry refuse or warn about
    web_scenarios.py checkout-cost DIR     what the re-assertion costs per checkout (printed, not asserted)

Each prints one line "result <json>"; the assertions live in test_hosts.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
import warnings
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool  # explicit: SQLAlchemy 1.4 uses NullPool for files

import sqlite_hybrid
from sqlite_hybrid import is_lock_error, sqlite_error_code

PROCESS_ROW = (
    "SELECT connections, handler_active FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?"
)


def result(value: dict) -> None:
    print("result " + json.dumps(value), flush=True)


def new_db(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("INSERT OR IGNORE INTO t(id, n) VALUES (1, 0)")
    conn.commit()
    conn.close()
    return os.path.realpath(path)


def app_listener(engine: Any, ms: int) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={ms}")
        cursor.close()


def pool_state(engine: Any, path: str, n: int = 4) -> dict:
    from sqlalchemy import text

    conns = [engine.connect() for _ in range(n)]
    try:
        timeouts = [json.loads(c.execute(text("SELECT hybrid_busy_config()")).scalar())["timeout_ms"]
                    for c in conns]
        pragma = [c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in conns]
        row = list(conns[0].exec_driver_sql(PROCESS_ROW, (path,)).one())
    finally:
        for c in conns:
            c.close()
    return {"timeouts": timeouts, "pragma": pragma, "process_row": row}


async def async_pool_state(engine: Any, path: str, n: int = 4) -> dict:
    from sqlalchemy import text

    conns = [await engine.connect() for _ in range(n)]
    try:
        timeouts = [json.loads((await c.execute(text("SELECT hybrid_busy_config()"))).scalar())["timeout_ms"]
                    for c in conns]
        row = list((await conns[0].exec_driver_sql(PROCESS_ROW, (path,))).one())
    finally:
        for c in conns:
            await c.close()
    return {"timeouts": timeouts, "process_row": row}


def listener_order(directory: str) -> None:
    """The app's PRAGMA busy_timeout=500 listener registered before and after attach()."""
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    from sqlite_hybrid.sqlalchemy import attach

    out = {}
    for order in ("app-first", "attach-first"):
        path = new_db(directory, f"order-{order}.db")
        engine = create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=4, max_overflow=0)
        if order == "app-first":
            app_listener(engine, 500)
            attach(engine)
        else:
            attach(engine)
            app_listener(engine, 500)
        out[order] = pool_state(engine, path)
        out[order + "-again"] = pool_state(engine, path)  # checked in and out again
        engine.dispose()

        apath = new_db(directory, f"order-async-{order}.db")
        aengine = create_async_engine(f"sqlite+aiosqlite:///{apath}", poolclass=AsyncAdaptedQueuePool,
                                     pool_size=4, max_overflow=0)
        if order == "app-first":
            app_listener(aengine.sync_engine, 500)
            attach(aengine)
        else:
            attach(aengine)
            app_listener(aengine.sync_engine, 500)

        async def run() -> dict:
            try:
                return await async_pool_state(aengine, apath)
            finally:
                await aengine.dispose()

        out["async-" + order] = asyncio.run(run())
    result(out)


def timeout(directory: str) -> None:
    """Whose deadline: Python's default, connect_args, a pragma, or attach(timeout_ms=...)."""
    from sqlalchemy import create_engine

    from sqlite_hybrid.sqlalchemy import attach

    out = {}
    cases = {
        "python-default": ({}, None, {}),
        "connect_args": ({"connect_args": {"timeout": 2}}, None, {}),
        "pragma": ({}, 750, {}),
        "policy-wins": ({"connect_args": {"timeout": 2}}, 750, {"timeout_ms": 1234}),
    }
    for name, (kwargs, pragma_ms, policy) in cases.items():
        path = new_db(directory, f"timeout-{name}.db")
        engine = create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=2, max_overflow=0, **kwargs)
        attach(engine, **policy)
        if pragma_ms is not None:
            app_listener(engine, pragma_ms)
        out[name] = pool_state(engine, path, 2)
        engine.dispose()

    # The deadline in action: the app asked for 500 ms; a holder keeps the lock 1.5 s.
    path = new_db(directory, "timeout-deadline.db")
    engine = create_engine(f"sqlite:///{path}")
    attach(engine)
    app_listener(engine, 500)
    holder = sqlite_hybrid.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE t SET n = n + 1")
    release = threading.Timer(1.5, lambda: None)
    release.start()
    started = time.monotonic()
    error = None
    from sqlite_hybrid.sqlalchemy import writer

    try:
        with writer(engine).begin() as conn:
            conn.exec_driver_sql("UPDATE t SET n = n + 10")
    except Exception as exc:  # the deadline passed
        error = exc
    waited = time.monotonic() - started
    release.join()
    holder.execute("COMMIT")
    out["deadline"] = {
        "error_code": None if error is None else sqlite_error_code(error),
        "is_lock_error": error is not None and is_lock_error(error),
        "waited_s": waited,
    }
    with engine.connect() as conn:
        metrics = dict(conn.exec_driver_sql(
            "SELECT gave_up, busy_events FROM hybrid_lock_metrics WHERE scope = 'process' AND db = ?",
            (path,)).mappings().one())
    out["deadline"]["metrics"] = metrics
    holder.close()
    engine.dispose()
    result(out)


def read_then_write(directory: str) -> None:
    """SELECT then UPDATE in one transaction while another connection writes."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
    from sqlalchemy.orm import Session

    from sqlite_hybrid.sqlalchemy import attach, writer

    path = new_db(directory, "read-then-write.db")
    engine = create_engine(f"sqlite:///{path}")
    attach(engine, begin="deferred")
    other = sqlite_hybrid.connect(path, isolation_level=None)
    out: dict = {}

    # 1. A deferred transaction reads, another connection commits, then it writes.
    try:
        with Session(engine) as session, session.begin():
            n = session.execute(text("SELECT n FROM t WHERE id = 1")).scalar()
            other.execute("UPDATE t SET n = n + 100 WHERE id = 1")
            session.execute(text("UPDATE t SET n = :n WHERE id = 1"), {"n": n + 1})
        out["deferred"] = "committed"
    except Exception as error:
        out["deferred"] = {"code": sqlite_error_code(error), "is_lock_error": is_lock_error(error)}

    # 2. The same in a writer() session while another connection holds the lock 300 ms.
    def hold(ms: float) -> threading.Thread:
        ready = threading.Event()

        def run() -> None:
            conn = sqlite_hybrid.connect(path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE t SET n = n + 1000 WHERE id = 1")
            ready.set()
            time.sleep(ms / 1000)
            conn.execute("COMMIT")
            conn.close()

        thread = threading.Thread(target=run)
        thread.start()
        ready.wait()
        return thread

    before = other.execute("SELECT n FROM t WHERE id = 1").fetchone()[0]
    holder = hold(300)
    with Session(writer(engine)) as session, session.begin():
        n = session.execute(text("SELECT n FROM t WHERE id = 1")).scalar()
        session.execute(text("UPDATE t SET n = :n WHERE id = 1"), {"n": n + 1})
    holder.join()
    out["writer_sync"] = other.execute("SELECT n FROM t WHERE id = 1").fetchone()[0] - before

    # 3. The same with aiosqlite, four concurrent read-then-write tasks against a holder.
    aengine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    attach(aengine)

    async def run_async() -> int:
        wengine = writer(aengine)

        async def bump() -> None:
            async with AsyncSession(wengine) as session, session.begin():
                n = (await session.execute(text("SELECT n FROM t WHERE id = 1"))).scalar()
                await asyncio.sleep(0.01)
                await session.execute(text("UPDATE t SET n = :n WHERE id = 1"), {"n": n + 1})

        before = other.execute("SELECT n FROM t WHERE id = 1").fetchone()[0]
        thread = hold(300)
        await asyncio.gather(*(bump() for _ in range(4)))
        await asyncio.to_thread(thread.join)
        await aengine.dispose()
        return other.execute("SELECT n FROM t WHERE id = 1").fetchone()[0] - before

    out["writer_async"] = asyncio.run(run_async())

    # 4. The deferred case under sqlite_hybrid.retry: the first attempt meets a stale snapshot.
    attempts = []

    @sqlite_hybrid.retry(deadline=10.0)
    def bump_deferred(session: Session) -> None:
        with session.begin():
            n = session.execute(text("SELECT n FROM t WHERE id = 1")).scalar()
            attempts.append(n)
            if len(attempts) == 1:
                other.execute("UPDATE t SET n = n + 100 WHERE id = 1")
            session.execute(text("UPDATE t SET n = :n WHERE id = 1"), {"n": n + 1})

    before_stats = sqlite_hybrid.retry_stats()
    with Session(engine) as session:
        bump_deferred(session)
    after_stats = sqlite_hybrid.retry_stats()
    has_note = other.execute(
        "SELECT count(*) FROM pragma_function_list WHERE name = 'hybrid_note_retry'").fetchone()[0] == 1
    app_retries = None
    if has_note:
        app_retries = other.execute(
            "SELECT max(app_retries) FROM hybrid_lock_metrics WHERE db = ?", (path,)).fetchone()[0]
    out["retry"] = {
        "attempts": len(attempts),
        "retries": after_stats["retries"] - before_stats["retries"],
        "noted": after_stats["noted"] - before_stats["noted"],
        "has_note_function": has_note,
        "app_retries": app_retries,
        "final_is_last_read_plus_one": other.execute("SELECT n FROM t WHERE id = 1").fetchone()[0] == attempts[-1] + 1,
    }

    # 5. A non-lock error is never retried.
    calls = []

    @sqlite_hybrid.retry(deadline=10.0)
    def broken(session: Session) -> None:
        calls.append(1)
        with session.begin():
            session.execute(text("SELECT * FROM no_such_table"))

    try:
        with Session(engine) as session:
            broken(session)
        out["non_lock"] = "no error"
    except Exception as error:
        out["non_lock"] = {"calls": len(calls), "type": type(error).__name__, "is_lock_error": is_lock_error(error)}

    # 6. The deadline: LockTimeout, chained, typed.
    blocker = sqlite_hybrid.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    @sqlite_hybrid.retry(deadline=0.3)
    def doomed(session: Session) -> None:
        with session.begin():
            session.execute(text("SELECT n FROM t"))
            session.execute(text("UPDATE t SET n = n + 1"))

    try:
        with Session(engine) as session:
            doomed(session)
        out["lock_timeout"] = "no error"
    except sqlite_hybrid.LockTimeout as error:
        out["lock_timeout"] = {
            "attempts": error.attempts, "is_operational": isinstance(error, sqlite3.OperationalError),
            "cause": type(error.__cause__).__name__, "is_lock_error": is_lock_error(error),
        }
    blocker.execute("ROLLBACK")
    blocker.close()
    other.close()
    engine.dispose()
    result(out)


def bad_input(directory: str) -> None:
    import types

    from sqlalchemy import create_engine

    from sqlite_hybrid.sqlalchemy import SqliteHybridWarning, attach, detach, writer

    path = new_db(directory, "bad-input.db")
    out: dict = {}

    def error_of(fn: Any) -> Any:
        try:
            fn()
            return None
        except Exception as error:
            return f"{type(error).__name__}: {error}"

    engine = create_engine(f"sqlite:///{path}")
    out["unknown_key"] = error_of(lambda: attach(engine, timeout=5))
    out["bad_begin"] = error_of(lambda: attach(engine, begin="exclusive-ish"))
    out["writer_unattached"] = error_of(lambda: writer(engine))
    out["not_an_engine"] = error_of(lambda: attach(sqlite3.connect(":memory:")))
    # A PostgreSQL engine without its driver: create_engine() connects lazily,
    # so a stand-in DBAPI module is enough to build one.
    fake_dbapi = types.SimpleNamespace(paramstyle="format", __version__="1.30.0", Error=Exception)
    try:
        pg = create_engine("postgresql+pg8000://user@localhost/app", module=fake_dbapi)
        out["other_database"] = error_of(lambda: attach(pg))
    except Exception as error:  # this SQLAlchemy could not build the engine without the driver
        out["other_database"] = f"skipped: {error}"
    attach(engine)
    out["twice"] = error_of(lambda: attach(engine))
    detach(engine)
    out["reattach_after_detach"] = error_of(lambda: attach(engine))
    detach(engine)

    # attach() after the pool opened connections: a warning, and the connection loaded at checkout.
    late = create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=2, max_overflow=0)
    with late.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attach(late)
    out["late_warning"] = [f"{w.category.__name__}: {w.message}" for w in caught
                           if issubclass(w.category, SqliteHybridWarning)]
    with late.connect() as conn:
        out["late_loaded"] = conn.exec_driver_sql("SELECT hybrid_version()").scalar()
        out["late_row"] = list(conn.exec_driver_sql(PROCESS_ROW, (path,)).one())
    late.dispose()
    out["retry_bad_args"] = error_of(lambda: sqlite_hybrid.retry(deadline=-1))
    result(out)


def checkout_cost(directory: str) -> None:
    """Checkout + a trivial statement, with and without attach(); microseconds per checkout."""
    from sqlalchemy import create_engine

    from sqlite_hybrid.sqlalchemy import attach

    path = new_db(directory, "checkout-cost.db")
    engines = {"plain": create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=1, max_overflow=0),
               "attached": create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=1, max_overflow=0)}
    attach(engines["attached"])
    figures: dict = {label: [] for label in engines}
    for _ in range(5):  # rounds, alternating, so load on the machine hits both alike
        for label, engine in engines.items():
            n = 1000
            started = time.perf_counter()
            for _ in range(n):
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1").scalar()
            figures[label].append((time.perf_counter() - started) / n * 1e6)
    best = {label: min(values) for label, values in figures.items()}
    result({"us_per_checkout": figures, "best": best, "cost_us": best["attached"] - best["plain"]})


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    {
        "listener-order": listener_order,
        "timeout": timeout,
        "read-then-write": read_then_write,
        "bad-input": bad_input,
        "checkout-cost": checkout_cost,
    }[sys.argv[1]](sys.argv[2])
