//! The clock: the one place the crate reads wall-clock time as Unix
//! milliseconds (log records' `ts_unix_ms`, retention cut-offs, the time of
//! the last lock wait). A leaf.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch now (0 if the system clock is set
/// before 1970).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
