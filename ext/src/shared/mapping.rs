//! Opening and mapping the side file `<db>-hybrid`, held to the standard
//! SQLite holds its own `-shm` to (`os_unix.c`):
//!
//! * **Never someone else's file.** Opened with `O_NOFOLLOW`, and used only
//!   if it is a regular file with one link and either empty (new) or exactly
//!   [`FILE_BYTES`] long. Anything else is refused untouched (the connection
//!   stays in backoff mode): a planted symlink or hard link to a private
//!   file is never resized or written, and a planted FIFO never blocks the
//!   open (`O_NONBLOCK`).
//! * **Same mode and owner as the database.** Created with the database
//!   file's permission bits (the umask does not narrow them), and, when
//!   running as root, given the database file's owner, as SQLite does for
//!   `-wal` and `-shm`. So a group-writable database gets a group-writable
//!   side file, and a root process never locks a user out.
//! * **No SIGBUS on a full disk.** Blocks are allocated (`fallocate`) before
//!   the file is mapped; if they cannot be, the file is not used.
//! * **Liveness without PIDs or clocks.** Every mapping holds a read lock on
//!   a dead-man byte ([`LOCK_DMS`]); whoever gets it exclusively is alone
//!   and clears the queue left by crashed processes (a reboot, an OOM kill).
//!   Each process also holds a write lock on the byte of its participant
//!   record; the kernel drops both when the process dies, in any container.
//!
//! One mapping per file per process ([`SideFile::open`] shares it).

use std::collections::HashMap;
use std::io;
#[cfg(hybrid_futex)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use crate::clock::now_ns;
#[cfg(hybrid_futex)]
use crate::shared::layout::LOCK_DMS;
use crate::shared::layout::{
    EPOCH_MASK, FILE_BYTES, HEADER_OFFSET, Header, LAYOUT_VERSION, LOCK_PARTICIPANTS, MAGIC,
    MAX_PARTICIPANTS, MAX_SLOTS, PARTICIPANTS_OFFSET, Participant, SLOTS_OFFSET, STATS_OFFSET,
    SharedStats, Slot, epoch_of, participant_of,
};
use crate::shared::observe::Observations;
use crate::shared::sys::{LockKind, byte_is_locked, try_lock_byte};

/// How long a liveness probe of another participant is trusted.
const PROBE_TTL_NS: u64 = 5_000_000;
/// Attempts (1 ms apart) to get the shared dead-man lock while another
/// process initialises the file.
const DMS_ATTEMPTS: u32 = 20;

/// A cached answer to "is participant `p` (with this epoch) alive?".
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    epoch: u32,
    alive: bool,
    checked_ns: u64,
}

/// One process's mapping of a side file.
pub(crate) struct SideFile {
    base: *mut u8,
    /// Holds the dead-man read lock and our participant lock while open.
    file: std::fs::File,
    path: PathBuf,
    /// Our participant record (None: mapped read-only, cannot queue).
    participant: Option<usize>,
    epoch: u32,
    /// The process that made the mapping (a forked child has another).
    pid: u32,
    next_connection: AtomicU32,
    probes: Mutex<Vec<Probe>>,
    seen: Mutex<Observations>,
}

// SAFETY: the mapping is only accessed through atomics (every layout type
// is made of them), which are safe to share between threads; the other
// fields are Send + Sync.
unsafe impl Send for SideFile {}
// SAFETY: as above.
unsafe impl Sync for SideFile {}

impl std::fmt::Debug for SideFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideFile")
            .field("path", &self.path)
            .field("participant", &self.participant)
            .finish()
    }
}

/// Mappings by side-file path, so the connections of one process share one.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<SideFile>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The side-file path for database `db_path`.
pub(crate) fn path_for(db_path: &str) -> PathBuf {
    PathBuf::from(format!("{db_path}-hybrid"))
}

impl SideFile {
    /// Maps the side file of `db_path` for queueing, creating it if needed;
    /// shared with every other connection of this process on that database.
    /// Errors leave the connection in backoff mode.
    pub(crate) fn open(db_path: &str) -> io::Result<Arc<SideFile>> {
        Self::open_shared(db_path, true)
    }

