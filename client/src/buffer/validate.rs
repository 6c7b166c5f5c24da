//! Validation at enqueue: a caller's upsert, update, delete or insert,
//! checked against the table's description and turned into a [`NewOp`]
//! (column indexes and normalised key values), or refused with an error
//! that names the table and column. Nothing here takes the buffer's lock.

use std::sync::Arc;

use rusqlite::types::Value;

use super::keys::{split_key, unique_key};
use super::pending::{Columns, KeyedOp};
use crate::error::{Error, Result};
use crate::row::Row;
use crate::schema::TableInfo;

/// A validated operation, ready to enter the state.
pub(super) enum NewOp {
    Keyed {
        table: Arc<TableInfo>,
        key_columns: Arc<[usize]>,
        key_values: Vec<Value>,
        op: KeyedOp,
    },
    Insert {
        table: Arc<TableInfo>,
        columns: Columns,
    },
}

/// The key columns a `key` row names (a unique key of `info`) and its
/// normalised values, in key order.
pub(super) fn key_of(info: &TableInfo, key: &Row) -> Result<(Arc<[usize]>, Vec<Value>)> {
    let names: Vec<&str> = key.iter().map(|(c, _)| c).collect();
    let keys = unique_key(info, &names)?;
    let (key_values, _) = split_key(info, &keys, info.resolve_row(key)?)?;
    Ok((keys, key_values))
}

/// An upsert of `row` keyed on `key_columns`.
pub(super) fn upsert(info: Arc<TableInfo>, row: &Row, key_columns: &[&str]) -> Result<NewOp> {
    let keys = unique_key(&info, key_columns)?;
    let columns = info.resolve_row(row)?;
    let present: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
    info.check_insertable(&present)?;
    let (key_values, columns) = split_key(&info, &keys, columns)?;
    Ok(NewOp::Keyed {
        table: info,
        key_columns: keys,
        key_values,
        op: KeyedOp::Upsert(columns),
    })
}

/// An update of `changes` on the row whose key is `key` (which it may not
/// change).
pub(super) fn update(info: Arc<TableInfo>, key: &Row, changes: &Row) -> Result<NewOp> {
    let (keys, key_values) = key_of(&info, key)?;
    let set = info.resolve_row(changes)?;
    if set.is_empty() {
        return Err(Error::InvalidInput(
            "update with no columns to change".into(),
        ));
    }
    if let Some((c, _)) = set.iter().find(|(c, _)| keys.contains(c)) {
        return Err(Error::InvalidInput(format!(
            "update cannot change key column {}.{}; delete and upsert instead",
            info.name, info.columns[*c].name
        )));
    }
    Ok(NewOp::Keyed {
        table: info,
        key_columns: keys,
        key_values,
        op: KeyedOp::Update(set),
    })
}

/// A delete of the row whose key is `key`.
pub(super) fn delete(info: Arc<TableInfo>, key: &Row) -> Result<NewOp> {
    let (keys, key_values) = key_of(&info, key)?;
    Ok(NewOp::Keyed {
        table: info,
        key_columns: keys,
        key_values,
        op: KeyedOp::Delete,
    })
}

/// A plain insert of `row`.
pub(super) fn insert(info: Arc<TableInfo>, row: &Row) -> Result<NewOp> {
    let columns = info.resolve_row(row)?;
    if columns.is_empty() {
        return Err(Error::InvalidInput(format!(
            "insert into {} with no columns",
            info.name
        )));
    }
    let present: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
    info.check_insertable(&present)?;
    Ok(NewOp::Insert {
        table: info,
        columns,
    })
}
