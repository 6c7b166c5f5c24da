//! Lock statistics: what the busy handler and the file hooks report, kept
//! per file with fixed memory, and read as [`LockStats`] rows.
//!
//! * `tracker.rs`: one connection's wait, from first busy call to its end.
//! * `registry.rs`: this process's counters per file and its event ring.
//! * `histogram.rs`: the fixed-memory wait-time histogram.
//! * `lock_stats.rs`: [`LockStats`], whose derived fields are computed in
//!   one place for the process row, the file row and the Rust client.

pub(crate) mod histogram;
pub(crate) mod lock_stats;
pub(crate) mod registry;
pub(crate) mod tracker;

pub use lock_stats::{LockMode, LockScope, LockStats};
