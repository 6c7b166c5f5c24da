"""sqlite-utils plugin: loads sqlite-hybrid into every connection sqlite-utils opens.

Registered through the ``sqlite_utils`` entry point group (hook
``prepare_connection``, sqlite-utils 3.34 and later), so the CLI
(``sqlite-utils query app.db "select hybrid_version()"``) and
``sqlite_utils.Database(...)`` both get it. The policy comes from the
``SQLITE_HYBRID_POLICY`` environment variable (a JSON object);
``SQLITE_HYBRID_PLUGINS=0`` turns the plugin off.

Note: sqlite-utils uses ``pysqlite3`` instead of the standard
``sqlite3`` module when installed; the extension can serve only one SQLite
library per process.
"""

from __future__ import annotations

from typing import Any

import pluggy

from . import _plugins_enabled, load, policy_from_env

hookimpl = pluggy.HookimplMarker("sqlite_utils")


@hookimpl
def prepare_connection(conn: Any) -> None:
    if _plugins_enabled():
        load(conn, **policy_from_env())
