//! Clocks: this process's monotonic time, this thread's CPU time, and
//! wall-clock labels for events.
//!
//! Why no timestamp is ever shared between processes: two processes on one
//! machine may read different monotonic clocks (a time namespace per
//! container), and the side file outlives a reboot, after which
//! `CLOCK_MONOTONIC` starts again from zero. So every duration that matters
//! is measured by the process that acts on it, on its own clock
//! ([`now_ns`]); the side file holds counters, tokens and durations only.
//! The wall clock ([`now_unix_ms`]) only labels events for people.
//!
//! The rustix clocks are compiled with the futex queue (`cfg(hybrid_futex)`,
//! Linux); every other build, including Linux with `--cfg hybrid_portable`,
//! uses `std::time::Instant` and has no thread CPU clock (so no CPU budget).

use std::time::{SystemTime, UNIX_EPOCH};

/// `CLOCK_MONOTONIC` now, in nanoseconds: only ever compared with other
/// readings of this process.
pub(crate) fn now_ns() -> u64 {
    #[cfg(hybrid_futex)]
    {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    #[cfg(not(hybrid_futex))]
    {
        use std::sync::LazyLock;
        use std::time::Instant;
        static START: LazyLock<Instant> = LazyLock::new(Instant::now);
        START.elapsed().as_nanos() as u64
    }
}

/// CPU time used by the calling thread, in nanoseconds (user + system).
/// Used to hold a long wait to a CPU budget (see `busy.rs`).
pub(crate) fn thread_cpu_ns() -> u64 {
    #[cfg(hybrid_futex)]
    {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    #[cfg(not(hybrid_futex))]
    {
        0
    }
}

/// Milliseconds since the Unix epoch now (0 if the clock is before 1970).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`, which sorts
/// correctly as text and which SQLite's date functions accept.
pub(crate) fn iso8601_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = (secs / 86_400) as i64;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(iso8601_utc(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(iso8601_utc(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn clocks_move_forward() {
        assert!(now_unix_ms() > 1_577_836_800_000);
        let a = now_ns();
        let cpu = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(now_ns() > a);
        if cfg!(hybrid_futex) {
            assert!(thread_cpu_ns() > cpu, "a busy loop uses CPU time");
        } else {
            assert_eq!((cpu, thread_cpu_ns()), (0, 0), "no thread CPU clock");
        }
    }
}
