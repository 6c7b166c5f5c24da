"""SQLAlchemy: sqlite-hybrid in every pooled connection of an engine.

::

    from sqlalchemy import create_engine
    from sqlite_hybrid.sqlalchemy import attach

    engine = create_engine("sqlite:///app.db")
    attach(engine, timeout_ms=2000)

    # asyncio, with aiosqlite
    from sqlalchemy.ext.asyncio import create_async_engine
    aengine = create_async_engine("sqlite+aiosqlite:///app.db")
    attach(aengine)

Call :func:`attach` before the engine's first connection: it listens for the
pool's ``connect`` event (on ``engine.sync_engine`` for an async engine), so
connections opened earlier are not covered (``engine.dispose()`` closes them).

For ``sqlite+aiosqlite``, the DBAPI connection is SQLAlchemy's adapter; its
``driver_connection`` is the ``aiosqlite.Connection``, which owns the standard
``sqlite3`` connection on its own thread. The extension is loaded through
aiosqlite's own (async) methods, on that thread, via the adapter's
``run_async``.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import event

from . import load, load_async

__all__ = ["attach", "detach"]


def _load_into(dbapi_connection: Any, policy: dict) -> None:
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    run_async = getattr(dbapi_connection, "run_async", None)
    if run_async is not None and driver is not dbapi_connection:
        run_async(lambda conn: load_async(conn, **policy))
    else:
        load(driver, **policy)


def attach(engine: Any, **policy: Any) -> Callable[[Any, Any], None]:
    """Loads the extension (with ``policy``) into every connection ``engine``'s pool opens.

    Works for ``sqlite://`` engines (the standard ``sqlite3`` module, or
    ``pysqlite3`` / ``sqlean`` passed as ``module=``), and for async engines on
    ``sqlite+aiosqlite://``. Returns the listener, for :func:`detach`.
    """
    target = getattr(engine, "sync_engine", engine)

    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        _load_into(dbapi_connection, policy)

    event.listen(target, "connect", on_connect)
    return on_connect


def detach(engine: Any, listener: Callable[[Any, Any], None]) -> None:
    """Removes a listener installed by :func:`attach` (open connections keep the extension)."""
    event.remove(getattr(engine, "sync_engine", engine), "connect", listener)
