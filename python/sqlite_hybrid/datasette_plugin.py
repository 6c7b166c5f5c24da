"""Datasette plugin: loads sqlite-hybrid into every connection Datasette opens.

Registered through the ``datasette`` entry point group, so installing the
wheel next to Datasette is enough. Datasette's connections to mutable
databases are read-only (``?mode=ro``) except its write connection; a
read-only connection still shows the file-wide row (``scope = 'file'``) of
``hybrid_lock_metrics`` when the database has a side file (``<db>-hybrid``).

Policy: the ``SQLITE_HYBRID_POLICY`` environment variable (a JSON object),
overridden by the plugin configuration, per database if you like::

    {"plugins": {"sqlite-hybrid": {"timeout_ms": 2000}}}

``SQLITE_HYBRID_PLUGINS=0`` turns the plugin off.
"""

from __future__ import annotations

from typing import Any

import pluggy

from . import _plugins_enabled, load, policy_from_env

hookimpl = pluggy.HookimplMarker("datasette")

#: The key under ``plugins`` in Datasette's metadata / configuration.
CONFIG_NAME = "sqlite-hybrid"


@hookimpl
def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
    if not _plugins_enabled():
        return
    policy = policy_from_env()
    config = datasette.plugin_config(CONFIG_NAME, database=database) or {}
    policy.update(config)
    load(conn, **policy)
