"""sqlite-hybrid for Python: the loadable SQLite extension, and how to load it.

The wheel carries ``libhybrid.so`` (entry point ``sqlite3_hybrid_init``): a fair
hand-off of SQLite's write lock between processes, a jittered busy handler
where that cannot be used, and lock metrics (``hybrid_lock_metrics``).

* :func:`loadable_path` -- the library's path without ``.so`` (SQLite adds it).
* :func:`load` -- loads the extension into an open connection of the standard
  ``sqlite3`` module, ``pysqlite3``, ``sqlean`` or ``apsw`` (found by duck
  typing), re-installs the hybrid busy handler and applies a policy.
* :func:`load_async` -- the same for an ``aiosqlite`` connection.
* :func:`connect` -- ``sqlite3.connect`` plus :func:`load`.

Plugins: the wheel registers a Datasette plugin and a sqlite-utils plugin that
load the extension into every connection those tools open; see
``sqlite_hybrid.datasette_plugin`` and ``sqlite_hybrid.sqlite_utils_plugin``.
SQLAlchemy: :func:`sqlite_hybrid.sqlalchemy.attach` and
:func:`sqlite_hybrid.sqlalchemy.writer` (``BEGIN IMMEDIATE``). Django: the app
``sqlite_hybrid.django``. Units of work that must survive lock errors:
:func:`retry` / :func:`retrying` (raising :class:`LockTimeout`), with
:func:`is_lock_error` as the one rule for what a lock error is.

Rules
-----
**One SQLite library per process.** Every call a loadable extension makes goes
through one process-wide table of the SQLite library that loaded it first.
The standard ``sqlite3`` module (the system's ``libsqlite3``), ``apsw``,
``pysqlite3-binary`` and ``sqlean.py`` each carry their own SQLite. Load the
extension into connections of only one of them per process: loading it into a
second, different SQLite is refused with ``libhybrid is already loaded into a
different SQLite library in this process; load it into only one``. (Datasette
and sqlite-utils use ``pysqlite3`` instead of ``sqlite3`` when it is installed;
check with ``SELECT sqlite_version()``.)

**Busy timeouts replace the handler.** SQLite keeps one busy handler per
connection. ``PRAGMA busy_timeout``, ``sqlite3_busy_timeout()`` and so
``sqlite3.connect(timeout=...)`` (5 s by default) replace the hybrid handler.
Once the extension is loaded, every connection opened later in the process is
registered automatically, but the host's connect then installs SQLite's own
handler over ours. :func:`load` therefore always ends with
``SELECT hybrid_busy_timeout(ms)``, which puts ours back. Call it on every
connection (the plugins and :func:`sqlite_hybrid.sqlalchemy.attach` do), and
check with ``SELECT handler_active, connections FROM hybrid_lock_metrics
WHERE scope = 'process'``.

**Extension loading.** Some Python builds (pyenv without
``--enable-loadable-sqlite-extensions``, macOS's system Python) have no
``enable_load_extension``; use another Python, or ``apsw`` / ``sqlean.py`` /
``pysqlite3-binary``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Dict, Mapping

from ._errors import is_lock_error, sqlite_error_code
from ._retry import Attempt, LockTimeout, retry, retry_stats, retrying

__all__ = [
    "POLICY_KEYS",
    "Attempt",
    "LockTimeout",
    "connect",
    "is_lock_error",
    "load",
    "load_async",
    "loadable_path",
    "policy_from_env",
    "retry",
    "retry_stats",
    "retrying",
    "sqlite_error_code",
    "__version__",
    # write buffer, chunked imports, log handler (docs/python-buffer.md)
    "BufferClosed",
    "BufferFull",
    "BufferStats",
    "FailedEntry",
    "FlushFailed",
    "ImportFailed",
    "ImportReport",
    "InvalidRow",
    "LogHandler",
    "LogStats",
    "Ticket",
    "WriteBuffer",
    "WriteBufferError",
    "insert_many",
    "query_logs",
    "upsert_many",
]

#: Keys accepted by ``hybrid_busy_config`` (see docs/sql-reference.md).
POLICY_KEYS = frozenset(
    {"base_ms", "cap_ms", "jitter", "timeout_ms", "max_retries", "aging_ms", "handoff_ms",
     "max_wait_ms"}
)

_HERE = os.path.dirname(os.path.abspath(__file__))
_STEM = "libhybrid"  # SQLite derives the entry point from it: sqlite3_hybrid_init

_PROBE_SQL = "SELECT hybrid_version()"
_CONFIG_SQL = "SELECT hybrid_busy_config()"
_SET_CONFIG_SQL = "SELECT hybrid_busy_config(?)"
_REINSTALL_SQL = "SELECT hybrid_busy_timeout(?)"

_ONE_LIBRARY_NOTE = (
    "sqlite_hybrid: a process can load libhybrid into one SQLite library only; it was already "
    "loaded into another one (the standard sqlite3 module, apsw, pysqlite3 and sqlean.py each "
    "carry their own SQLite). Use connections of one of them per process."
)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sqlite-hybrid")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


__version__ = _package_version()


def loadable_path() -> str:
    """Path of the bundled library, without the ``.so`` suffix.

    SQLite's ``load_extension`` tries the name as given and then with ``.so``
    appended, so this works with the standard ``sqlite3`` module, ``apsw``,
    ``pysqlite3``, ``sqlean`` and the ``sqlite3`` shell's ``.load``. The entry
    point (``sqlite3_hybrid_init``) is derived from the file name.

    ``SQLITE_HYBRID_LIBRARY`` (a path, with or without ``.so``) overrides it:
    a library built from source (``make ext``: ``dist/libhybrid.so``).
    """
    override = os.environ.get("SQLITE_HYBRID_LIBRARY", "").strip()
    if override:
        path = override[:-3] if override.endswith(".so") else override
        if not os.path.isfile(path + ".so"):
            raise FileNotFoundError(f"SQLITE_HYBRID_LIBRARY: {path}.so does not exist")
        return path
    path = os.path.join(_HERE, _STEM)
    if not os.path.isfile(path + ".so"):
        raise FileNotFoundError(
            f"{path}.so is missing: this installation of sqlite-hybrid has no library for this "
            "platform (install the binary wheel, or build one with scripts/packaging/wheel.sh)"
        )
    return path


def policy_from_env(variable: str = "SQLITE_HYBRID_POLICY") -> Dict[str, Any]:
    """The policy in the environment variable (a JSON object), or ``{}``.

    The Datasette and sqlite-utils plugins read it, e.g.
    ``SQLITE_HYBRID_POLICY='{"timeout_ms": 2000}'``.
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{variable} must be a JSON object, got {text!r}")
    return value


