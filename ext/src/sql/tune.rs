//! `hybrid_tune()`: applies the recommended pragmas for many writers to
//! this connection and reports what changed.
//!
//! Never touches `busy_timeout`: setting it would remove the hybrid busy
//! handler (SQLite keeps one handler per connection).

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Result};
use serde_json::{Map, json};

use crate::sql::health::schemas;
use crate::text::quote_identifier;

/// `(pragma, value to set, value it reads back when applied)`, per
/// connection. The why of each value is in `docs/sql-reference.md`
/// ("What `hybrid_tune()` sets").
const CONNECTION_SETTINGS: [(&str, &str, Value); 5] = [
    ("synchronous", "NORMAL", Value::Integer(1)),
    ("foreign_keys", "ON", Value::Integer(1)),
    ("cache_size", "-64000", Value::Integer(-64000)),
    ("temp_store", "MEMORY", Value::Integer(2)),
    ("mmap_size", "268435456", Value::Integer(268_435_456)),
];

fn read(conn: &Connection, sql: &str) -> Result<Value> {
    conn.query_row(sql, [], |row| row.get::<_, Value>(0))
}

/// Like `read`, but `None` when the pragma has no value here (e.g.
/// `mmap_size` on an in-memory database returns no row).
fn read_optional(conn: &Connection, sql: &str) -> Result<Option<Value>> {
    read(conn, sql).optional()
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!(format!("<{} bytes>", b.len())),
    }
}

/// Applies the settings and returns a JSON object: one
/// `{"from": before, "to": after}` entry per setting that changed, plus
/// `"not_applied"` naming any setting SQLite refused (e.g. WAL on an
/// in-memory database).
pub(crate) fn tune(conn: &Connection) -> Result<String> {
    let mut changed = Map::new();
    let mut not_applied = Map::new();

    // journal_mode is per schema: every file-backed schema goes to WAL.
    for schema in schemas(conn)? {
        if schema.name == "temp" {
            continue;
        }
        let quoted = quote_identifier(&schema.name);
        let before = read(conn, &format!("PRAGMA {quoted}.journal_mode"))?;
        if before == Value::Text("wal".into()) {
            continue;
        }
        let after = read(conn, &format!("PRAGMA {quoted}.journal_mode = WAL"))?;
        let key = if schema.name == "main" {
            "journal_mode".to_string()
        } else {
            format!("{}.journal_mode", schema.name)
        };
        if after == Value::Text("wal".into()) {
            changed.insert(key, json!({"from": to_json(&before), "to": "wal"}));
        } else {
            not_applied.insert(key, json!(format!("wanted wal, still {}", to_json(&after))));
        }
    }

    for (name, setting, wanted) in CONNECTION_SETTINGS {
        let Some(before) = read_optional(conn, &format!("PRAGMA {name}"))? else {
            not_applied.insert(name.to_string(), json!("not supported for this database"));
            continue;
        };
        if before == wanted {
            continue;
        }
        conn.execute_batch(&format!("PRAGMA {name} = {setting}"))?;
        let after = read_optional(conn, &format!("PRAGMA {name}"))?.unwrap_or(Value::Null);
        if after == wanted {
            changed.insert(
                name.to_string(),
                json!({"from": to_json(&before), "to": to_json(&after)}),
            );
        } else {
            // e.g. foreign_keys inside a transaction, mmap_size above the
            // compile-time limit.
            not_applied.insert(
                name.to_string(),
                json!(format!("wanted {setting}, still {}", to_json(&after))),
            );
        }
    }
    if !not_applied.is_empty() {
        changed.insert(
            "not_applied".to_string(),
            serde_json::Value::Object(not_applied),
        );
    }
    Ok(serde_json::Value::Object(changed).to_string())
}
