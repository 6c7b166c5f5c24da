"""The FastAPI app of the "zero database is locked" scenario, for hosts/ and the benchmark.

FastAPI on SQLAlchemy's async engine with aiosqlite, served by uvicorn with
several worker processes, plus background writer processes and a library
scan (hundreds of rows in one transaction), all on one SQLite file in WAL mode.

    uvicorn webapp:app --app-dir hosts/python --workers 4      (the API)
    python webapp.py writer ID SECONDS                         (a background writer)
    python webapp.py scan ROWS PERIOD SECONDS                  (the library scan)
    python webapp.py init                                      (creates the schema)

Environment: WEBAPP_DB (the file), WEBAPP_SCAN_ROW_MS (time spent per scanned row inside
the scan's transaction, default 0), WEBAPP_MODE, one of
  plain500    their pragmas: busy_timeout=500, no extension
  plain5000   busy_timeout=5000, no extension
  seedretry   busy_timeout=500 and a message-matching retry decorator (3 tries, 0.5-5 s)
  hybrid      sqlite-hybrid as python/README.md says: attach(engine, timeout_ms=5000),
              writes in writer() sessions (BEGIN IMMEDIATE) under sqlite_hybrid.retry,
              reads on the plain engine; the app's own busy_timeout=500 listener kept
  hybrid-buffered    the API as in hybrid; the background writers enqueue into a
              sqlite_hybrid.WriteBuffer (extension loaded, defaults: flush every 1 s,
              <= 20 ms in the lock per transaction) and count a write once its ticket
              says committed; the scan reads the tags of a chunk (WEBAPP_SCAN_CHUNK
              rows, default 50) outside any transaction, then writes the chunk with
              sqlite_hybrid.insert_many
  plain5000-chunked  the same app on plain SQLite, busy_timeout=5000, no extension:
              API writes start with BEGIN IMMEDIATE (SQLAlchemy's event recipe), no
              retry; the background writers batch by hand what the buffer batches
              (progress rows coalesced by id, log rows appended) and write the batch
              every 1 s in one BEGIN IMMEDIATE transaction (a failed batch is kept and
              written with the next); the scan chunked exactly as in hybrid-buffered,
              each chunk one BEGIN IMMEDIATE ... executemany ... COMMIT. Every
              BEGIN IMMEDIATE is timed client-side and appended to WEBAPP_DB.waits.PID
              (the lock waits the extension's hybrid_lock_metrics has for the others)

Every write endpoint reads and then writes in one transaction (the case that
fails at once with SQLITE_BUSY* in a deferred transaction). An acknowledged
write is a 200 response carrying the id of the row it inserted; a writer or
the scan prints "acked N" lines for what it committed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import sqlite3
import sys
import time
from typing import Any, Callable

MODE = os.environ.get("WEBAPP_MODE", "hybrid")
DB = os.environ.get("WEBAPP_DB", "webapp.db")
MODES = ("plain500", "plain5000", "seedretry", "hybrid", "hybrid-buffered", "plain5000-chunked")
if MODE not in MODES:
    raise SystemExit(f"WEBAPP_MODE must be one of {', '.join(MODES)}, got {MODE!r}")
HYBRID = MODE in ("hybrid", "hybrid-buffered")
APP_TIMEOUT_MS = 5000 if MODE in ("plain5000", "plain5000-chunked") else 500
# Rows per scan chunk (hybrid-buffered, plain5000-chunked) and the background writers'
# batch period (the WriteBuffer's flush_interval default, by hand in plain5000-chunked).
SCAN_CHUNK = int(os.environ.get("WEBAPP_SCAN_CHUNK", "50"))
BATCH_PERIOD_S = 1.0

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tracks(id INTEGER PRIMARY KEY, title TEXT NOT NULL, plays INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS plays(id INTEGER PRIMARY KEY, track INTEGER NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS downloads(id INTEGER PRIMARY KEY, progress INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bg_log(id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, seq INTEGER NOT NULL)",
]


def init() -> None:
    conn = sqlite3.connect(DB)
    conn.execute("PRAGMA journal_mode=WAL")
    for sql in SCHEMA:
        conn.execute(sql)
    with conn:
        conn.executemany("INSERT OR IGNORE INTO tracks(id, title) VALUES (?, ?)",
                         [(i, f"track {i}") for i in range(1, 201)])
        conn.executemany("INSERT OR IGNORE INTO downloads(id, progress) VALUES (?, 0)",
                         [(i,) for i in range(1, 17)])
    conn.close()


def seed_retry(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The original plan's decorator: 3 tries, 0.5-5 s pauses, matched on the message."""

    def locked(error: BaseException) -> bool:
        return "database is locked" in str(error)

    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(3):
                try:
                    return await fn(*args, **kwargs)
                except Exception as error:
                    if attempt == 2 or not locked(error):
                        raise
                    await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                if attempt == 2 or not locked(error):
                    raise
                time.sleep(min(5.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0))

    return wrapper


