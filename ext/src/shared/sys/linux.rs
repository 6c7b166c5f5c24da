//! The Linux side of [`super`]: the operating-system calls the side file
//! needs, each with its result checked: futex wait and wake on a shared
//! word, and open-file-description (OFD) byte-range locks.
//!
//! Why OFD locks (`F_OFD_SETLK`) and not classic `fcntl` locks: classic
//! locks belong to the process and vanish when *any* descriptor of the file
//! is closed by it; OFD locks belong to the open file description we hold,
//! and are released only when it is closed, which includes the death of the
//! process. Like all kernel locks they work across PID namespaces, so they
//! tell a live process from a dead one without comparing PIDs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::LockKind;

/// Sleeps while `*word == expected`, until woken or `timeout` passes.
/// Returns at once if the word already differs. Errors other than a
/// timeout, an interrupt or a changed word are reported.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<()> {
    use rustix::thread::futex;
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    // Shared (not FUTEX_PRIVATE): waiters and wakers are other processes.
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT | rustix::io::Errno::INTR) => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Wakes up to `count` sleepers on `word` (the caller changed it first).
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) -> io::Result<usize> {
    use rustix::thread::futex;
    futex::wake(word, futex::Flags::empty(), count).map_err(Into::into)
}

impl LockKind {
    fn raw(self) -> libc::c_short {
        (match self {
            LockKind::Read => libc::F_RDLCK,
            LockKind::Write => libc::F_WRLCK,
        }) as libc::c_short
    }
}

fn flock_at(kind: LockKind, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all zeros is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind.raw();
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = byte as libc::off_t;
    lock.l_len = 1;
    lock.l_pid = 0; // required by OFD locks
    lock
}

/// Sets an OFD lock on one byte without waiting (a write lock held by the
/// same description is converted, atomically). `Ok(false)`
/// when another holder's lock conflicts.
pub(crate) fn try_lock_byte(file: &File, kind: LockKind, byte: u64) -> io::Result<bool> {
    let lock = flock_at(kind, byte);
    // SAFETY: F_OFD_SETLK reads one flock struct we own, on an open fd.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(error),
    }
}

/// Whether some other open file description holds a lock on `byte` that
/// conflicts with a write lock (so: a live participant holds it).
pub(crate) fn byte_is_locked(file: &File, byte: u64) -> io::Result<bool> {
    let mut lock = flock_at(LockKind::Write, byte);
    // SAFETY: F_OFD_GETLK reads and rewrites one flock struct we own.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn futex_wait_times_out_and_returns_early_on_a_changed_word() {
        let word = AtomicU32::new(5);
        let start = Instant::now();
        futex_wait(&word, 5, Duration::from_millis(30)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(25));
        let start = Instant::now();
        futex_wait(&word, 4, Duration::from_secs(5)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "no sleep");
    }

    #[test]
    fn futex_wake_wakes_a_sleeper_promptly() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                let start = Instant::now();
                while word.load(Ordering::Acquire) == 0 {
                    futex_wait(&word, 0, Duration::from_secs(10)).unwrap();
                }
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        word.store(1, Ordering::Release);
        futex_wake(&word, 1).unwrap();
        assert!(sleeper.join().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn ofd_locks_conflict_between_descriptions_not_within_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let a = std::fs::File::create(&path).unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert!(try_lock_byte(&a, LockKind::Write, 1 << 30).unwrap());
        assert!(!try_lock_byte(&b, LockKind::Write, 1 << 30).unwrap());
        assert!(!try_lock_byte(&b, LockKind::Read, 1 << 30).unwrap());
        assert!(byte_is_locked(&b, 1 << 30).unwrap());
        assert!(!byte_is_locked(&a, 1 << 30).unwrap(), "own lock");
        assert!(!byte_is_locked(&b, (1 << 30) + 1).unwrap());
        drop(a); // closing the description drops its locks
        assert!(!byte_is_locked(&b, 1 << 30).unwrap());
        assert!(try_lock_byte(&b, LockKind::Write, 1 << 30).unwrap());
    }
}
