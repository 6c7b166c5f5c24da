//! Keys of buffered rows: checking that the caller's key columns are a
//! unique key of the table, and taking their values out of a row.

use std::sync::Arc;

use rusqlite::types::Value;

use super::pending::{Columns, affinity, normalize_key};
use crate::error::{Error, Result};
use crate::schema::TableInfo;

pub(super) fn same_columns(a: &[usize], b: &[usize]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// Resolves `names` to a unique key of `info`.
pub(super) fn unique_key(info: &TableInfo, names: &[&str]) -> Result<Arc<[usize]>> {
    Ok(info.unique_key(names)?.into())
}

/// Takes the key values out of `columns` (normalised, in key order) and
/// returns them with the full column list.
pub(super) fn split_key(
    info: &TableInfo,
    keys: &[usize],
    columns: Columns,
) -> Result<(Vec<Value>, Columns)> {
    let mut values = Vec::with_capacity(keys.len());
    for &k in keys {
        let column = &info.columns[k];
        let value = info.key_value(k, &columns)?;
        let normal = normalize_key(affinity(&column.declared_type), value).map_err(|expected| {
            Error::InvalidInput(format!(
                "key column {}.{} must be {expected}, got {value:?}",
                info.name, column.name
            ))
        })?;
        values.push(normal);
    }
    let mut columns = columns;
    for (k, v) in keys.iter().zip(&values) {
        if let Some(slot) = columns.iter_mut().find(|(c, _)| c == k) {
            slot.1 = v.clone();
        }
    }
    Ok((values, columns))
}
