//! The shared side file `<db>-hybrid`: a small memory-mapped file next to
//! the database (like SQLite's own `-shm`) that every process using the
//! extension on that database maps, so they can queue for the write lock,
//! wake each other, tell live peers from dead ones, and keep file-wide
//! statistics.
//!
//! * `layout.rs`: the bytes (every field an atomic; nothing in it trusted).
//! * `mapping.rs`: opening and mapping it safely (symlinks, sizes, modes,
//!   owners, full disks, the dead-man and participant locks).
//! * `counters.rs`: the file-wide statistics.
//! * `observe.rs`: what this process has seen of it, by its own clock.
//! * `sys.rs`: futexes and byte-range locks, every result checked.
//!
//! Linux only; elsewhere [`SideFile::open`] reports `Unsupported` and the
//! extension keeps to backoff mode.

pub(crate) mod counters;
pub(crate) mod layout;
pub(crate) mod mapping;
pub(crate) mod observe;
#[cfg(target_os = "linux")]
pub(crate) mod sys;

pub(crate) use mapping::SideFile;
