//! PostgreSQL driver errors as the crate's [`Error`], classified by
//! SQLSTATE: for a statement, at `COMMIT`, and when opening a session. A
//! leaf of the engine, so `tx.rs` and `values.rs` can use it without the
//! engine's session handling.

use crate::error::{DbError, Error};

/// A driver error as the crate's [`Error`], classified by SQLSTATE.
pub(crate) fn error(e: postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_string());
    // The driver's own I/O errors on the socket ("error communicating with
    // the server": a reset, a server killed mid-statement) carry the
    // `std::io::Error` as their source; they are a lost connection too.
    let closed =
        e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let db = DbError::postgres(e);
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
        Error::CommitOutcomeUnknown(DbError::postgres(e))
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
        Error::Io(DbError::postgres(e))
    } else {
        error(e)
    }
}
