//! How values and names appear in SQL text and in error messages: quoted
//! identifiers, and short descriptions that never echo a megabyte of input.

use rusqlite::types::ValueRef;

/// Cuts `s` to at most `max_chars` characters, marking the cut.
pub(crate) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Describes an SQL value for an error message (text cut to 40 characters).
pub(crate) fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".to_string(),
        ValueRef::Integer(i) => format!("integer {i}"),
        ValueRef::Real(r) => format!("real {r:?}"),
        ValueRef::Text(t) => format!("text '{}'", truncate(&String::from_utf8_lossy(t), 40)),
        ValueRef::Blob(b) => format!("a blob of {} bytes", b.len()),
    }
}

/// `name` as a double-quoted SQL identifier, safe to paste into SQL.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn descriptions_are_short() {
        let long = "x".repeat(10_000);
        assert!(describe(ValueRef::Text(long.as_bytes())).len() < 60);
        assert_eq!(describe(ValueRef::Blob(&[1, 2])), "a blob of 2 bytes");
    }
}
