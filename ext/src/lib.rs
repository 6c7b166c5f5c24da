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
//! lib.rs               the crate's face: these docs and what it exports
//! entry.rs             how SQLite gets in: the loadable entry point and
//!                      the auto-extension
//! registration.rs      the composition root: register, unregister
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
mod registration;
mod shared;
mod slow_waits;
mod sql;
mod stats;
mod text;

pub use conn::{ConnState, LockSnapshot};
pub use entry::register_auto_extension;
pub use policy::{BackoffPolicy, Jitter, PolicyError};
pub use queue::priority::Priority;
pub use registration::register;
pub use slow_waits::{SlowWait, SlowWaitEvent, log_waits, on_slow_wait, set_log_waits};
pub use stats::{LockMode, LockScope, LockStats, WaitTotals};

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
