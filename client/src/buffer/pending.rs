//! Coalescing: the pending operations on one row, reduced to a normal form
//! that has exactly the same effect as running them one by one.
//!
//! Pure Rust over column indexes and values; no SQLite. The rules:
//!
//! | pending state            | + upsert(B)         | + update(C)                 | + delete   |
//! |--------------------------|---------------------|-----------------------------|------------|
//! | nothing                  | upsert B            | update C                    | delete     |
//! | upsert A                 | upsert A∪B          | upsert A∪C                  | delete     |
//! | update A                 | update A, upsert B  | update A∪C                  | delete     |
//! | update A, upsert B       | update A, upsert B∪D| update A, upsert B∪C        | delete     |
//! | delete                   | delete, upsert B    | delete (no row to update)   | delete     |
//! | delete, upsert B         | delete, upsert B∪D  | delete, upsert B∪C          | delete     |
//!
//! (`X∪Y` merges columns, Y's value winning.) So every sequence reduces to
//! `[delete | update A]? [upsert B]?`, executed in that order. Why
//! "update A, upsert B" cannot merge further: if the row does not exist,
//! the update does nothing and the upsert inserts only B.

use rusqlite::types::Value;

pub(crate) use crate::plan::{Before, Columns};

/// Sets every column of `later` on `base` (later wins).
pub(crate) fn merge_columns(base: &mut Columns, later: &Columns) {
    for (column, value) in later {
        match base.iter_mut().find(|(c, _)| c == column) {
            Some(slot) => slot.1 = value.clone(),
            None => base.push((*column, value.clone())),
        }
    }
}

/// One operation a caller enqueues on a keyed row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyedOp {
    /// Insert the row, or update these columns if the key exists
    /// (includes the key columns).
    Upsert(Columns),
    /// Update these columns of the row with this key, if it exists.
    Update(Columns),
    /// Delete the row with this key.
    Delete,
}

/// The normal form of all pending operations on one key.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Coalesced {
    /// Runs first.
    pub before: Before,
    /// Runs second, if any (an upsert; includes key columns).
    pub upsert: Option<Columns>,
}

impl Coalesced {
    /// The normal form of a single operation.
    pub(crate) fn of(op: KeyedOp) -> Coalesced {
        let mut c = Coalesced::default();
        c.apply(op);
        c
    }

    /// Adds a later operation.
    pub(crate) fn apply(&mut self, op: KeyedOp) {
        match op {
            KeyedOp::Delete => {
                *self = Coalesced {
                    before: Before::Delete,
                    upsert: None,
                }
            }
            KeyedOp::Upsert(columns) => match &mut self.upsert {
                Some(existing) => merge_columns(existing, &columns),
                None => self.upsert = Some(columns),
            },
            KeyedOp::Update(columns) => match (&mut self.upsert, &mut self.before) {
                (Some(existing), _) => merge_columns(existing, &columns),
                (None, Before::Delete) => {}
                (None, Before::Update(existing)) => merge_columns(existing, &columns),
                (None, before @ Before::Nothing) => *before = Before::Update(columns),
            },
        }
    }

    /// The operations this normal form stands for, in order.
    pub(crate) fn ops(&self) -> Vec<KeyedOp> {
        let mut ops = Vec::with_capacity(2);
        match &self.before {
            Before::Nothing => {}
            Before::Delete => ops.push(KeyedOp::Delete),
            Before::Update(columns) => ops.push(KeyedOp::Update(columns.clone())),
        }
        if let Some(columns) = &self.upsert {
            ops.push(KeyedOp::Upsert(columns.clone()));
        }
        ops
    }

    /// Adds everything `later` stands for (composition is exact because
    /// both are sequences of operations).
    pub(crate) fn then(&mut self, later: &Coalesced) {
        for op in later.ops() {
            self.apply(op);
        }
    }
}

