"""Write transactions for the write buffer and the chunked imports.

* :func:`prepare_connection` puts a connection in the mode where the code here
  issues ``BEGIN IMMEDIATE`` / ``COMMIT`` itself (``isolation_level=None``, or
  ``autocommit=True`` on Python 3.12+), and refuses one inside a transaction.
* :func:`begin_immediate` takes the write lock, retrying lock errors (told by
  :func:`sqlite_hybrid._errors.is_lock_error`, the package's one rule) with
  jittered exponential backoff until a deadline. ``BEGIN IMMEDIATE`` takes the
  lock before anything is read, so the statements after it never meet
  ``SQLITE_BUSY``/``SQLITE_BUSY_SNAPSHOT`` (a read transaction that upgrades
  would, and no busy handler is called for those).
* :class:`LockBudget` bounds one transaction's time in the lock, ``COMMIT``
  included: it says between statement groups whether one more group still
  fits, reserving ``COMMIT``'s measured share, and sizes the groups.
* :class:`Checkpointer` runs SQLite's automatic checkpoint itself, after
  ``COMMIT`` returns, so that the time measured as "in the lock" is.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from typing import Any, Callable, Deque, Optional

from ._errors import is_lock_error
from ._retry import LockTimeout, full_jitter

_FIRST_PAUSE_S = 0.002
_MAX_PAUSE_S = 0.25

# Most rows per statement group (one executemany); the time bound is checked
# between groups.
GROUP_ROWS = 64
# A group is sized to take at most this fraction of the time left for writing.
_GROUP_SHARE = 1.0 / 8
# COMMIT's time per second of writing, before anything was measured: as long
# as the writing (so the first transaction writes for half the budget).
_FIRST_COMMIT_SHARE = 1.0
# How many recent transactions' COMMIT shares are kept (the largest counts).
_COMMIT_SAMPLES = 8


def prepare_connection(conn: Any, fresh: bool = False) -> None:
    """Lets the caller control transactions with explicit ``BEGIN``/``COMMIT``.

    ``fresh``: the connection was just opened for us (the write buffer's, from a
    factory), so Python 3.12's ``autocommit=False`` (whose implicit transaction
    is empty) is simply switched to ``autocommit=True``. An app's connection
    with ``autocommit=False`` is refused: its open transaction may hold the app's
    own changes, which a chunk's commit must not commit behind its back."""
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", None)
    autocommit = getattr(conn, "autocommit", legacy)
    if autocommit is not legacy and autocommit is not True:
        if not fresh:
            raise ValueError(
                "the connection has autocommit=False, so it is always inside a transaction: chunks "
                "are committed one by one, so use a connection with autocommit=True (or the "
                "default legacy transaction control)"
            )
        conn.autocommit = True
        return
    if getattr(conn, "in_transaction", False):
        raise ValueError(
            "the connection is inside a transaction: commit or roll back first (chunks are committed "
            "one by one, so they cannot be part of a caller's transaction)"
        )
    conn.isolation_level = None


def backoff_pause(attempt: int) -> float:
    """The pause before the next ``BEGIN IMMEDIATE`` (:func:`full_jitter`, 2 ms doubling to 250 ms)."""
    return full_jitter(attempt, _FIRST_PAUSE_S, _MAX_PAUSE_S)


