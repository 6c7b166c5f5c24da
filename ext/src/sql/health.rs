//! `hybrid_health` (one row per attached schema: journal mode, sizes,
//! connection settings) and `hybrid_health_check([schema])` (runs
//! `PRAGMA quick_check`).

use rusqlite::types::Value;
use rusqlite::{Connection, Result};

use crate::conn::ConnState;
use crate::sql::vtab::TableSpec;
use crate::text::{quote_identifier, truncate};

/// The `hybrid_health` table.
pub(crate) const TABLE: TableSpec = TableSpec {
    name: "hybrid_health",
    schema: "CREATE TABLE x(
        schema TEXT, file TEXT, journal_mode TEXT, synchronous TEXT, page_size INTEGER,
        page_count INTEGER, freelist_count INTEGER, file_bytes INTEGER, wal_bytes INTEGER,
        foreign_keys INTEGER, busy_timeout INTEGER, sqlite_version TEXT)",
    rows,
};

/// One attached schema as `PRAGMA database_list` reports it.
pub(crate) struct Schema {
    /// `main`, `temp` or the ATTACH name.
    pub(crate) name: String,
    /// The file path; empty for temporary and in-memory databases.
    pub(crate) file: String,
}

/// Every schema attached to `conn`, in `database_list` order.
pub(crate) fn schemas(conn: &Connection) -> Result<Vec<Schema>> {
    let mut stmt = conn.prepare("PRAGMA database_list")?;
    let rows = stmt.query_map([], |row| {
        Ok(Schema {
            name: row.get(1)?,
            file: row.get(2)?,
        })
    })?;
    rows.collect()
}

fn pragma(conn: &Connection, schema: &str, name: &str) -> Result<Value> {
    let sql = format!("PRAGMA {}.{name}", quote_identifier(schema));
    conn.query_row(&sql, [], |row| row.get::<_, Value>(0))
}

fn synchronous_name(level: &Value) -> Value {
    let name = match level {
        Value::Integer(0) => "OFF",
        Value::Integer(1) => "NORMAL",
        Value::Integer(2) => "FULL",
        Value::Integer(3) => "EXTRA",
        other => return other.clone(),
    };
    Value::Text(name.to_string())
}

fn file_size(path: &str) -> Value {
    match std::fs::metadata(path) {
        Ok(meta) => Value::Integer(i64::try_from(meta.len()).unwrap_or(i64::MAX)),
        Err(_) => Value::Null,
    }
}

fn rows(conn: &Connection, _state: &ConnState) -> Result<Vec<Vec<Value>>> {
    let foreign_keys: Value = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    let busy_timeout: Value = conn.query_row("PRAGMA busy_timeout", [], |r| r.get(0))?;
    let version: Value = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
    let mut rows = Vec::new();
    for schema in schemas(conn)? {
        let on_disk = !schema.file.is_empty();
        let (file_bytes, wal_bytes) = if on_disk {
            let wal = match file_size(&format!("{}-wal", schema.file)) {
                Value::Null => Value::Integer(0),
                size => size,
            };
            (file_size(&schema.file), wal)
        } else {
            (Value::Null, Value::Null)
        };
        rows.push(vec![
            Value::Text(schema.name.clone()),
            if on_disk {
                Value::Text(schema.file.clone())
            } else {
                Value::Null
            },
            pragma(conn, &schema.name, "journal_mode")?,
            synchronous_name(&pragma(conn, &schema.name, "synchronous")?),
            pragma(conn, &schema.name, "page_size")?,
            pragma(conn, &schema.name, "page_count")?,
            pragma(conn, &schema.name, "freelist_count")?,
            file_bytes,
            wal_bytes,
            foreign_keys.clone(),
            busy_timeout.clone(),
            version.clone(),
        ]);
    }
    Ok(rows)
}

/// Runs `PRAGMA quick_check` on `schema` (every schema when `None`) and
/// returns `"ok"` or the problems found, one per line, prefixed by schema.
pub(crate) fn health_check(
    conn: &Connection,
    schema: Option<&str>,
) -> std::result::Result<String, String> {
    let all = schemas(conn).map_err(|e| e.to_string())?;
    let targets: Vec<&Schema> = match schema {
        None => all.iter().collect(),
        Some(wanted) => {
            let found: Vec<&Schema> = all
                .iter()
                .filter(|s| s.name.eq_ignore_ascii_case(wanted))
                .collect();
            if found.is_empty() {
                let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                return Err(format!(
                    "hybrid_health_check: no schema named '{}'; attached schemas are {}",
                    truncate(wanted, 60),
                    names.join(", ")
                ));
            }
            found
        }
    };
    let mut problems = Vec::new();
    for target in targets {
        let sql = format!("PRAGMA {}.quick_check", quote_identifier(&target.name));
        let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
        let lines: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| format!("hybrid_health_check: {}: {e}", target.name))?;
        problems.extend(
            lines
                .into_iter()
                .filter(|l| l != "ok")
                .map(|l| format!("{}: {l}", target.name)),
        );
    }
    Ok(if problems.is_empty() {
        "ok".to_string()
    } else {
        problems.join("\n")
    })
}
