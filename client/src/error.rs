//! The crate's one error type: variants a caller can act on, the same for
//! both engines (SQLite and, with the `postgres` feature, PostgreSQL), and
//! [`DbError`], the engine's own error inside them. SQLite's errors are
//! classified here (rusqlite's types are the crate's own API); another
//! engine's are classified under `engine/` and come in through
//! [`EngineError`].

use std::fmt;
use std::time::Duration;

use rusqlite::ffi;

/// What went wrong, in terms a caller can act on.
///
/// * [`Error::LockTimeout`]: other writers held the lock past the retry
///   deadline; try later or raise the deadline.
/// * [`Error::Constraint`]: the data broke a constraint; fix the data.
/// * [`Error::Schema`]: unknown table or column, or a schema the engine
///   rejected; fix the call or the schema.
/// * [`Error::InvalidInput`]: the call itself was wrong (NULL key, bad
///   option, wrong value type for a STRICT column).
/// * [`Error::Io`]: the file could not be read or written (disk full,
///   read-only, permissions, corruption), or the connection to the
///   PostgreSQL server was lost.
/// * [`Error::BufferFull`], [`Error::Timeout`], [`Error::Closed`],
///   [`Error::FlushFailed`]: write-buffer outcomes.
/// * [`Error::Spawn`]: a background thread could not be started (the
///   system is out of threads or memory).
/// * [`Error::CommitOutcomeUnknown`]: PostgreSQL, the connection was lost
///   while `COMMIT` was under way; the transaction may or may not have
///   committed, and it was not run again. Check before repeating it.
/// * [`Error::Database`]: any other error of the engine.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The write lock could not be had before the deadline (PostgreSQL:
    /// serialization failures, deadlocks and lock timeouts went on past it).
    LockTimeout {
        /// Transaction attempts made (each waited in the busy handler).
        attempts: u32,
        /// Total time spent, first attempt to giving up.
        waited: Duration,
        /// The last lock error the engine returned.
        source: DbError,
    },
    /// A `UNIQUE`, `NOT NULL`, `CHECK`, `FOREIGN KEY` or similar constraint failed.
    Constraint(DbError),
    /// Unknown table or column, or SQLite reported a schema problem.
    Schema(String),
    /// The call's arguments were wrong; the message says which and why.
    InvalidInput(String),
    /// Reading or writing the file failed (I/O, full disk, read-only,
    /// corrupt), or the connection to the server was lost.
    Io(DbError),
    /// The write buffer is full and the backpressure mode is `Reject` (or
    /// `Block` timed out, see [`Error::Timeout`]).
    BufferFull {
        /// The configured maximum of pending entries.
        capacity: usize,
    },
    /// Waiting (for buffer space, a ticket, a flush) took longer than allowed.
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The database or its write buffer is closed.
    Closed,
    /// Some buffered entries could not be written; they are kept in
    /// [`crate::WriteBuffer::take_failed`].
    FlushFailed {
        /// How many entries failed (an entry holds every operation merged
        /// into it, so one entry may stand for several tickets).
        failed: usize,
        /// The first failure's message.
        first_error: String,
    },
    /// A background thread (the write buffer's flusher, the log writer)
    /// could not be started.
    Spawn(std::io::Error),
    /// Any other error of the engine (a syntax error, say).
    Database(DbError),
    /// PostgreSQL: the connection was lost while `COMMIT` was under way
    /// (the server died, a failover began, the network broke), so whether
    /// the transaction committed is unknown. [`crate::Database::transact`]
    /// never runs such a transaction again by itself (it may have
    /// committed, and running it twice could apply it twice): look at the
    /// data, or make the transaction idempotent, before repeating it. A
    /// connection lost *before* `COMMIT` is not this error: that
    /// transaction was rolled back and is run again on a new session.
    CommitOutcomeUnknown(DbError),
}

/// The engine's own error behind an [`Error`]: SQLite's (with its result
/// code) or PostgreSQL's (with its SQLSTATE).
#[derive(Debug)]
pub struct DbError {
    repr: Repr,
    /// Added context ("the first 200 rows were committed").
    note: Option<String>,
}

#[derive(Debug)]
enum Repr {
    Sqlite(rusqlite::Error),
    /// Another engine's error (PostgreSQL's: `engine/postgres/errors.rs`).
    Engine(Box<dyn EngineError>),
}

