"""Which exceptions are SQLite lock errors, told by SQLite's result code.

A lock error is ``SQLITE_BUSY`` (5) or ``SQLITE_LOCKED`` (6), with any of
their extended codes (``SQLITE_BUSY_SNAPSHOT`` = 517, ``SQLITE_BUSY_RECOVERY``
= 261, ``SQLITE_BUSY_TIMEOUT`` = 773, ``SQLITE_LOCKED_SHAREDCACHE`` = 262, ...).
Every part of the package that retries or counts lock errors asks here, so
there is one rule.

Where the code comes from, in order:

* ``sqlite_errorcode`` (the standard ``sqlite3`` module since Python 3.11,
  and ``pysqlite3``): the extended result code;
* ``extendedresult`` / ``result`` (``apsw``);
* the exception a wrapper holds: SQLAlchemy's ``DBAPIError.orig``, and
  ``__cause__`` (Django's ``OperationalError``, ``raise ... from``).

Python 3.8 to 3.10's ``sqlite3`` exposes no result code at all. There, and
only for ``sqlite3.OperationalError`` (and the same class of ``pysqlite3``
/ ``sqlean``), the message is compared *whole* with the fixed text SQLite
itself gives these codes (``sqlite3_errstr``): ``database is locked`` for
``SQLITE_BUSY`` and all its extended codes, ``database table is locked``
(optionally ``: <table>``) for ``SQLITE_LOCKED``. An application message
that merely contains those words is never taken for one.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_BUSY_RECOVERY",
    "SQLITE_BUSY_SNAPSHOT",
    "SQLITE_BUSY_TIMEOUT",
    "sqlite_error_code",
    "is_lock_error",
]

SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_BUSY_RECOVERY = SQLITE_BUSY | (1 << 8)
SQLITE_BUSY_SNAPSHOT = SQLITE_BUSY | (2 << 8)
SQLITE_BUSY_TIMEOUT = SQLITE_BUSY | (3 << 8)

_LOCK_PRIMARY_CODES = frozenset({SQLITE_BUSY, SQLITE_LOCKED})
# sqlite3_errstr() of SQLITE_BUSY and SQLITE_LOCKED (src/main.c, aMsg[]).
_BUSY_TEXT = "database is locked"
_LOCKED_TEXT = "database table is locked"
# How many wrappers deep to look (SQLAlchemy around Django around sqlite3
# is already unusual); a cycle in __cause__ must not loop for ever.
_MAX_DEPTH = 8


def _own_code(exc: BaseException) -> Optional[int]:
    """The SQLite result code ``exc`` itself carries, if any."""
    for attribute in ("sqlite_errorcode", "extendedresult", "result"):
        code = getattr(exc, attribute, None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    return None


def _text_code(exc: BaseException) -> Optional[int]:
    """Python < 3.11: the code from SQLite's own fixed message, compared whole."""
    if type(exc).__name__ != "OperationalError":
        return None
    module = type(exc).__module__ or ""
    if not module.split(".")[0] in {"sqlite3", "pysqlite3", "sqlean"}:
        return None
    text = str(exc)
    if text == _BUSY_TEXT:
        return SQLITE_BUSY
    if text == _LOCKED_TEXT or text.startswith(_LOCKED_TEXT + ": "):
        return SQLITE_LOCKED
    return None


def sqlite_error_code(exc: BaseException) -> Optional[int]:
    """The SQLite result code (extended where known) behind ``exc``, or ``None``.

    Looks through SQLAlchemy's ``.orig`` and ``__cause__``.

    >>> import sqlite3
    >>> a = sqlite3.connect(":memory:")
    >>> try:
    ...     a.execute("SELECT * FROM missing")
    ... except sqlite3.Error as e:
    ...     sqlite_error_code(e) in (1, None)   # SQLITE_ERROR (None before 3.11)
    True
    """
    seen = set()
    current: Any = exc
    for _ in range(_MAX_DEPTH):
        if current is None or id(current) in seen:
            break
        seen.add(id(current))
        code = _own_code(current)
        if code is None:
            code = _text_code(current)
        if code is not None:
            return code
        inner = getattr(current, "orig", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__
    return None


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps) ``SQLITE_BUSY`` or ``SQLITE_LOCKED``, any extended code."""
    code = sqlite_error_code(exc)
    return code is not None and (code & 0xFF) in _LOCK_PRIMARY_CODES
