//! What this process has seen of a side file, timed by its own clock.
//!
//! The side file holds sequence numbers, never timestamps (`clock.rs` says
//! why). To know how long something has lasted, a process notes when it
//! first saw the current value of a sequence number: "this tenure began at
//! least this long ago", "the lock has been free at least this long",
//! "this waiter has not moved for this long". A process that starts looking
//! late under-estimates an age by at most the time it was not looking, so
//! every rule built on these ages errs towards waiting a little longer,
//! never towards acting on a wrong clock.

use crate::shared::layout::MAX_SLOTS;

#[derive(Debug, Clone, Copy, Default)]
struct Seen<T: Copy + PartialEq> {
    value: Option<T>,
    since_ns: u64,
}

impl<T: Copy + PartialEq> Seen<T> {
    /// How long `value` has been seen unchanged (0 when it just changed).
    fn age(&mut self, value: T, now_ns: u64) -> u64 {
        if self.value != Some(value) {
            self.value = Some(value);
            self.since_ns = now_ns;
        }
        now_ns.saturating_sub(self.since_ns)
    }
}

/// One process's observations of one side file (shared by its connections).
#[derive(Debug)]
pub(crate) struct Observations {
    tenure: Seen<u32>,
    release: Seen<u32>,
    beats: Vec<Seen<(u64, u32)>>,
}

impl Default for Observations {
    fn default() -> Self {
        Observations {
            tenure: Seen::default(),
            release: Seen::default(),
            beats: vec![Seen::default(); MAX_SLOTS],
        }
    }
}

impl Observations {
    /// How long the tenure numbered `tenure_seq` has lasted, at least.
    pub(crate) fn tenure_age(&mut self, tenure_seq: u32, now_ns: u64) -> u64 {
        self.tenure.age(tenure_seq, now_ns)
    }

    /// How long ago release number `release_seq` happened, at least.
    pub(crate) fn release_age(&mut self, release_seq: u32, now_ns: u64) -> u64 {
        self.release.age(release_seq, now_ns)
    }

    /// How long slot `index`'s owner has not moved its beat.
    pub(crate) fn beat_age(&mut self, index: usize, owner: u64, beat: u32, now_ns: u64) -> u64 {
        match self.beats.get_mut(index) {
            Some(seen) => seen.age((owner, beat), now_ns),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_start_when_a_value_is_first_seen() {
        let mut seen = Observations::default();
        assert_eq!(seen.tenure_age(7, 1_000), 0);
        assert_eq!(seen.tenure_age(7, 5_000), 4_000);
        assert_eq!(seen.tenure_age(8, 6_000), 0, "a new tenure");
        assert_eq!(seen.beat_age(3, 42, 1, 10), 0);
        assert_eq!(seen.beat_age(3, 42, 1, 110), 100);
        assert_eq!(seen.beat_age(3, 42, 2, 120), 0, "it moved");
        assert_eq!(seen.beat_age(3, 43, 2, 130), 0, "another owner");
        assert_eq!(seen.beat_age(MAX_SLOTS + 5, 1, 1, 10), 0);
    }
}
