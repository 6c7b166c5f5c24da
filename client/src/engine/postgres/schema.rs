//! A table's description from PostgreSQL's catalog, in the same
//! [`TableInfo`] the SQLite engine reads from `pragma_table_xinfo`, so the
//! write buffer and the batch helpers check names, NOT NULL columns and
//! upsert keys at the call on both engines.
//!
//! Tables are looked up in the session's current schema (the first of its
//! `search_path`), by name, case-insensitively as on SQLite (an exact
//! spelling wins). Generated columns and `GENERATED ALWAYS` identity
//! columns are not writable and are left out; the server checks value
//! types, so a table counts as non-STRICT here.

use std::sync::Arc;

use postgres::Client;
use rusqlite::types::Value;

use super::values;
use crate::error::{Error, Result};
use crate::schema::{ColumnInfo, TableInfo, shorten};

/// Separates column names in one text value (a byte no identifier has).
const SEPARATOR: char = '\u{1f}';

pub(crate) fn load_table(client: &mut Client, name: &str) -> Result<Arc<TableInfo>> {
    let found = values::query(
        client,
        "SELECT c.oid::int8, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() \
         AND lower(c.relname) = lower(?1) ORDER BY (c.relname = ?1) DESC LIMIT 1",
        &[Value::Text(name.to_string())],
    )?;
    let Some([Value::Integer(oid), Value::Text(canonical)]) = found.first().map(Vec::as_slice)
    else {
        let tables = values::query(
            client,
            "SELECT string_agg(c.relname::text, ', ' ORDER BY c.relname) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()",
            &[],
        )?;
        let list = match tables.first().and_then(|r| r.first()) {
            Some(Value::Text(t)) => t.clone(),
            _ => "none".to_string(),
        };
        return Err(Error::Schema(format!(
            "no such table: {} (tables in the current schema: {list})",
            shorten(name)
        )));
    };
    let (oid, canonical) = (*oid, canonical.clone());
    let rows = values::query(
        client,
        "SELECT a.attname::text, upper(format_type(a.atttypid, a.atttypmod)), a.attnotnull, \
         (a.atthasdef OR a.attidentity <> ''), a.attidentity::text, a.attgenerated::text \
         FROM pg_catalog.pg_attribute a WHERE a.attrelid = ?1 AND a.attnum > 0 \
         AND NOT a.attisdropped ORDER BY a.attnum",
        &[Value::Integer(oid)],
    )?;
    let mut columns = Vec::new();
    for row in rows {
        let text = |v: &Value| match v {
            Value::Text(t) => t.clone(),
            _ => String::new(),
        };
        let flag = |v: &Value| matches!(v, Value::Integer(1));
        if !text(&row[5]).is_empty() || text(&row[4]) == "a" {
            continue; // generated, or GENERATED ALWAYS AS IDENTITY: not writable
        }
        columns.push(ColumnInfo {
            name: text(&row[0]),
            declared_type: text(&row[1]),
            not_null: flag(&row[2]),
            has_default: flag(&row[3]),
        });
    }
    let indexes = values::query(
        client,
        &format!(
            "SELECT i.indisprimary, array_to_string(ARRAY(SELECT a.attname::text \
             FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             ORDER BY k.ord), '{SEPARATOR}') FROM pg_catalog.pg_index i \
             WHERE i.indrelid = ?1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
             ORDER BY i.indisprimary DESC"
        ),
        &[Value::Integer(oid)],
    )?;
    let mut unique_keys = Vec::new();
    for row in indexes {
        let Value::Text(names) = &row[1] else {
            continue;
        };
        let key: Option<Vec<usize>> = names
            .split(SEPARATOR)
            .map(|n| columns.iter().position(|c| c.name == n))
            .collect();
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            unique_keys.push(key);
        }
    }
    Ok(Arc::new(TableInfo {
        shared_name: Arc::from(canonical.as_str()),
        name: canonical,
        columns,
        strict: false,
        rowid_alias: None,
        unique_keys,
    }))
}
