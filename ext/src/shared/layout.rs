//! The byte layout of the side file `<db>-hybrid`: a header for the queue,
//! per-process records, file-wide statistics and the waiter slots.
//!
//! Every field is an atomic: the file is shared memory between processes,
//! and any bit pattern a peer (or a disk error) leaves in it must be safe
//! to read. Nothing here is trusted: a value read from the file is a hint,
//! and every rule built on it (`queue/`) bounds what a wrong value can cost
//! (a short delay), never more.
//!
//! No field holds a timestamp that another process compares with its own
//! clock (see `clock.rs`): the file holds tokens, counters, durations and
//! wall-clock labels for people.
//!
//! ```text
//! offset  size    what
//! 0       256     Header: version, magic, queue state
//! 256     4096    Participant records, one per live process (128)
//! 4608    3584    SharedStats: file-wide counters and histogram (the rest zero)
//! 8192    16384   Slot records, one per waiting connection (256)
//! 24576           end (FILE_BYTES)
//! ```
//! Lock bytes (kernel byte-range locks, never data) live beyond the end:
//! [`LOCK_DMS`] and one byte per participant record from [`LOCK_PARTICIPANTS`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The wait-time histogram's buckets (HdrHistogram's log-linear layout,
/// `stats/histogram.rs`): the file holds one copy that every process adds
/// to, so every process must bucket alike. Sub-buckets per power of two: 8
/// gives at most 12.5% bucket width, so a percentile reported at the bucket
/// midpoint is within ~6.25% of the truth.
pub(crate) const SUB_BUCKETS: u64 = 8;
/// log2 of [`SUB_BUCKETS`].
pub(crate) const SUB_BITS: u32 = 3;
/// Values at or above 2^41 µs (~25 days) share the last bucket.
pub(crate) const MAX_MSB: u32 = 40;
/// Number of buckets (also the length of the side file's copy).
pub(crate) const BUCKETS: usize = ((MAX_MSB - SUB_BITS + 2) as usize) * SUB_BUCKETS as usize;

/// Largest tenure any connection may claim, in ms (and the largest
/// `handoff_ms` a policy accepts): waiters cap the header's `tenure_ns` at
/// this, whatever a peer wrote. Releases before 0.2 capped at 5 ms; such a
/// peer only ends a longer tenure early by its own clock (it tries the lock
/// and queues again), which costs throughput, never correctness.
pub(crate) const MAX_HANDOFF_MS: f64 = 10.0;
/// [`MAX_HANDOFF_MS`] in ns.
pub(crate) const MAX_HANDOFF_NS: u64 = 10_000_000;

/// Layout version, at offset 0 in every version of the file (version 3,
/// the first release, had no magic and no participant records).
pub(crate) const LAYOUT_VERSION: u32 = 4;
/// Identifies a side file ("HYBRIDSF" as little-endian bytes).
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"HYBRIDSF");
/// Records of processes using the file at once.
pub(crate) const MAX_PARTICIPANTS: usize = 128;
/// Connections waiting at once on one database.
pub(crate) const MAX_SLOTS: usize = 256;

pub(crate) const HEADER_OFFSET: usize = 0;
pub(crate) const PARTICIPANTS_OFFSET: usize = 256;
pub(crate) const STATS_OFFSET: usize = 4608;
pub(crate) const SLOTS_OFFSET: usize = 8192;
/// Size of the side file.
pub(crate) const FILE_BYTES: usize = SLOTS_OFFSET + MAX_SLOTS * SLOT_BYTES;
const SLOT_BYTES: usize = 64;
const PARTICIPANT_BYTES: usize = 32;

/// Dead-man switch, as SQLite's `-shm` has one: every process holds a read
/// lock on this byte while it has the file mapped. Whoever can take a write
/// lock on it is alone, and may reinitialise the queue (after a reboot,
/// or after every user crashed).
pub(crate) const LOCK_DMS: u64 = 1 << 30;
/// Participant `p` holds a write lock on byte `LOCK_PARTICIPANTS + p` for as
/// long as its process lives; the kernel drops it when the process dies,
/// in any PID namespace.
pub(crate) const LOCK_PARTICIPANTS: u64 = LOCK_DMS + 1;

/// The queue's shared state.
#[repr(C)]
pub(crate) struct Header {
    /// [`LAYOUT_VERSION`].
    pub(crate) version: AtomicU32,
    /// [`FILE_BYTES`].
    pub(crate) file_bytes: AtomicU32,
    /// [`MAGIC`].
    pub(crate) magic: AtomicU64,
    /// Next queue ticket (arrival order).
    pub(crate) next_ticket: AtomicU64,
    /// Next process epoch (the high half of every token).
    pub(crate) next_epoch: AtomicU64,
    /// Token of the connection whose tenure it is (0: none).
    pub(crate) tenure_owner: AtomicU64,
    /// How long that tenure claims to last, ns (readers cap it).
    pub(crate) tenure_ns: AtomicU64,
    /// Token of the participant holding the write lock (0: none known).
    pub(crate) holder: AtomicU64,
    /// When the holder took the lock, unix ms: shown to people
    /// (`hybrid_lock_holder`, the slow-wait log), never used to decide.
    pub(crate) holder_since_unix_ms: AtomicU64,
    /// Bumped whenever a tenure starts.
    pub(crate) tenure_seq: AtomicU32,
    /// Bumped at every acquisition by a participant; futex word for
    /// connections that give the head of the queue its turn.
    pub(crate) acquire_seq: AtomicU32,
    /// Bumped at every release by a participant.
    pub(crate) release_seq: AtomicU32,
    /// Connections sleeping on `acquire_seq` (so a holder wakes them only
    /// when someone sleeps).
    pub(crate) yielders: AtomicU32,
    /// Claimed slots (a hint: 0 means nobody queues).
    pub(crate) waiting: AtomicU32,
    /// When the current tenure began, unix ms (shown, never used to decide).
    pub(crate) tenure_since_unix_ms: AtomicU64,
}