def _scalar(conn: Any, sql: str, params: tuple = ()) -> Any:
    """First column of the first row, for sqlite3-style and apsw connections."""
    cursor = conn.cursor()
    try:
        row = next(iter(cursor.execute(sql, params)), None)
    finally:
        close = getattr(cursor, "close", None)
        if close is not None:
            close()
    return None if row is None else row[0]


def _has_extension(conn: Any) -> bool:
    try:
        _scalar(conn, _PROBE_SQL)
        return True
    except Exception:  # "no such function": not registered on this connection
        return False


def _annotate(error: BaseException) -> None:
    if "different SQLite library" in str(error) and hasattr(error, "add_note"):
        error.add_note(_ONE_LIBRARY_NOTE)


def _load_library(conn: Any) -> None:
    enable = getattr(conn, "enable_load_extension", None)
    load_extension = getattr(conn, "load_extension", None)
    if enable is None or load_extension is None:
        raise TypeError(
            f"{type(conn).__module__}.{type(conn).__qualname__} cannot load SQLite extensions "
            "(no enable_load_extension/load_extension). This Python's sqlite3 module was built "
            "without extension loading: use a Python that has it (Debian's /usr/bin/python3), "
            "or apsw, sqlean.py or pysqlite3-binary"
        )
    import inspect

    if inspect.iscoroutinefunction(enable):
        raise TypeError("an asyncio connection (aiosqlite): use `await sqlite_hybrid.load_async(conn)`")
    enable(True)
    try:
        load_extension(loadable_path())
    except Exception as error:
        _annotate(error)
        raise
    finally:
        enable(False)


def _check_keys(policy: Mapping[str, Any]) -> None:
    unknown = sorted(set(policy) - POLICY_KEYS)
    if unknown:
        raise TypeError(
            f"unknown policy key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(POLICY_KEYS))}"
        )