    /// Maps an existing side file of `db_path` to read it (the file-wide
    /// statistics and the queue of a database this connection only reads).
    /// Never creates or changes the file.
    pub(crate) fn open_for_reading(db_path: &str) -> io::Result<Arc<SideFile>> {
        Self::open_shared(db_path, false)
    }

    fn open_shared(db_path: &str, to_queue: bool) -> io::Result<Arc<SideFile>> {
        let path = path_for(db_path);
        let mut open = OPEN.lock();
        // A mapping inherited across fork() is not reused for queueing: its
        // connection counter would hand out the same tokens in the parent
        // and in every child. The child maps the file again and gets its own
        // participant record (the inherited descriptor keeps the parent's
        // OFD locks, which the two now share, so neither looks dead).
        if let Some(existing) = open.get(&path).and_then(Weak::upgrade)
            && (!to_queue || (existing.participant.is_some() && existing.pid == std::process::id()))
        {
            return Ok(existing);
        }
        open.retain(|_, weak| weak.strong_count() > 0);
        let side = Arc::new(Self::map(Path::new(db_path), path.clone(), to_queue)?);
        open.insert(path, Arc::downgrade(&side));
        Ok(side)
    }

    /// This process's mapping of `db_path`'s side file, if one is open.
    pub(crate) fn existing(db_path: &str) -> Option<Arc<SideFile>> {
        OPEN.lock().get(&path_for(db_path)).and_then(Weak::upgrade)
    }

    /// `db_path`'s side file to read from: this process's mapping, or else
    /// a read-only mapping of the existing file, so that a connection that
    /// only reads (Datasette's, say) sees every process's waits too.
    /// `None`: there is no side file to read.
    pub(crate) fn observe(db_path: &str) -> Option<Arc<SideFile>> {
        Self::existing(db_path).or_else(|| Self::open_for_reading(db_path).ok())
    }

    #[cfg(hybrid_futex)]
    pub(crate) fn map(db_path: &Path, path: PathBuf, to_queue: bool) -> io::Result<SideFile> {
        let db = std::fs::metadata(db_path)?;
        let (file, writable) = open_file(&path, &db, to_queue)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() || meta.nlink() != 1 {
            return Err(refused(&path, "not a regular file with a single link"));
        }
        if meta.len() != 0 && meta.len() != FILE_BYTES as u64 {
            return Err(refused(
                &path,
                &format!("{} bytes, a side file has {FILE_BYTES}", meta.len()),
            ));
        }
        if writable {
            adopt_owner_and_mode(&file, &meta, &db);
        }
        let alone = writable && try_lock_byte(&file, LockKind::Write, LOCK_DMS)?;
        if alone {
            // Nobody else has it open: make room (blocks included) first.
            allocate(&file, &path)?;
        } else {
            take_shared_dms(&file, &path)?;
            if file.metadata()?.len() != FILE_BYTES as u64 {
                return Err(refused(&path, "not initialised by its creator"));
            }
            if writable {
                allocate(&file, &path)?;
            }
        }
        let base = map_bytes(&file, writable)?;
        let mut side = SideFile {
            base,
            file,
            path,
            participant: None,
            epoch: 0,
            pid: std::process::id(),
            next_connection: AtomicU32::new(1),
            probes: Mutex::new(vec![Probe::default(); MAX_PARTICIPANTS]),
            seen: Mutex::new(Observations::default()),
        };
        if alone {
            side.initialise();
            // Downgrade to the shared lock every user holds (atomic).
            if !try_lock_byte(&side.file, LockKind::Read, LOCK_DMS)? {
                return Err(refused(&side.path, "lost the dead-man lock"));
            }
        } else if !side.header().is_valid() {
            return Err(refused(&side.path, "not a side file of this version"));
        }
        if writable && to_queue {
            side.join()?;
        }
        Ok(side)
    }

