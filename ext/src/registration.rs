//! The composition root: [`register`] puts the extension on one
//! connection (the SQL surface, the busy handler, the file hooks, each from
//! its own layer) and [`unregister`] takes it all off again. The crate's
//! face (`lib.rs`) re-exports `register`; the loadable entry point and the
//! auto-extension (`entry.rs`) call both.

use std::sync::Arc;

use rusqlite::Connection;

use crate::conn::{self, ConnState};
use crate::{busy, file_hooks, sql};

/// Registers the extension on `conn`: adds the SQL functions and tables,
/// installs the hybrid busy handler (replacing any busy handler or
/// `busy_timeout`) and wraps the main file so the write lock can be handed
/// over in WAL mode. All or nothing: on error nothing stays registered.
/// Calling it again on a registered connection (an auto-extension ran at
/// open, then the host loads the library on it too) keeps that
/// registration, its policy and statistics, and only puts the hybrid busy
/// handler back in force; it returns the same state.
///
/// Returns the connection's state, through which Rust code can read and
/// change the policy and statistics without SQL.
///
/// ```
/// let conn = rusqlite::Connection::open_in_memory()?;
/// hybrid::register(&conn)?;
/// let version: String = conn.query_row("SELECT hybrid_version()", [], |r| r.get(0))?;
/// assert_eq!(version, env!("CARGO_PKG_VERSION"));
/// # Ok::<(), rusqlite::Error>(())
/// ```
pub fn register(conn: &Connection) -> rusqlite::Result<Arc<ConnState>> {
    if let Some(state) = conn::registered(conn) {
        // Registered already (the auto-extension at open, then an explicit
        // load): keep the policy, statistics and queue place; only put the
        // handler back, as loading promises.
        busy::install_handler(conn, &state)?;
        return Ok(state);
    }
    let path = match conn.path() {
        Some(path) if !path.is_empty() => path.to_string(),
        _ => ":memory:".to_string(),
    };
    let state = Arc::new(ConnState::new(busy::next_id(), &path));
    busy::publish(&state);
    // Functions and tables first: they own the state, and they are the only
    // step that can fail. The handler and the file hooks go in last.
    sql::register_all(conn, &state)?;
    if let Err(error) = busy::install_handler(conn, &state) {
        // Never seen (SQLite refuses only a closed connection), but nothing
        // may stay registered on an error.
        sql::unregister_all(conn);
        return Err(error);
    }
    // Futex mode where possible; backoff mode otherwise (never an error).
    if state.attach_hooks(conn) {
        conn::remember(conn, &state);
    }
    Ok(state)
}

/// Removes everything [`register`] put on `conn`: the functions and
/// tables, the busy handler and the file hooks. Used when loading the
/// extension fails half-way, so nothing is left that points into a library
/// SQLite is about to unload.
#[cfg_attr(not(feature = "loadable"), allow(dead_code))]
pub(crate) fn unregister(conn: &Connection) {
    sql::unregister_all(conn);
    busy::remove_handler(conn);
    // SAFETY: `conn` is the open connection being loaded, used by this
    // thread, with no statement running (`detach`'s contract).
    unsafe { file_hooks::detach(conn.handle()) };
}