/// What the crate asks of an engine's error other than SQLite's, so this
/// module needs no engine's types: each engine implements it for its own
/// errors, under `engine/`, and `DbError::from` takes any of them.
pub(crate) trait EngineError: fmt::Debug + Send + Sync + 'static {
    /// The engine's code for the error (PostgreSQL's SQLSTATE), if it
    /// reported one.
    fn code(&self) -> Option<&str>;
    /// Whether running the whole transaction again can cure it (the
    /// engine's half of [`Error::is_lock_error`]).
    fn is_lock_error(&self) -> bool;
    /// The message for people (without any note added to it).
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
    /// The error underneath, for [`std::error::Error::source`] (`None` for
    /// an error the client found itself).
    fn as_source(&self) -> Option<&(dyn std::error::Error + 'static)>;
}

impl DbError {
    /// SQLite's extended result code, for a SQLite error.
    pub fn sqlite_code(&self) -> Option<i32> {
        match &self.repr {
            Repr::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => Some(f.extended_code),
            _ => None,
        }
    }

    /// PostgreSQL's SQLSTATE (`23505`, `40001`, ...), for a PostgreSQL
    /// error the server reported.
    pub fn sqlstate(&self) -> Option<&str> {
        match &self.repr {
            Repr::Engine(e) => e.code(),
            Repr::Sqlite(_) => None,
        }
    }

    /// The rusqlite error, for a SQLite error.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Error> {
        match &self.repr {
            Repr::Sqlite(e) => Some(e),
            Repr::Engine(_) => None,
        }
    }

    /// The same error with `note` added to its message.
    pub(crate) fn with_note(mut self, note: &str) -> DbError {
        self.note = Some(match self.note.take() {
            Some(old) => format!("{old} {note}"),
            None => note.to_string(),
        });
        self
    }
}

impl<E: EngineError> From<E> for DbError {
    fn from(error: E) -> Self {
        DbError {
            repr: Repr::Engine(Box::new(error)),
            note: None,
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        DbError {
            repr: Repr::Sqlite(error),
            note: None,
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Sqlite(e) => write!(f, "{e}")?,
            Repr::Engine(e) => e.describe(f)?,
        }
        if let Some(note) = &self.note {
            write!(f, " {note}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Sqlite(e) => Some(e),
            Repr::Engine(e) => e.as_source(),
        }
    }
}

impl Error {
    /// Whether this is a lock error that retrying can cure: `SQLITE_BUSY`
    /// (all extended codes, including `SQLITE_BUSY_SNAPSHOT`) or
    /// `SQLITE_LOCKED`. Decided by result code, never by message text.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlite_hybrid::{Database, Error, RetryPolicy};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("e.db");
    /// let db = Database::builder(&path)
    ///     .retry(RetryPolicy { deadline: Duration::from_millis(100), ..RetryPolicy::default() })
    ///     .open()?;
    /// let other = rusqlite::Connection::open(&path)?;
    /// other.execute_batch("BEGIN IMMEDIATE")?; // someone else holds the write lock
    /// let err = db.write(|tx| Ok(tx.execute_batch("CREATE TABLE t(x)")?)).unwrap_err();
    /// assert!(err.is_lock_error());
    /// assert!(matches!(err, Error::LockTimeout { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_lock_error(&self) -> bool {
        match self {
            Error::LockTimeout { .. } => true,
            Error::Database(e) => match &e.repr {
                Repr::Sqlite(e) => is_lock_error(e),
                Repr::Engine(e) => e.is_lock_error(),
            },
            _ => false,
        }
    }

    /// This lock error as [`Error::LockTimeout`] after `attempts` attempts
    /// over `waited` (any other error is returned unchanged).
    pub(crate) fn into_lock_timeout(self, attempts: u32, waited: Duration) -> Error {
        let source = match self {
            Error::Database(e) => e,
            Error::LockTimeout { source, .. } => source,
            other => return other,
        };
        Error::LockTimeout {
            attempts,
            waited,
            source,
        }
    }

    /// The engine's error behind this one, if any.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            Error::LockTimeout { source: e, .. }
            | Error::Constraint(e)
            | Error::Io(e)
            | Error::Database(e)
            | Error::CommitOutcomeUnknown(e) => Some(e),
            _ => None,
        }
    }

    /// The SQLite extended result code behind this error, if any.
    pub fn sqlite_code(&self) -> Option<i32> {
        self.db_error().and_then(DbError::sqlite_code)
    }

    /// The PostgreSQL SQLSTATE behind this error, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        self.db_error().and_then(DbError::sqlstate)
    }
}

/// Whether a rusqlite error is `SQLITE_BUSY*` or `SQLITE_LOCKED*`.
pub fn is_lock_error(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code & 0xff == ffi::SQLITE_BUSY || f.extended_code & 0xff == ffi::SQLITE_LOCKED
    )
}

