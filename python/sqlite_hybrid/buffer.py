"""The write buffer: enqueue row operations from any thread or coroutine, get a
:class:`Ticket` back at once; one background thread writes them in short
``BEGIN IMMEDIATE`` transactions through the host's own ``sqlite3`` module.

The Python twin of the Rust client's ``buffer/`` (``docs/python-buffer.md``
shows both side by side). Pure Python on the host's ``sqlite3``: one SQLite
library per process, one wheel for every Python >= 3.8.

Rules (what is guaranteed)
--------------------------
* **Validation at the call.** Unknown table or column, a key that is not the
  table's PRIMARY KEY or a UNIQUE index, a missing/None/NaN key, a missing
  NOT NULL column, NaN anywhere, a value a STRICT column would refuse: the
  call raises :class:`~sqlite_hybrid.InvalidRow` naming the argument, and
  nothing is queued.
* **Coalescing.** Operations on one ``(table, key)`` merge into one entry with
  exactly the effect of running them in order, in the normal form
  ``[delete | update A]? [upsert B]?`` (table in ``_Entry.apply``). Plain
  inserts never merge. A table is keyed (one key for the buffer's life) or
  append-only, never both.
* **Order.** Tables flush in ``table_priorities`` order (higher first), then
  in enqueue order; operations on one key are never reordered.
* **Short transactions.** A flush writes everything pending, in ``BEGIN
  IMMEDIATE`` transactions of at most ``batch_size`` entries that stop taking
  entries early enough for their ``COMMIT`` to end ``max_lock_ms`` after the
  lock was taken: ``COMMIT``'s measured share is reserved, and rows go in
  statement groups sized to a small part of the time left
  (:class:`~sqlite_hybrid._tx.LockBudget`), so an import through the buffer
  never holds the write lock for long. ``stats().max_lock_ms`` reports the
  longest (SQLite's automatic checkpoint, which runs after the lock is
  released, is run after ``COMMIT`` returns and not counted:
  :class:`~sqlite_hybrid._tx.Checkpointer`).
* **Failures are never silent.** A row-level failure (constraint, type) rolls
  back its entry alone (a two-statement entry runs in a savepoint); the rest
  commits; the entry's tickets fail and it is kept for :meth:`take_failed`. A
  batch-level failure (lock timeout, disk full, I/O) puts the entries back in
  the queue, in order, and retries them; :meth:`flush` reports it.
* **Backpressure.** At most ``max_pending`` entries exist (queued or being
  written). When full, an enqueue that needs a new entry waits up to
  ``block_timeout`` (``backpressure="block"``) or fails at once
  (``"reject"``), either way with :class:`BufferFull`, never a drop. Merging
  into a queued entry always succeeds.
* **Acknowledged** means: the operation's ticket resolved without error
  (``await ticket``, ``ticket.wait()``), or a :meth:`flush` that started after
  the enqueue returned without error. Acknowledged operations are committed to
  the database file. ``close()``, ``aclose()`` and interpreter exit write what
  is pending; what cannot be written is reported (raised by ``close``, logged
  and printed to stderr at exit), never dropped silently.

Locking: one ``threading.Lock`` guards the queue, its key index and the
counters; an enqueue holds it for a dict lookup and an append (validation
runs before it). The flusher holds it only to take the queue and to resolve a
transaction's tickets, never while SQLite works.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import operator
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._errors import is_lock_error, sqlite_error_code
from ._schema import InvalidRow, SchemaCache, TableInfo, quote
from ._tx import Checkpointer, LockBudget, begin_immediate, prepare_connection, rollback_quietly

__all__ = [
    "WriteBuffer",
    "Ticket",
    "BufferStats",
    "FailedEntry",
    "WriteBufferError",
    "BufferFull",
    "BufferClosed",
    "FlushFailed",
]

_log = logging.getLogger("sqlite_hybrid.buffer")

# Ticket states.
_PENDING, _COMMITTED, _FAILED = 0, 1, 2
# Entry operations.
_UPSERT, _UPDATE, _DELETE = 1, 2, 3
_DELETED = object()  # `before` of an entry whose row is deleted first
# Attempts at close before unwritten entries are failed.
_CLOSE_ATTEMPTS = 3
_SAVEPOINT = "hybrid_buffer_entry"
# SQLite primary result codes that belong to one row, not to the batch.
_ROW_CODES = frozenset({1, 18, 19, 20, 25})  # ERROR, TOOBIG, CONSTRAINT, MISMATCH, RANGE


class WriteBufferError(Exception):
    """Base class of the write buffer's errors."""


class BufferFull(WriteBufferError):
    """The buffer holds ``max_pending`` entries: answer with 503 / retry later.

    ``capacity`` is ``max_pending``. Raised at once with
    ``backpressure="reject"``, after ``block_timeout`` with ``"block"``.
    """

    def __init__(self, capacity: int, waited_s: float = 0.0) -> None:
        how = f" after waiting {waited_s:.3g} s" if waited_s else ""
        super().__init__(f"write buffer full ({capacity} entries pending){how}; nothing was queued")
        self.capacity = capacity
        self.waited_s = waited_s


class BufferClosed(WriteBufferError):
    """The buffer was closed; nothing was queued."""


class FlushFailed(WriteBufferError):
    """Entries could not be written. ``failed`` counts them, ``first_error`` is the
    first reason, ``entries`` holds the :class:`FailedEntry` objects where known."""

    def __init__(self, failed: int, first_error: str, entries: Sequence["FailedEntry"] = ()) -> None:
        super().__init__(f"{failed} write-buffer entr{'y' if failed == 1 else 'ies'} failed: {first_error}")
        self.failed = failed
        self.first_error = first_error
        self.entries = list(entries)


