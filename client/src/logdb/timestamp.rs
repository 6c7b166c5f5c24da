//! Timestamps as the log stores them: ISO-8601 UTC text with milliseconds
//! (`2026-11-25T10:00:00.123Z`), which sorts as text and which SQLite's
//! date functions read. A leaf of the log database.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond `humantime` can write (9999-12-31T23:59:59.999Z):
/// later times are stored as this one, so an absurd `ts_unix_ms` can
/// neither fail its batch nor break the text's sort order.
const MAX_UNIX_MS: u64 = 253_402_300_799_999;

/// Unix milliseconds as ISO-8601 UTC text with milliseconds
/// (`2026-11-25T10:00:00.123Z`).
pub(crate) fn iso8601_utc(unix_ms: u64) -> String {
    Timestamps::default().format(unix_ms).to_string()
}

/// Formats timestamps like [`iso8601_utc`], reusing one buffer. Log
/// records come in runs from the same second, so the text up to the second
/// is formatted once per second and only the milliseconds per record
/// (formatting every timestamp in full was 6% of the writer's CPU under
/// `log_bench`).
#[derive(Debug, Default)]
pub(crate) struct Timestamps {
    /// The second `text` starts with.
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`, then the milliseconds last
    /// formatted.
    text: String,
}

impl Timestamps {
    /// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub(crate) fn format(&mut self, unix_ms: u64) -> &str {
        let unix_ms = unix_ms.min(MAX_UNIX_MS);
        let second = unix_ms / 1000;
        if self.second != Some(second) {
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second));
            self.text.clear();
            // Cannot fail: `second` is within humantime's range.
            let _ = write!(self.text, "{whole}");
            self.second = Some(second);
        }
        let millis = unix_ms % 1000;
        self.text.truncate(19); // `YYYY-MM-DDTHH:MM:SS`
        self.text.push('.');
        for digit in [millis / 100, millis / 10 % 10, millis % 10] {
            self.text.push(char::from(b'0' + digit as u8));
        }
        self.text.push('Z');
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_humantime_across_seconds_days_and_leap_days() {
        let mut ts = Timestamps::default();
        // Epoch, 2000-02-29 (leap day), 2100-03-01 (no leap day in 2100),
        // a recent day, and runs of milliseconds across second boundaries.
        let mut samples = vec![0, 951_782_400_000, 4_107_542_400_000, 1_795_576_962_976];
        samples.extend((0..3_000).map(|i| 1_795_576_961_000 + i * 7));
        samples.extend((0..100).map(|i| 86_400_000 * i + 86_399_999));
        for ms in samples {
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                .to_string();
            assert_eq!(ts.format(ms), expected, "{ms}");
        }
    }

    #[test]
    fn timestamps_past_year_9999_are_clamped() {
        assert_eq!(iso8601_utc(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(iso8601_utc(MAX_UNIX_MS), "9999-12-31T23:59:59.999Z");
    }
}
