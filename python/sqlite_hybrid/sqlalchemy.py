"""SQLAlchemy: sqlite-hybrid in every pooled connection of an engine.

::

    from sqlalchemy import create_engine
    from sqlite_hybrid.sqlalchemy import attach, writer

    engine = create_engine("sqlite:///app.db")
    attach(engine)                        # the app's timeout (5 s by default) stays the deadline

    with Session(writer(engine)) as session, session.begin():   # BEGIN IMMEDIATE
        track = session.get(Track, 1)     # read ...
        track.plays += 1                  # ... then write: cannot fail with SQLITE_BUSY*

    # asyncio, with aiosqlite
    from sqlalchemy.ext.asyncio import create_async_engine, async_sessionmaker
    aengine = create_async_engine("sqlite+aiosqlite:///app.db")
    attach(aengine)
    WriteSession = async_sessionmaker(writer(aengine))

What :func:`attach` guarantees, for every connection the pool hands out:

* **the extension is loaded** (at the pool's ``connect`` event, or at the
  first ``checkout`` of a connection opened before :func:`attach`);
* **the hybrid handler is in force** at every checkout, whatever the app's
  own listeners did: a ``connect`` listener that runs ``PRAGMA busy_timeout``
  (before or after ours) only changes the deadline; ours is re-installed by
  one ``SELECT`` per checkout (see the Python guide for its cost);
* **the app's timeout is the deadline**: the one SQLite's handler had when we
  re-install ours (Python's ``timeout=``, 5 s by default, ``connect_args``,
  a ``PRAGMA busy_timeout`` in a listener), unless ``timeout_ms`` is given to
  :func:`attach`, which then wins;
* **write transactions can start with BEGIN IMMEDIATE** (:func:`writer`, or
  ``begin="immediate"``), so a transaction that reads and then writes takes
  the write lock first, through the busy handler, and cannot fail with
  ``SQLITE_BUSY`` / ``SQLITE_BUSY_SNAPSHOT``; read-only work stays on
  deferred transactions and never waits for a writer (WAL).

For ``sqlite+aiosqlite``, the DBAPI connection is SQLAlchemy's adapter; its
``driver_connection`` is the ``aiosqlite.Connection``, which owns the standard
``sqlite3`` connection on its own thread. The extension is loaded through
aiosqlite's own (async) methods, on that thread.
"""

from __future__ import annotations

import sqlite3
import warnings
import weakref
from typing import Any, Callable, Dict, Optional

from sqlalchemy import event

from . import _check_keys, load, load_async

__all__ = ["BEGIN_OPTION", "SqliteHybridWarning", "attach", "detach", "writer"]

#: The execution option that makes a connection's transactions start with
#: ``BEGIN IMMEDIATE`` (value ``"immediate"``) or ``BEGIN`` (``"deferred"``).
BEGIN_OPTION = "sqlite_hybrid_begin"

_BEGIN_MODES = (None, "deferred", "immediate")
_BEGIN_SQL = {"deferred": "BEGIN", "immediate": "BEGIN IMMEDIATE"}
# One statement per checkout: re-installs the hybrid handler with the deadline
# SQLite's own handler had if one was installed since (PRAGMA busy_timeout
# reads 0 while ours is in force), else with the one we last installed.
_REASSERT_APP_SQL = (
    "SELECT hybrid_busy_timeout(COALESCE(NULLIF(timeout, 0), ?)) FROM pragma_busy_timeout"
)
_REASSERT_FIXED_SQL = "SELECT hybrid_busy_timeout(?)"
_LOADED_KEY = "sqlite_hybrid_loaded"
_DEADLINE_KEY = "sqlite_hybrid_timeout_ms"


class SqliteHybridWarning(UserWarning):
    """A set-up that works, but not as completely as the call suggests (the message says why)."""


class _Attachment:
    def __init__(self, policy: Dict[str, Any], begin: Optional[str]) -> None:
        self.policy = policy
        self.begin = begin
        self.listeners: list = []


_ATTACHED: "weakref.WeakKeyDictionary[Any, _Attachment]" = weakref.WeakKeyDictionary()


def _scalar(dbapi_connection: Any, sql: str, params: tuple = ()) -> Any:
    """First value of a statement, through the DBAPI (or SQLAlchemy's aiosqlite adapter)."""
    if isinstance(dbapi_connection, sqlite3.Connection):  # the C fast path, no cursor object
        row = dbapi_connection.execute(sql, params).fetchone()
        return None if row is None else row[0]
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else row[0]


def _run_async(dbapi_connection: Any, fn: Callable[[Any], Any]) -> Any:
    run_async = getattr(dbapi_connection, "run_async", None)
    if run_async is not None:
        return run_async(fn)
    # SQLAlchemy 1.4's adapter has no run_async; we are inside its greenlet.
    try:
        from sqlalchemy.util import await_only as _await
    except ImportError:  # pragma: no cover - 2.x names it await_
        from sqlalchemy.util import await_ as _await  # type: ignore[no-redef]
    return _await(fn(dbapi_connection.driver_connection))