def unit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How each mode wraps a unit of work."""
    if MODE == "seedretry":
        return seed_retry(fn)
    if HYBRID:
        import sqlite_hybrid

        return sqlite_hybrid.retry(deadline=10.0)(fn)
    return fn


_waits_file: Any = None


def record_wait(started: float) -> None:
    """plain5000-chunked: one line per BEGIN IMMEDIATE, its duration in ms (time.perf_counter)."""
    global _waits_file
    ms = (time.perf_counter() - started) * 1000.0
    if _waits_file is None:
        _waits_file = open(f"{DB}.waits.{os.getpid()}", "a", buffering=1)
    _waits_file.write(f"{ms:.3f}\n")


def timed_begin_immediate(conn: Any) -> None:
    """BEGIN IMMEDIATE on a plain sqlite3 connection (isolation_level=None), timed even when it fails."""
    started = time.perf_counter()
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        record_wait(started)


def plain_immediate(sync_engine: Any) -> None:
    """SQLAlchemy's documented pysqlite/aiosqlite recipe: the driver emits no BEGIN, the
    "begin" event emits BEGIN IMMEDIATE (timed). For plain5000-chunked's write engine."""
    from sqlalchemy import event

    @event.listens_for(sync_engine, "connect")
    def no_driver_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(sync_engine, "begin")
    def begin(conn: Any) -> None:
        # Timed on aiosqlite's own thread, around the sqlite3 call alone, so the figure
        # is the wait for the lock, not the hops between the event loop and that thread.
        async def run(driver: Any) -> None:
            await driver._execute(timed_begin_immediate, driver._conn)

        conn.connection.dbapi_connection.run_async(run)


