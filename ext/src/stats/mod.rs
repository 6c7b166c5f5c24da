//! Lock statistics: what the busy handler and the file hooks report, kept
//! per file with fixed memory, and read as [`LockStats`] rows.
//!
//! * `tracker.rs`: one connection's wait, from first busy call to its end.
//! * `episode.rs`: the wait in progress, which the tracker writes and the
//!   registry reads (so neither imports the other's type: `registry.rs`
//!   sees trackers only as `ConnectionWaits`).
//! * `registry.rs`: this process's counters per file and its event ring.
//! * `histogram.rs`: the fixed-memory wait-time histogram.
//! * `side_file.rs`: the file-wide counters, recorded in the side file.
//! * `lock_stats.rs`: [`LockStats`], whose derived fields are computed in
//!   one place for the process row, the file row and the Rust client.

mod episode;
pub(crate) mod histogram;
pub(crate) mod lock_stats;
pub(crate) mod registry;
mod side_file;
#[cfg(test)]
mod tests;
pub(crate) mod tracker;

pub use lock_stats::{LockMode, LockScope, LockStats, WaitTotals};