def _is_async(dbapi_connection: Any) -> bool:
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    return driver is not dbapi_connection and type(driver).__module__.startswith("aiosqlite")


def _load_into(dbapi_connection: Any, policy: Dict[str, Any]) -> float:
    """Loads the extension, keeping the deadline SQLite's handler has unless the policy sets one.

    Returns the deadline installed, in milliseconds.
    """
    policy = dict(policy)
    if "timeout_ms" not in policy:
        app_ms = _scalar(dbapi_connection, "SELECT timeout FROM pragma_busy_timeout")
        if app_ms:
            policy["timeout_ms"] = float(app_ms)
    if _is_async(dbapi_connection):
        current = _run_async(dbapi_connection, lambda conn: load_async(conn, **policy))
    else:
        current = load(getattr(dbapi_connection, "driver_connection", dbapi_connection), **policy)
    return float(current["timeout_ms"])


def _take_transaction_control(dbapi_connection: Any) -> None:
    """SQLAlchemy's pysqlite/aiosqlite recipe: the driver emits no BEGIN, we do (at ``begin``).

    Python 3.12's ``autocommit=True/False`` is put back to the legacy mode
    first (with ``autocommit=False`` a transaction is always open, so no
    ``BEGIN IMMEDIATE`` could be issued; with ``True`` ``commit()`` does nothing).
    """
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", None)
    if legacy is not None:
        if _is_async(dbapi_connection):

            async def fix(conn: Any) -> None:
                def inner() -> None:
                    raw = conn._conn
                    if raw.autocommit != legacy:
                        raw.autocommit = legacy
                        if raw.in_transaction:
                            raw.commit()

                await conn._execute(inner)

            _run_async(dbapi_connection, fix)
        else:
            raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
            if getattr(raw, "autocommit", legacy) != legacy:
                raw.autocommit = legacy
                if raw.in_transaction:
                    raw.commit()
    dbapi_connection.isolation_level = None


def _driver_autocommit(dbapi_connection: Any) -> Any:
    legacy = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", None)
    if legacy is None:
        return None
    if _is_async(dbapi_connection):

        async def read(conn: Any) -> Any:
            return await conn._execute(lambda: getattr(conn._conn, "autocommit", legacy))

        value = _run_async(dbapi_connection, read)
    else:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        value = getattr(driver, "autocommit", legacy)
    return None if value == legacy else value


def _pool_size_open(pool: Any) -> int:
    total = 0
    for name in ("checkedin", "checkedout"):
        counter = getattr(pool, name, None)
        if callable(counter):
            try:
                total += int(counter())
            except Exception:
                pass
    return total