/// One process using the file.
#[repr(C)]
pub(crate) struct Participant {
    /// The process's epoch (0: never used). A slot whose token carries
    /// another epoch belongs to a process that is gone.
    pub(crate) epoch: AtomicU64,
    /// `reset generation << 32 | waits in progress` of this process.
    pub(crate) in_flight: AtomicU64,
    /// The process id, for people (never compared: PID namespaces).
    pub(crate) pid: AtomicU32,
    _reserved: [AtomicU32; 3],
}

/// File-wide wait counters (every process), as in `stats/`.
#[repr(C)]
pub(crate) struct SharedStats {
    /// Bumped by `hybrid_lock_metrics_reset('file')`.
    pub(crate) generation: AtomicU64,
    pub(crate) acquired: AtomicU64,
    pub(crate) gave_up: AtomicU64,
    pub(crate) handler_calls: AtomicU64,
    pub(crate) wait_total_us: AtomicU64,
    pub(crate) wait_max_us: AtomicU64,
    pub(crate) last_event_unix_ms: AtomicU64,
    pub(crate) reset_unix_ms: AtomicU64,
    pub(crate) histogram: [AtomicU64; BUCKETS],
    /// Waits that queued and were handed the lock (see `handoffs` in
    /// `LockStats`).
    pub(crate) handoffs: AtomicU64,
    /// Added after layout 4 was released, in bytes that layout leaves zero
    /// and never reads or writes: a process of the previous release ignores
    /// them (it neither misreads nor resets them; see `counters.rs`), so
    /// the layout version stays 4 and both releases share one queue.
    /// The reset generation the three counters below belong to.
    pub(crate) tail_generation: AtomicU64,
    /// `SQLITE_BUSY` no busy handler saw (a read transaction upgrading).
    pub(crate) busy_in_read_tx: AtomicU64,
    /// `SQLITE_BUSY_SNAPSHOT` (a read transaction's stale snapshot).
    pub(crate) busy_snapshot: AtomicU64,
    /// Application retries reported with `hybrid_note_retry()`.
    pub(crate) app_retries: AtomicU64,
}

/// One waiting connection.
#[repr(C)]
pub(crate) struct Slot {
    /// Owner token (0: free).
    pub(crate) owner: AtomicU64,
    /// Queue ticket taken when the wait began.
    pub(crate) ticket: AtomicU64,
    /// When the wait began, Unix ms (for people, and for promoting old
    /// background waiters; a wrong value only changes the order).
    pub(crate) wait_start_unix_ms: AtomicU64,
    /// The waiting process, for people.
    pub(crate) pid: AtomicU32,
    /// 0 = interactive, 1 = background.
    pub(crate) priority: AtomicU32,
    /// Futex word: bumped to wake this waiter.
    pub(crate) wake: AtomicU32,
    /// Bumped by the waiter on every turn of its wait loop: a waiter whose
    /// beat stops (a stopped process) is skipped, by the observer's clock.
    pub(crate) beat: AtomicU32,
    _reserved: [AtomicU32; 6],
}

const _: () = assert!(std::mem::size_of::<Header>() <= PARTICIPANTS_OFFSET - HEADER_OFFSET);
const _: () = assert!(std::mem::size_of::<Participant>() == PARTICIPANT_BYTES);
const _: () = assert!(PARTICIPANTS_OFFSET + MAX_PARTICIPANTS * PARTICIPANT_BYTES <= STATS_OFFSET);
const _: () = assert!(STATS_OFFSET + std::mem::size_of::<SharedStats>() <= SLOTS_OFFSET);
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);
const _: () = assert!(FILE_BYTES.is_multiple_of(4096));
const _: () = assert!(MAX_PARTICIPANTS < u16::MAX as usize);

impl Header {
    /// Whether the header says this is a side file of this layout.
    pub(crate) fn is_valid(&self) -> bool {
        self.version.load(Ordering::Acquire) == LAYOUT_VERSION
            && self.magic.load(Ordering::Acquire) == MAGIC
            && self.file_bytes.load(Ordering::Acquire) == FILE_BYTES as u32
    }
}

/// Epochs have 24 bits (16 million process starts before one repeats).
pub(crate) const EPOCH_MASK: u64 = 0xff_ffff;

/// A connection's token: `epoch << 40 | participant << 32 | connection`.
/// Unique among live processes of one file (the file hands out epochs, the
/// kernel lock makes a participant record exclusive), never 0, and enough
/// by itself to check whether its process lives ([`participant_of`],
/// [`epoch_of`]).
pub(crate) fn token(epoch: u32, participant: usize, connection: u32) -> u64 {
    ((u64::from(epoch) & EPOCH_MASK) << 40)
        | ((participant as u64 & 0xff) << 32)
        | u64::from(connection)
}

/// The epoch part of a token.
pub(crate) fn epoch_of(token: u64) -> u32 {
    ((token >> 40) & EPOCH_MASK) as u32
}

/// The participant record a token belongs to.
pub(crate) fn participant_of(token: u64) -> usize {
    ((token >> 32) & 0xff) as usize
}

/// `(generation, count)` packed into a participant's `in_flight` word.
pub(crate) fn pack_in_flight(generation: u64, count: u32) -> u64 {
    ((generation & 0xffff_ffff) << 32) | u64::from(count)
}

/// The `(generation low bits, count)` of an `in_flight` word.
pub(crate) fn unpack_in_flight(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}
