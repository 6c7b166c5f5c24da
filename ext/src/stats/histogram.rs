//! A fixed-memory histogram of wait times in microseconds, with log-linear
//! buckets (HdrHistogram's layout with 3 significant bits), so memory per
//! file is constant whatever the number of waits.

// The bucket scheme is part of the side file's format (every process must
// bucket alike), so its numbers live in `shared/layout.rs`.
pub(crate) use crate::shared::layout::BUCKETS;
use crate::shared::layout::{MAX_MSB, SUB_BITS, SUB_BUCKETS};

/// Bucket counts of microsecond values. Values below 8 µs are exact.
#[derive(Clone, PartialEq)]
pub(crate) struct LogHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHistogram")
            .field("total", &self.total)
            .finish()
    }
}

impl LogHistogram {
    /// The bucket a value falls in (also used for copies kept elsewhere,
    /// such as the side file's).
    pub(crate) fn bucket_of(value_us: u64) -> usize {
        if value_us < SUB_BUCKETS {
            return value_us as usize;
        }
        let msb = (63 - value_us.leading_zeros()).min(MAX_MSB);
        let value_us = value_us.min((1u64 << (MAX_MSB + 1)) - 1);
        let sub = (value_us >> (msb - SUB_BITS)) - SUB_BUCKETS;
        ((msb - SUB_BITS + 1) as u64 * SUB_BUCKETS + sub) as usize
    }

    /// The midpoint of bucket `index`, in µs.
    fn midpoint(index: usize) -> f64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index as f64;
        }
        let group = index / SUB_BUCKETS;
        let sub = index % SUB_BUCKETS;
        let shift = group - 1;
        let low = (SUB_BUCKETS + sub) << shift;
        low as f64 + (1u64 << shift) as f64 / 2.0
    }

    /// A histogram from bucket counts kept elsewhere (extra counts beyond
    /// [`BUCKETS`] are ignored).
    pub(crate) fn from_counts(counts: impl IntoIterator<Item = u64>) -> LogHistogram {
        let mut histogram = LogHistogram::default();
        for (slot, count) in histogram.counts.iter_mut().zip(counts) {
            *slot = count;
            histogram.total = histogram.total.saturating_add(count);
        }
        histogram
    }

    /// Counts one value.
    pub(crate) fn record(&mut self, value_us: u64) {
        self.counts[Self::bucket_of(value_us)] += 1;
        self.total += 1;
    }

    /// The value at quantile `q` (0..=1) in µs, as the midpoint of its
    /// bucket; `None` when empty.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                return Some(Self::midpoint(index));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for v in 0..100_000u64 {
            let i = LogHistogram::bucket_of(v);
            assert!(
                i == last || i == last + 1,
                "value {v}: index {i} after {last}"
            );
            last = i;
        }
        assert!(LogHistogram::bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_are_within_bucket_error() {
        let mut h = LogHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 100); // 0.1 ms .. 1000 ms
        }
        for (q, truth) in [(0.5, 500_000.0), (0.95, 950_000.0), (0.99, 990_000.0)] {
            let got = h.quantile_us(q).unwrap();
            assert!((got - truth).abs() / truth < 0.07, "q{q}: {got} vs {truth}");
        }
        assert_eq!(LogHistogram::default().quantile_us(0.5), None);
        let mut one = LogHistogram::default();
        one.record(3);
        assert_eq!(one.quantile_us(0.99), Some(3.0));
    }

    #[test]
    fn garbage_counts_never_overflow() {
        let h = LogHistogram::from_counts(std::iter::repeat_n(u64::MAX, BUCKETS));
        assert!(h.quantile_us(0.5).is_some());
    }
}
