"""The log database for Python: a ``logging.Handler`` that writes records to a
separate SQLite file in batches from one background thread, so logging never
competes with the app's writes for the main database's lock.

The table is the Rust client's log database (``client/src/logdb/schema.rs``),
column for column, so the same queries work on both::

    entries(id INTEGER PRIMARY KEY, ts TEXT NOT NULL, level TEXT NOT NULL,
            target TEXT NOT NULL, message TEXT NOT NULL, fields TEXT,
            module TEXT, file TEXT, line INTEGER, thread TEXT)
    writer_stats(id = 1, written, batches, dropped, failed, deleted, last_flush_at, pid)

* ``ts``: ISO-8601 UTC with milliseconds (``2026-12-03T14:07:03.120Z``).
* ``level``: ``ERROR``, ``WARN``, ``INFO``, ``DEBUG``, ``TRACE`` (the Rust
  names): ``CRITICAL`` is stored as ``ERROR`` and ``WARNING`` as ``WARN``;
  levels between are rounded down; a name that differs from the stored one
  (``CRITICAL``, custom levels) is kept in ``fields`` as ``levelname``.
* ``target``: the logger's name; ``module``, ``file``, ``line``, ``thread``:
  ``record.module``, ``record.pathname``, ``record.lineno``, ``record.threadName``.
* ``fields``: a JSON object of the ``extra=`` fields (values JSON cannot hold
  are stored as their ``repr``), plus ``exc_info`` / ``stack_info`` text.

**Never blocks the caller.** :meth:`LogHandler.emit` formats the message
(``record.getMessage()``, so later changes to the arguments do not show) and
appends to a bounded ``collections.deque`` (thread-safe, no lock). When
``capacity`` records are queued the record is dropped and counted in
``dropped``, never waited for.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Union

from ._errors import is_lock_error
from ._tx import begin_immediate

__all__ = ["LogHandler", "LogStats", "query_logs"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    level TEXT NOT NULL,
    target TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT,
    module TEXT,
    file TEXT,
    line INTEGER,
    thread TEXT
);
CREATE INDEX IF NOT EXISTS entries_ts ON entries(ts);
CREATE INDEX IF NOT EXISTS entries_level_ts ON entries(level, ts);
CREATE TABLE IF NOT EXISTS writer_stats(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    written INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    last_flush_at TEXT,
    pid INTEGER NOT NULL
);
"""
_ROWS_PER_INSERT = 10  # rows formatted (holding the GIL) between two INSERTs (which release it)
_INSERT_ONE = "INSERT INTO entries(ts, level, target, message, fields, module, file, line, thread) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_MANY = _INSERT_ONE + ", (?, ?, ?, ?, ?, ?, ?, ?, ?)" * (_ROWS_PER_INSERT - 1)
_UPSERT_STATS = (
    "INSERT INTO writer_stats(id, written, batches, dropped, failed, deleted, last_flush_at, pid) "
    "VALUES (1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET written = excluded.written, "
    "batches = excluded.batches, dropped = excluded.dropped, failed = excluded.failed, "
    "deleted = excluded.deleted, last_flush_at = excluded.last_flush_at, pid = excluded.pid"
)
# The attributes every LogRecord has: anything else came from extra=.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_WRITE_ATTEMPTS = 3


_LEVELS = {logging.CRITICAL: "ERROR", logging.ERROR: "ERROR", logging.WARNING: "WARN", logging.INFO: "INFO", logging.DEBUG: "DEBUG"}


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARN"
    if levelno >= logging.INFO:
        return "INFO"
    if levelno >= logging.DEBUG:
        return "DEBUG"
    return "TRACE"