@dataclass
class FailedEntry:
    """An entry the flusher could not write, with what is needed to retry it."""

    table: str
    #: The key (empty for inserts).
    key: Dict[str, Any]
    #: The operations, in order: ``("insert"|"upsert"|"update", columns)`` or ``("delete", None)``.
    ops: List[Tuple[str, Optional[Dict[str, Any]]]]
    error: str


@dataclass
class BufferStats:
    """Counters of a :class:`WriteBuffer` (a snapshot)."""

    pending: int = 0
    in_flight: int = 0
    enqueued: int = 0
    coalesced: int = 0
    flushed_entries: int = 0
    #: Transactions committed by the flusher.
    flushed_batches: int = 0
    failed_entries: int = 0
    #: Batches that failed as a whole (kept and retried).
    failed_batches: int = 0
    #: ``BEGIN IMMEDIATE`` attempts beyond the first, caused by lock errors.
    lock_retries: int = 0
    #: Enqueues refused with :class:`BufferFull`.
    rejected: int = 0
    #: Longest time one transaction held the write lock (``BEGIN IMMEDIATE`` to ``COMMIT``).
    max_lock_ms: float = 0.0
    #: 99th percentile of the last 4,096 transactions' lock hold.
    p99_lock_ms: float = 0.0
    last_error: Optional[str] = None
    #: Failed entries waiting in :meth:`WriteBuffer.take_failed`.
    failed_kept: int = 0


class Ticket:
    """A handle to one enqueued operation: ``await ticket`` or ``ticket.wait(timeout)``.

    Operations merged into one entry share one ticket. Both forms ask the
    flusher to write now. Resolving without error means *committed*; a failed
    row raises :class:`FlushFailed`. Awaiting is cancellation-safe: cancelling
    the waiting task only stops the waiting, the operation stays queued.

    >>> import sqlite3, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "t.db")
    >>> sqlite3.connect(path).executescript("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")  # doctest: +ELLIPSIS
    <sqlite3.Cursor object at ...>
    >>> with WriteBuffer(path, hybrid=False) as buffer:
    ...     ticket = buffer.upsert("kv", {"k": "a", "v": "1"}, key="k")
    ...     ticket.wait(10)
    ...     ticket.status
    'committed'
    """

    __slots__ = ("_buffer", "_state", "_error", "_futures", "__weakref__")

    def __init__(self, buffer: "WriteBuffer") -> None:
        self._buffer = buffer
        self._state = _PENDING
        self._error: Optional[str] = None
        self._futures: Optional[List[Tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]]] = None

    @property
    def status(self) -> str:
        """``"pending"``, ``"committed"`` or ``"failed"``."""
        return ("pending", "committed", "failed")[self._state]

    @property
    def error(self) -> Optional[str]:
        """Why the operation failed, once it has."""
        return self._error

    def done(self) -> bool:
        """Whether the operation is committed or failed."""
        return self._state != _PENDING

    def _outcome(self) -> None:
        if self._state == _FAILED:
            raise FlushFailed(1, self._error or "")

    def wait(self, timeout: Optional[float] = None) -> None:
        """Asks the flusher to write now and waits up to ``timeout`` seconds (``None``:
        for ever) for this operation's commit. Raises :class:`FlushFailed` if it
        failed and ``TimeoutError`` (the operation stays queued) if time ran out."""
        if self._state == _PENDING:
            self._buffer._wait_for([self], timeout)
        if self._state == _PENDING:
            raise TimeoutError(f"the operation was not committed within {timeout} s (it stays queued)")
        self._outcome()

    async def _wait_async(self) -> None:
        if self._state == _PENDING:
            loop = asyncio.get_running_loop()
            future: "asyncio.Future[None]" = loop.create_future()
            buffer = self._buffer
            with buffer._lock:
                registered = self._state == _PENDING
                if registered:
                    if self._futures is None:
                        self._futures = []
                    self._futures.append((loop, future))
                    buffer._flush_requested = True
                    buffer._wake.notify()
            if registered:
                try:
                    await future
                finally:
                    if not future.done():  # cancelled: forget this waiter
                        with buffer._lock:
                            if self._futures and (loop, future) in self._futures:
                                self._futures.remove((loop, future))
        self._outcome()

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._wait_async().__await__()

    def __repr__(self) -> str:
        return f"<Ticket {self.status}>"

    # Called by the flusher with the buffer's lock held.
    def _resolve(self, state: int, error: Optional[str]) -> None:
        self._error = error
        self._state = state
        futures, self._futures = self._futures, None
        if futures:
            for loop, future in futures:
                try:
                    loop.call_soon_threadsafe(_set_future, future)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    pass


