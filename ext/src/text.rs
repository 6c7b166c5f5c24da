//! How values and names appear in SQL text and in error messages: quoted
//! identifiers, short descriptions that never echo a megabyte of input, and
//! messages handed to SQLite in memory SQLite can free.

use std::ffi::{c_char, c_int, c_void};

use rusqlite::ffi;
use rusqlite::types::ValueRef;

/// An allocator with `sqlite3_malloc`'s signature (SQLite frees the result).
pub(crate) type Malloc = unsafe extern "C" fn(c_int) -> *mut c_void;

/// `sqlite3_malloc` of the SQLite this library calls (linked, or the host's
/// once the API table is set), as a C function pointer.
pub(crate) unsafe extern "C" fn sqlite_malloc(n: c_int) -> *mut c_void {
    // SAFETY: a plain allocation call.
    unsafe { ffi::sqlite3_malloc(n) }
}

/// `message` as a NUL-ended string allocated with `malloc`, or null when
/// out of memory: an error message then goes missing, never the host.
///
/// # Safety
/// `malloc` must be the allocator of the SQLite that will free the string.
pub(crate) unsafe fn c_string_with(malloc: Malloc, message: &str) -> *mut c_char {
    let bytes = message.as_bytes();
    let Ok(len) = c_int::try_from(bytes.len() + 1) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a fresh allocation of len bytes, filled and NUL-ended.
    unsafe {
        let buf = malloc(len) as *mut u8;
        if !buf.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
            *buf.add(bytes.len()) = 0;
        }
        buf as *mut c_char
    }
}

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
