//! The shared side file `<db>-hybrid`: a small memory-mapped file next to
//! the database (like SQLite's own `-shm`) that every process using the
//! extension on that database maps, so they can queue for the write lock,
//! wake each other, and keep file-wide lock metrics.
//!
//! # Layout and invariants
//! * Fixed size ([`FILE_BYTES`]); a [`Header`] then [`MAX_SLOTS`] waiter
//!   [`Slot`]s, 64 bytes each. Every field is an atomic; **all zeros is the
//!   valid empty state**, so a freshly created (zero-filled) file needs no
//!   initialisation and two processes creating it at once cannot race.
//!   `version` is set from 0 to [`VERSION`] by compare-and-swap; a file with
//!   another version is not used (the process falls back to plain backoff).
//! * A slot is owned by the connection whose token is in `owner` (0 =
//!   free), claimed and freed by compare-and-swap. A process killed while
//!   owning a slot leaves it behind: its `heartbeat_ns` stops moving, so
//!   others ignore it after [`STALE_NS`] and free it once its pid is dead.
//! * Times are `CLOCK_MONOTONIC` nanoseconds, which all processes on one
//!   machine share.
//! * `wake` words are futexes (shared, not process-private): a waiter
//!   sleeps on its own slot's word; whoever hands it the lock bumps the word
//!   and wakes it. Every wait has a timeout, so a lost wake-up (a crashed
//!   releaser, a process that does not use the extension) costs latency,
//!   never a hang.
//!
//! Linux only; elsewhere [`SideFile::open`] reports `Unsupported` and the
//! extension keeps to plain backoff.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use crate::metrics::{BUCKETS, LogHistogram, Outcome, SharedCounters};

/// Layout version stored in the header.
pub const VERSION: u32 = 3;
/// Waiter slots (connections waiting at once on one database).
pub const MAX_SLOTS: usize = 256;
const HEADER_BYTES: usize = 4096;
const SLOT_BYTES: usize = 64;
/// Size of the side file.
pub const FILE_BYTES: usize = HEADER_BYTES + MAX_SLOTS * SLOT_BYTES;
/// A waiter whose heartbeat is older than this is skipped when choosing
/// who goes next (waiters refresh it at least every few milliseconds).
pub const STALE_NS: u64 = 100_000_000;
/// A slot stale for this long whose process is gone is freed.
pub const RECLAIM_NS: u64 = 1_000_000_000;

/// The file header: the queue's shared state and file-wide metrics.
#[repr(C)]
pub struct Header {
    /// 0 until the first user stamps [`VERSION`].
    pub version: AtomicU32,
    _reserved: AtomicU32,
    /// Next queue ticket (arrival order).
    pub next_ticket: AtomicU64,
    /// Claimed slots (may include stale ones until they are reclaimed).
    pub waiting: AtomicU64,
    /// Token of the connection whose tenure it is (see `handoff.rs`).
    pub tenure_owner: AtomicU64,
    /// When that tenure began.
    pub tenure_start_ns: AtomicU64,
    /// Write-lock releases seen (all participating processes).
    pub releases: AtomicU64,
    /// 1 while a participating connection holds the write lock.
    pub held: AtomicU64,
    /// When the current holder took it.
    pub holder_since_ns: AtomicU64,
    /// Moving average of how long holders keep the lock (ns).
    pub hold_ewma_ns: AtomicU64,
    /// When the lock was last released (monotonic ns).
    pub released_at_ns: AtomicU64,
    /// File-wide wait counters (all processes), as in `metrics.rs`.
    pub busy_events: AtomicU64,
    pub handler_calls: AtomicU64,
    pub acquired: AtomicU64,
    pub gave_up: AtomicU64,
    pub wait_total_us: AtomicU64,
    pub wait_max_us: AtomicU64,
    pub last_event_unix_ms: AtomicU64,
    /// Counters were last zeroed at this Unix time (ms).
    pub reset_unix_ms: AtomicU64,
    /// Wait-time histogram, same buckets as `metrics::LogHistogram`.
    pub histogram: [AtomicU64; BUCKETS],
}

/// One waiting connection.
#[repr(C)]
pub struct Slot {
    /// Owner token (0 = free).
    pub owner: AtomicU64,
    /// Queue ticket taken when the wait began.
    pub ticket: AtomicU64,
    /// When the wait began (monotonic ns).
    pub wait_start_ns: AtomicU64,
    /// Last sign of life (monotonic ns).
    pub heartbeat_ns: AtomicU64,
    /// The waiting process.
    pub pid: AtomicU32,
    /// 0 = interactive, 1 = background.
    pub priority: AtomicU32,
    /// Futex word: bumped to wake this waiter.
    pub wake: AtomicU32,
    _reserved: [AtomicU32; 5],
}