/// Encodes key values into bytes usable as a hash-map key. Values are
/// normalised first (see `normalize_key`), so equal keys encode equally.
pub(crate) fn encode_key(values: &[Value]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for value in values {
        match value {
            Value::Null => out.push(0),
            Value::Integer(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Value::Real(r) => {
                out.push(2);
                // -0.0 and 0.0 are equal in SQL.
                let r = if *r == 0.0 { 0.0f64 } else { *r };
                out.extend_from_slice(&r.to_bits().to_be_bytes());
            }
            Value::Text(t) => {
                out.push(3);
                out.extend_from_slice(&(t.len() as u64).to_be_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            Value::Blob(b) => {
                out.push(4);
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    out.into_boxed_slice()
}

/// SQLite's type affinity of a declared column type (datatype3.html §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

/// The affinity SQLite gives a declared type.
pub(crate) fn affinity(declared_type: &str) -> Affinity {
    let t = declared_type.to_ascii_uppercase();
    if t.contains("INT") {
        Affinity::Integer
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        Affinity::Text
    } else if t.contains("BLOB") || t.is_empty() {
        Affinity::Blob
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        Affinity::Real
    } else {
        Affinity::Numeric
    }
}

/// Brings a key value into the form SQLite stores for the column's
/// affinity, so that two spellings of one key (`1` and `1.0` in an INTEGER
/// column) are one buffer entry. Returns `Err(expected)` for a key value
/// SQLite would store as a different type than the key column holds (a
/// text `'1'` key in an INTEGER column would never match an integer 1).
pub(crate) fn normalize_key(affinity: Affinity, value: &Value) -> Result<Value, &'static str> {
    match (affinity, value) {
        (_, Value::Null) => Err("a non-NULL value"),
        (Affinity::Integer | Affinity::Numeric, Value::Integer(_)) => Ok(value.clone()),
        (Affinity::Integer | Affinity::Numeric, Value::Real(r))
            if r.fract() == 0.0 && r.abs() < 9.0e15 =>
        {
            Ok(Value::Integer(*r as i64))
        }
        (Affinity::Numeric, Value::Real(_)) => Ok(value.clone()),
        (Affinity::Integer, _) => Err("an integer"),
        (Affinity::Numeric, _) => Err("a number"),
        (Affinity::Real, Value::Integer(i)) => Ok(Value::Real(*i as f64)),
        (Affinity::Real, Value::Real(_)) => Ok(value.clone()),
        (Affinity::Real, _) => Err("a number"),
        (Affinity::Text, Value::Text(_)) => Ok(value.clone()),
        (Affinity::Text, Value::Integer(i)) => Ok(Value::Text(i.to_string())),
        (Affinity::Text, _) => Err("text"),
        (Affinity::Blob, _) => Ok(value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A model row store: applying ops one by one, as SQL would.
    type Model = Option<BTreeMap<usize, Value>>;

    fn run(mut row: Model, ops: &[KeyedOp]) -> Model {
        for op in ops {
            match op {
                KeyedOp::Delete => row = None,
                KeyedOp::Update(cols) => {
                    if let Some(r) = row.as_mut() {
                        for (c, v) in cols {
                            r.insert(*c, v.clone());
                        }
                    }
                }
                KeyedOp::Upsert(cols) => {
                    let r = row.get_or_insert_with(BTreeMap::new);
                    for (c, v) in cols {
                        r.insert(*c, v.clone());
                    }
                }
            }
        }
        row
    }

    fn all_ops() -> Vec<KeyedOp> {
        let v = |n: i64| Value::Integer(n);
        vec![
            KeyedOp::Upsert(vec![(0, v(1)), (1, v(10))]),
            KeyedOp::Upsert(vec![(0, v(1)), (2, v(20))]),
            KeyedOp::Update(vec![(1, v(11))]),
            KeyedOp::Update(vec![(2, v(22)), (3, v(33))]),
            KeyedOp::Delete,
        ]
    }

    /// Every sequence of up to 4 operations, from an absent row and from an
    /// existing one: the normal form ends in the same row as the sequence.
    #[test]
    fn normal_form_is_exact_for_every_short_sequence() {
        let ops = all_ops();
        let existing: Model = Some(
            [
                (0, Value::Integer(1)),
                (1, Value::Integer(0)),
                (4, Value::Integer(4)),
            ]
            .into(),
        );
        // All 781 sequences of length 0 to 4.
        let mut sequences: Vec<Vec<KeyedOp>> = vec![vec![]];
        let mut frontier: Vec<Vec<KeyedOp>> = vec![vec![]];
        for _ in 0..4 {
            frontier = frontier
                .iter()
                .flat_map(|s| {
                    ops.iter().map(move |op| {
                        let mut longer = s.clone();
                        longer.push(op.clone());
                        longer
                    })
                })
                .collect();
            sequences.extend(frontier.iter().cloned());
        }
        assert_eq!(sequences.len(), 781);
        let mut checked = 0;
        for sequence in &sequences {
            let mut c = Coalesced::default();
            for op in sequence {
                c.apply(op.clone());
            }
            assert!(c.ops().len() <= 2);
            for start in [None, existing.clone()] {
                assert_eq!(
                    run(start.clone(), &c.ops()),
                    run(start, sequence),
                    "{sequence:?} -> {c:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 1562);
    }

    #[test]
    fn composition_equals_concatenation() {
        let ops = all_ops();
        for a in &ops {
            for b in &ops {
                for c in &ops {
                    let mut first = Coalesced::of(a.clone());
                    first.apply(b.clone());
                    let second = Coalesced::of(c.clone());
                    let mut composed = first.clone();
                    composed.then(&second);
                    let mut direct = first.clone();
                    direct.apply(c.clone());
                    assert_eq!(composed, direct);
                }
            }
        }
    }

    #[test]
    fn spec_examples() {
        let v = |n: i64| Value::Integer(n);
        // last write wins per column
        let mut c = Coalesced::of(KeyedOp::Upsert(vec![(0, v(1)), (1, v(1)), (2, v(1))]));
        c.apply(KeyedOp::Upsert(vec![(0, v(1)), (1, v(2))]));
        assert_eq!(c.upsert, Some(vec![(0, v(1)), (1, v(2)), (2, v(1))]));
        // a delete after an upsert cancels it
        c.apply(KeyedOp::Delete);
        assert_eq!(
            c,
            Coalesced {
                before: Before::Delete,
                upsert: None
            }
        );
    }

    #[test]
    fn keys_normalize_by_affinity() {
        assert_eq!(
            normalize_key(Affinity::Integer, &Value::Real(3.0)),
            Ok(Value::Integer(3))
        );
        assert_eq!(
            normalize_key(Affinity::Integer, &Value::Text("3".into())),
            Err("an integer")
        );
        assert_eq!(
            normalize_key(Affinity::Text, &Value::Integer(3)),
            Ok(Value::Text("3".into()))
        );
        assert_eq!(
            normalize_key(Affinity::Real, &Value::Integer(3)),
            Ok(Value::Real(3.0))
        );
        assert!(normalize_key(Affinity::Blob, &Value::Null).is_err());
        assert_eq!(affinity("VARCHAR(20)"), Affinity::Text);
        assert_eq!(affinity("BIGINT"), Affinity::Integer);
        assert_eq!(affinity(""), Affinity::Blob);
        assert_eq!(affinity("DECIMAL"), Affinity::Numeric);
        assert_eq!(
            encode_key(&[Value::Real(0.0)]),
            encode_key(&[Value::Real(-0.0)])
        );
        assert_ne!(
            encode_key(&[Value::Text("ab".into()), Value::Text("c".into())]),
            encode_key(&[Value::Text("a".into()), Value::Text("bc".into())])
        );
    }
}