    /// Without `hybrid_futex` (every target but Linux, or `--cfg
    /// hybrid_portable`): never maps, never touches the path; the
    /// connection stays in backoff mode.
    #[cfg(not(hybrid_futex))]
    pub(crate) fn map(_db_path: &Path, _path: PathBuf, _to_queue: bool) -> io::Result<SideFile> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the side file needs Linux futexes and OFD locks",
        ))
    }

    /// Called only by the sole user of the file (dead-man lock held
    /// exclusively): clears the queue that crashed or rebooted processes
    /// left behind; keeps the file-wide statistics of a valid file.
    fn initialise(&self) {
        let header = self.header();
        let keep_stats = header.is_valid();
        // Hide the file from validity checks while it is rewritten.
        header.version.store(0, Ordering::Release);
        zero_atomics(self.base, HEADER_OFFSET + 4, PARTICIPANTS_OFFSET);
        zero_atomics(self.base, PARTICIPANTS_OFFSET, STATS_OFFSET);
        if !keep_stats {
            zero_atomics(self.base, STATS_OFFSET, SLOTS_OFFSET);
        }
        zero_atomics(self.base, SLOTS_OFFSET, FILE_BYTES);
        header.magic.store(MAGIC, Ordering::Release);
        header
            .file_bytes
            .store(FILE_BYTES as u32, Ordering::Release);
        header.version.store(LAYOUT_VERSION, Ordering::Release);
    }

    /// Claims a participant record: the first whose lock byte is free. A
    /// record left by a dead process has its waits-in-progress counted as
    /// given up first.
    fn join(&mut self) -> io::Result<()> {
        for index in 0..MAX_PARTICIPANTS {
            let byte = LOCK_PARTICIPANTS + index as u64;
            if !try_lock_byte(&self.file, LockKind::Write, byte)? {
                continue;
            }
            self.reclaim_participant(index);
            let record = self.participant(index);
            let epoch = loop {
                // Epochs are never 0 (token 0 means "nobody").
                let next = self.header().next_epoch.fetch_add(1, Ordering::AcqRel) & EPOCH_MASK;
                if next != 0 {
                    break next as u32;
                }
            };
            record.pid.store(std::process::id(), Ordering::Relaxed);
            record.epoch.store(u64::from(epoch), Ordering::Release);
            self.participant = Some(index);
            self.epoch = epoch;
            return Ok(());
        }
        Err(refused(
            &self.path,
            &format!("all {MAX_PARTICIPANTS} process records are in use"),
        ))
    }

    /// Writes our participant record again if a peer overwrote it (we own
    /// it: we hold its lock byte). Cheap when it is intact.
    pub(crate) fn reassert_participant(&self) {
        let Some(index) = self.participant else {
            return;
        };
        let record = self.participant(index);
        if record.epoch.load(Ordering::Acquire) != u64::from(self.epoch) {
            record.pid.store(std::process::id(), Ordering::Relaxed);
            record.epoch.store(u64::from(self.epoch), Ordering::Release);
        }
    }

    /// The side file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this mapping may queue (it is writable and has a record).
    pub(crate) fn can_queue(&self) -> bool {
        self.participant.is_some()
    }

    /// Our participant record's index.
    pub(crate) fn own_participant(&self) -> Option<usize> {
        self.participant
    }

    /// A new token for one of this process's connections.
    pub(crate) fn new_token(&self) -> u64 {
        let connection = loop {
            let n = self.next_connection.fetch_add(1, Ordering::Relaxed);
            if n != 0 {
                break n;
            }
        };
        crate::shared::layout::token(self.epoch, self.participant.unwrap_or(0), connection)
    }

    /// The header.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is FILE_BYTES long and page-aligned; Header
        // lies in its first bytes and is made only of atomics, for which
        // any bit pattern is a valid value.
        unsafe { &*(self.base.add(HEADER_OFFSET) as *const Header) }
    }

    /// The file-wide statistics block.
    pub(crate) fn stats(&self) -> &SharedStats {
        // SAFETY: in bounds (layout asserts), 8-aligned, atomics only.
        unsafe { &*(self.base.add(STATS_OFFSET) as *const SharedStats) }
    }

    /// Participant record `index` (< MAX_PARTICIPANTS, else the last one).
    pub(crate) fn participant(&self, index: usize) -> &Participant {
        let index = index.min(MAX_PARTICIPANTS - 1);
        // SAFETY: in bounds (index clamped, layout asserts), aligned,
        // atomics only.
        unsafe {
            &*(self
                .base
                .add(PARTICIPANTS_OFFSET + index * std::mem::size_of::<Participant>())
                as *const Participant)
        }
    }

    /// Slot `index` (< MAX_SLOTS, else the last one).
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        let index = index.min(MAX_SLOTS - 1);
        // SAFETY: in bounds (index clamped, layout asserts), 64-aligned,
        // atomics only.
        unsafe {
            &*(self
                .base
                .add(SLOTS_OFFSET + index * std::mem::size_of::<Slot>())
                as *const Slot)
        }
    }

    /// Every slot with its index.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        (0..MAX_SLOTS).map(move |i| (i, self.slot(i)))
    }

    /// Whether the process that claimed `token` still runs: its participant
    /// record carries the token's epoch and its lock byte is held. A value
    /// a peer made up fails one of the two. Probes are cached briefly.
    pub(crate) fn token_alive(&self, token: u64) -> bool {
        let (participant, epoch) = (participant_of(token), epoch_of(token));
        if participant >= MAX_PARTICIPANTS || epoch == 0 {
            return false;
        }
        if self.participant == Some(participant) {
            return epoch == self.epoch;
        }
        let record_epoch = self.participant(participant).epoch.load(Ordering::Acquire);
        if record_epoch != u64::from(epoch) {
            return false;
        }
        self.participant_alive(participant, epoch)
    }

    /// Whether participant `index`, last seen with `epoch`, still runs.
    pub(crate) fn participant_alive(&self, index: usize, epoch: u32) -> bool {
        if self.participant == Some(index) {
            return epoch == self.epoch;
        }
        let now = now_ns();
        let mut probes = self.probes.lock();
        let Some(probe) = probes.get_mut(index) else {
            return false;
        };
        if probe.epoch == epoch && now.saturating_sub(probe.checked_ns) < PROBE_TTL_NS {
            return probe.alive;
        }
        let byte = LOCK_PARTICIPANTS + index as u64;
        // An error (never seen) counts as alive: a wrong "dead" could hand
        // a live waiter's turn away; a wrong "alive" costs a short delay.
        let alive = byte_is_locked(&self.file, byte).unwrap_or(true);
        *probe = Probe {
            epoch,
            alive,
            checked_ns: now,
        };
        alive
    }

    /// What this process has seen of the file, by its own clock (shared by
    /// its connections, so they agree on how long things have lasted).
    pub(crate) fn seen(&self) -> parking_lot::MutexGuard<'_, Observations> {
        self.seen.lock()
    }
}