def their_pragmas(engine: Any) -> None:
    """The app's own connect listener (registered after attach(): the order that used to undo it)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def pragmas(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={APP_TIMEOUT_MS}")
        cursor.close()


# --- the API ----------------------------------------------------------------------

app: Any = None
if __name__ != "__main__":
    from fastapi import FastAPI, HTTPException
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{DB}", pool_size=5, max_overflow=5)
    write_engine = engine
    if HYBRID:
        from sqlite_hybrid.sqlalchemy import attach, writer

        attach(engine, timeout_ms=5000)
        write_engine = writer(engine)
    elif MODE == "plain5000-chunked":
        write_engine = create_async_engine(f"sqlite+aiosqlite:///{DB}", pool_size=5, max_overflow=5)
        plain_immediate(write_engine.sync_engine)
        their_pragmas(write_engine.sync_engine)
    their_pragmas(engine.sync_engine)
    ReadSession = async_sessionmaker(engine, expire_on_commit=False)
    WriteSession = async_sessionmaker(write_engine, expire_on_commit=False)
    app = FastAPI()

    @unit
    async def play(track: int) -> int:
        async with WriteSession() as session, session.begin():
            plays = (await session.execute(text("SELECT plays FROM tracks WHERE id = :i"), {"i": track})).scalar()
            if plays is None:
                raise LookupError(track)
            await session.execute(text("UPDATE tracks SET plays = :p WHERE id = :i"), {"p": plays + 1, "i": track})
            result = await session.execute(text("INSERT INTO plays(track, at) VALUES (:t, :a) RETURNING id"),
                                           {"t": track, "a": time.time()})
            return int(result.scalar())

    @app.post("/tracks/{track}/play")
    async def play_endpoint(track: int) -> dict:
        from sqlite_hybrid._errors import is_lock_error

        try:
            return {"play": await play(track)}
        except LookupError:
            raise HTTPException(404, "no such track")
        except Exception as error:
            if is_lock_error(error):
                raise HTTPException(503, f"lock error: {error}")
            raise

    @app.get("/tracks")
    async def tracks(limit: int = 20) -> dict:
        async with ReadSession() as session:
            rows = (await session.execute(
                text("SELECT id, title, plays FROM tracks ORDER BY plays DESC, id LIMIT :n"), {"n": limit})).all()
        return {"tracks": [list(r) for r in rows]}

    @app.get("/metrics")
    async def metrics() -> dict:
        if not HYBRID:
            return {}
        async with ReadSession() as session:
            result = await session.execute(text("SELECT * FROM hybrid_lock_metrics WHERE scope = 'file'"))
            row = result.mappings().first()
        return dict(row) if row else {}


# --- background writers and the scan (sync SQLAlchemy, separate processes) ----------------


def _sync_engines() -> tuple:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{DB}", pool_size=2)
    write_engine = engine
    if HYBRID:
        from sqlite_hybrid.sqlalchemy import attach, writer

        attach(engine, timeout_ms=5000)
        write_engine = writer(engine)
    their_pragmas(engine)
    return engine, write_engine


def _connect(hybrid: bool) -> sqlite3.Connection:
    """A plain sqlite3 connection with the app's pragmas (and the extension if hybrid)."""
    conn = sqlite3.connect(DB, timeout=APP_TIMEOUT_MS / 1000.0, isolation_level=None)
    if hybrid:
        import sqlite_hybrid

        sqlite_hybrid.load(conn, timeout_ms=5000)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def background_writer_chunked(worker: int, seconds: float) -> None:
    """hybrid-buffered: through a WriteBuffer; plain5000-chunked: the same batching by hand."""
    from collections import deque

    read = _connect(False)  # reads only: WAL readers never wait for the lock
    buffered = MODE == "hybrid-buffered"
    buffer: Any = None
    conn: Any = None
    if buffered:
        import sqlite_hybrid

        buffer = sqlite_hybrid.WriteBuffer(connect=lambda: _connect(True))
    else:
        conn = _connect(False)
    tickets: Any = deque()  # (enqueued at, ticket of the bg_log insert)
    progress_batch: dict = {}
    log_batch: list = []  # (worker, seq, enqueued at)
    waits: list = []
    acked = errors = seq = 0
    next_flush = time.monotonic() + BATCH_PERIOD_S

    def write_batch() -> None:
        nonlocal acked, errors
        if not log_batch and not progress_batch:
            return
        try:
            timed_begin_immediate(conn)
        except sqlite3.OperationalError as error:
            if not is_lock_error(error):
                raise
            errors += 1  # the batch is kept and written with the next one
            return
        conn.executemany("INSERT INTO downloads(id, progress) VALUES (?, ?) "
                         "ON CONFLICT(id) DO UPDATE SET progress = excluded.progress",
                         list(progress_batch.items()))
        conn.executemany("INSERT INTO bg_log(worker, seq) VALUES (?, ?)", [(w, s) for w, s, _ in log_batch])
        conn.execute("COMMIT")
        now = time.monotonic()
        waits.extend((now - at) * 1000 for _, _, at in log_batch)
        acked += len(log_batch)
        progress_batch.clear()
        log_batch.clear()

    def tally(at: float, ticket: Any, now: float) -> None:
        # Acknowledged = the ticket says committed.
        nonlocal acked, errors
        if ticket.status == "committed":
            acked += 1
            waits.append((now - at) * 1000)
        else:
            errors += 1

    from sqlite_hybrid._errors import is_lock_error

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seq += 1
        download = 1 + (worker * 4 + seq) % 16
        progress = read.execute("SELECT progress FROM downloads WHERE id = ?", (download,)).fetchone()[0]
        now = time.monotonic()
        if buffered:
            buffer.upsert("downloads", {"id": download, "progress": (progress + 1) % 100}, key="id")
            tickets.append((now, buffer.insert("bg_log", {"worker": worker, "seq": seq})))
            # Polled: waiting would flush at once.
            while tickets and tickets[0][1].done():
                tally(*tickets.popleft(), now)
        else:
            progress_batch[download] = (progress + 1) % 100
            log_batch.append((worker, seq, now))
            if now >= next_flush:
                write_batch()
                next_flush = now + BATCH_PERIOD_S
        time.sleep(random.uniform(0.01, 0.03))
    if buffered:
        try:
            buffer.close()
        except sqlite_hybrid.FlushFailed:
            pass  # the failed entries' tickets say so below
        now = time.monotonic()
        for at, ticket in tickets:
            tally(at, ticket, now)
    else:
        for _ in range(20):
            if not log_batch:
                break
            write_batch()
        errors += len(log_batch)  # never written: counted, not acknowledged
    print("result " + json.dumps({"worker": worker, "acked": acked, "errors": errors, "tried": seq,
                                  "ms": waits}), flush=True)


