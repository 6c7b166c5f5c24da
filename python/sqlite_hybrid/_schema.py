"""What the write buffer and the chunked imports know about a table, so a caller's
table, columns and key are checked in the call that made the mistake.

The Python twin of the Rust client's ``schema.rs`` and ``buffer/keys.rs``:

* names are looked up case-insensitively, as SQLite does, and the *schema's*
  spelling is used, double-quoted: a caller's name is never pasted into SQL
  (``"t; DROP TABLE t"`` is simply an unknown table);
* a key must be exactly the PRIMARY KEY or a non-partial UNIQUE index on plain
  columns, every key column present, not NULL and not NaN;
* key values are normalised by the column's affinity (``1`` and ``1.0`` in an
  INTEGER column are one key), as SQLite would store them;
* NaN is refused anywhere (SQLite stores it as NULL), NULL in a NOT NULL
  column, a non-integer INTEGER PRIMARY KEY, and, in STRICT tables, a value
  SQLite would refuse.

Every error is an :class:`InvalidRow` (a ``ValueError``) naming the argument
(``row``, ``key``, ``changes``, ``table``) and the allowed values.
"""

from __future__ import annotations

import math
import re
import sqlite3
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["InvalidRow", "TableInfo", "SchemaCache", "quote"]

_BASIC_TYPES = (int, float, str, bytes, bytearray, memoryview, type(None))


class InvalidRow(ValueError):
    """A call of the write buffer or a chunked import was refused before anything was queued.

    ``argument`` names the offending argument (``"table"``, ``"row"``,
    ``"key"``, ``"changes"``), ``table`` and ``column`` what it referred to.
    """

    def __init__(self, message: str, *, argument: str, table: str = "", column: str = "") -> None:
        super().__init__(message)
        self.argument = argument
        self.table = table
        self.column = column