impl Drop for SideFile {
    fn drop(&mut self) {
        #[cfg(hybrid_futex)]
        // SAFETY: unmapping exactly the mapping made in `map`; no reference
        // into it outlives `self` (all borrow `self`). Closing `file` then
        // releases our locks.
        unsafe {
            let _ = rustix::mm::munmap(self.base as *mut std::ffi::c_void, FILE_BYTES);
        }
    }
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} not used: {why}", path.display()),
    )
}

/// Opens (creating if asked and allowed) without following a symlink.
/// Returns the file and whether it is writable.
#[cfg(hybrid_futex)]
fn open_file(
    path: &Path,
    db: &std::fs::Metadata,
    create: bool,
) -> io::Result<(std::fs::File, bool)> {
    // O_NONBLOCK: a FIFO planted at the path would otherwise block a
    // read-only open until someone writes to it, i.e. forever; the file
    // type is checked once it is open. O_NOCTTY: never a controlling
    // terminal. (Neither changes anything for the regular file we use.)
    let nofollow = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    if create {
        let attempt = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // never: others may have it mapped
            .mode(db.mode() & 0o777)
            .custom_flags(nofollow)
            .open(path);
        match attempt {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused(path, "it is a symbolic link"));
            }
            // Not ours to write (another user's file, read-only place):
            // read it if it exists.
            Err(_) => {}
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nofollow)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refused(path, "it is a symbolic link")
            } else {
                e
            }
        })?;
    Ok((file, false))
}

