//! PostgreSQL driver errors as the crate's [`Error`], classified by
//! SQLSTATE: for a statement, at `COMMIT`, and when opening a session; and
//! what `error.rs` asks of them ([`EngineError`]). A leaf of the engine, so
//! `tx.rs` and `values.rs` can use it without the engine's session handling.

use std::fmt;

use crate::error::{DbError, EngineError, Error};

/// The SQLSTATEs a retry can cure, PostgreSQL's half of
/// [`Error::is_lock_error`]: serialization failure, deadlock, lock not
/// available (`lock_timeout`).
fn is_retryable_sqlstate(sqlstate: &str) -> bool {
    matches!(sqlstate, "40001" | "40P01" | "55P03")
}

impl EngineError for postgres::Error {
    fn code(&self) -> Option<&str> {
        postgres::Error::code(self).map(|c| c.code())
    }

    fn is_lock_error(&self) -> bool {
        EngineError::code(self).is_some_and(is_retryable_sqlstate)
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_db_error() {
            // The server's own message and SQLSTATE, not the driver's
            // generic "db error".
            Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
            None => write!(f, "{self}"),
        }
    }

    fn as_source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

/// An error the client found itself, not one the server reported: only a
/// message, no SQLSTATE, never a lock error.
#[derive(Debug)]
pub(crate) struct ClientNote(pub(crate) &'static str);

impl EngineError for ClientNote {
    fn code(&self) -> Option<&str> {
        None
    }

    fn is_lock_error(&self) -> bool {
        false
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn as_source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

/// A driver error as the crate's [`Error`], classified by SQLSTATE.
pub(crate) fn error(e: postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string());
    // The driver's own I/O errors on the socket ("error communicating with
    // the server": a reset, a server killed mid-statement) carry the
    // `std::io::Error` as their source; they are a lost connection too.
    let closed =
        e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let db = DbError::from(e);
    match code.as_deref() {
        Some(c) if c.starts_with("23") => Error::Constraint(db),
        Some("42P01" | "42703" | "3F000" | "42P10") => Error::Schema(db.to_string()),
        Some(c) if c.starts_with("22") => Error::InvalidInput(db.to_string()),
        Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53100" => Error::Io(db),
        None if closed => Error::Io(db),
        // Lock errors stay here until the retry loop gives up on them.
        _ => Error::Database(db),
    }
}

/// A driver error at `COMMIT`: when the server did not answer (the
/// connection broke, the server shut down or crashed), whether the
/// transaction committed is unknown; any answer (`40001`, a deferred
/// constraint) means it rolled back.
pub(crate) fn commit_error(e: postgres::Error) -> Error {
    let unknown = match e.code() {
        None => true,
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
    };
    if unknown {
        Error::CommitOutcomeUnknown(DbError::from(e))
    } else {
        error(e)
    }
}

/// A failure to open a session: [`Error::Io`] when the server did not
/// answer (refused, down, or no host of a multi-host URL fit
/// `target_session_attrs`), else classified by the server's SQLSTATE
/// (a wrong password is not a connection problem to wait out).
pub(crate) fn connect_error(e: postgres::Error) -> Error {
    if e.code().is_none() {
        Error::Io(DbError::from(e))
    } else {
        error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_states() {
        let retryable = is_retryable_sqlstate;
        assert!(retryable("40001") && retryable("40P01") && retryable("55P03"));
        assert!(!retryable("23505"));
    }

    #[test]
    fn a_client_note_reads_as_its_message() {
        let e = Error::CommitOutcomeUnknown(DbError::from(ClientNote("committed, perhaps")));
        let db = e.db_error().expect("an engine error");
        assert_eq!(db.to_string(), "committed, perhaps");
        assert_eq!(e.sqlstate(), None);
        assert!(!e.is_lock_error());
        assert!(std::error::Error::source(db).is_none());
        let noted = DbError::from(ClientNote("committed")).with_note("(noted)");
        assert_eq!(noted.to_string(), "committed (noted)");
    }
}