def begin_immediate(conn: Any, deadline: float, on_retry: Optional[Callable[[], None]] = None) -> int:
    """``BEGIN IMMEDIATE`` on ``conn``, retrying lock errors until ``deadline``
    (a ``time.monotonic()`` value). Returns the attempts beyond the first, and calls
    ``on_retry`` before each. Raises :class:`sqlite_hybrid.LockTimeout` (the
    retry decorator's, so one ``except`` serves both) when the deadline passes;
    any other error at once."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return attempt
        except Exception as error:
            if not is_lock_error(error):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(attempt + 1, time.monotonic() - started, error) from error
            if on_retry is not None:
                on_retry()
            time.sleep(min(remaining, backoff_pause(attempt)))
            attempt += 1


def rollback_quietly(conn: Any) -> None:
    """Rolls back if a transaction is open; errors are ignored (nothing left to undo)."""
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception:
        pass


class LockBudget:
    """The time one write transaction may hold the lock, ``max_lock_ms`` from
    ``BEGIN IMMEDIATE`` returning to ``COMMIT`` returning, and how to keep to it.

    One per write buffer or per import, so what it learns carries from one
    transaction to the next. Rows are written in statement groups; before each
    group after the first (a transaction always writes something),
    :meth:`fits` says whether the group and the ``COMMIT`` still fit.

    * **COMMIT is reserved in proportion to the writing.** ``COMMIT`` writes the
      transaction's pages to the WAL, so its time grows with what was written
      (plus a fixed part: a sync with ``synchronous=FULL``). The share kept is
      the largest ``COMMIT`` time per second of writing over the last 8
      transactions that wrote for a quarter of the window or more (1.0 before
      any). Writing stops once ``writing * (1 + share)`` would pass the budget.
      A fixed part converges too: a transaction that writes less measures a
      larger share, and the window settles where the two add up to the budget.
      The next group is counted at twice its expected time (a margin).
    * **Groups are small against the window.** A group takes at most 1/8 of
      the time left for writing (``budget / (1 + share)``), by the recent time
      per row (a moving average): at most :data:`GROUP_ROWS` rows, fewer when
      rows are slow or ``COMMIT`` takes most of the budget, never under 1.

    ``clock`` (seconds, :func:`time.perf_counter` by default) is a parameter so
    tests can drive it.
    """

    def __init__(self, max_lock_ms: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.budget_s = max_lock_ms / 1000.0
        self.clock = clock
        #: Rows in the next statement group.
        self.group_rows = GROUP_ROWS
        self._commit_shares: Deque[float] = deque(maxlen=_COMMIT_SAMPLES)
        self._row_s = 0.0  # seconds per row, moving average (0: none measured)

    def commit_share(self) -> float:
        """``COMMIT``'s time per second of writing, as reserved now."""
        return max(self._commit_shares) if self._commit_shares else _FIRST_COMMIT_SHARE

    def window_s(self) -> float:
        """The time a transaction may spend writing rows before its ``COMMIT``."""
        return self.budget_s / (1.0 + self.commit_share())

    def fits(self, began: float, rows: int) -> bool:
        """Whether a group of ``rows`` more, written in a transaction whose lock
        was taken at ``began`` (this clock), still leaves room for ``COMMIT``.
        The group is counted twice its expected time: one group's worth of
        margin for a group slower than the average."""
        return self.clock() - began + 2.0 * rows * self._row_s <= self.window_s()

    def wrote(self, rows: int, seconds: float) -> None:
        """A statement group of ``rows`` rows took ``seconds``."""
        per_row = seconds / max(rows, 1)
        self._row_s = per_row if self._row_s == 0.0 else 0.75 * self._row_s + 0.25 * per_row
        self._size_groups()

    def committed(self, writing_s: float, commit_s: float) -> None:
        """A transaction wrote for ``writing_s`` and its ``COMMIT`` took ``commit_s``."""
        if writing_s > 0.0 and writing_s >= self.window_s() / 4:
            self._commit_shares.append(commit_s / writing_s)
            self._size_groups()

    def _size_groups(self) -> None:
        if self._row_s > 0.0:
            rows = int(self.window_s() * _GROUP_SHARE / self._row_s)
            self.group_rows = max(1, min(GROUP_ROWS, rows))


class Checkpointer:
    """SQLite's automatic checkpoint (``PRAGMA wal_autocheckpoint``), run by us.

    SQLite checkpoints inside the ``COMMIT`` call once the WAL holds
    ``wal_autocheckpoint`` pages (1,000 by default), but after the write lock
    is released (``sqlite3_wal_hook``): no writer waits for it, yet it made
    ``COMMIT`` look 10-20 ms long to whoever times it. So on the connection the
    buffer or an import writes with, the automatic checkpoint is turned off and
    :meth:`committed` runs the same ``PASSIVE`` checkpoint after ``COMMIT`` has
    returned. When: after as many transactions as fill the WAL to the limit,
    learnt from each checkpoint's count of WAL pages (``PASSIVE`` never waits
    for readers or writers). :meth:`restore` puts the setting back.
    """

    def __init__(self, conn: Any) -> None:
        self.limit = 0
        try:
            row = conn.execute("PRAGMA wal_autocheckpoint").fetchone()
            limit = int(row[0]) if row else 0
            if limit > 0:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                self.limit = limit
        except (sqlite3.Error, TypeError, ValueError):
            self.limit = 0
        self._since = 0  # transactions since our last checkpoint
        self._every = 1  # checkpoint after this many (learnt)

    def committed(self, conn: Any) -> None:
        """After a ``COMMIT`` (the lock released): checkpoint when it is due."""
        if self.limit <= 0:
            return
        self._since += 1
        if self._since < self._every:
            return
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return  # the next commit tries again
        if row and row[0]:
            return  # another connection is checkpointing: ours at the next commit
        wal_pages = int(row[1]) if row else -1
        if wal_pages < 0:  # not in WAL mode: nothing to do, SQLite's setting back
            self.restore(conn)
            return
        # The pages since the WAL last started over, most of them ours: a WAL
        # that did not start over (a reader kept it) only makes this larger,
        # so checkpoints come sooner, as SQLite's own would (after every commit).
        per_transaction = wal_pages // self._since
        self._every = max(1, self.limit // per_transaction) if per_transaction > 0 else 1
        self._since = 0

    def restore(self, conn: Any) -> None:
        """Turns SQLite's automatic checkpoint back on (the setting found)."""
        if self.limit > 0:
            try:
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(self.limit)}")
            except sqlite3.Error:
                pass
            self.limit = 0
