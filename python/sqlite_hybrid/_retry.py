"""Re-running a whole unit of work when SQLite reports a lock error.

A busy handler (SQLite's or ours) can only wait *before* a statement gets a
lock. Some lock errors reach the caller without any wait: a transaction that
has read and then writes, in WAL mode, gets ``SQLITE_BUSY`` at once while
another connection holds the write lock, or ``SQLITE_BUSY_SNAPSHOT`` when its
snapshot went stale. Nothing but starting the transaction again can fix those
(or starting it with ``BEGIN IMMEDIATE`` in the first place). :func:`retry`
does that: it re-runs the function, coroutine or block, on lock errors only
(:func:`sqlite_hybrid._errors.is_lock_error`, by SQLite result code), with
jittered exponential backoff, until a deadline; then it raises
:class:`LockTimeout`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import sqlite3
import sys
import threading
import time
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterator,
    Optional,
    Sequence,
    TypeVar,
    Union,
    overload,
)

from ._errors import is_lock_error, sqlite_error_code

__all__ = ["Attempt", "LockTimeout", "retry", "retrying", "retry_stats"]

F = TypeVar("F", bound=Callable[..., Any])

_NOTE_SQL = "SELECT hybrid_note_retry()"


class LockTimeout(sqlite3.OperationalError):
    """A unit of work still failed with a SQLite lock error when the retry deadline passed.

    A subclass of :class:`sqlite3.OperationalError` (so existing
    ``except sqlite3.OperationalError`` blocks still catch it); the last lock
    error is chained as ``__cause__`` and kept in :attr:`last_error`, and
    :attr:`sqlite_errorcode` is its SQLite result code, so
    :func:`sqlite_hybrid.is_lock_error` is true for it too.

    Attributes: ``attempts`` (how many times the unit ran), ``elapsed``
    (seconds since the first attempt), ``last_error``, ``sqlite_errorcode``.
    """

    def __init__(self, attempts: int, elapsed: float, last_error: BaseException) -> None:
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error
        self.sqlite_errorcode = sqlite_error_code(last_error)
        super().__init__(
            f"still locked after {attempts} attempt(s) in {elapsed:.2f} s "
            f"(last error: {type(last_error).__name__}: {last_error}). Another connection held the "
            "write lock for longer than the retry deadline: shorten the transactions that write "
            "(chunk imports), start write transactions with BEGIN IMMEDIATE, or raise `deadline`"
        )


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = {"units": 0, "retries": 0, "gave_up": 0, "noted": 0}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)


_STATS = _Stats()


def retry_stats() -> Dict[str, int]:
    """This process's retry counters since it started.

    ``units`` (units of work run under :func:`retry`), ``retries`` (re-runs
    after a lock error), ``gave_up`` (:class:`LockTimeout` raised), ``noted``
    (retries also recorded in the extension's ``hybrid_lock_metrics.app_retries``
    through ``SELECT hybrid_note_retry()``).
    """
    return _STATS.snapshot()


def _is_session(obj: Any) -> bool:
    if "sqlalchemy" not in sys.modules:
        return False
    # SQLAlchemy's Session / AsyncSession, or an application subclass of either.
    return any(
        c.__name__ in ("Session", "AsyncSession") and (c.__module__ or "").startswith("sqlalchemy")
        for c in type(obj).__mro__
    )


def _targets(args: Sequence[Any], kwargs: Dict[str, Any], session: Any) -> list:
    """The sessions and sqlite3 connections a failed attempt must roll back / can note on."""
    found = [] if session is None else [session]
    for value in list(args) + list(kwargs.values()):
        if value is session:
            continue
        if _is_session(value) or isinstance(value, sqlite3.Connection):
            found.append(value)
    return found


def _note_bind(session: Any) -> Any:
    """The engine a session writes to, with plain deferred transactions (a note must not queue)."""
    bind = getattr(session, "bind", None)
    if bind is None:
        get_bind = getattr(session, "get_bind", None)
        bind = get_bind() if get_bind is not None else None
    if bind is None or not hasattr(bind, "execution_options"):
        return None
    return bind.execution_options(sqlite_hybrid_begin="deferred")


def _note_and_rollback_sync(targets: list) -> bool:
    """Rolls back, then records the retry in the extension where a connection is reachable.

    ``SELECT hybrid_note_retry()`` (``hybrid_lock_metrics.app_retries``) runs on the
    ``sqlite3`` connection itself, or on a connection of the session's engine; a
    library without that function ("no such function") is tolerated.
    """
    noted = False
    for target in targets:
        try:
            target.rollback()
        except Exception:
            pass
        try:
            if isinstance(target, sqlite3.Connection):
                target.execute(_NOTE_SQL).fetchall()
                noted = True
            else:
                bind = _note_bind(target)
                if bind is not None:
                    with bind.connect() as conn:
                        conn.exec_driver_sql(_NOTE_SQL).fetchall()
                    noted = True
        except Exception:  # no such function (an older library), or no connection to be had
            pass
    return noted


async def _note_and_rollback_async(targets: list) -> bool:
    noted = False
    for target in targets:
        if not hasattr(target, "sync_session"):  # not an AsyncSession
            noted = _note_and_rollback_sync([target]) or noted
            continue
        try:
            await target.rollback()
        except Exception:
            pass
        try:
            bind = _note_bind(target)
            if bind is not None:
                async with bind.connect() as conn:
                    await conn.exec_driver_sql(_NOTE_SQL)
                noted = True
        except Exception:
            pass
    return noted


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """The pause before retry ``attempt + 1`` (0-based), in seconds: "full jitter",
    uniform in ``[0, min(cap, base * 2**attempt)]``, so waiters that collided once
    do not wake together again. The one backoff formula of the package."""
    return random.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


class _Policy:
    def __init__(self, deadline: float, base: float, cap: float, attempts: Optional[int],
                 on: Callable[[BaseException], bool]) -> None:
        if deadline < 0 or base <= 0 or cap < base:
            raise ValueError(
                f"retry: need deadline >= 0, base > 0 and cap >= base (got deadline={deadline}, "
                f"base={base}, cap={cap})"
            )
        if attempts is not None and attempts < 1:
            raise ValueError(f"retry: attempts must be >= 1 or None, got {attempts}")
        self.deadline = deadline
        self.base = base
        self.cap = cap
        self.attempts = attempts
        self.on = on

    def next_sleep(self, attempt: int, started: float, error: BaseException) -> float:
        """Seconds to sleep before attempt ``attempt + 1``; raises LockTimeout when out of time."""
        elapsed = time.monotonic() - started
        remaining = self.deadline - elapsed
        if remaining <= 0 or (self.attempts is not None and attempt >= self.attempts):
            _STATS.add("gave_up")
            raise LockTimeout(attempt, elapsed, error) from error
        return min(full_jitter(attempt - 1, self.base, self.cap), remaining)


class Attempt:
    """One attempt of a :func:`retrying` loop: use it as a context manager.

    A lock error inside the ``with`` block is swallowed (the loop runs the
    block again); any other exception propagates at once.
    """

    def __init__(self, loop: "_Retrying", number: int) -> None:
        self.number = number
        self._loop = loop

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        if exc is None:
            self._loop._done = True
            return False
        if isinstance(exc, Exception) and self._loop._policy.on(exc):
            self._loop._error = exc
            return True
        return False


class _Retrying:
    def __init__(self, policy: _Policy, session: Any) -> None:
        self._policy = policy
        self._session = session
        self._done = False
        self._error: Optional[BaseException] = None

    def __iter__(self) -> Iterator[Attempt]:
        started = time.monotonic()
        _STATS.add("units")
        number = 1
        while True:
            self._error = None
            yield Attempt(self, number)
            if self._done:
                return
            if self._error is None:
                raise RuntimeError("retrying(): use each attempt as `with attempt:`")
            pause = self._policy.next_sleep(number, started, self._error)
            _STATS.add("retries")
            if _note_and_rollback_sync(_targets((), {}, self._session)):
                _STATS.add("noted")
            time.sleep(pause)
            number += 1

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        started = time.monotonic()
        _STATS.add("units")
        number = 1
        while True:
            self._error = None
            yield Attempt(self, number)
            if self._done:
                return
            if self._error is None:
                raise RuntimeError("retrying(): use each attempt as `with attempt:`")
            pause = self._policy.next_sleep(number, started, self._error)
            _STATS.add("retries")
            if await _note_and_rollback_async(_targets((), {}, self._session)):
                _STATS.add("noted")
            await asyncio.sleep(pause)
            number += 1


def retrying(
    *,
    deadline: float = 10.0,
    base: float = 0.005,
    cap: float = 0.25,
    attempts: Optional[int] = None,
    session: Any = None,
    on: Callable[[BaseException], bool] = is_lock_error,
) -> _Retrying:
    """The loop form of :func:`retry`, for a block of code instead of a function.

    Iterate (``for`` or ``async for``) and run the unit of work inside
    ``with attempt:``; a lock error ends the attempt, the loop rolls back
    ``session`` (a SQLAlchemy ``Session``/``AsyncSession``, or a ``sqlite3``
    connection), sleeps and runs it again; success ends the loop.

    >>> import sqlite3, sqlite_hybrid
    >>> db = sqlite3.connect(":memory:")
    >>> tries = []
    >>> for attempt in sqlite_hybrid.retrying(deadline=2.0, session=db):
    ...     with attempt:
    ...         tries.append(attempt.number)
    ...         if len(tries) < 3:   # stands for a statement that met a held lock
    ...             raise sqlite3.OperationalError("database is locked")
    >>> tries
    [1, 2, 3]
    """
    return _Retrying(_Policy(deadline, base, cap, attempts, on), session)


@overload
def retry(func: F) -> F: ...


@overload
def retry(
    func: None = None,
    *,
    deadline: float = 10.0,
    base: float = 0.005,
    cap: float = 0.25,
    attempts: Optional[int] = None,
    session: Any = None,
    on: Callable[[BaseException], bool] = is_lock_error,
) -> Callable[[F], F]: ...


def retry(
    func: Optional[F] = None,
    *,
    deadline: float = 10.0,
    base: float = 0.005,
    cap: float = 0.25,
    attempts: Optional[int] = None,
    session: Any = None,
    on: Callable[[BaseException], bool] = is_lock_error,
) -> Union[F, Callable[[F], F]]:
    """Re-runs a function or coroutine function when it fails with a SQLite lock error.

    The decorated callable is one *unit of work*: a whole transaction,
    from its first read to its commit. When it raises an exception for
    which ``on`` is true (default: :func:`sqlite_hybrid.is_lock_error`,
    ``SQLITE_BUSY`` / ``SQLITE_LOCKED`` and their extended codes, found by
    result code through SQLAlchemy's ``.orig`` and ``__cause__``), it is
    rolled back and run again after a jittered exponential pause
    (uniform in ``[0, min(cap, base * 2**n)]`` seconds). Any other exception
    propagates at once, unretried. When ``deadline`` seconds have passed
    since the first attempt (or ``attempts`` runs were made), it raises
    :class:`LockTimeout` chained to the last lock error.

    Rolled back between attempts: ``session`` if given, and every argument of
    the call that is a SQLAlchemy ``Session`` / ``AsyncSession`` or a
    ``sqlite3.Connection``. Where one of them has the extension loaded, the
    retry is also counted there (``SELECT hybrid_note_retry()``, shown as
    ``app_retries`` in ``hybrid_lock_metrics``); :func:`retry_stats` counts
    every retry of the process either way.

    Do not wrap a function that commits part of its work and then fails:
    the committed part would run again. Keep one transaction per unit.

    >>> import sqlite3, sqlite_hybrid
    >>> calls = []
    >>> @sqlite_hybrid.retry(deadline=2.0)
    ... def transfer(db: sqlite3.Connection) -> int:
    ...     calls.append(1)
    ...     if len(calls) == 1:   # stands for SQLITE_BUSY from a read-then-write
    ...         raise sqlite3.OperationalError("database is locked")
    ...     return len(calls)
    >>> transfer(sqlite3.connect(":memory:"))
    2
    >>> @sqlite_hybrid.retry
    ... def broken() -> None:
    ...     raise sqlite3.OperationalError("no such table: t")
    >>> broken()   # not a lock error: raised at once, never retried
    Traceback (most recent call last):
    ...
    sqlite3.OperationalError: no such table: t

    Coroutine functions are awaited and pause with ``asyncio.sleep``::

        @sqlite_hybrid.retry(deadline=5.0)
        async def add_track(session: AsyncSession, title: str) -> None:
            async with session.begin():
                session.add(Track(title=title))
    """
    policy = _Policy(deadline, base, cap, attempts, on)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.monotonic()
                _STATS.add("units")
                number = 1
                while True:
                    try:
                        return await fn(*args, **kwargs)
                    except Exception as error:
                        if not policy.on(error):
                            raise
                        pause = policy.next_sleep(number, started, error)
                        _STATS.add("retries")
                        if await _note_and_rollback_async(_targets(args, kwargs, session)):
                            _STATS.add("noted")
                        await asyncio.sleep(pause)
                        number += 1

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            _STATS.add("units")
            number = 1
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as error:
                    if not policy.on(error):
                        raise
                    pause = policy.next_sleep(number, started, error)
                    _STATS.add("retries")
                    if _note_and_rollback_sync(_targets(args, kwargs, session)):
                        _STATS.add("noted")
                    time.sleep(pause)
                    number += 1

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate

