//! What the client knows about the main schema's tables, so it can check a
//! caller's table and column names before any SQL is built.
//!
//! Identifiers from callers are never pasted into SQL: a name is looked up
//! here (case-insensitively, as SQLite does) and the *schema's* spelling is
//! used, double-quoted. A name shaped like SQL injection is simply an
//! unknown table.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    /// The name as the schema spells it.
    pub name: String,
    /// The declared type, upper-cased (`INTEGER`, `TEXT`, ... or empty).
    pub declared_type: String,
    /// Declared `NOT NULL`.
    pub not_null: bool,
    /// Has a `DEFAULT`.
    pub has_default: bool,
}

/// One table of the main schema.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// The name as the schema spells it.
    pub name: String,
    /// The same name, shared (cheap to clone into buffer keys).
    pub shared_name: Arc<str>,
    /// Writable columns (generated and hidden columns excluded).
    pub columns: Vec<ColumnInfo>,
    /// Declared `STRICT`: SQLite checks value types; so do we, earlier.
    pub strict: bool,
    /// Index of the `INTEGER PRIMARY KEY` (rowid alias) column, if any.
    pub rowid_alias: Option<usize>,
    /// Column sets with a uniqueness guarantee usable as an upsert target:
    /// the primary key and every non-partial UNIQUE index on plain columns.
    pub unique_keys: Vec<Vec<usize>>,
}

impl TableInfo {
    /// The index of `name` among the writable columns.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// `name` quoted for SQL.
    pub fn quoted_name(&self) -> String {
        quote(&self.name)
    }

    /// Resolves `names` to a unique key of the table (its PRIMARY KEY or a
    /// UNIQUE index), for the write buffer and the batch helpers alike.
    pub(crate) fn unique_key(&self, names: &[&str]) -> Result<Vec<usize>> {
        if names.is_empty() {
            return Err(Error::InvalidInput(format!(
                "no key columns given for {}",
                self.name
            )));
        }
        let keys = self.resolve_columns(names)?;
        if !self.is_unique_key(&keys) {
            let names: Vec<String> = names.iter().map(|n| shorten(n)).collect();
            return Err(Error::InvalidInput(format!(
                "({}) is not the PRIMARY KEY or a UNIQUE index of {}",
                names.join(", "),
                self.name
            )));
        }
        Ok(keys)
    }

    /// The value of key column `key` in `row`, which must be there and not
    /// NULL: SQLite allows NULL in a non-INTEGER PRIMARY KEY and in UNIQUE
    /// columns, and a NULL never conflicts, so an upsert would insert the
    /// row again each time (and an INTEGER PRIMARY KEY NULL means "pick a
    /// new rowid").
    pub(crate) fn key_value<'a>(&self, key: usize, row: &'a [(usize, Value)]) -> Result<&'a Value> {
        let column = &self.columns[key].name;
        match row.iter().find(|(c, _)| *c == key) {
            None => Err(Error::InvalidInput(format!(
                "key column {}.{column} is missing",
                self.name
            ))),
            Some((_, Value::Null)) => Err(Error::InvalidInput(format!(
                "key column {}.{column} is NULL: a NULL key never matches a row, so an upsert \
                 would insert a new row every time",
                self.name
            ))),
            Some((_, value)) => Ok(value),
        }
    }

    /// Whether `columns` (in any order) is exactly a primary key or UNIQUE index.
    pub fn is_unique_key(&self, columns: &[usize]) -> bool {
        let mut wanted = columns.to_vec();
        wanted.sort_unstable();
        self.unique_keys.iter().any(|key| {
            let mut key = key.clone();
            key.sort_unstable();
            key == wanted
        })
    }

    /// Checks that `value` fits column `index`: never NULL for a NOT NULL
    /// column or the rowid alias, an integer for the rowid alias, and a
    /// value SQLite can store losslessly in a STRICT column's type.
    pub fn check_value(&self, index: usize, value: &Value) -> Result<()> {
        let column = &self.columns[index];
        let wrong = |expected: &str| {
            Err(Error::InvalidInput(format!(
                "{}.{}: expected {expected}, got {}",
                self.name,
                column.name,
                describe(value)
            )))
        };
        if matches!(value, Value::Real(r) if r.is_nan()) {
            // SQLite stores NaN as NULL: refuse it here rather than let it
            // become a NULL key, or a NOT NULL failure at flush time.
            return Err(Error::InvalidInput(format!(
                "{}.{}: NaN cannot be stored (SQLite turns it into NULL); use NULL explicitly",
                self.name, column.name
            )));
        }
        if matches!(value, Value::Null) {
            return if column.not_null {
                Err(Error::InvalidInput(format!(
                    "{}.{} is NOT NULL, got NULL",
                    self.name, column.name
                )))
            } else {
                Ok(())
            };
        }
        if self.rowid_alias == Some(index) && !matches!(value, Value::Integer(_)) {
            return wrong("an integer (INTEGER PRIMARY KEY)");
        }
        if !self.strict {
            return Ok(());
        }
        let ok = match (column.declared_type.as_str(), value) {
            ("INT" | "INTEGER", Value::Integer(_)) => true,
            ("INT" | "INTEGER", Value::Real(r)) => r.fract() == 0.0 && r.abs() < 9.2e18,
            ("INT" | "INTEGER", Value::Text(t)) => {
                looks_numeric(t) && t.trim().parse::<i64>().is_ok()
            }
            ("REAL", Value::Integer(_) | Value::Real(_)) => true,
            ("REAL", Value::Text(t)) => looks_numeric(t),
            ("TEXT", Value::Text(_) | Value::Integer(_) | Value::Real(_)) => true,
            ("BLOB", Value::Blob(_)) => true,
            ("ANY", _) => true,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            wrong(&format!("a value of STRICT type {}", column.declared_type))
        }
    }
}

impl TableInfo {
    /// Resolves caller column names to column indexes (schema order kept as
    /// given); an unknown name is an [`Error::Schema`] listing the columns.
    pub fn resolve_columns(&self, names: &[&str]) -> Result<Vec<usize>> {
        let mut indexes = Vec::with_capacity(names.len());
        for name in names {
            let index = self
                .column_index(name)
                .ok_or_else(|| self.unknown_column(name))?;
            if !indexes.contains(&index) {
                indexes.push(index);
            }
        }
        Ok(indexes)
    }

    /// Resolves and checks every `(column, value)` of `row`.
    pub fn resolve_row(&self, row: &crate::row::Row) -> Result<Vec<(usize, Value)>> {
        if let Some(problem) = row.conversion_error() {
            return Err(Error::InvalidInput(format!("{}: {problem}", self.name)));
        }
        let mut resolved = Vec::with_capacity(row.len());
        for (name, value) in row.iter() {
            let index = self
                .column_index(name)
                .ok_or_else(|| self.unknown_column(name))?;
            self.check_value(index, value)?;
            resolved.push((index, value.clone()));
        }
        Ok(resolved)
    }

    /// For a row that may be inserted: every NOT NULL column without a
    /// default (other than the rowid alias, which SQLite fills) is present.
    pub fn check_insertable(&self, present: &[usize]) -> Result<()> {
        for (index, column) in self.columns.iter().enumerate() {
            if column.not_null
                && !column.has_default
                && self.rowid_alias != Some(index)
                && !present.contains(&index)
            {
                return Err(Error::InvalidInput(format!(
                    "{}.{} is NOT NULL without a default and is missing from the row",
                    self.name, column.name
                )));
            }
        }
        Ok(())
    }

    fn unknown_column(&self, name: &str) -> Error {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        Error::Schema(format!(
            "no such column: {}.{} (columns: {})",
            self.name,
            shorten(name),
            names.join(", ")
        ))
    }
}

/// How a rejected value reads in an error message: its kind, and the value
/// itself only when short (`1e300`, not three hundred digits).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(i) => format!("integer {i}"),
        Value::Real(r) => format!("real {r:?}"),
        Value::Text(t) => format!("text of {} bytes", t.len()),
        Value::Blob(b) => format!("blob of {} bytes", b.len()),
    }
}

/// Whether SQLite reads `text` as a number when a numeric column's type
/// asks for one: optional spaces and sign, digits with at most one decimal
/// point, an optional exponent. Not `inf`, `NaN` or hexadecimal, which
/// Rust's parsers accept and SQLite keeps as text (a STRICT column then
/// refuses the row at flush time).
fn looks_numeric(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let digits = mantissa.chars().filter(char::is_ascii_digit).count();
    let mantissa_ok = digits > 0
        && mantissa.chars().all(|c| c.is_ascii_digit() || c == '.')
        && mantissa.matches('.').count() <= 1;
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// `name` as a double-quoted SQL identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Cuts a caller-supplied name for an error message.
pub(crate) fn shorten(name: &str) -> String {
    match name.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_string(),
    }
}

/// A cache of [`TableInfo`] by lower-cased table name.
#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    tables: RwLock<HashMap<String, Arc<TableInfo>>>,
}

impl SchemaCache {
    /// The table named `name` (any case), loading it through `conn` on a
    /// cache miss. Unknown tables are [`Error::Schema`] naming the tables
    /// that do exist.
    pub(crate) fn table(
        &self,
        name: &str,
        conn: impl FnOnce() -> Result<Arc<TableInfo>>,
    ) -> Result<Arc<TableInfo>> {
        {
            let tables = self.tables.read();
            // Exact spelling first: no allocation on the hot path.
            if let Some(info) = tables.get(name) {
                return Ok(Arc::clone(info));
            }
            if let Some(info) = tables.get(&name.to_ascii_lowercase()) {
                return Ok(Arc::clone(info));
            }
        }
        let key = name.to_ascii_lowercase();
        let info = conn()?;
        let mut tables = self.tables.write();
        tables.insert(key, Arc::clone(&info));
        tables.insert(name.to_string(), Arc::clone(&info));
        Ok(info)
    }

    /// Forgets everything (after a schema change).
    pub(crate) fn clear(&self) {
        self.tables.write().clear();
    }
}

/// Reads `name`'s description from the main schema of `conn`.
pub(crate) fn load_table(conn: &Connection, name: &str) -> Result<Arc<TableInfo>> {
    let found: Option<(String, bool)> = conn
        .query_row(
            "SELECT name, strict FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND name = ?1 COLLATE NOCASE AND name NOT LIKE 'sqlite_%'",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((canonical, strict)) = found else {
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        return Err(Error::Schema(format!(
            "no such table: {} (tables in main: {})",
            shorten(name),
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            }
        )));
    };

    // pk > 0 marks primary-key columns (position in the key).
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, usize)> = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name, upper(type), \"notnull\", dflt_value IS NOT NULL, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid",
    )?;
    let mut rows = stmt.query([&canonical])?;
    while let Some(row) = rows.next()? {
        let hidden: i64 = row.get(5)?;
        if hidden != 0 {
            continue; // generated or virtual-table hidden column: not writable
        }
        let pk_position: i64 = row.get(4)?;
        if pk_position > 0 {
            pk.push((pk_position, columns.len()));
        }
        columns.push(ColumnInfo {
            name: row.get(0)?,
            declared_type: row.get(1)?,
            not_null: row.get(2)?,
            has_default: row.get(3)?,
        });
    }
    pk.sort_unstable();
    let pk_columns: Vec<usize> = pk.iter().map(|(_, i)| *i).collect();
    let rowid_alias = match pk_columns.as_slice() {
        [only]
            if columns[*only].declared_type == "INTEGER"
                && !is_without_rowid(conn, &canonical)? =>
        {
            Some(*only)
        }
        _ => None,
    };
    let mut unique_keys = Vec::new();
    if !pk_columns.is_empty() {
        unique_keys.push(pk_columns);
    }
    let indexes: Vec<(String, bool, bool)> = conn
        .prepare("SELECT name, \"unique\", partial FROM pragma_index_list(?1)")?
        .query_map([&canonical], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (index, unique, partial) in indexes {
        if !unique || partial {
            continue;
        }
        let names: Vec<Option<String>> = conn
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?
            .query_map([&index], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        // Expression index columns have no name: not usable as a target.
        let key: Option<Vec<usize>> = names
            .iter()
            .map(|n| {
                n.as_deref()
                    .and_then(|n| columns.iter().position(|c| c.name.eq_ignore_ascii_case(n)))
            })
            .collect();
        if let Some(key) = key {
            unique_keys.push(key);
        }
    }
    Ok(Arc::new(TableInfo {
        shared_name: Arc::from(canonical.as_str()),
        name: canonical,
        columns,
        strict,
        rowid_alias,
        unique_keys,
    }))
}

fn is_without_rowid(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [table],
        |r| r.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, qty INT DEFAULT 0,
                                total AS (qty * 2));
             CREATE TABLE pairs(a TEXT, b TEXT, n INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
             CREATE TABLE typed(k INTEGER PRIMARY KEY, r REAL, t TEXT, b BLOB, x ANY) STRICT;
             CREATE UNIQUE INDEX typed_expr ON typed(lower(t));",
        )
        .unwrap();
        c
    }

    #[test]
    fn reads_columns_keys_and_rowid_alias() {
        let c = conn();
        let items = load_table(&c, "ITEMS").unwrap();
        assert_eq!(items.name, "items");
        let names: Vec<&str> = items.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "sku", "qty"], "generated column excluded");
        assert_eq!(items.rowid_alias, Some(0));
        assert!(items.is_unique_key(&[0]) && items.is_unique_key(&[1]));
        assert!(!items.is_unique_key(&[2]));
        let pairs = load_table(&c, "pairs").unwrap();
        assert!(pairs.is_unique_key(&[1, 0]));
        assert_eq!(pairs.rowid_alias, None);
        let typed = load_table(&c, "typed").unwrap();
        assert!(typed.strict);
        assert_eq!(
            typed.unique_keys,
            vec![vec![0]],
            "expression index is not an upsert target"
        );
    }

    #[test]
    fn unknown_and_injection_shaped_tables_are_schema_errors() {
        let c = conn();
        for name in [
            "nope",
            "items; DROP TABLE items",
            "items\" --",
            "sqlite_master",
        ] {
            let err = load_table(&c, name).unwrap_err();
            assert!(
                matches!(err, Error::Schema(ref m) if m.contains("no such table")),
                "{name}: {err}"
            );
        }
        assert!(
            load_table(&c, "nope")
                .unwrap_err()
                .to_string()
                .contains("items, pairs, typed")
        );
    }

    #[test]
    fn values_are_checked_against_strict_types_and_not_null() {
        let c = conn();
        let typed = load_table(&c, "typed").unwrap();
        let items = load_table(&c, "items").unwrap();
        assert!(typed.check_value(0, &Value::Integer(1)).is_ok());
        assert!(
            typed.check_value(0, &Value::Text("1".into())).is_err(),
            "rowid alias needs an integer"
        );
        assert!(typed.check_value(1, &Value::Text("2.5".into())).is_ok());
        assert!(
            typed
                .check_value(1, &Value::Text(" -1.5e3 ".into()))
                .is_ok()
        );
        assert!(typed.check_value(1, &Value::Text("abc".into())).is_err());
        for text in ["inf", "NaN", "infinity", "0x10", "1.2.3", "e5", "."] {
            assert!(
                typed.check_value(1, &Value::Text(text.into())).is_err(),
                "{text}: SQLite keeps it as text"
            );
        }
        let nan = items.check_value(2, &Value::Real(f64::NAN)).unwrap_err();
        assert!(nan.to_string().contains("NaN"), "{nan}");
        let huge = typed.check_value(0, &Value::Real(1e300)).unwrap_err();
        assert!(huge.to_string().len() < 200, "{huge}");
        assert!(typed.check_value(3, &Value::Text("x".into())).is_err());
        assert!(typed.check_value(4, &Value::Blob(vec![1])).is_ok());
        assert!(
            items
                .check_value(1, &Value::Null)
                .unwrap_err()
                .to_string()
                .contains("NOT NULL")
        );
        assert!(
            items.check_value(2, &Value::Text("lots".into())).is_ok(),
            "non-STRICT: SQLite's affinity rules"
        );
    }
}
