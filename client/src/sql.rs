//! SQL text for the statements the batch helpers and the write buffer run.
//!
//! Every identifier comes from a [`TableInfo`] (the schema's own spelling)
//! and is quoted; values are always bound parameters.

use crate::schema::{TableInfo, quote};

fn column_list(table: &TableInfo, columns: &[usize]) -> String {
    columns
        .iter()
        .map(|&c| quote(&table.columns[c].name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `INSERT INTO t (c...) VALUES (?1...)`.
pub(crate) fn insert(table: &TableInfo, columns: &[usize]) -> String {
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.quoted_name(),
        column_list(table, columns),
        placeholders(columns.len(), 1)
    )
}

/// `INSERT ... ON CONFLICT (keys) DO UPDATE SET c = excluded.c` for every
/// non-key column given (`DO NOTHING` when only keys are given).
pub(crate) fn upsert(table: &TableInfo, columns: &[usize], keys: &[usize]) -> String {
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .map(|&c| {
            let name = quote(&table.columns[c].name);
            format!("{name} = excluded.{name}")
        })
        .collect();
    let action = if updates.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", updates.join(", "))
    };
    format!(
        "{} ON CONFLICT ({}) DO {action}",
        insert(table, columns),
        column_list(table, keys)
    )
}

/// `UPDATE t SET c = ?1... WHERE k = ?n...` (set columns first, then keys).
pub(crate) fn update(table: &TableInfo, set: &[usize], keys: &[usize]) -> String {
    let assignments: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, &c)| format!("{} = ?{}", quote(&table.columns[c].name), i + 1))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        table.quoted_name(),
        assignments.join(", "),
        key_match(table, keys, set.len() + 1)
    )
}

/// `DELETE FROM t WHERE k = ?1...`.
pub(crate) fn delete(table: &TableInfo, keys: &[usize]) -> String {
    format!(
        "DELETE FROM {} WHERE {}",
        table.quoted_name(),
        key_match(table, keys, 1)
    )
}

fn key_match(table: &TableInfo, keys: &[usize], first: usize) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, &k)| format!("{} = ?{}", quote(&table.columns[k].name), first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnInfo;

    fn table() -> TableInfo {
        let col = |n: &str| ColumnInfo {
            name: n.into(),
            declared_type: String::new(),
            not_null: false,
            has_default: false,
        };
        TableInfo {
            name: "we\"ird".into(),
            shared_name: "we\"ird".into(),
            columns: vec![col("id"), col("qty"), col("note")],
            strict: false,
            rowid_alias: None,
            unique_keys: vec![vec![0]],
        }
    }

    #[test]
    fn statements_quote_every_identifier() {
        let t = table();
        assert_eq!(
            insert(&t, &[0, 1]),
            r#"INSERT INTO "we""ird" ("id", "qty") VALUES (?1, ?2)"#
        );
        assert_eq!(
            upsert(&t, &[0, 1, 2], &[0]),
            r#"INSERT INTO "we""ird" ("id", "qty", "note") VALUES (?1, ?2, ?3) ON CONFLICT ("id") DO UPDATE SET "qty" = excluded."qty", "note" = excluded."note""#
        );
        assert!(upsert(&t, &[0], &[0]).ends_with("DO NOTHING"));
        assert_eq!(
            update(&t, &[1, 2], &[0]),
            r#"UPDATE "we""ird" SET "qty" = ?1, "note" = ?2 WHERE "id" = ?3"#
        );
        assert_eq!(delete(&t, &[0]), r#"DELETE FROM "we""ird" WHERE "id" = ?1"#);
    }
}