/// Gives a side file the database file's permission bits (the umask may
/// have narrowed them at creation) and, as root, its owner, as SQLite does
/// for `-wal` and `-shm`. Best effort: a file we cannot change still works
/// for us; others may then fall back to backoff mode.
#[cfg(hybrid_futex)]
fn adopt_owner_and_mode(file: &std::fs::File, meta: &std::fs::Metadata, db: &std::fs::Metadata) {
    let wanted = db.mode() & 0o777;
    if meta.len() == 0 && meta.mode() & 0o777 != wanted {
        let _ = file.set_permissions(std::fs::Permissions::from_mode(wanted));
    }
    if rustix::process::geteuid().is_root() && (meta.uid(), meta.gid()) != (db.uid(), db.gid()) {
        let _ = std::os::unix::fs::fchown(file, Some(db.uid()), Some(db.gid()));
        if meta.mode() & 0o777 != wanted {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(wanted));
        }
    }
}

/// Makes the file FILE_BYTES long with every block allocated, without
/// changing existing bytes. A failure (disk full) means: do not map.
#[cfg(hybrid_futex)]
fn allocate(file: &std::fs::File, path: &Path) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::empty(), 0, FILE_BYTES as u64) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            // A file system without fallocate: accept only a file whose
            // blocks all exist already.
            let meta = file.metadata()?;
            if meta.len() == FILE_BYTES as u64 && meta.blocks() * 512 >= FILE_BYTES as u64 {
                Ok(())
            } else {
                Err(refused(path, "its blocks cannot be allocated here"))
            }
        }
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "{}: cannot allocate {FILE_BYTES} bytes: {e}",
                path.display()
            ),
        )),
    }
}