def _set_future(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


class _Entry:
    """One pending row operation (keyed, coalesced) or one insert.

    Coalescing (``X∪Y``: columns merged, Y's values winning)::

        pending state        | + upsert(B)          | + update(C)           | + delete
        nothing              | upsert B             | update C              | delete
        upsert A             | upsert A∪B           | upsert A∪C            | delete
        update A             | update A, upsert B   | update A∪C            | delete
        update A, upsert B   | update A, upsert B∪D | update A, upsert B∪C  | delete
        delete               | delete, upsert B     | delete                | delete
        delete, upsert B     | delete, upsert B∪D   | delete, upsert B∪C    | delete

    "update A, upsert B" cannot merge further: if the row does not exist the
    update does nothing and the upsert inserts only B.
    """

    __slots__ = ("table", "key_columns", "key", "before", "upsert", "tickets")

    def __init__(
        self,
        table: TableInfo,
        key_columns: Optional[Tuple[str, ...]],
        key: Optional[Tuple[Any, ...]],
        ticket: Ticket,
    ) -> None:
        self.table = table
        self.key_columns = key_columns
        self.key = key  # None: an insert, whose row is in `upsert`
        self.before: Any = None  # None, _DELETED or a dict of update columns
        self.upsert: Optional[Dict[str, Any]] = None
        self.tickets = [ticket]

    def apply(self, op: int, columns: Optional[Dict[str, Any]]) -> None:
        if op == _UPSERT:
            if self.upsert is None:
                self.upsert = columns
            else:
                self.upsert.update(columns)  # type: ignore[arg-type]
        elif op == _UPDATE:
            if self.upsert is not None:
                self.upsert.update(columns)  # type: ignore[arg-type]
            elif self.before is _DELETED:
                pass  # no row to update
            elif self.before is None:
                self.before = columns
            else:
                self.before.update(columns)
        else:
            self.before = _DELETED
            self.upsert = None

    def ops(self) -> List[Tuple[int, Optional[Dict[str, Any]]]]:
        out: List[Tuple[int, Optional[Dict[str, Any]]]] = []
        if self.before is _DELETED:
            out.append((_DELETE, None))
        elif self.before is not None:
            out.append((_UPDATE, dict(self.before)))
        if self.upsert is not None:
            out.append((_UPSERT, dict(self.upsert)))
        return out

    def to_failed(self, error: str) -> FailedEntry:
        if self.key is None:
            return FailedEntry(self.table.name, {}, [("insert", dict(self.upsert or {}))], error)
        names = {_UPSERT: "upsert", _UPDATE: "update", _DELETE: "delete"}
        return FailedEntry(
            self.table.name,
            dict(zip(self.key_columns or (), self.key)),
            [(names[op], columns) for op, columns in self.ops()],
            error,
        )


class _Sql:
    """SQL text by statement shape, built once (identifiers from the schema, quoted)."""

    def __init__(self) -> None:
        self._cache: Dict[Tuple[Any, ...], str] = {}

    def get(self, shape: Tuple[Any, ...]) -> str:
        text = self._cache.get(shape)
        if text is None:
            text = self._cache[shape] = self._build(shape)
        return text

    @staticmethod
    def _build(shape: Tuple[Any, ...]) -> str:
        kind, table, columns, keys = shape
        name = quote(table)
        where = " AND ".join(f"{quote(k)} = ?" for k in keys or ())
        if kind == _DELETE:
            return f"DELETE FROM {name} WHERE {where}"
        if kind == _UPDATE:
            sets = ", ".join(f"{quote(c)} = ?" for c in columns)
            return f"UPDATE {name} SET {sets} WHERE {where}"
        insert = (
            f"INSERT INTO {name} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})"
        )
        if kind == "insert":
            return insert
        updates = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in keys]
        action = "UPDATE SET " + ", ".join(updates) if updates else "NOTHING"
        return f"{insert} ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO {action}"


def _statements(entry: _Entry) -> List[Tuple[Tuple[Any, ...], Tuple[Any, ...]]]:
    """The (shape, parameters) of the statements an entry runs, in order."""
    upsert = entry.upsert
    if entry.before is None and upsert is not None:  # the common case: one statement
        kind = _UPSERT if entry.key is not None else "insert"
        return [((kind, entry.table.name, tuple(upsert), entry.key_columns), tuple(upsert.values()))]
    table = entry.table.name
    if entry.key is None:
        row = entry.upsert or {}
        return [(("insert", table, tuple(row), None), tuple(row.values()))]
    out = []
    keys = entry.key_columns
    if entry.before is _DELETED:
        out.append(((_DELETE, table, None, keys), entry.key))
    elif entry.before is not None:
        before = entry.before
        out.append(((_UPDATE, table, tuple(before), keys), tuple(before.values()) + entry.key))
    if entry.upsert is not None:
        upsert = entry.upsert
        out.append(((_UPSERT, table, tuple(upsert), keys), tuple(upsert.values())))
    return out


def _is_row_error(error: BaseException) -> bool:
    """Whether ``error`` belongs to one row (constraint, type, size), not to the batch."""
    if isinstance(error, (OverflowError, TypeError, ValueError)) and not isinstance(error, sqlite3.Error):
        return True
    if is_lock_error(error):
        return False
    code = sqlite_error_code(error)
    if code is not None:
        return (code & 0xFF) in _ROW_CODES
    if isinstance(error, (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError, sqlite3.DataError)):
        return True
    if isinstance(error, sqlite3.OperationalError):  # Python < 3.11: no result code
        text = str(error).lower()
        return not any(w in text for w in ("disk", "i/o", "readonly", "read-only", "unable to open", "full"))
    return False


def _params_getter(columns: Tuple[str, ...]) -> Callable[[Dict[str, Any]], Tuple[Any, ...]]:
    """A function taking ``columns``' values out of a dict, as a tuple, in that order."""
    if len(columns) == 1:
        column = columns[0]
        return lambda values: (values[column],)
    return operator.itemgetter(*columns)


class _Restart(Exception):
    """The transaction was rolled back by a row's error (an ON CONFLICT ROLLBACK)."""


_live_buffers: "weakref.WeakSet[WriteBuffer]" = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for buffer in list(_live_buffers):
        buffer._close_at_exit()


atexit.register(_close_all_at_exit)