def attach(engine: Any, *, begin: Optional[str] = None, **policy: Any) -> Callable[..., None]:
    """Puts sqlite-hybrid in force on every connection ``engine``'s pool hands out.

    ``engine``: a ``sqlite://`` engine (the standard ``sqlite3`` module, or
    ``pysqlite3`` / ``sqlean`` passed as ``module=``) or an async engine on
    ``sqlite+aiosqlite://``.

    ``policy``: keys of :data:`sqlite_hybrid.POLICY_KEYS`. Without
    ``timeout_ms`` the deadline is the app's own (``timeout=``, 5 s by
    default in Python; ``connect_args={"timeout": 2}``; a listener's
    ``PRAGMA busy_timeout=500``), read back when ours is (re-)installed.

    ``begin``: who starts transactions.

    * ``None`` (default): the driver, as without :func:`attach` (Python's
      ``sqlite3`` emits ``BEGIN`` before the first ``INSERT``/``UPDATE``/
      ``DELETE``). Connections of :func:`writer` start with ``BEGIN IMMEDIATE``.
      If the driver was opened with Python 3.12's ``autocommit=False`` (a
      ``DEFERRED`` transaction always open) or ``autocommit=True`` (``commit()``
      does nothing), ``"deferred"`` is used.
    * ``"deferred"``: SQLAlchemy's documented recipe, done here: the driver's
      implicit transactions are turned off and every transaction starts with
      ``BEGIN`` (reads inside a transaction see one snapshot), or ``BEGIN
      IMMEDIATE`` on connections of :func:`writer`. Use it instead of the
      recipe (both together would emit ``BEGIN`` twice).
    * ``"immediate"``: every transaction starts with ``BEGIN IMMEDIATE``:
      for an engine that only writes (keep a second engine for reads, or
      reads wait for writers).

    Raises ``TypeError`` for an unknown policy key, an engine of another
    database or a second :func:`attach` on the same engine, ``ValueError``
    for an unknown ``begin``. Attaching after the pool opened connections
    warns (:class:`SqliteHybridWarning`): they are loaded at their next
    checkout, and any checked out now run without the extension until
    returned. Returns the listener, for :func:`detach`.
    """
    _check_keys(policy)
    if begin not in _BEGIN_MODES:
        raise ValueError(f"begin must be None, 'deferred' or 'immediate', got {begin!r}")
    target = getattr(engine, "sync_engine", engine)
    dialect = getattr(getattr(target, "dialect", None), "name", None)
    if dialect is None or not hasattr(target, "pool"):
        raise TypeError(
            f"attach() needs a SQLAlchemy Engine or AsyncEngine, got {type(engine).__name__}"
        )
    if dialect != "sqlite":
        raise TypeError(
            f"attach() works on SQLite engines only; this engine's dialect is {dialect!r} "
            f"({target.url.render_as_string(hide_password=True) if hasattr(target.url, 'render_as_string') else target.url})"
        )
    if target in _ATTACHED:
        raise TypeError("sqlite_hybrid is already attached to this engine; call detach() first")
    opened = _pool_size_open(target.pool)
    if opened:
        warnings.warn(
            f"attach() after the pool opened {opened} connection(s): they get the extension at "
            "their next checkout; a connection checked out now runs without it until it is "
            "returned. Call attach() right after create_engine(), or engine.dispose() first.",
            SqliteHybridWarning,
            stacklevel=2,
        )
    attachment = _Attachment(dict(policy), begin)
    fixed_ms = policy.get("timeout_ms")

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info[_DEADLINE_KEY] = _load_into(dbapi_connection, attachment.policy)
        connection_record.info[_LOADED_KEY] = True
        # Python 3.12's autocommit=False keeps a DEFERRED transaction open (no BEGIN
        # IMMEDIATE possible); autocommit=True makes commit() a no-op (a BEGIN of ours
        # would never be committed): both need the legacy mode and our own BEGIN.
        control = attachment.begin is not None or _driver_autocommit(dbapi_connection) is not None
        if control:
            _take_transaction_control(dbapi_connection)
        connection_record.info[BEGIN_OPTION] = control

    def on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        if not connection_record.info.get(_LOADED_KEY):  # opened before attach()
            on_connect(dbapi_connection, connection_record)
            return
        if fixed_ms is None:
            info = connection_record.info
            info[_DEADLINE_KEY] = _scalar(dbapi_connection, _REASSERT_APP_SQL, (info[_DEADLINE_KEY],))
        else:
            _scalar(dbapi_connection, _REASSERT_FIXED_SQL, (fixed_ms,))

    def on_begin(conn: Any) -> None:
        get = getattr(conn, "get_execution_options", None)
        options = get() if get is not None else getattr(conn, "_execution_options", {})
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        wanted = options.get(BEGIN_OPTION) or attachment.begin
        controlled = conn.connection.info.get(BEGIN_OPTION, attachment.begin is not None)
        if wanted is None:
            if controlled:
                conn.exec_driver_sql("BEGIN")
            return
        if wanted not in _BEGIN_SQL:
            raise ValueError(f"execution option {BEGIN_OPTION}={wanted!r}: use 'immediate' or 'deferred'")
        conn.exec_driver_sql(_BEGIN_SQL[wanted])

    event.listen(target, "connect", on_connect)
    event.listen(target, "checkout", on_checkout)
    event.listen(target, "begin", on_begin)
    attachment.listeners = [("connect", on_connect), ("checkout", on_checkout), ("begin", on_begin)]
    _ATTACHED[target] = attachment
    return on_connect


def detach(engine: Any, listener: Optional[Callable[..., None]] = None) -> None:
    """Removes what :func:`attach` installed (open connections keep the extension loaded)."""
    target = getattr(engine, "sync_engine", engine)
    attachment = _ATTACHED.pop(target, None)
    if attachment is None:
        raise TypeError("sqlite_hybrid is not attached to this engine")
    for name, fn in attachment.listeners:
        event.remove(target, name, fn)


def writer(engine: Any) -> Any:
    """The same engine (same pool), whose transactions start with ``BEGIN IMMEDIATE``.

    Bind the sessions that write to it: ``Session(writer(engine))``,
    ``sessionmaker(writer(engine))``, ``async_sessionmaker(writer(aengine))``.
    Such a transaction takes the write lock at ``BEGIN``, waiting in the
    hybrid handler up to the deadline, so reading and then writing in it
    cannot fail with ``SQLITE_BUSY`` or ``SQLITE_BUSY_SNAPSHOT``. Sessions
    bound to ``engine`` itself stay on deferred transactions, which never
    wait for writers in WAL mode: keep read-only work there.

    The engine must have been given to :func:`attach` (``ValueError`` otherwise).
    """
    target = getattr(engine, "sync_engine", engine)
    if target not in _ATTACHED:
        raise ValueError(
            "writer() needs an engine prepared with sqlite_hybrid.sqlalchemy.attach(engine): "
            "only then is BEGIN IMMEDIATE emitted for its transactions"
        )
    return engine.execution_options(**{BEGIN_OPTION: "immediate"})