def quote(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _shorten(name: Any) -> str:
    text = str(name)
    return text if len(text) <= 60 else text[:60] + "…"


def affinity(declared_type: str) -> str:
    """SQLite's type affinity of a declared type (datatype3.html §3.1)."""
    t = declared_type.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


_NUMERIC_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


class TableInfo:
    """One table of the main schema: writable columns, unique keys, STRICT or not."""

    __slots__ = (
        "name",
        "columns",
        "by_lower",
        "types",
        "affinities",
        "not_null",
        "has_default",
        "strict",
        "rowid_alias",
        "unique_keys",
        "_key_cache",
    )

    def __init__(
        self,
        name: str,
        columns: List[Tuple[str, str, bool, bool]],
        strict: bool,
        rowid_alias: Optional[str],
        unique_keys: List[Tuple[str, ...]],
    ) -> None:
        self.name = name
        self.columns = [c[0] for c in columns]
        self.by_lower = {c[0].lower(): c[0] for c in columns}
        self.types = {c[0]: c[1] for c in columns}
        self.affinities = {c[0]: affinity(c[1]) for c in columns}
        self.not_null = {c[0] for c in columns if c[2]}
        self.has_default = {c[0] for c in columns if c[3]}
        self.strict = strict
        self.rowid_alias = rowid_alias
        self.unique_keys = [frozenset(k) for k in unique_keys]
        self._key_cache: Dict[Tuple[str, ...], Tuple[str, ...]] = {}

    # -- names ---------------------------------------------------------------------------

    def column(self, name: Any, argument: str) -> str:
        """The schema's spelling of column ``name``; :class:`InvalidRow` if unknown."""
        if name in self.types:
            return name
        canonical = self.by_lower.get(str(name).lower()) if isinstance(name, str) else None
        if canonical is None:
            raise InvalidRow(
                f"{argument}: no such column: {self.name}.{_shorten(name)} "
                f"(columns: {', '.join(self.columns)})",
                argument=argument,
                table=self.name,
                column=str(name),
            )
        return canonical

    def key_columns(self, names: Any, argument: str) -> Tuple[str, ...]:
        """``names`` (one column name, or a sequence of them) resolved to a unique key of
        this table (its PRIMARY KEY or a UNIQUE index)."""
        try:
            cached = self._key_cache.get(names)
        except TypeError:  # unhashable (a list)
            cached = None
        if cached is not None:
            return cached
        names_tuple = (names,) if isinstance(names, str) else tuple(names)
        if not names_tuple:
            raise InvalidRow(f"{argument}: no key columns given for {self.name}", argument=argument, table=self.name)
        resolved: List[str] = []
        for n in names_tuple:
            c = self.column(n, argument)
            if c not in resolved:
                resolved.append(c)
        if frozenset(resolved) not in self.unique_keys:
            allowed = "; ".join("(" + ", ".join(sorted(k)) + ")" for k in self.unique_keys) or "none"
            raise InvalidRow(
                f"{argument}: ({', '.join(_shorten(n) for n in names_tuple)}) is not the PRIMARY KEY or "
                f"a UNIQUE index of {self.name} (unique keys: {allowed})",
                argument=argument,
                table=self.name,
            )
        key = tuple(resolved)
        if isinstance(names, (str, tuple)):
            self._key_cache[names] = key
        return key

    # -- values --------------------------------------------------------------------------

    def check_value(self, column: str, value: Any, argument: str) -> Any:
        """Checks that ``value`` fits ``column``; returns it (bools as ints)."""
        if value.__class__ is bool:
            value = int(value)
        elif not isinstance(value, _BASIC_TYPES):
            if (type(value), sqlite3.PrepareProtocol) not in sqlite3.adapters:
                raise InvalidRow(
                    f"{argument}: {self.name}.{column}: a {type(value).__name__} cannot be stored "
                    "(use int, float, str, bytes or None, or register an adapter with "
                    "sqlite3.register_adapter)",
                    argument=argument,
                    table=self.name,
                    column=column,
                )
            return value
        if value is None:
            if column in self.not_null:
                raise InvalidRow(
                    f"{argument}: {self.name}.{column} is NOT NULL, got None",
                    argument=argument,
                    table=self.name,
                    column=column,
                )
            return value
        if isinstance(value, float) and math.isnan(value):
            raise InvalidRow(
                f"{argument}: {self.name}.{column}: NaN cannot be stored (SQLite turns it into NULL); "
                "use None explicitly",
                argument=argument,
                table=self.name,
                column=column,
            )
        if column == self.rowid_alias and not isinstance(value, int):
            raise InvalidRow(
                f"{argument}: {self.name}.{column}: expected an integer (INTEGER PRIMARY KEY), "
                f"got {type(value).__name__}",
                argument=argument,
                table=self.name,
                column=column,
            )
        if self.strict and not self._fits_strict(self.types[column], value):
            raise InvalidRow(
                f"{argument}: {self.name}.{column}: expected a value of STRICT type "
                f"{self.types[column]}, got {type(value).__name__}",
                argument=argument,
                table=self.name,
                column=column,
            )
        return value

    @staticmethod
    def _fits_strict(declared: str, value: Any) -> bool:
        if declared == "ANY":
            return True
        if declared in ("INT", "INTEGER"):
            if isinstance(value, int):
                return True
            if isinstance(value, float):
                return value == int(value) and abs(value) < 9.2e18 if math.isfinite(value) else False
            if isinstance(value, str) and _NUMERIC_TEXT.match(value):
                try:
                    int(value.strip())
                    return True
                except ValueError:
                    return False
            return False
        if declared == "REAL":
            return isinstance(value, (int, float)) or (isinstance(value, str) and bool(_NUMERIC_TEXT.match(value)))
        if declared == "TEXT":
            return isinstance(value, (str, int, float))
        if declared == "BLOB":
            return isinstance(value, (bytes, bytearray, memoryview))
        return True

    def normalize_key(self, column: str, value: Any, argument: str) -> Any:
        """A key value in the form SQLite stores for the column's affinity (so ``1`` and
        ``1.0`` in an INTEGER column are one key); :class:`InvalidRow` for a missing-like
        value or one SQLite would store as another type than the key column holds."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise InvalidRow(
                f"{argument}: key column {self.name}.{column} is "
                f"{'None' if value is None else 'NaN'}: a NULL key never matches a row",
                argument=argument,
                table=self.name,
                column=column,
            )
        kind = self.affinities[column]
        cls = value.__class__
        if (cls is int and kind == "INTEGER") or (cls is str and kind == "TEXT"):
            return value  # the common case
        if cls is bool:
            value, cls = int(value), int
        expected = None
        if kind in ("INTEGER", "NUMERIC"):
            if cls is int:
                return value
            if cls is float:
                if value == int(value) and abs(value) < 9.0e15 if math.isfinite(value) else False:
                    return int(value)
                if kind == "NUMERIC":
                    return value
            expected = "an integer" if kind == "INTEGER" else "a number"
        elif kind == "REAL":
            if cls is int:
                return float(value)
            if cls is float:
                return value
            expected = "a number"
        elif kind == "TEXT":
            if cls is str:
                return value
            if cls is int:
                return str(value)
            expected = "text"
        else:
            if isinstance(value, (bytearray, memoryview)):
                return bytes(value)
            return value
        raise InvalidRow(
            f"{argument}: key column {self.name}.{column} must be {expected}, got {type(value).__name__} {value!r:.40}",
            argument=argument,
            table=self.name,
            column=column,
        )

    def resolve_row(self, row: Mapping[str, Any], argument: str) -> Dict[str, Any]:
        """``row`` with the schema's column names and checked values."""
        if row.__class__ is not dict and not isinstance(row, Mapping):
            raise InvalidRow(
                f"{argument}: expected a mapping of column to value (a dict), got {type(row).__name__}",
                argument=argument,
                table=self.name,
            )
        types = self.types
        plain = not self.strict
        rowid_alias = self.rowid_alias
        out: Dict[str, Any] = {}
        for name, value in row.items():
            column = name if name in types else self.column(name, argument)
            cls = value.__class__
            if plain and (cls is int or (cls is str and column != rowid_alias)):
                out[column] = value  # the common case, nothing to check
            else:
                out[column] = self.check_value(column, value, argument)
        return out

    def check_insertable(self, columns: Any, argument: str) -> None:
        """Every NOT NULL column without a default (other than the rowid alias) is present."""
        for column in self.not_null:
            if column not in columns and column not in self.has_default and column != self.rowid_alias:
                raise InvalidRow(
                    f"{argument}: {self.name}.{column} is NOT NULL without a default and is missing",
                    argument=argument,
                    table=self.name,
                    column=column,
                )


def load_table(conn: sqlite3.Connection, name: str, argument: str = "table") -> TableInfo:
    """Reads ``name``'s description from the main schema of ``conn``."""
    if not isinstance(name, str):
        raise InvalidRow(f"{argument}: a table name is a str, got {type(name).__name__}", argument=argument)
    rows = conn.execute(
        "SELECT name, sql FROM main.sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        (name,),
    ).fetchall()
    if not rows:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
            )
        ]
        raise InvalidRow(
            f"{argument}: no such table: {_shorten(name)} (tables in main: {', '.join(tables) or 'none'})",
            argument=argument,
            table=name,
        )
    canonical, create_sql = rows[0]
    tail = (create_sql or "").rsplit(")", 1)[-1].upper()
    strict = "STRICT" in tail
    without_rowid = "WITHOUT" in tail and "ROWID" in tail
    columns: List[Tuple[str, str, bool, bool]] = []
    pk: List[Tuple[int, str]] = []
    for cname, ctype, notnull, dflt, pkpos, hidden in conn.execute(
        "SELECT name, upper(type), \"notnull\", dflt_value IS NOT NULL, pk, hidden "
        "FROM pragma_table_xinfo(?) ORDER BY cid",
        (canonical,),
    ):
        if hidden:
            continue  # generated or hidden: not writable
        if pkpos:
            pk.append((pkpos, cname))
        columns.append((cname, ctype or "", bool(notnull), bool(dflt)))
    pk.sort()
    unique_keys: List[Tuple[str, ...]] = []
    rowid_alias = None
    if pk:
        unique_keys.append(tuple(c for _, c in pk))
        if len(pk) == 1 and not without_rowid:
            declared = next(c[1] for c in columns if c[0] == pk[0][1])
            if declared == "INTEGER":
                rowid_alias = pk[0][1]
    for _seq, index_name, unique, _origin, partial in conn.execute(
        "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?)", (canonical,)
    ):
        if not unique or partial:
            continue
        cols = [r[0] for r in conn.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (index_name,))]
        if cols and all(c is not None for c in cols):
            unique_keys.append(tuple(cols))
    return TableInfo(canonical, columns, strict, rowid_alias, unique_keys)


class SchemaCache:
    """Tables by name (any case), loaded through a connection from ``connect`` on a miss."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._tables: Dict[str, TableInfo] = {}

    def table(self, name: Any, argument: str = "table") -> TableInfo:
        info = self._tables.get(name)
        if info is not None:
            return info
        if isinstance(name, str):
            info = self._tables.get(name.lower())
            if info is not None:
                self._tables[name] = info
                return info
        conn = self._connect()
        try:
            info = load_table(conn, name, argument)
        finally:
            conn.close()
        self._tables[name.lower()] = info
        self._tables[name] = info
        return info

    def clear(self) -> None:
        """Forgets everything (after a schema change)."""
        self._tables.clear()