impl From<rusqlite::Error> for Error {
    /// Classifies by result code: constraint, I/O family, schema, else
    /// [`Error::Database`] (lock errors included, until the retry loop turns
    /// them into [`Error::LockTimeout`]).
    fn from(error: rusqlite::Error) -> Self {
        // rusqlite reports a statement SQLite could not prepare (unknown
        // table or column, syntax) as SqlInputError, with the same code.
        let (failure, message) = match &error {
            rusqlite::Error::SqliteFailure(failure, message) => (*failure, message.clone()),
            rusqlite::Error::SqlInputError {
                error: failure,
                msg,
                ..
            } => (*failure, Some(msg.clone())),
            _ => {
                return match error {
                    rusqlite::Error::InvalidColumnName(name) => {
                        Error::Schema(format!("no such column: {name}"))
                    }
                    other => Error::Database(other.into()),
                };
            }
        };
        let (code, message) = (failure.extended_code, &message);
        match code & 0xff {
            ffi::SQLITE_CONSTRAINT => Error::Constraint(error.into()),
            ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_READONLY
            | ffi::SQLITE_CANTOPEN
            | ffi::SQLITE_CORRUPT
            | ffi::SQLITE_NOTADB
            | ffi::SQLITE_PERM => Error::Io(error.into()),
            ffi::SQLITE_SCHEMA => {
                Error::Schema(message.clone().unwrap_or_else(|| error.to_string()))
            }
            ffi::SQLITE_ERROR
                if message.as_deref().is_some_and(|m| {
                    m.starts_with("no such table")
                        || m.starts_with("no such column")
                        || m.contains("has no column named")
                }) =>
            {
                // SQLite reports these as the generic SQLITE_ERROR; its
                // message is the only thing that tells them apart.
                Error::Schema(message.clone().unwrap_or_default())
            }
            _ => Error::Database(error.into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LockTimeout {
                attempts,
                waited,
                source,
            } => write!(
                f,
                "database is locked: gave up after {attempts} attempt(s) and {} ms ({source})",
                waited.as_millis()
            ),
            Error::Constraint(e) => write!(f, "constraint failed: {e}"),
            Error::Schema(m) => write!(f, "schema error: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::BufferFull { capacity } => {
                write!(f, "write buffer is full ({capacity} pending entries)")
            }
            Error::Timeout { waited } => write!(f, "timed out after {} ms", waited.as_millis()),
            Error::Closed => f.write_str("the database or its write buffer is closed"),
            Error::FlushFailed {
                failed,
                first_error,
            } => {
                write!(
                    f,
                    "{failed} buffered entr(y/ies) could not be written; first: {first_error}"
                )
            }
            Error::Spawn(e) => write!(f, "cannot start a background thread: {e}"),
            Error::Database(e) => write!(f, "database error: {e}"),
            Error::CommitOutcomeUnknown(e) => write!(
                f,
                "the connection was lost during COMMIT; whether the transaction committed is \
                 unknown, and it was not run again ({e})"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::LockTimeout { source, .. } => Some(source),
            Error::Constraint(e)
            | Error::Io(e)
            | Error::Database(e)
            | Error::CommitOutcomeUnknown(e) => Some(e),
            Error::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl Error {
    /// The one form of a bad setting, whichever options type holds it:
    /// [`Error::InvalidInput`] naming the type and the field, then what is
    /// allowed (`RetryPolicy.max_attempts must be at least 1`).
    pub(crate) fn invalid_option(owner: &str, field: &str, reason: impl fmt::Display) -> Error {
        Error::InvalidInput(format!("{owner}.{field} {reason}"))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), Some(message.to_string()))
    }

    #[test]
    fn lock_errors_are_recognised_by_code() {
        assert!(is_lock_error(&failure(
            ffi::SQLITE_BUSY,
            "database is locked"
        )));
        assert!(is_lock_error(&failure(ffi::SQLITE_BUSY_SNAPSHOT, "x")));
        assert!(is_lock_error(&failure(ffi::SQLITE_LOCKED_SHAREDCACHE, "x")));
        assert!(!is_lock_error(&failure(
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            "database is locked"
        )));
        assert!(Error::from(failure(ffi::SQLITE_BUSY, "x")).is_lock_error());
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_CONSTRAINT_NOTNULL, "x")),
            Error::Constraint(_)
        ));
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_FULL, "x")),
            Error::Io(_)
        ));
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_READONLY, "x")),
            Error::Io(_)
        ));
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_ERROR, "no such table: t")),
            Error::Schema(_)
        ));
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_ERROR, "near \"x\": syntax error")),
            Error::Database(_)
        ));
        let e = Error::from(failure(
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            "UNIQUE constraint failed: t.k",
        ));
        assert_eq!(e.sqlite_code(), Some(ffi::SQLITE_CONSTRAINT_UNIQUE));
    }
}