def background_writer(worker: int, seconds: float) -> None:
    if MODE in ("hybrid-buffered", "plain5000-chunked"):
        return background_writer_chunked(worker, seconds)
    from sqlalchemy import text

    _, write_engine = _sync_engines()

    @unit
    def step(seq: int) -> None:
        with write_engine.begin() as conn:
            download = 1 + (worker * 4 + seq) % 16
            progress = conn.execute(text("SELECT progress FROM downloads WHERE id = :i"), {"i": download}).scalar()
            conn.execute(text("UPDATE downloads SET progress = :p WHERE id = :i"),
                         {"p": (progress + 1) % 100, "i": download})
            conn.execute(text("INSERT INTO bg_log(worker, seq) VALUES (:w, :s)"), {"w": worker, "s": seq})

    from sqlite_hybrid._errors import is_lock_error

    end = time.monotonic() + seconds
    seq = acked = errors = 0
    waits = []
    while time.monotonic() < end:
        seq += 1
        started = time.monotonic()
        try:
            step(seq)
            acked += 1
            waits.append((time.monotonic() - started) * 1000)
        except Exception as error:
            if not is_lock_error(error):
                raise
            errors += 1
        time.sleep(random.uniform(0.01, 0.03))
    print("result " + json.dumps({"worker": worker, "acked": acked, "errors": errors, "tried": seq,
                                  "ms": waits}), flush=True)


def scan_chunked(rows: int, period: float, seconds: float) -> None:
    """Tags read for a chunk outside any transaction, then the chunk written:
    sqlite_hybrid.insert_many (hybrid-buffered) or BEGIN IMMEDIATE + executemany (plain)."""
    import itertools

    import sqlite_hybrid
    from sqlite_hybrid._errors import is_lock_error

    buffered = MODE == "hybrid-buffered"
    conn = _connect(buffered)
    row_s = float(os.environ.get("WEBAPP_SCAN_ROW_MS", "0")) / 1000.0

    def tagged(batch: int, known: int) -> Any:
        for i in range(rows):
            if row_s:
                time.sleep(row_s)  # reading a file's tags: no transaction open
            yield {"title": f"scan {batch} #{i} of {known}"}

    end = time.monotonic() + seconds
    batch = acked = errors = committed = chunks = 0
    while time.monotonic() < end:
        batch += 1
        known = conn.execute("SELECT count(*) FROM tracks").fetchone()[0]
        source = tagged(batch, known)
        if buffered:
            try:
                report = sqlite_hybrid.insert_many(conn, "tracks", source, chunk_rows=SCAN_CHUNK)
                committed += report.rows
                chunks += report.chunks
                acked += 1
            except sqlite_hybrid.ImportFailed as failed:
                if not is_lock_error(failed.error) and not isinstance(failed.error, sqlite_hybrid.LockTimeout):
                    raise
                committed += failed.committed_rows
                chunks += failed.committed_chunks
                errors += 1
        else:
            ok = True
            while True:
                chunk = [(r["title"],) for r in itertools.islice(source, SCAN_CHUNK)]
                if not chunk:
                    break
                try:
                    timed_begin_immediate(conn)
                except sqlite3.OperationalError as error:
                    if not is_lock_error(error):
                        raise
                    ok = False
                    break
                conn.executemany("INSERT INTO tracks(title) VALUES (?)", chunk)
                conn.execute("COMMIT")
                committed += len(chunk)
                chunks += 1
            if ok:
                acked += 1
            else:
                errors += 1
        time.sleep(period)
    print("result " + json.dumps({"scans": batch, "acked": acked, "errors": errors, "rows": rows,
                                  "rows_committed": committed, "chunks": chunks}), flush=True)


def scan(rows: int, period: float, seconds: float) -> None:
    if MODE in ("hybrid-buffered", "plain5000-chunked"):
        return scan_chunked(rows, period, seconds)
    from sqlalchemy import text

    _, write_engine = _sync_engines()

    # Reading each file's tags inside the transaction is what makes a real scan hold
    # the write lock long (about 0.7 s in the app of the issue).
    row_s = float(os.environ.get("WEBAPP_SCAN_ROW_MS", "0")) / 1000.0

    @unit
    def one_scan(batch: int) -> None:
        with write_engine.begin() as conn:
            known = conn.execute(text("SELECT count(*) FROM tracks")).scalar()
            for i in range(rows):
                if row_s:
                    time.sleep(row_s)
                conn.execute(text("INSERT INTO tracks(title) VALUES (:t)"), {"t": f"scan {batch} #{i} of {known}"})

    from sqlite_hybrid._errors import is_lock_error

    end = time.monotonic() + seconds
    batch = acked = errors = 0
    while time.monotonic() < end:
        batch += 1
        try:
            one_scan(batch)
            acked += 1
        except Exception as error:
            if not is_lock_error(error):
                raise
            errors += 1
        time.sleep(period)
    print("result " + json.dumps({"scans": batch, "acked": acked, "errors": errors, "rows": rows}), flush=True)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "init":
        init()
    elif command == "writer":
        background_writer(int(sys.argv[2]), float(sys.argv[3]))
    elif command == "scan":
        scan(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
