//! The database engines behind [`crate::Database`]. Everything that differs
//! between SQLite and PostgreSQL lives under this module; `core.rs` is the
//! one place that chooses between them.
//!
//! * `sqlite`: a file, the extension linked in, one writer connection and a
//!   pool of readers (the original engine, unchanged).
//! * `postgres` (feature `postgres`): a server, one writer session and a
//!   pool of reader sessions through the `postgres` driver.

pub(crate) mod sqlite;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;

/// How one attempt at a set of entries ended.
pub(crate) enum Step {
    /// Written; these (index, message) failed for row-level reasons.
    Done(Vec<(usize, String)>),
    /// A row error rolled the whole transaction back (`ON CONFLICT
    /// ROLLBACK`): write again without this entry.
    Restart(usize, String),
}

/// Whether `location` names a PostgreSQL server (`postgres://` or
/// `postgresql://`) rather than a SQLite file.
pub(crate) fn is_postgres_url(location: &str) -> bool {
    let lower = location.get(..13).unwrap_or(location).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::is_postgres_url;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("PostgreSQL://u@%2Ftmp/db"));
        assert!(!is_postgres_url("app.db"));
        assert!(!is_postgres_url("./postgres/app.db"));
        assert!(!is_postgres_url("file:app.db?mode=memory"));
    }
}
