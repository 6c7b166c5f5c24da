//! The portable side of [`super`]: the same functions as `linux.rs`, each
//! reporting [`io::ErrorKind::Unsupported`] and touching nothing. No caller
//! reaches them (the side file is never mapped without `hybrid_futex`); a
//! caller that did would get an error it already handles, never a panic.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::LockKind;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the shared write-lock queue needs Linux futexes and OFD locks",
    )
}

/// Unsupported here: see `linux.rs`.
pub(crate) fn futex_wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) -> io::Result<()> {
    Err(unsupported())
}

/// Unsupported here: see `linux.rs`.
pub(crate) fn futex_wake(_word: &AtomicU32, _count: u32) -> io::Result<usize> {
    Err(unsupported())
}

/// Unsupported here: see `linux.rs`.
pub(crate) fn try_lock_byte(_file: &File, _kind: LockKind, _byte: u64) -> io::Result<bool> {
    Err(unsupported())
}

/// Unsupported here: see `linux.rs`.
pub(crate) fn byte_is_locked(_file: &File, _byte: u64) -> io::Result<bool> {
    Err(unsupported())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_reports_unsupported_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("locks")).unwrap();
        let word = AtomicU32::new(5);
        let kinds = [
            futex_wait(&word, 5, Duration::from_secs(60))
                .unwrap_err()
                .kind(),
            futex_wake(&word, 1).unwrap_err().kind(),
            try_lock_byte(&file, LockKind::Write, 1).unwrap_err().kind(),
            byte_is_locked(&file, 1).unwrap_err().kind(),
        ];
        assert_eq!(kinds, [io::ErrorKind::Unsupported; 4]);
        assert_eq!(word.into_inner(), 5);
    }
}