def load(conn: Any, **policy: Any) -> Dict[str, Any]:
    """Loads the extension into ``conn`` and puts the hybrid busy handler in force.

    ``conn`` is a connection of the standard ``sqlite3`` module, ``pysqlite3``,
    ``sqlean`` or ``apsw``. If the extension is not yet registered on it
    (``SELECT hybrid_version()`` fails), extension loading is enabled, the
    library loaded and loading disabled again. Then the ``policy`` keys given
    (``timeout_ms=2000``, ``jitter="equal"``, ...; see :data:`POLICY_KEYS`) are
    applied with ``SELECT hybrid_busy_config(json)``, and
    ``SELECT hybrid_busy_timeout(timeout_ms)`` re-installs the hybrid handler
    in case the host's connect (``timeout=``) replaced it.

    Returns the connection's policy as a dict. Safe to call more than once.
    """
    _check_keys(policy)
    if not _has_extension(conn):
        _load_library(conn)
    if policy:
        config = _scalar(conn, _SET_CONFIG_SQL, (json.dumps(policy),))
    else:
        config = _scalar(conn, _CONFIG_SQL)
    current = json.loads(config)
    _scalar(conn, _REINSTALL_SQL, (current["timeout_ms"],))
    return current


async def load_async(conn: Any, **policy: Any) -> Dict[str, Any]:
    """:func:`load` for an ``aiosqlite.Connection`` (its methods are coroutines).

    It runs on aiosqlite's own thread, as every call of that connection does.
    """
    _check_keys(policy)

    async def scalar(sql: str, params: tuple = ()) -> Any:
        cursor = await conn.execute(sql, params)
        try:
            row = await cursor.fetchone()
        finally:
            await cursor.close()
        return None if row is None else row[0]

    try:
        await scalar(_PROBE_SQL)
        loaded = True
    except Exception:
        loaded = False
    if not loaded:
        await conn.enable_load_extension(True)
        try:
            await conn.load_extension(loadable_path())
        except Exception as error:
            _annotate(error)
            raise
        finally:
            await conn.enable_load_extension(False)
    if policy:
        config = await scalar(_SET_CONFIG_SQL, (json.dumps(policy),))
    else:
        config = await scalar(_CONFIG_SQL)
    current = json.loads(config)
    await scalar(_REINSTALL_SQL, (current["timeout_ms"],))
    return current


def connect(database: Any, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(database, ...)`` with the extension loaded and its handler in force.

    Keyword arguments named like policy keys (``timeout_ms``, ``jitter``, ...)
    go to :func:`load`; the rest go to ``sqlite3.connect``. ``timeout=`` (in
    seconds, as for ``sqlite3.connect``) becomes the hybrid handler's
    ``timeout_ms`` unless ``timeout_ms`` is given: SQLite's own handler, which
    ``sqlite3.connect`` installs, is replaced by ours with the same deadline.
    """
    policy = {key: kwargs.pop(key) for key in list(kwargs) if key in POLICY_KEYS}
    timeout = kwargs.get("timeout")
    if timeout is not None and "timeout_ms" not in policy:
        policy["timeout_ms"] = float(timeout) * 1000.0
    conn = sqlite3.connect(database, **kwargs)
    try:
        load(conn, **policy)
    except BaseException:
        conn.close()
        raise
    return conn


def _plugins_enabled() -> bool:
    """``SQLITE_HYBRID_PLUGINS=0`` (or ``off``/``false``/``no``) turns both plugins off."""
    value = os.environ.get("SQLITE_HYBRID_PLUGINS", "1").strip().lower()
    return value not in {"0", "off", "false", "no"}


# The write buffer, chunked imports and the log handler (pure Python on the
# host's sqlite3; docs/python-buffer.md). Imported last: they use load().
from ._schema import InvalidRow  # noqa: E402
from .buffer import (  # noqa: E402
    BufferClosed,
    BufferFull,
    BufferStats,
    FailedEntry,
    FlushFailed,
    Ticket,
    WriteBuffer,
    WriteBufferError,
)
from .imports import ImportFailed, ImportReport, insert_many, upsert_many  # noqa: E402
from .logdb import LogHandler, LogStats, query_logs  # noqa: E402
