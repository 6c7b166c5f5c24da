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
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Callable, Optional

from ._errors import is_lock_error
from ._retry import LockTimeout, full_jitter

_FIRST_PAUSE_S = 0.002
_MAX_PAUSE_S = 0.25


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
