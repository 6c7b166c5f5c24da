"""Chunked imports: insert or upsert many rows in short transactions, so a long
import (a library scan, a CSV load) never holds the write lock for seconds.

The Python twin of the Rust client's ``batch.rs`` (``Database::insert_many``,
``upsert_many``), with one addition: a chunk ends at ``chunk_rows`` rows *or*
early enough for its ``COMMIT`` to end ``max_lock_ms`` (default 20 ms) after
the lock was taken, whichever comes first: ``COMMIT``'s measured share is
reserved and rows go in statement groups sized to a small part of the time
left (``_tx.LockBudget``, as in the write buffer). Every chunk is one
``BEGIN IMMEDIATE`` ... ``COMMIT`` (lock errors at ``BEGIN`` retried with
jittered backoff until ``lock_timeout``); between chunks other writers get
their turn.

Rows are checked before their chunk starts (unknown columns, key not the
PRIMARY KEY or a UNIQUE index, missing/None/NaN key, NOT NULL, STRICT types).
On any failure the chunks already committed stay committed and
:class:`ImportFailed` says how many rows and chunks that was.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Iterable, Mapping, Optional, Sequence, Tuple, Union

from ._schema import InvalidRow, TableInfo, load_table, quote
from ._tx import Checkpointer, LockBudget, begin_immediate, prepare_connection, rollback_quietly

__all__ = ["insert_many", "upsert_many", "ImportReport", "ImportFailed"]


@dataclass
class ImportReport:
    """What a chunked import did."""

    #: Rows committed.
    rows: int = 0
    #: Transactions committed.
    chunks: int = 0
    #: Longest time one chunk held the write lock (``BEGIN IMMEDIATE`` to ``COMMIT``;
    #: SQLite's automatic checkpoint, which runs after the lock is released, is run
    #: after ``COMMIT`` returns and not counted).
    max_lock_ms: float = 0.0
    #: ``BEGIN IMMEDIATE`` attempts beyond the first, caused by lock errors.
    lock_retries: int = 0


class ImportFailed(Exception):
    """A chunked import stopped. ``committed_rows`` / ``committed_chunks`` stay committed
    (the rows before ``failed_at``, the input position of the first row not committed);
    ``error`` (also ``__cause__``) is why: an :class:`~sqlite_hybrid.InvalidRow`, a
    ``sqlite3.Error`` or a lock deadline."""

    def __init__(self, error: BaseException, report: ImportReport) -> None:
        super().__init__(
            f"{error} (the first {report.rows} rows were committed, in {report.chunks} chunks)"
            if report.rows
            else f"{error} (nothing was committed)"
        )
        self.error = error
        self.report = report
        self.committed_rows = report.rows
        self.committed_chunks = report.chunks
        self.failed_at = report.rows


def insert_many(
    conn: sqlite3.Connection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    chunk_rows: int = 1000,
    max_lock_ms: float = 20.0,
    lock_timeout: float = 30.0,
) -> ImportReport:
    """Inserts ``rows`` (mappings of column to value) into ``table`` in chunks.

    ``conn`` is the app's connection (the standard ``sqlite3`` module); it must
    not be inside a transaction. Its transaction setting is restored afterwards.

    >>> import sqlite3
    >>> conn = sqlite3.connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    >>> report = insert_many(conn, "t", ({"id": i, "v": f"row {i}"} for i in range(250)), chunk_rows=100)
    >>> report.rows, report.chunks >= 3   # 100 rows a chunk, or fewer on time
    (250, True)
    """
    return _write_chunks(conn, table, None, rows, chunk_rows, max_lock_ms, lock_timeout)


def upsert_many(
    conn: sqlite3.Connection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    key: Union[str, Sequence[str]],
    *,
    chunk_rows: int = 1000,
    max_lock_ms: float = 20.0,
    lock_timeout: float = 30.0,
) -> ImportReport:
    """Inserts or updates ``rows`` in ``table``, matching on ``key`` (the PRIMARY KEY or a
    UNIQUE index): a row whose key exists gets its other given columns updated.

    >>> import sqlite3
    >>> conn = sqlite3.connect(":memory:")
    >>> _ = conn.execute("CREATE TABLE stock(sku TEXT PRIMARY KEY, qty INT)")
    >>> _ = upsert_many(conn, "stock", [{"sku": "a", "qty": 1}], key="sku")
    >>> _ = upsert_many(conn, "stock", [{"sku": "a", "qty": 5}], key="sku")
    >>> conn.execute("SELECT qty FROM stock").fetchall()
    [(5,)]
    """
    return _write_chunks(conn, table, key, rows, chunk_rows, max_lock_ms, lock_timeout)


def _sql(info: TableInfo, columns: Tuple[str, ...], keys: Optional[Tuple[str, ...]]) -> str:
    text = (
        f"INSERT INTO {quote(info.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    if keys is None:
        return text
    updates = [f"{quote(c)} = excluded.{quote(c)}" for c in columns if c not in keys]
    action = "UPDATE SET " + ", ".join(updates) if updates else "NOTHING"
    return f"{text} ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO {action}"


def _write_chunks(
    conn: sqlite3.Connection,
    table: str,
    key: Optional[Union[str, Sequence[str]]],
    rows: Iterable[Mapping[str, Any]],
    chunk_rows: int,
    max_lock_ms: float,
    lock_timeout: float,
) -> ImportReport:
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be an int >= 1, got {chunk_rows!r}")
    if not max_lock_ms > 0:
        raise ValueError(f"max_lock_ms must be positive, got {max_lock_ms!r}")
    report = ImportReport()
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", None)
    saved_autocommit = getattr(conn, "autocommit", legacy)
    saved_isolation = conn.isolation_level
    checkpointer: Optional[Checkpointer] = None
    try:
        info = load_table(conn, table)
        keys = info.key_columns(key, "key") if key is not None else None
        prepare_connection(conn)
        checkpointer = Checkpointer(conn)
    except Exception as error:
        raise ImportFailed(error, report) from error
    sql_by_shape: dict = {}
    pending: Deque[Tuple[Tuple[str, ...], Tuple[Any, ...]]] = deque()
    source = iter(rows)
    exhausted = False
    budget = LockBudget(max_lock_ms)
    clock = budget.clock
    try:
        while True:
            while not exhausted and len(pending) < chunk_rows:
                try:
                    row = next(source)
                except StopIteration:
                    exhausted = True
                    break
                try:
                    values = info.resolve_row(row, "rows")
                    info.check_insertable(values, "rows")
                    if keys is not None:
                        for column in keys:
                            if column not in values:
                                raise InvalidRow(
                                    f"rows: row {report.rows + len(pending)} is missing key column "
                                    f"{info.name}.{column}",
                                    argument="rows",
                                    table=info.name,
                                    column=column,
                                )
                            values[column] = info.normalize_key(column, values[column], "rows")
                    if not values:
                        raise InvalidRow("rows: a row with no columns", argument="rows", table=info.name)
                except Exception as error:
                    # Whatever was validated is not written: the import stops here.
                    raise ImportFailed(error, report) from error
                pending.append((tuple(values), tuple(values.values())))
            if not pending:
                return report
            try:
                report.lock_retries += begin_immediate(conn, time.monotonic() + lock_timeout)
                began = clock()
                written = 0
                while pending and written < chunk_rows:
                    if written and not budget.fits(began, budget.group_rows):
                        break
                    shape = pending[0][0]
                    group = []
                    most = budget.group_rows
                    while pending and len(group) < most and written + len(group) < chunk_rows:
                        if pending[0][0] != shape:
                            break
                        group.append(pending.popleft()[1])
                    text = sql_by_shape.get(shape)
                    if text is None:
                        text = sql_by_shape[shape] = _sql(info, shape, keys)
                    group_began = clock()
                    if len(group) == 1:
                        conn.execute(text, group[0])
                    else:
                        conn.executemany(text, group)
                    budget.wrote(len(group), clock() - group_began)
                    written += len(group)
                writing_s = clock() - began
                conn.execute("COMMIT")
            except Exception as error:
                rollback_quietly(conn)
                raise ImportFailed(error, report) from error
            held_s = clock() - began
            budget.committed(writing_s, held_s - writing_s)
            report.rows += written
            report.chunks += 1
            report.max_lock_ms = max(report.max_lock_ms, held_s * 1000.0)
            checkpointer.committed(conn)  # outside the lock
    finally:
        rollback_quietly(conn)
        if checkpointer is not None:
            checkpointer.restore(conn)
        if saved_autocommit is not legacy:
            conn.autocommit = saved_autocommit  # type: ignore[attr-defined]
        else:
            conn.isolation_level = saved_isolation