class WriteBuffer:
    """A write buffer on one database file; see the module docs for the rules.

    ``database`` is a path, opened with the host's ``sqlite3`` module, with the
    extension loaded for its fair lock hand-off (``hybrid=None``, the default:
    when this Python can load extensions; ``True``: required; ``False``: never);
    ``connect`` instead is a factory returning a DB-API connection of the
    standard ``sqlite3`` module the app already uses (called on the flusher's
    thread, and for schema look-ups). Settings:

    * ``batch_size`` (1,000): most entries per transaction, and the pending
      count that starts a flush;
    * ``max_lock_ms`` (20): the longest a transaction should hold the write
      lock, ``COMMIT`` included (it takes no more entries once the next group
      and the ``COMMIT`` would not fit);
    * ``flush_interval`` (1.0 s): longest time an entry waits before a flush;
    * ``max_pending`` (10,000), ``backpressure`` (``"block"`` or
      ``"reject"``), ``block_timeout`` (5.0 s): see :class:`BufferFull`;
    * ``table_priorities``: ``{table: priority}``, higher flushes first
      (parents before children with foreign keys); others have 0;
    * ``lock_timeout`` (30 s): how long one transaction retries lock errors
      (jittered backoff) before the batch counts as failed and is retried later.

    >>> import sqlite3, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "app.db")
    >>> sqlite3.connect(path).executescript(
    ...     "CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT); CREATE TABLE log(msg TEXT)")  # doctest: +ELLIPSIS
    <sqlite3.Cursor object at ...>
    >>> with WriteBuffer(path, hybrid=False) as buffer:
    ...     _ = buffer.upsert("stock", {"sku": "a", "qty": 1}, key="sku")
    ...     _ = buffer.upsert("stock", {"sku": "a", "qty": 2}, key="sku")   # merges
    ...     _ = buffer.insert("log", {"msg": "restocked"})
    ...     buffer.flush()
    ...     buffer.stats().flushed_entries
    2
    >>> sqlite3.connect(path).execute("SELECT qty FROM stock").fetchall()
    [(2,)]
    """

    def __init__(
        self,
        database: Union[str, "os.PathLike[str]", None] = None,
        *,
        connect: Optional[Callable[[], sqlite3.Connection]] = None,
        batch_size: int = 1000,
        max_lock_ms: float = 20.0,
        flush_interval: float = 1.0,
        max_pending: int = 10_000,
        backpressure: str = "block",
        block_timeout: float = 5.0,
        table_priorities: Optional[Mapping[str, int]] = None,
        lock_timeout: float = 30.0,
        hybrid: Optional[bool] = None,
        timeout_ms: int = 5000,
    ) -> None:
        if (database is None) == (connect is None):
            raise TypeError("WriteBuffer: give exactly one of database (a path) and connect (a factory)")
        if backpressure not in ("block", "reject"):
            raise ValueError(f"backpressure: expected 'block' or 'reject', got {backpressure!r}")
        for name, value in (("batch_size", batch_size), ("max_pending", max_pending)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name, number in (("max_lock_ms", max_lock_ms), ("flush_interval", flush_interval),
                             ("lock_timeout", lock_timeout)):
            if not number > 0:
                raise ValueError(f"{name} must be positive, got {number!r}")
        if connect is None:
            path = os.fspath(database)  # type: ignore[arg-type]

            def connect_path() -> sqlite3.Connection:
                conn = sqlite3.connect(path, timeout=timeout_ms / 1000.0, isolation_level=None)
                if hybrid is not False:
                    from . import load

                    try:
                        load(conn, timeout_ms=timeout_ms)
                    except (TypeError, FileNotFoundError):
                        # This Python cannot load extensions, or no library: SQLite's
                        # own busy handler (timeout_ms) then. Only hybrid=True insists.
                        if hybrid:
                            conn.close()
                            raise
                    except BaseException:
                        conn.close()
                        raise
                return conn

            def schema_conn() -> sqlite3.Connection:
                return sqlite3.connect(path, timeout=timeout_ms / 1000.0)

            self._connect = connect_path
            self._schema = SchemaCache(schema_conn)
        else:
            self._connect = connect
            self._schema = SchemaCache(connect)
        self.batch_size = batch_size
        self.max_lock_ms = float(max_lock_ms)
        self.flush_interval = float(flush_interval)
        self.max_pending = max_pending
        self.backpressure = backpressure
        self.block_timeout = float(block_timeout)
        self.lock_timeout = float(lock_timeout)
        self._priorities = {str(k).lower(): int(v) for k, v in (table_priorities or {}).items()}

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the flusher waits here
        self._room = threading.Condition(self._lock)  # blocked enqueuers wait here
        self._board = threading.Condition(self._lock)  # ticket and flush waiters wait here
        self._queue: List[_Entry] = []
        self._index: Dict[Tuple[str, Tuple[Any, ...]], _Entry] = {}
        self._draining: List[_Entry] = []
        self._in_flight = 0
        self._modes: Dict[str, Any] = {}
        self._oldest: Optional[float] = None
        self._flush_requested = False
        self._closed = False
        self._batch_failures = 0
        self._failed: Deque[FailedEntry] = deque()
        self._stats = BufferStats()
        self._enqueued = 0  # new entries; + _coalesced = operations accepted
        self._coalesced = 0
        self._holds: Deque[float] = deque(maxlen=4096)
        self._budget = LockBudget(self.max_lock_ms)

        self._ready = threading.Event()
        self._start_error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="sqlite-hybrid-buffer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error
        _live_buffers.add(self)

    # -- enqueue ---------------------------------------------------------------------------

    def upsert(self, table: str, row: Mapping[str, Any], key: Union[str, Sequence[str]]) -> Ticket:
        """Queues an insert of ``row`` into ``table`` that updates the row's other given
        columns if its ``key`` (the PRIMARY KEY or a UNIQUE index: one column name or a
        sequence) exists. Every key column must be in ``row``, not None or NaN."""
        info = self._schema.table(table)
        key_columns = info.key_columns(key, "key")
        values = info.resolve_row(row, "row")
        if info.not_null:
            info.check_insertable(values, "row")
        key_values = self._key_values(info, key_columns, values, "row")
        return self._enqueue_keyed(info, key_columns, key_values, _UPSERT, values)

    def update(self, table: str, key: Mapping[str, Any], changes: Mapping[str, Any]) -> Ticket:
        """Queues an update of ``changes`` on the row whose ``key`` (a mapping of the
        PRIMARY KEY's or a UNIQUE index's columns to values) matches. Key columns
        cannot be changed this way (delete and upsert instead)."""
        info = self._schema.table(table)
        key_map = info.resolve_row(key, "key")
        key_columns = info.key_columns(tuple(key_map), "key")
        key_values = self._key_values(info, key_columns, key_map, "key")
        values = info.resolve_row(changes, "changes")
        if not values:
            raise InvalidRow("changes: an update needs at least one column to change", argument="changes", table=info.name)
        for column in values:
            if column in key_columns:
                raise InvalidRow(
                    f"changes: update cannot change key column {info.name}.{column}; delete and upsert instead",
                    argument="changes",
                    table=info.name,
                    column=column,
                )
        return self._enqueue_keyed(info, key_columns, key_values, _UPDATE, values)

    def delete(self, table: str, key: Mapping[str, Any]) -> Ticket:
        """Queues a delete of the row whose ``key`` (a mapping, as for :meth:`update`) matches."""
        info = self._schema.table(table)
        key_map = info.resolve_row(key, "key")
        key_columns = info.key_columns(tuple(key_map), "key")
        key_values = self._key_values(info, key_columns, key_map, "key")
        return self._enqueue_keyed(info, key_columns, key_values, _DELETE, None)

    def insert(self, table: str, row: Mapping[str, Any]) -> Ticket:
        """Queues a plain insert of ``row`` (never merged with other operations)."""
        info = self._schema.table(table)
        values = info.resolve_row(row, "row")
        if not values:
            raise InvalidRow(f"row: an insert into {info.name} needs at least one column", argument="row", table=info.name)
        info.check_insertable(values, "row")
        self._check_mode(info, None)
        with self._lock:
            self._admit(None)
            ticket = Ticket(self)
            entry = _Entry(info, None, None, ticket)
            entry.upsert = values
            self._push(entry, None)
        return ticket

    @staticmethod
    def _key_values(info: TableInfo, key_columns: Tuple[str, ...], values: Dict[str, Any], argument: str) -> Tuple[Any, ...]:
        if len(key_columns) == 1:
            column = key_columns[0]
            value = values.get(column, _DELETED)
            if value is not _DELETED:
                cls = value.__class__
                affinity = info.affinities[column]
                if not ((cls is int and affinity == "INTEGER") or (cls is str and affinity == "TEXT")):
                    value = values[column] = info.normalize_key(column, value, argument)
                return (value,)
        out = []
        for column in key_columns:
            if column not in values:
                raise InvalidRow(
                    f"{argument}: key column {info.name}.{column} is missing",
                    argument=argument,
                    table=info.name,
                    column=column,
                )
            value = info.normalize_key(column, values[column], argument)
            values[column] = value
            out.append(value)
        return tuple(out)

    def _check_mode(self, info: TableInfo, key_columns: Optional[Tuple[str, ...]]) -> None:
        wanted = "append" if key_columns is None else key_columns
        mode = self._modes.get(info.name)
        if mode is wanted:
            return
        if mode is None:
            mode = self._modes.setdefault(info.name, wanted)
        if mode is wanted or mode == wanted:
            return
        if mode != "append" and wanted != "append" and set(mode) == set(wanted):
            return

        def describe(m: Any) -> str:
            return "append-only (insert)" if m == "append" else f"keyed on ({', '.join(m)})"

        raise InvalidRow(
            f"table: {info.name} is {describe(mode)} in this write buffer; this call is {describe(wanted)} "
            "(a table is either keyed, with one key, or append-only, so operations on a row are never reordered)",
            argument="table",
            table=info.name,
        )

    def _enqueue_keyed(
        self,
        info: TableInfo,
        key_columns: Tuple[str, ...],
        key_values: Tuple[Any, ...],
        op: int,
        columns: Optional[Dict[str, Any]],
    ) -> Ticket:
        self._check_mode(info, key_columns)
        index_key = (info.name, key_values)
        with self._lock:
            if self._closed:
                raise BufferClosed("the write buffer is closed; nothing was queued")
            entry = self._index.get(index_key)
            if entry is None:
                self._admit(index_key)
                entry = self._index.get(index_key)  # may have appeared while waiting for room
            if entry is not None:
                if op == _UPSERT and entry.upsert is not None:
                    entry.upsert.update(columns)  # type: ignore[arg-type]
                else:
                    entry.apply(op, columns)
                self._coalesced += 1
                return entry.tickets[0]
            ticket = Ticket(self)
            entry = _Entry(info, key_columns, key_values, ticket)
            entry.apply(op, columns)
            self._push(entry, index_key)
            return ticket

    def _admit(self, index_key: Optional[Tuple[str, Tuple[Any, ...]]]) -> None:
        """Waits for (or refuses) room for a new entry; called with the lock held."""
        if self._closed:
            raise BufferClosed("the write buffer is closed; nothing was queued")
        if len(self._queue) + self._in_flight < self.max_pending:
            return
        self._flush_requested = True
        self._wake.notify()
        if self.backpressure == "reject":
            self._stats.rejected += 1
            raise BufferFull(self.max_pending)
        started = time.monotonic()
        deadline = started + self.block_timeout
        while len(self._queue) + self._in_flight >= self.max_pending:
            if index_key is not None and index_key in self._index:
                return  # merging needs no room
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stats.rejected += 1
                raise BufferFull(self.max_pending, time.monotonic() - started)
            self._room.wait(remaining)
            if self._closed:
                raise BufferClosed("the write buffer closed while this call waited for room; nothing was queued")

    def _push(self, entry: _Entry, index_key: Optional[Tuple[str, Tuple[Any, ...]]]) -> None:
        queue = self._queue
        queue.append(entry)
        if index_key is not None:
            self._index[index_key] = entry
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._enqueued += 1
        if len(queue) >= self.batch_size:
            self._wake.notify()

    # -- flush, wait, close ----------------------------------------------------------------

    def _wait_for(self, tickets: List[Ticket], timeout: Optional[float], batch_failures: int = -1) -> bool:
        """Requests a flush and waits until every ticket resolved, a batch failed (when
        ``batch_failures`` >= 0), or ``timeout``. Returns whether all resolved."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = 0
        with self._lock:
            self._flush_requested = True
            self._wake.notify()
            while True:
                while cursor < len(tickets) and tickets[cursor]._state != _PENDING:
                    cursor += 1
                if cursor == len(tickets):
                    return True
                if batch_failures >= 0 and self._batch_failures > batch_failures:
                    return False
                if deadline is None:
                    self._board.wait(1.0)
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._board.wait(remaining)

    def flush(self, timeout: Optional[float] = 60.0) -> None:
        """Writes everything enqueued before this call and returns once it is committed.

        Raises :class:`FlushFailed` if any of those entries failed (they are in
        :meth:`take_failed`) or a batch failed as a whole (those entries stay
        queued and are retried), ``TimeoutError`` after ``timeout`` seconds."""
        with self._lock:
            tickets = [e.tickets[0] for e in self._queue]
            tickets.extend(e.tickets[0] for e in self._draining if e.tickets[0]._state == _PENDING)
            failures_before = self._batch_failures
        self._wait_for(tickets, timeout, failures_before)
        failed = [t for t in tickets if t._state == _FAILED]
        if failed:
            raise FlushFailed(len(failed), failed[0]._error or "")
        pending = sum(1 for t in tickets if t._state == _PENDING)
        if pending:
            with self._lock:
                if self._batch_failures > failures_before:
                    raise FlushFailed(pending, f"batch kept for retry: {self._stats.last_error}")
            raise TimeoutError(f"{pending} entries were not written within {timeout} s (they stay queued)")

    async def aflush(self, timeout: Optional[float] = 60.0) -> None:
        """:meth:`flush` for asyncio code (runs the wait on the default executor)."""
        await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def stats(self) -> BufferStats:
        """A snapshot of the counters."""
        with self._lock:
            s = BufferStats(**vars(self._stats))
            s.coalesced = self._coalesced
            s.enqueued = self._enqueued + self._coalesced
            s.pending = len(self._queue)
            s.in_flight = self._in_flight
            s.failed_kept = len(self._failed)
            holds = sorted(self._holds)
        if holds:
            s.p99_lock_ms = holds[min(len(holds) - 1, int(len(holds) * 0.99))]
        return s

    def take_failed(self) -> List[FailedEntry]:
        """Removes and returns the entries that could not be written."""
        with self._lock:
            failed = list(self._failed)
            self._failed.clear()
        return failed

    def close(self, timeout: Optional[float] = 60.0) -> BufferStats:
        """Stops accepting operations, writes everything pending and stops the flusher.

        Returns the final counters. Raises :class:`FlushFailed` (with the entries)
        if entries could not be written and were not taken with :meth:`take_failed`,
        ``TimeoutError`` if the flusher did not finish within ``timeout``. Safe to
        call more than once."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            self._room.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                with self._lock:
                    pending = len(self._queue) + self._in_flight
                raise TimeoutError(f"the write buffer's flusher did not finish within {timeout} s ({pending} entries unwritten)")
        _live_buffers.discard(self)
        failed = self.take_failed()
        if failed:
            with self._lock:
                self._failed.extend(failed)  # still there for take_failed
            raise FlushFailed(len(failed), failed[0].error, failed)
        return self.stats()

    async def aclose(self, timeout: Optional[float] = 60.0) -> BufferStats:
        """:meth:`close` for asyncio code (the flush runs off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.close, timeout)

    def __enter__(self) -> "WriteBuffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "WriteBuffer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _close_at_exit(self) -> None:
        """At interpreter exit: write what is pending; report what cannot be written."""
        try:
            self.close(timeout=60.0)
        except FlushFailed as error:
            lines = [f"sqlite_hybrid.WriteBuffer at exit: {error}"]
            lines += [f"  {e.table} key={e.key} ops={e.ops} error={e.error}" for e in error.entries]
            _report("\n".join(lines))
        except Exception as error:  # a timeout: say how many entries are lost
            _report(f"sqlite_hybrid.WriteBuffer at exit: entries not written: {error}")

    # -- the flusher thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = self._connect()
            prepare_connection(self._conn, fresh=True)
            try:  # with the extension: queue behind interactive writers (futex mode)
                self._conn.execute("SELECT hybrid_priority('background')")
            except sqlite3.Error:
                pass  # not loaded into this connection
            self._checkpointer = Checkpointer(self._conn)
        except BaseException as error:
            self._start_error = error
            self._ready.set()
            return
        self._ready.set()
        self._sql = _Sql()
        self._getters: Dict[Tuple[str, ...], Callable[[Dict[str, Any]], Tuple[Any, ...]]] = {}
        retry_pause = 0.05
        close_attempts = 0
        try:
            while True:
                with self._lock:
                    while not (self._closed or self._flush_requested or len(self._queue) >= self.batch_size):
                        if self._oldest is None:
                            wait = self.flush_interval
                        else:
                            wait = self.flush_interval - (time.monotonic() - self._oldest)
                            if wait <= 0:
                                break
                        self._wake.wait(wait)
                    self._flush_requested = False
                    items = self._take()
                    closing = self._closed
                if not items:
                    if closing:
                        return
                    continue
                try:
                    ok = self._write_all(items)
                except BaseException as error:  # a bug: report each entry, never leave a ticket pending
                    self._fail_draining(f"internal error in the write-buffer flusher: {error!r}")
                    ok = True
                if ok:
                    retry_pause = 0.05
                    continue
                if closing:
                    close_attempts += 1
                    if close_attempts >= _CLOSE_ATTEMPTS:
                        self._fail_everything_pending()
                        return
                with self._lock:
                    self._wake.wait(retry_pause)
                retry_pause = min(retry_pause * 2, 5.0)
        finally:
            try:
                self._conn.close()
            except Exception:
                pass

    def _take(self) -> List[_Entry]:
        """Takes the whole queue (priority order if priorities are set); lock held."""
        items = self._queue
        if not items:
            return items
        if self._priorities:
            prio = self._priorities
            items.sort(key=lambda e: -prio.get(e.table.name.lower(), 0))  # stable
        self._queue = []
        self._index = {}
        self._draining = items
        self._in_flight = len(items)
        self._oldest = None
        return items

    def _count_retry(self) -> None:
        """A lock error at ``BEGIN IMMEDIATE``, about to be retried: counted at once."""
        with self._lock:
            self._stats.lock_retries += 1

    def _write_all(self, items: List[_Entry]) -> bool:
        """Writes ``items`` transaction by transaction; False if one failed as a whole
        (its entries and the rest were put back in the queue)."""
        position = 0
        while position < len(items):
            try:
                end, failed, hold_ms, retries = self._write_transaction(items, position, self.batch_size)
            except BaseException as error:
                if not isinstance(error, Exception):
                    raise
                self._requeue(items[position:], error)
                return False
            self._finish(items, position, end, failed, hold_ms, retries)
            self._checkpointer.committed(self._conn)  # outside the lock, tickets resolved
            position = end
        return True

    def _write_transaction(
        self, items: List[_Entry], start: int, most: int
    ) -> Tuple[int, Dict[int, str], float, int]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` from ``items[start]``: at most ``most``
        entries, no more once the next group and the ``COMMIT`` would not fit in
        ``max_lock_ms`` (``self._budget``). Returns (end, failed, hold_ms, retries)."""
        conn = self._conn
        sql = self._sql
        stop = min(len(items), start + most)
        getters = self._getters
        failed: Dict[int, str] = {}
        retries = 0
        budget = self._budget
        clock = budget.clock
        grouping = True  # off after a group's error ended the transaction: find the row
        while True:
            retries += begin_immediate(conn, time.monotonic() + self.lock_timeout, self._count_retry)
            began = clock()
            i = start
            try:
                while i < stop:
                    if i > start and not budget.fits(began, budget.group_rows):
                        break
                    if i in failed:
                        i += 1
                        continue
                    group_began = clock()
                    entry = items[i]
                    upsert = entry.upsert
                    if entry.before is None and upsert is not None:
                        # One statement (an upsert or an insert). The entries after it
                        # with the same table and columns join it in one executemany;
                        # parameters come out of each dict in the shape's column order.
                        columns = tuple(upsert)
                        table, key_columns = entry.table, entry.key_columns
                        shape = (_UPSERT if entry.key is not None else "insert", table.name, columns, key_columns)
                        getter = getters.get(columns)
                        if getter is None:
                            getter = getters[columns] = _params_getter(columns)
                        group = [getter(upsert)]
                        names = upsert.keys()
                        j = i + 1
                        limit = min(stop, i + budget.group_rows) if grouping else j
                        while j < limit and j not in failed:
                            following = items[j]
                            values = following.upsert
                            if (
                                following.before is not None
                                or values is None
                                or following.table is not table
                                or following.key_columns is not key_columns
                                or values.keys() != names
                            ):
                                break
                            group.append(getter(values))
                            j += 1
                        if j - i == 1:
                            self._run_one(conn, sql.get(shape), group[0], i, failed)
                        else:
                            self._run_group(conn, sql.get(shape), group, i, failed)
                        budget.wrote(j - i, clock() - group_began)
                        i = j
                    else:
                        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
                        try:
                            for shape, params in _statements(entry):
                                conn.execute(sql.get(shape), params)
                            conn.execute(f"RELEASE {_SAVEPOINT}")
                        except Exception as error:
                            self._row_failed(conn, error, i, failed, savepoint=True)
                        budget.wrote(1, clock() - group_began)
                        i += 1
                writing_s = clock() - began
                try:
                    conn.execute("COMMIT")
                except Exception as error:
                    if not _is_row_error(error) or not conn.in_transaction or most == 1:
                        raise  # (one entry alone: _write_singly fails it)
                    # A deferred constraint failed at COMMIT: it belongs to some
                    # entries, not the batch. Write each one alone to find them.
                    rollback_quietly(conn)
                    return self._write_singly(items, start, i, failed, retries)
            except _Restart as restart:
                if restart.args and restart.args[0] == "group":
                    grouping = False
                continue
            except BaseException:
                rollback_quietly(conn)
                raise
            held_s = clock() - began
            budget.committed(writing_s, held_s - writing_s)
            return i, failed, held_s * 1000.0, retries

    def _write_singly(
        self, items: List[_Entry], start: int, end: int, failed: Dict[int, str], retries: int
    ) -> Tuple[int, Dict[int, str], float, int]:
        longest = 0.0
        for k in range(start, end):
            if k in failed:
                continue
            try:
                _, one_failed, hold_ms, one_retries = self._write_transaction(items, k, 1)
            except Exception as error:
                if not _is_row_error(error):
                    raise
                rollback_quietly(self._conn)
                failed[k] = f"at commit: {error}"
                continue
            failed.update(one_failed)
            retries += one_retries
            longest = max(longest, hold_ms)
        return end, failed, longest, retries

    def _run_one(self, conn: Any, text: str, params: Tuple[Any, ...], i: int, failed: Dict[int, str]) -> None:
        try:
            conn.execute(text, params)
        except Exception as error:
            self._row_failed(conn, error, i, failed, savepoint=False)

    def _run_group(self, conn: Any, text: str, group: List[Tuple[Any, ...]], i: int, failed: Dict[int, str]) -> None:
        """Entries ``i``, ``i + 1``, ... of one statement shape, parameters ``group``."""
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            conn.executemany(text, group)
            conn.execute(f"RELEASE {_SAVEPOINT}")
            return
        except Exception as error:
            if not _is_row_error(error):
                raise
            if not conn.in_transaction:
                raise _Restart("group") from error  # which row is unknown: redo without groups
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
        for k, params in enumerate(group, i):  # one of them failed: find which, one by one
            self._run_one(conn, text, params, k, failed)

    @staticmethod
    def _row_failed(conn: Any, error: Exception, i: int, failed: Dict[int, str], savepoint: bool) -> None:
        if not _is_row_error(error):
            raise error
        failed[i] = str(error) or type(error).__name__
        if not conn.in_transaction:
            raise _Restart() from error  # the error ended the transaction: redo it without this entry
        if savepoint:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")

    def _finish(
        self, items: List[_Entry], start: int, end: int, failed: Dict[int, str], hold_ms: float, retries: int
    ) -> None:
        """Resolves the tickets of ``items[start:end]`` after their transaction."""
        with self._lock:
            stats = self._stats
            for k in range(start, end):
                entry = items[k]
                message = failed.get(k)
                if message is None:
                    for ticket in entry.tickets:
                        ticket._resolve(_COMMITTED, None)
                else:
                    for ticket in entry.tickets:
                        ticket._resolve(_FAILED, message)
                    self._keep_failed(entry.to_failed(message))
                    stats.last_error = message
            count = end - start
            stats.failed_entries += len(failed)
            stats.flushed_entries += count - len(failed)
            stats.flushed_batches += 1
            stats.max_lock_ms = max(stats.max_lock_ms, hold_ms)
            self._holds.append(hold_ms)
            self._in_flight = max(0, self._in_flight - count)
            if self._in_flight == 0:
                self._draining = []
            self._room.notify_all()
            self._board.notify_all()

    def _keep_failed(self, entry: FailedEntry) -> None:
        if len(self._failed) >= self.max_pending:
            self._failed.popleft()
        self._failed.append(entry)

    def _requeue(self, items: List[_Entry], error: BaseException) -> None:
        """Puts unwritten entries back ahead of what was queued meanwhile; an entry whose
        key was enqueued again merges with the newer one, older operations first."""
        with self._lock:
            back: List[_Entry] = []
            for entry in items:
                newer = self._index.get((entry.table.name, entry.key)) if entry.key is not None else None
                if newer is None:
                    back.append(entry)
                    continue
                for op, columns in newer.ops():
                    entry.apply(op, columns)
                newer.before, newer.upsert = entry.before, entry.upsert
                newer.tickets = entry.tickets + newer.tickets
            back.extend(self._queue)
            self._queue = back
            self._index = {(e.table.name, e.key): e for e in back if e.key is not None}
            self._in_flight = 0
            self._draining = []
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._flush_requested = True
            self._stats.failed_batches += 1
            self._stats.last_error = f"{type(error).__name__}: {error}"
            self._batch_failures += 1
            self._board.notify_all()
            self._room.notify_all()

    def _fail_draining(self, message: str) -> None:
        with self._lock:
            for entry in self._draining:
                if entry.tickets[0]._state == _PENDING:
                    for ticket in entry.tickets:
                        ticket._resolve(_FAILED, message)
                    self._keep_failed(entry.to_failed(message))
                    self._stats.failed_entries += 1
            self._stats.last_error = message
            self._draining = []
            self._in_flight = 0
            self._room.notify_all()
            self._board.notify_all()

    def _fail_everything_pending(self) -> None:
        with self._lock:
            message = f"the write buffer closed before this entry could be written: {self._stats.last_error}"
            for entry in self._queue:
                for ticket in entry.tickets:
                    ticket._resolve(_FAILED, message)
                self._keep_failed(entry.to_failed(message))
            self._stats.failed_entries += len(self._queue)
            self._queue = []
            self._index = {}
            self._room.notify_all()
            self._board.notify_all()


def _report(text: str) -> None:
    """At exit: to the ``sqlite_hybrid.buffer`` logger (stderr when logging is not
    configured: logging's last-resort handler), or straight to stderr if that fails."""
    try:
        _log.error(text)
        return
    except Exception:
        pass
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:
        pass