const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// One process's mapping of a side file.
pub struct SideFile {
    base: *mut u8,
    path: PathBuf,
}

// SAFETY: the mapping is only accessed through atomics (Header and Slot
// contain nothing else), which are safe to share between threads.
unsafe impl Send for SideFile {}
// SAFETY: as above.
unsafe impl Sync for SideFile {}

impl std::fmt::Debug for SideFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideFile")
            .field("path", &self.path)
            .finish()
    }
}

/// Mappings by side-file path, so connections of one process share one.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<SideFile>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl SideFile {
    /// The side-file path for database `db_path`.
    pub fn path_for(db_path: &str) -> PathBuf {
        PathBuf::from(format!("{db_path}-hybrid"))
    }

    /// Maps the side file of `db_path`, creating it if needed; shared with
    /// every other connection of this process on that database.
    pub fn open(db_path: &str) -> io::Result<Arc<SideFile>> {
        let path = Self::path_for(db_path);
        let mut open = OPEN.lock();
        if let Some(existing) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        open.retain(|_, weak| weak.strong_count() > 0);
        let side = Arc::new(Self::map(path.clone())?);
        open.insert(path, Arc::downgrade(&side));
        Ok(side)
    }

    #[cfg(target_os = "linux")]
    fn map(path: PathBuf) -> io::Result<SideFile> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;

        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Never truncate: other processes may have it mapped and in use.
            .truncate(false)
            .mode(0o644)
            .open(&path)?;
        let len = file.metadata()?.len();
        if len < FILE_BYTES as u64 {
            // Zero-filled growth: all-zero is the valid empty state.
            file.set_len(FILE_BYTES as u64)?;
        }
        // SAFETY: a fresh shared read/write mapping of FILE_BYTES bytes of
        // an open file descriptor; checked for MAP_FAILED below. The fd may
        // be closed afterwards: the mapping keeps the file.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FILE_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let side = SideFile {
            base: base as *mut u8,
            path,
        };
        let version = &side.header().version;
        match version.compare_exchange(0, VERSION, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(found) if found == VERSION => {}
            Err(found) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has layout version {found}, this build uses {VERSION}",
                        side.path.display()
                    ),
                ));
            }
        }
        Ok(side)
    }

    #[cfg(not(target_os = "linux"))]
    fn map(_path: PathBuf) -> io::Result<SideFile> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the side file needs Linux futexes",
        ))
    }

    /// This process's mapping of `db_path`'s side file, if some connection
    /// of the process has it open.
    pub fn existing(db_path: &str) -> Option<Arc<SideFile>> {
        OPEN.lock()
            .get(&Self::path_for(db_path))
            .and_then(Weak::upgrade)
    }

    /// The side file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is FILE_BYTES long and page-aligned; Header
        // fits in the first HEADER_BYTES and is made only of atomics, for
        // which any bit pattern (including the file's zeros) is valid.
        unsafe { &*(self.base as *const Header) }
    }

    /// Slot `index` (< MAX_SLOTS).
    pub fn slot(&self, index: usize) -> &Slot {
        assert!(index < MAX_SLOTS, "slot index {index} out of range");
        // SAFETY: in bounds (asserted), 64-byte aligned, atomics only.
        unsafe { &*(self.base.add(HEADER_BYTES + index * SLOT_BYTES) as *const Slot) }
    }

    /// Every slot with its index.
    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        (0..MAX_SLOTS).map(move |i| (i, self.slot(i)))
    }
}

impl Drop for SideFile {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: unmapping exactly the mapping made in `map`; no reference
        // into it outlives `self` (all borrow `self`).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, FILE_BYTES);
        }
    }
}

impl SharedCounters for SideFile {
    fn busy_event(&self, at_unix_ms: u64) {
        let h = self.header();
        h.busy_events.fetch_add(1, Ordering::Relaxed);
        h.last_event_unix_ms.store(at_unix_ms, Ordering::Relaxed);
    }

    fn handler_call(&self) {
        self.header().handler_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&self, outcome: Outcome, wait_us: u64, at_unix_ms: u64) {
        let h = self.header();
        match outcome {
            Outcome::Acquired => h.acquired.fetch_add(1, Ordering::Relaxed),
            Outcome::GaveUp => h.gave_up.fetch_add(1, Ordering::Relaxed),
        };
        h.wait_total_us.fetch_add(wait_us, Ordering::Relaxed);
        h.wait_max_us.fetch_max(wait_us, Ordering::Relaxed);
        h.histogram[LogHistogram::bucket_of(wait_us)].fetch_add(1, Ordering::Relaxed);
        h.last_event_unix_ms.store(at_unix_ms, Ordering::Relaxed);
    }
}