def iso8601_utc(unix_s: float) -> str:
    """``unix_s`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (sorts as text; SQLite's date functions read it)."""
    whole = int(unix_s)
    millis = int((unix_s - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


@dataclass
class LogStats:
    """Counters of a :class:`LogHandler`."""

    #: Records written.
    written: int = 0
    #: Transactions that wrote them.
    batches: int = 0
    #: Records dropped because the queue was full or the handler closed.
    dropped: int = 0
    #: Records lost because their batch could not be written (after retries).
    failed: int = 0
    #: Entries deleted by retention.
    deleted: int = 0
    #: Records waiting now.
    queue_depth: int = 0
    last_flush_at: Optional[str] = None


class LogHandler(logging.Handler):
    """A ``logging.Handler`` writing to its own SQLite file (see the module docs).

    ``path`` is the log file (created, WAL mode). Defaults as the Rust client's
    ``LogOptions``: ``capacity`` 10,000 queued records, a transaction once
    ``batch_size`` (50) records wait or every ``flush_interval`` (2 s), of up to
    ``max_batch_size`` (1,000) when the queue is backed up; ``retention`` (7
    days, in seconds; ``None`` keeps everything) checked every
    ``retention_interval`` (60 s), deleting ``retention_chunk`` (500) rows per
    short transaction. ``connect`` replaces ``sqlite3.connect(path)`` (for a
    connection factory of the app's own ``sqlite3``).

    >>> import logging, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "app-logs.db")
    >>> handler = LogHandler(path)
    >>> log = logging.getLogger("doc.example"); log.addHandler(handler); log.setLevel(logging.INFO)
    >>> log.warning("disk at %d%%", 91, extra={"mount": "/var"})
    >>> handler.flush()
    >>> [(e["level"], e["message"], e["fields"]) for e in query_logs(path, target="doc.example")]
    [('WARN', 'disk at 91%', {'mount': '/var'})]
    >>> log.removeHandler(handler); handler.close()
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        level: int = logging.NOTSET,
        *,
        capacity: int = 10_000,
        batch_size: int = 50,
        max_batch_size: int = 1_000,
        flush_interval: float = 2.0,
        retention: Optional[float] = 7 * 86_400.0,
        retention_interval: float = 60.0,
        retention_chunk: int = 500,
        connect: Optional[Callable[[], sqlite3.Connection]] = None,
    ) -> None:
        super().__init__(level)
        for name, value in (("capacity", capacity), ("batch_size", batch_size), ("retention_chunk", retention_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not flush_interval > 0 or not retention_interval > 0:
            raise ValueError("flush_interval and retention_interval must be positive")
        self.path = os.fspath(path)
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_batch_size = max(max_batch_size, batch_size)
        self.flush_interval = float(flush_interval)
        self.retention = retention
        self.retention_interval = float(retention_interval)
        self.retention_chunk = retention_chunk
        self._connect = connect or (lambda: sqlite3.connect(self.path, timeout=5.0, isolation_level=None))
        self._queue: Deque[tuple] = deque()
        self._signal = threading.Event()
        self._control: Deque[tuple] = deque()
        self._dropped = 0  # += from emit: a lost update under a race only under-counts by one
        self._drop_lock = threading.Lock()
        self._written = 0
        self._batches = 0
        self._failed = 0
        self._deleted = 0
        self._last_flush: Optional[str] = None
        self._closed = False
        self._pid = os.getpid()
        self._ts_second = -1
        self._ts_prefix = ""
        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="sqlite-hybrid-log", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    # -- the caller's side: never blocks ----------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """Filters and emits without the handler lock (:meth:`emit` needs none)."""
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        """Queues ``record``; drops and counts it when ``capacity`` records are queued."""
        queue = self._queue
        if len(queue) >= self.capacity or self._closed:
            with self._drop_lock:
                self._dropped += 1
            return
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        queue.append((record, message))
        if len(queue) >= self.batch_size:
            self._signal.set()

    def flush(self, timeout: float = 10.0) -> None:
        """Writes every record queued before this call; waits up to ``timeout`` seconds."""
        if self._closed or not self._thread.is_alive():
            return
        done = threading.Event()
        self._control.append(("flush", done))
        self._signal.set()
        done.wait(timeout)

    def run_retention(self, timeout: float = 60.0) -> int:
        """Runs retention now; returns how many entries it deleted."""
        done = threading.Event()
        result: List[int] = []
        self._control.append(("retention", done, result))
        self._signal.set()
        done.wait(timeout)
        return result[0] if result else 0

    def close(self) -> None:
        """Writes what is queued and stops the writer; later records are dropped (counted)."""
        if not self._closed and self._thread.is_alive():
            done = threading.Event()
            self._control.append(("close", done))
            self._signal.set()
            done.wait(60.0)
            self._thread.join(60.0)
        self._closed = True
        late = len(self._queue)
        if late:
            self._queue.clear()
            with self._drop_lock:
                self._dropped += late
        super().close()

    def stats(self) -> LogStats:
        """The counters."""
        return LogStats(
            self._written, self._batches, self._dropped, self._failed, self._deleted, len(self._queue), self._last_flush
        )

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._connect()
            conn.isolation_level = None
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException as error:
            self._start_error = error
            self._ready.set()
            return
        self._ready.set()
        # Unlike the Rust writer, this thread is not reniced: a thread that holds the
        # GIL and is descheduled for its low priority stalls every app thread that
        # wants the GIL (measured: p99 up to 8 ms and 1,870 of 50,010 records dropped
        # at nice +10 on a loaded machine).
        next_retention = time.monotonic() + (1.0 if self.retention is not None else float("inf"))
        try:
            while True:
                self._signal.wait(self.flush_interval)
                self._signal.clear()
                closing = False
                waiters = []
                while self._control:
                    request = self._control.popleft()
                    if request[0] == "retention":
                        request[2].append(self._retention(conn))
                        request[1].set()
                    else:
                        waiters.append(request[1])
                        closing = closing or request[0] == "close"
                # Woken because batch_size records wait, by a request, or after
                # flush_interval: write everything queued.
                self._drain(conn)
                for done in waiters:
                    done.set()
                if closing:
                    self._closed = True
                    self._drain(conn)
                    return
                if time.monotonic() >= next_retention:
                    self._retention(conn)
                    next_retention = time.monotonic() + self.retention_interval
        finally:
            try:
                conn.close()
            except Exception:
                pass

    def _drain(self, conn: sqlite3.Connection) -> None:
        queue = self._queue
        while queue:
            n = min(len(queue), self.max_batch_size)
            self._write(conn, [queue.popleft() for _ in range(n)])

    def _row(self, record: logging.LogRecord, message: str) -> tuple:
        attributes = record.__dict__
        extra = attributes.keys() - _STANDARD
        fields: Dict[str, Any] = {name: attributes[name] for name in extra} if extra else {}
        level = _LEVELS.get(record.levelno) or _level_name(record.levelno)
        if record.levelname != level and record.levelname != "WARNING":
            fields["levelname"] = record.levelname
        if record.exc_info:
            fields["exc_info"] = record.exc_text or logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = record.stack_info
        fields_json = json.dumps(fields, default=repr, ensure_ascii=False) if fields else None
        return (
            self._timestamp(record.created),
            level,
            record.name,
            message,
            fields_json,
            record.module,
            record.pathname,
            record.lineno,
            record.threadName,
        )

    def _timestamp(self, unix_s: float) -> str:
        """:func:`iso8601_utc`, formatting the text up to the second once per second."""
        whole = int(unix_s)
        if whole != self._ts_second:
            self._ts_second = whole
            self._ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._ts_prefix}.{int((unix_s - whole) * 1000):03d}Z"

    def _write(self, conn: sqlite3.Connection, batch: List[tuple]) -> None:
        """Writes ``batch`` ((record, message) pairs) in one transaction, 10 rows per
        INSERT. Records are turned into rows 10 at a time, just before their INSERT, which
        releases the GIL: an app thread never waits for the GIL behind a whole batch's
        formatting (up to the interpreter's 5 ms switch interval). The rest of the
        writer's cost to the app is this formatting, done holding the GIL."""
        rows_of = self._row
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                begin_immediate(conn, time.monotonic() + 5.0)
                try:
                    for start in range(0, len(batch), _ROWS_PER_INSERT):
                        rows = [rows_of(record, message) for record, message in batch[start : start + _ROWS_PER_INSERT]]
                        if len(rows) == _ROWS_PER_INSERT:
                            conn.execute(_INSERT_MANY, [v for row in rows for v in row])
                        else:
                            conn.executemany(_INSERT_ONE, rows)
                    now = iso8601_utc(time.time())
                    conn.execute(
                        _UPSERT_STATS,
                        (self._written + len(batch), self._batches + 1, self._dropped, self._failed, self._deleted, now, self._pid),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                self._written += len(batch)
                self._batches += 1
                self._last_flush = now
                return
            except Exception as error:
                if attempt + 1 == _WRITE_ATTEMPTS:
                    self._failed += len(batch)  # logs are best effort: counted, never a reason to block
                    return
                time.sleep(0.05 * (attempt + 1) if is_lock_error(error) else 0.01)

    def _retention(self, conn: sqlite3.Connection) -> int:
        if self.retention is None:
            return 0
        cutoff = iso8601_utc(time.time() - self.retention)
        deleted = 0
        while True:
            try:
                begin_immediate(conn, time.monotonic() + 5.0)
                n = conn.execute(
                    "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE ts < ? ORDER BY ts LIMIT ?)",
                    (cutoff, self.retention_chunk),
                ).rowcount
                conn.execute("COMMIT")
            except Exception:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                break
            deleted += n
            if n < self.retention_chunk:
                break
            time.sleep(0.005)  # a pause between chunks: others get the log file's lock
        self._deleted += deleted
        return deleted


def query_logs(
    path: Union[str, "os.PathLike[str]"],
    *,
    level: Optional[str] = None,
    target: Optional[str] = None,
    since: Optional[str] = None,
    until: Optional[str] = None,
    contains: Optional[str] = None,
    limit: Optional[int] = 1000,
    newest_first: bool = False,
) -> List[Dict[str, Any]]:
    """Reads entries back from a log file (this handler's or the Rust client's), as dicts
    with ``fields`` parsed from JSON.

    ``level`` keeps that level and more severe ones (``"WARN"``: WARN and ERROR;
    Python's names are accepted too); ``target`` is a logger name (its children
    included); ``since`` / ``until`` are ISO-8601 UTC text (``"2026-12-03T14:00"``);
    ``contains`` matches the message (``LIKE``, case-insensitive for ASCII)."""
    where: List[str] = []
    params: List[Any] = []
    if level is not None:
        order = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        name = {"WARNING": "WARN", "CRITICAL": "ERROR", "FATAL": "ERROR"}.get(level.upper(), level.upper())
        if name not in order:
            raise ValueError(f"level: expected one of {', '.join(order)}, got {level!r}")
        allowed = order[: order.index(name) + 1]
        where.append(f"level IN ({', '.join('?' for _ in allowed)})")
        params += allowed
    if target is not None:
        where.append("(target = ? OR substr(target, 1, ?) = ?)")
        params += [target, len(target) + 1, target + "."]
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    if contains is not None:
        where.append("message LIKE ? ESCAPE '\\'")
        params.append("%" + contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    sql = "SELECT id, ts, level, target, message, fields, module, file, line, thread FROM entries"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True, timeout=5.0)
    try:
        names = ("id", "ts", "level", "target", "message", "fields", "module", "file", "line", "thread")
        out = []
        for row in conn.execute(sql, params):
            entry = dict(zip(names, row))
            if entry["fields"] is not None:
                entry["fields"] = json.loads(entry["fields"])
            out.append(entry)
        return out
    finally:
        conn.close()
