//! `sqlite-hybrid-ext`: a SQLite extension for many concurrent writers. It
//! gives every connection a fair, fast hand-off of the write lock between
//! processes (a queue in the side file `<db>-hybrid`, woken at release),
//! a jittered backoff handler where that cannot be used, and lock
//! statistics as SQL tables.
//!
//! Two ways in, one code path:
//! * As a loadable extension (`make ext` → `dist/libhybrid.so`, these
//!   sources built by `loadable/Cargo.toml` with rusqlite 0.39, whose
//!   bindings load into SQLite 3.34.1 and later): SQLite calls
//!   `sqlite3_hybrid_init`, which
//!   registers the loading connection and every connection the process
//!   opens later (an auto-extension).
//! * As a Rust library: [`register`] a `rusqlite::Connection` (the
//!   `sqlite-hybrid` client crate does this for you) and keep the returned
//!   [`ConnState`] to read and change its policy and statistics.
//!
//! # Layers
//! Each layer imports only those below it:
//!
//! ```text
//! lib.rs, entry.rs     the composition root: register, unregister, and how
//!                      SQLite gets in (the loadable entry point)
//! busy.rs, sql/        the SQLite calls: the busy handler, the functions
//!                      and tables
//! conn.rs              one connection's state (knows neither the handler
//!                      nor the SQL surface)
//! policy/, queue/      the rules: what a waiting connection does; and
//! slow_waits.rs        the slow-wait log (who holds, who waits), fed the
//!                      slow waits a connection's tracker hands back
//! stats/               record what happened, never report it (the tables
//!                      and the slow-wait log do)
//! shared/              the side file `<db>-hybrid`: its format and the
//!                      numbers every process must agree on (a leaf)
//! file_hooks.rs, budget.rs, clock.rs, text.rs
//!                      leaves: the write lock's file wrapper, the CPU
//!                      budget of a wait, clocks, strings
//! ```
//!
//! Data flows the same way, from SQLite down: `file_hooks.rs` (the write
//! lock) and `busy.rs` (the busy handler) ask `queue/` and `policy/` what
//! to do and tell `stats/` what happened; `sql/` reads the statistics back
//! out as tables, and `slow_waits.rs` reports the slow waits that the wait
//! tracker (`stats/tracker.rs`) hands back to it. No two modules import
//! each other.

#![warn(missing_docs, unreachable_pub, clippy::undocumented_unsafe_blocks)]

/// The crate README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct CrateReadme;

mod budget;
mod busy;
mod clock;
mod conn;
mod entry;
mod file_hooks;
mod policy;
mod queue;
mod shared;
mod slow_waits;
mod sql;
mod stats;
mod text;

use std::sync::Arc;

use rusqlite::Connection;

pub use conn::{ConnState, LockSnapshot};
pub use policy::{BackoffPolicy, Jitter, PolicyError};
pub use queue::Priority;
pub use slow_waits::{SlowWait, SlowWaitEvent, log_waits, on_slow_wait, set_log_waits};
pub use stats::{LockMode, LockScope, LockStats};

#[cfg(feature = "loadable")]
pub use entry::sqlite3_hybrid_init;

/// Whether this build has the futex queue (futex mode: the shared side file
/// `<db>-hybrid` and its write-lock hand-off): `true` on Linux, `false` on
/// every other target, and on Linux built with `RUSTFLAGS="--cfg
/// hybrid_portable"` (which exists to test that path). Without it every
/// connection runs in backoff mode (the jittered busy handler), no side file
/// is made or read, and `hybrid_lock_metrics` has `process` rows only.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let conn = rusqlite::Connection::open(dir.path().join("app.db"))?;
/// hybrid::register(&conn)?;
/// conn.pragma_update(None, "journal_mode", "wal")?;
/// conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")?;
/// let mode: String =
///     conn.query_row("SELECT mode FROM hybrid_lock_metrics WHERE scope = 'process'", [], |r| r.get(0))?;
/// assert_eq!(mode, if hybrid::FUTEX_QUEUE { "futex" } else { "backoff" });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const FUTEX_QUEUE: bool = cfg!(hybrid_futex);

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

/// Makes SQLite call [`register`] on every connection this process opens
/// from now on (`sqlite3_auto_extension`). The loadable entry point does
/// this itself; Rust programs that open connections outside the client
/// crate can call it once at start-up.
pub fn register_auto_extension() -> rusqlite::Result<()> {
    entry::register_auto_extension()
}