/// Takes the dead-man lock shared, waiting briefly for a process that is
/// initialising the file.
#[cfg(hybrid_futex)]
fn take_shared_dms(file: &std::fs::File, path: &Path) -> io::Result<()> {
    for _ in 0..DMS_ATTEMPTS {
        if try_lock_byte(file, LockKind::Read, LOCK_DMS)? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(refused(path, "another process keeps it locked"))
}

#[cfg(hybrid_futex)]
fn map_bytes(file: &std::fs::File, writable: bool) -> io::Result<*mut u8> {
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    let prot = if writable {
        ProtFlags::READ | ProtFlags::WRITE
    } else {
        ProtFlags::READ
    };
    // SAFETY: a fresh shared mapping of FILE_BYTES bytes of an open file
    // whose length is FILE_BYTES with its blocks allocated.
    let base = unsafe {
        mmap(
            std::ptr::null_mut(),
            FILE_BYTES,
            prot,
            MapFlags::SHARED,
            file,
            0,
        )
    }?;
    Ok(base as *mut u8)
}

/// Stores zero into every u64 of `base[from..to]` (8-aligned offsets).
fn zero_atomics(base: *mut u8, from: usize, to: usize) {
    let mut offset = from.next_multiple_of(8);
    while offset + 8 <= to {
        // SAFETY: in bounds of the FILE_BYTES mapping (callers pass layout
        // offsets), 8-aligned; written as an atomic like every other access.
        unsafe {
            (*(base.add(offset) as *const std::sync::atomic::AtomicU64)).store(0, Ordering::Relaxed)
        };
        offset += 8;
    }
}

#[cfg(all(test, hybrid_futex))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn db_in(dir: &tempfile::TempDir, name: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, b"").unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn new_file_is_initialised_allocated_and_shared_per_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "x.db");
        let a = SideFile::open(&db).unwrap();
        let b = SideFile::open(&db).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one mapping per process");
        assert!(a.header().is_valid());
        assert!(a.can_queue());
        let meta = std::fs::metadata(a.path()).unwrap();
        assert_eq!(meta.len(), FILE_BYTES as u64);
        assert!(meta.blocks() * 512 >= FILE_BYTES as u64, "blocks allocated");
    }

    #[test]
    fn a_second_mapping_sees_writes_and_takes_another_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "y.db");
        let a = SideFile::open(&db).unwrap();
        let b = SideFile::map(Path::new(&db), path_for(&db), true).unwrap();
        a.slot(7).ticket.store(42, Ordering::Release);
        assert_eq!(b.slot(7).ticket.load(Ordering::Acquire), 42);
        assert_ne!(a.own_participant(), b.own_participant());
        let token_a = a.new_token();
        assert!(b.token_alive(token_a));
        assert!(!b.token_alive(token_a ^ (1 << 40)), "another epoch");
        drop(a);
        std::thread::sleep(std::time::Duration::from_nanos(2 * PROBE_TTL_NS));
        assert!(!b.token_alive(token_a), "its lock went with it");
    }

    #[test]
    fn the_sole_user_clears_a_queue_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "z.db");
        {
            let a = SideFile::open(&db).unwrap();
            a.slot(3).owner.store(12345, Ordering::Release);
            a.header().waiting.store(1, Ordering::Release);
            a.stats().acquired.store(7, Ordering::Release);
        }
        let b = SideFile::open(&db).unwrap();
        assert_eq!(b.slot(3).owner.load(Ordering::Acquire), 0);
        assert_eq!(b.header().waiting.load(Ordering::Acquire), 0);
        assert_eq!(b.stats().acquired.load(Ordering::Acquire), 7, "stats kept");
    }

    #[test]
    fn refuses_symlinks_other_sizes_and_hard_links_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("notes.txt");
        std::fs::write(&private, b"alice's notes").unwrap();

        let db = db_in(&dir, "link.db");
        symlink(&private, path_for(&db)).unwrap();
        let err = SideFile::open(&db).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");

        let db = db_in(&dir, "size.db");
        std::fs::write(path_for(&db), b"short").unwrap();
        assert!(SideFile::open(&db).is_err());
        assert_eq!(std::fs::read(path_for(&db)).unwrap(), b"short");

        let db = db_in(&dir, "hard.db");
        std::fs::hard_link(&private, path_for(&db)).unwrap();
        assert!(SideFile::open(&db).is_err());
        assert_eq!(std::fs::read(&private).unwrap(), b"alice's notes");
    }

    #[test]
    fn a_planted_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "fifo.db");
        let fifo = std::ffi::CString::new(path_for(&db).to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        // Both ways in: the read-only open used to observe a file (which
        // would block until a writer appears) and the read-write one.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let opener = std::thread::spawn(move || {
            let read_only = SideFile::open_for_reading(&db).map(|_| ());
            let read_write = SideFile::open(&db).map(|_| ());
            let _ = done_tx.send((read_only, read_write));
        });
        let (read_only, read_write) = done_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening a side file that is a FIFO blocked");
        opener.join().unwrap();
        for refusal in [read_only.unwrap_err(), read_write.unwrap_err()] {
            assert!(
                refusal.to_string().contains("not a regular file"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn other_layouts_are_refused_while_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "v.db");
        let a = SideFile::open(&db).unwrap();
        a.header().version.store(99, Ordering::Release);
        let err = SideFile::map(Path::new(&db), path_for(&db), true).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
    }

    #[test]
    fn the_file_gets_the_database_files_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "m.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o664)).unwrap();
        let side = SideFile::open(&db).unwrap();
        let mode = std::fs::metadata(side.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o664);
    }

    #[test]
    fn read_only_mappings_never_create() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_in(&dir, "r.db");
        assert!(SideFile::open_for_reading(&db).is_err());
        assert!(!path_for(&db).exists());
        let writer = SideFile::open(&db).unwrap();
        writer.stats().acquired.store(3, Ordering::Release);
        drop(writer);
        let reader = SideFile::map(Path::new(&db), path_for(&db), false).unwrap();
        assert!(!reader.can_queue());
        assert_eq!(reader.stats().acquired.load(Ordering::Acquire), 3);
        assert!(!byte_is_locked(&reader.file, LOCK_PARTICIPANTS).unwrap());
    }
}

#[cfg(all(test, not(hybrid_futex)))]
mod portable_tests {
    use super::*;

    #[test]
    fn without_futexes_no_side_file_is_made_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.db");
        std::fs::write(&db, b"").unwrap();
        let db = db.to_str().unwrap();
        let err = SideFile::open(db).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        assert!(!path_for(db).exists(), "nothing created");
        assert!(SideFile::observe(db).is_none());
    }
}
