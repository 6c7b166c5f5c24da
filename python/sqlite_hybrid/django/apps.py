"""The Django app config of :mod:`sqlite_hybrid.django` (see there for the settings)."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured

from .. import POLICY_KEYS, load

_SETTINGS_KEYS = frozenset({"POLICY", "TRANSACTION_MODE"})
_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
_REASSERT_SQL = "SELECT hybrid_busy_timeout(COALESCE(NULLIF(timeout, 0), ?)) FROM pragma_busy_timeout"
_DEADLINE_ATTR = "_sqlite_hybrid_timeout_ms"


def _settings() -> Dict[str, Any]:
    from django.conf import settings

    value = getattr(settings, "SQLITE_HYBRID", None) or {}
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"settings.SQLITE_HYBRID must be a dict, got {type(value).__name__}")
    unknown = sorted(set(value) - _SETTINGS_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.SQLITE_HYBRID: unknown key(s) {', '.join(unknown)}; allowed: POLICY, TRANSACTION_MODE"
        )
    policy = value.get("POLICY") or {}
    bad = sorted(set(policy) - POLICY_KEYS)
    if bad:
        raise ImproperlyConfigured(
            f"settings.SQLITE_HYBRID['POLICY']: unknown key(s) {', '.join(bad)}; "
            f"allowed: {', '.join(sorted(POLICY_KEYS))}"
        )
    mode = value.get("TRANSACTION_MODE")
    if mode is not None and str(mode).upper() not in _MODES:
        raise ImproperlyConfigured(
            f"settings.SQLITE_HYBRID['TRANSACTION_MODE'] = {mode!r}: use 'IMMEDIATE', 'DEFERRED' or 'EXCLUSIVE'"
        )
    return {"policy": dict(policy), "mode": None if mode is None else str(mode).upper()}


def _apply_transaction_mode(connection: Any, mode: Optional[str]) -> None:
    if mode is None:
        return
    if hasattr(connection, "transaction_mode"):  # Django 5.1+
        if connection.transaction_mode is None:
            connection.transaction_mode = mode
        elif connection.transaction_mode != mode:
            warnings.warn(
                f"database {connection.alias!r}: OPTIONS['transaction_mode'] = "
                f"{connection.transaction_mode!r} is used, not SQLITE_HYBRID['TRANSACTION_MODE'] = {mode!r}",
                stacklevel=2,
            )
        return

    # Django < 5.1: atomic() calls _start_transaction_under_autocommit(), which runs "BEGIN".
    def start_transaction_under_autocommit() -> None:
        connection.cursor().execute(f"BEGIN {mode}")

    connection._start_transaction_under_autocommit = start_transaction_under_autocommit


def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: loads the extension into a new SQLite connection."""
    if getattr(connection, "vendor", None) != "sqlite":
        return
    config = _settings()
    policy = dict(config["policy"])
    raw = connection.connection
    if "timeout_ms" not in policy:
        app_ms = raw.execute("SELECT timeout FROM pragma_busy_timeout").fetchone()[0]
        if app_ms:
            policy["timeout_ms"] = float(app_ms)
    current = load(raw, **policy)
    setattr(connection, _DEADLINE_ATTR, float(current["timeout_ms"]))
    _apply_transaction_mode(connection, config["mode"])


def on_request_started(sender: Any = None, **kwargs: Any) -> None:
    """Re-installs the hybrid handler on this thread's open SQLite connections (one SELECT each)."""
    from django.db import connections

    try:
        opened = connections.all(initialized_only=True)
    except TypeError:  # Django < 4.1
        opened = connections.all()
    for connection in opened:
        raw = getattr(connection, "connection", None)
        deadline = getattr(connection, _DEADLINE_ATTR, None)
        if raw is None or deadline is None or getattr(connection, "vendor", None) != "sqlite":
            continue
        try:
            value = raw.execute(_REASSERT_SQL, (deadline,)).fetchone()[0]
            setattr(connection, _DEADLINE_ATTR, float(value))
        except Exception:  # a closed or broken connection: Django reconnects it, and we load again
            pass


class SqliteHybridConfig(AppConfig):
    name = "sqlite_hybrid.django"
    label = "sqlite_hybrid"
    verbose_name = "sqlite-hybrid"

    def ready(self) -> None:
        from django.core.signals import request_started
        from django.db import connections
        from django.db.backends.signals import connection_created

        _settings()  # a mistake in settings.SQLITE_HYBRID fails at start-up, not at the first query
        connection_created.connect(on_connection_created, dispatch_uid="sqlite_hybrid.load")
        request_started.connect(on_request_started, dispatch_uid="sqlite_hybrid.reassert")
        # A connection opened before this app was ready (an earlier app's ready() queried).
        for connection in connections.all():
            if getattr(connection, "connection", None) is not None:
                on_connection_created(None, connection)