/// The file-wide counters (every process), for `hybrid_lock_metrics`.
#[derive(Debug, Clone)]
pub struct FileWideSnapshot {
    pub busy_events: u64,
    pub handler_calls: u64,
    pub acquired: u64,
    pub gave_up: u64,
    /// Waits started and not yet finished (approximate while they race).
    pub in_flight: u64,
    pub wait_total_us: u64,
    pub wait_max_us: u64,
    pub histogram: LogHistogram,
    pub last_event_unix_ms: Option<u64>,
    /// Connections queued now (including stale slots not yet freed).
    pub waiting: u64,
}

impl SideFile {
    /// The file-wide counters now.
    pub fn snapshot(&self) -> FileWideSnapshot {
        let h = self.header();
        let busy_events = h.busy_events.load(Ordering::Relaxed);
        let acquired = h.acquired.load(Ordering::Relaxed);
        let gave_up = h.gave_up.load(Ordering::Relaxed);
        let last = h.last_event_unix_ms.load(Ordering::Relaxed);
        FileWideSnapshot {
            busy_events,
            handler_calls: h.handler_calls.load(Ordering::Relaxed),
            acquired,
            gave_up,
            in_flight: busy_events.saturating_sub(acquired + gave_up),
            wait_total_us: h.wait_total_us.load(Ordering::Relaxed),
            wait_max_us: h.wait_max_us.load(Ordering::Relaxed),
            histogram: LogHistogram::from_counts(
                h.histogram.iter().map(|b| b.load(Ordering::Relaxed)),
            ),
            last_event_unix_ms: (last > 0).then_some(last),
            waiting: h.waiting.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the file-wide counters (for every process).
    pub fn reset_counters(&self) {
        let h = self.header();
        for counter in [
            &h.busy_events,
            &h.handler_calls,
            &h.acquired,
            &h.gave_up,
            &h.wait_total_us,
            &h.wait_max_us,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for bucket in &h.histogram {
            bucket.store(0, Ordering::Relaxed);
        }
        h.reset_unix_ms
            .store(crate::clock::now_unix_ms(), Ordering::Relaxed);
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (shared by all processes).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `word` is bumped away from `expected`, a wake-up arrives,
/// or `timeout` passes (returns at once if `word != expected` already).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    #[cfg(target_os = "linux")]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory (not
        // FUTEX_PRIVATE: waiters and wakers are different processes); the
        // kernel only reads the word and the timespec.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (word, expected);
        std::thread::sleep(timeout);
    }
}

/// Bumps `word` and wakes one sleeper on it.
pub fn futex_wake(word: &AtomicU32) {
    word.fetch_add(1, Ordering::AcqRel);
    #[cfg(target_os = "linux")]
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 in shared memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// Whether process `pid` exists (a zombie or another user's process
/// counts as existing; only "no such process" means gone).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_filled_file_is_a_valid_empty_queue_and_mappings_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let a = SideFile::open(db.to_str().unwrap()).unwrap();
        let b = SideFile::open(db.to_str().unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one mapping per process");
        assert_eq!(a.header().version.load(Ordering::Relaxed), VERSION);
        assert_eq!(a.header().waiting.load(Ordering::Relaxed), 0);
        assert!(a.slots().all(|(_, s)| s.owner.load(Ordering::Relaxed) == 0));
        assert_eq!(
            std::fs::metadata(a.path()).unwrap().len(),
            FILE_BYTES as u64
        );
    }

    #[test]
    fn writes_are_visible_through_another_mapping_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("y.db");
        let a = SideFile::open(db.to_str().unwrap()).unwrap();
        // A second, independent mapping, as another process would have.
        let b = SideFile::map(SideFile::path_for(db.to_str().unwrap())).unwrap();
        a.slot(7).ticket.store(42, Ordering::Release);
        assert_eq!(b.slot(7).ticket.load(Ordering::Acquire), 42);
    }

    #[test]
    fn other_layout_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("z.db");
        let a = SideFile::map(SideFile::path_for(db.to_str().unwrap())).unwrap();
        a.header().version.store(99, Ordering::Release);
        let err = SideFile::map(SideFile::path_for(db.to_str().unwrap())).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn futex_wait_times_out_and_returns_early_on_a_changed_word() {
        let word = AtomicU32::new(5);
        let start = std::time::Instant::now();
        futex_wait(&word, 5, Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(25));
        let start = std::time::Instant::now();
        futex_wait(&word, 4, Duration::from_secs(5));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "word != expected: no sleep"
        );
    }

    #[test]
    fn futex_wake_wakes_a_sleeper_promptly() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                futex_wait(&word, 0, Duration::from_secs(10));
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        futex_wake(&word);
        let slept = sleeper.join().unwrap();
        assert!(
            slept < Duration::from_secs(5),
            "woken, not timed out: {slept:?}"
        );
    }

    #[test]
    fn liveness_check() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(4_000_000), "beyond pid_max");
    }
}
