//! The operating-system calls the side file needs (futex wait and wake on
//! a shared word, byte-range locks that die with their process), behind one
//! seam.
//!
//! Which implementation is compiled is decided in one place, `ext/build.rs`,
//! which sets `cfg(hybrid_futex)`:
//!
//! * `linux.rs` (`hybrid_futex`: Linux, unless `--cfg hybrid_portable` is
//!   given): the real calls, every result checked.
//! * `portable.rs` (every other target, and Linux with `--cfg
//!   hybrid_portable`): each call reports [`std::io::ErrorKind::Unsupported`].
//!   Nothing reaches them in practice: without `hybrid_futex` the side file
//!   is never mapped ([`super::SideFile::open`] reports `Unsupported`), so
//!   every connection stays in backoff mode with process-scope metrics.
//!   They exist so the queue compiles unchanged on every target.
//!
//! `--cfg hybrid_portable` exists only to compile and test, on Linux, the
//! code a macOS, BSD or Windows build compiles (`make test` runs the suites
//! that way too; `docs/hosts.md`, "Platforms").

#[cfg(hybrid_futex)]
mod linux;
#[cfg(hybrid_futex)]
pub(crate) use linux::{byte_is_locked, futex_wait, futex_wake, try_lock_byte};

#[cfg(not(hybrid_futex))]
mod portable;
#[cfg(not(hybrid_futex))]
pub(crate) use portable::{byte_is_locked, futex_wait, futex_wake, try_lock_byte};

/// The kind of a byte-range lock.
#[cfg_attr(not(hybrid_futex), allow(dead_code))] // (`Read`: the Linux mapping only)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    Read,
    Write,
}
