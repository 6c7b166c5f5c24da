//! The shared side file `<db>-hybrid`: a small memory-mapped file next to
//! the database (like SQLite's own `-shm`) that every process using the
//! extension on that database maps, so they can queue for the write lock,
//! wake each other, tell live peers from dead ones, and keep file-wide
//! statistics.
//!
//! * `layout.rs`: the bytes (every field an atomic; nothing in it trusted).
//! * `mapping.rs`: opening and mapping it safely (symlinks, sizes, modes,
//!   owners, full disks, the dead-man and participant locks).
//! * `counters.rs`: the rules of the file-wide statistics (reset, reclaim;
//!   `stats/side_file.rs` records into them and reads them).
//! * `observe.rs`: what this process has seen of it, by its own clock.
//! * `sys/`: futexes and byte-range locks, every result checked (Linux),
//!   or the portable stand-ins that report `Unsupported`.
//!
//! Linux only (`cfg(hybrid_futex)`, decided in `ext/build.rs`); elsewhere,
//! and on Linux built with `--cfg hybrid_portable`, [`SideFile::open`]
//! reports `Unsupported` and the extension keeps to backoff mode.

pub(crate) mod counters;
// Without the futex queue the side file is never mapped (`SideFile::map`
// reports `Unsupported` before any of it runs): the format and the mapping
// code stay compiled and type-checked on every target, but are not reached.
#[cfg_attr(not(hybrid_futex), allow(dead_code))]
pub(crate) mod layout;
#[cfg_attr(not(hybrid_futex), allow(dead_code))]
pub(crate) mod mapping;
pub(crate) mod observe;
pub(crate) mod sys;

pub(crate) use mapping::SideFile;
