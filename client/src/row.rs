//! [`Row`]: column names and values for the write buffer and batch helpers.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value};

/// An ordered set of `column = value` pairs.
///
/// Column names are matched case-insensitively (as SQLite does); setting a
/// column twice keeps the last value. Values are anything rusqlite can bind
/// (`i64`, `f64`, `&str`, `String`, `Vec<u8>`, `Option<T>`, `Value`, ...).
///
/// ```
/// use sqlite_hybrid::Row;
/// let row = Row::new().set("id", 7).set("name", "ada").set("name", "Ada");
/// assert_eq!(row.len(), 2);
/// assert_eq!(row.get("NAME"), Some(&rusqlite::types::Value::Text("Ada".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    columns: Vec<(String, Value)>,
    /// A value that could not be converted (e.g. a `u64` above `i64::MAX`);
    /// reported by the call that receives the row.
    invalid: Option<String>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Sets `column` to `value` (replacing an earlier value for it).
    pub fn set(mut self, column: &str, value: impl ToSql) -> Row {
        match value.to_sql() {
            Ok(ToSqlOutput::Borrowed(v)) => match Value::try_from(v) {
                Ok(v) => self.put(column, v),
                Err(e) => self.invalid = Some(format!("column {column}: {e}")),
            },
            Ok(ToSqlOutput::Owned(v)) => self.put(column, v),
            Ok(_) => self.invalid = Some(format!("column {column}: unsupported value kind")),
            Err(e) => self.invalid = Some(format!("column {column}: {e}")),
        }
        self
    }

    /// Sets `column` to an already converted value.
    pub fn put(&mut self, column: &str, value: Value) {
        match self
            .columns
            .iter_mut()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
        {
            Some(slot) => slot.1 = value,
            None => self.columns.push((column.to_string(), value)),
        }
    }

    /// The value of `column`, if set.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.columns
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(column))
            .map(|(_, v)| v)
    }

    /// The `(column, value)` pairs in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.columns.iter().map(|(c, v)| (c.as_str(), v))
    }

    /// Number of columns set.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether no column is set.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Sets every column of `other` on `self` (last write wins per column).
    pub fn merge(&mut self, other: &Row) {
        for (c, v) in &other.columns {
            self.put(c, v.clone());
        }
        if self.invalid.is_none() {
            self.invalid.clone_from(&other.invalid);
        }
    }

    /// The conversion problem recorded by [`Row::set`], if any.
    pub fn conversion_error(&self) -> Option<&str> {
        self.invalid.as_deref()
    }
}

impl<V: ToSql, const N: usize> From<[(&str, V); N]> for Row {
    /// `Row::from([("id", 1), ("qty", 3)])` (values of one type).
    fn from(pairs: [(&str, V); N]) -> Row {
        pairs
            .into_iter()
            .fold(Row::new(), |row, (c, v)| row.set(c, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_case_insensitively() {
        let mut a = Row::new().set("Id", 1).set("qty", 2);
        a.merge(&Row::new().set("QTY", 5).set("note", "x"));
        let pairs: Vec<_> = a.iter().map(|(c, v)| (c.to_string(), v.clone())).collect();
        assert_eq!(
            pairs,
            vec![
                ("Id".to_string(), Value::Integer(1)),
                ("qty".to_string(), Value::Integer(5)),
                ("note".to_string(), Value::Text("x".into()))
            ]
        );
    }

    #[test]
    fn unconvertible_values_are_recorded_not_panicked() {
        let row = Row::new().set("big", u64::MAX);
        assert!(row.conversion_error().unwrap().contains("big"));
        let ok = Row::new()
            .set("none", None::<i64>)
            .set("blob", vec![1u8, 2]);
        assert_eq!(ok.get("none"), Some(&Value::Null));
        assert!(ok.conversion_error().is_none());
    }
}
