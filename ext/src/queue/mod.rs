//! Fair, fast hand-off of a database's write lock between connections in
//! any process, through the shared side file (`shared/`).
//!
//! SQLite's write lock has no queue: whoever retries at the right instant
//! wins, and the connection that just committed (it retries at once) nearly
//! always does. This module adds a queue beside the lock. The file hooks
//! (`file_hooks.rs`) call [`Member::before_attempt`], [`Member::on_acquired`]
//! and [`Member::on_released`] around every attempt, acquisition and
//! release of the WAL write lock; the busy handler calls
//! [`Member::wait_turn`] after a failed attempt.
//!
//! # The rules
//! * **Queued waiters go in order.** A connection whose attempt failed takes
//!   a slot and a ticket. Only the *head* (interactive before background,
//!   then lowest ticket) tries the lock, and only once the current tenure is
//!   over; the others sleep on their slot's futex.
//! * **Bounded barging (lock cohorting by time).** The connection that
//!   holds the current *tenure* may re-take the lock at once after each
//!   commit (no context switch, warm caches: throughput) for its tenure,
//!   then must queue. The tenure follows from the wait the user accepts:
//!   `max_wait_ms / (connections queued + 1)`, at most `handoff_ms`
//!   (`Settings::tenure_ns`). No connection can claim more than [`MAX_HANDOFF_MS`]:
//!   waiters cap every tenure by their own clock, so a peer that asks for
//!   more (or writes garbage) gets the cap.
//! * **No attempt is ever refused.** Stock SQLite lets a connection take a
//!   free lock, and so does this queue: a connection without the hybrid
//!   busy handler (or with none) would turn a refusal into an error. Instead
//!   a connection that is not queued and finds the lock free while a head
//!   waits *yields*: it sleeps until the head has taken the lock, at most
//!   [`YIELD_MAX`], then tries (and, if the head got it, fails and queues).
//!   The releasing writer of an expired tenure does the same, which is what
//!   hands the lock over.
//! * **Wake on release.** A release that ends the tenure wakes the head. The
//!   releasing connection also predicts from its own history whether it is
//!   coming straight back; if not, it gives the tenure up at once, so a
//!   short collision costs a wake-up, not a tenure.
//! * **Nothing hangs, whatever the side file says.** A slot counts only
//!   while its process lives (a kernel lock, `shared/mapping.rs`) and its
//!   waiter moves (its beat changes, by the observer's clock); a dead one is
//!   freed, a stopped one skipped. A holder that died is noticed through its
//!   lock byte; a holder that is not a participant is polled for. Every
//!   sleep is bounded, and every value read from the file only ever delays,
//!   by a bounded amount.
//! * Background waiters older than [`BACKGROUND_PROMOTE`] count as
//!   interactive, so they cannot starve.
//!
//! # Files
//! * `file_queue.rs`: the queue over one side file (slots, tickets, the
//!   head, the tenure as this process sees it).
//! * `member.rs`: one connection's place in it (attempts, hand-off,
//!   tenure, waiting for its turn).
//! * `priority.rs`: a connection's priority class and claimed tenure.
//! * `waiters.rs`: who waits and who holds, for people (tables, log).
//!
//! The rules above span these files; the constants they name are here.

pub(crate) mod file_queue;
pub(crate) mod member;
pub(crate) mod priority;
pub(crate) mod waiters;

use std::time::Duration;

/// Longest time a connection that is not queued gives the head to take a
/// free lock before trying it itself.
pub(crate) const YIELD_MAX: Duration = Duration::from_millis(2);
/// Longest sleep of a waiter (the interval of its beat). Every waiter that
/// is not the head wakes this often only to show it lives, so with many
/// writers these wake-ups are much of the queue's CPU (64 writers: 63 of
/// them, 1,575/s at 40 ms). 20 ms measured 0.87-0.88x the default
/// handler's throughput at 64 writers against 0.95-0.96x at 40 ms in two
/// alternating sets; a third, on a busier machine, showed no difference.
/// Still 2.5 beats per [`STALE_NS`], so a waiter that is scheduled late
/// once is not skipped.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(40);
/// During someone else's tenure the head looks this often whether the
/// holder has gone idle (released and not coming back): the release of a
/// holder that meant to come back wakes nobody, and without this poll the
/// head slept through such gaps while non-queued writers took the lock
/// (`ext/tests/paced.rs`: paced writers in one process waited 300-500 ms).
/// This is the longest interval; the head looks faster while the holder's
/// transactions are short (`Member::tenure_poll`).
pub(crate) const TENURE_POLL: Duration = Duration::from_millis(2);
/// The shortest interval between the head's looks during a tenure.
pub(crate) const TENURE_POLL_MIN: Duration = Duration::from_micros(500);
/// A waiter whose beat has not moved for this long (observer's clock) is
/// skipped: its process is alive but not running (stopped, swapped out).
pub(crate) const STALE_NS: u64 = 100_000_000;
/// A lock free for this long after a release is idle: the holder is not
/// coming straight back (a looping writer re-takes it within µs).
pub(crate) const IDLE_GRACE_NS: u64 = 200_000;
/// How often the head tries a lock held by a process that does not take
/// part in the queue (it will not be woken at that release).
pub(crate) const HEAD_POLL: Duration = Duration::from_millis(1);
/// A connection whose release-to-next-attempt gap averages below this is
/// "coming straight back" (a writer in a loop) and keeps its tenure at
/// release. Longer than the idle grace, so scheduling noise on a busy
/// machine does not flip a looping writer into handing over every time.
const REGRAB_LIMIT_NS: u64 = 500_000;
/// Gaps are clipped to this before averaging (the unknown start counts as
/// one), so a writer must be slow several cycles in a row to count as not
/// coming back: one preemption between its commit and its next `BEGIN`
/// lifts the average by at most 1/8 ms. With a 10 ms clip one preemption
/// flipped the prediction and ended the tenure at the next release
/// (measured: 60% of tenures at 8 writers on a loaded machine).
const REGRAB_CLIP_NS: u64 = 1_000_000;
/// A release this soon after the acquisition is SQLite's snapshot bounce,
/// not a transaction (taking, checking and dropping the lock takes a few µs).
const BOUNCE_NS: u64 = 25_000;
/// What a hand-off adds to a turn beyond the holder's own transactions
/// (the next holder's wake-up and cold caches: 0.04 ms idle lock and
/// ~0.25 ms slower first transaction, measured at 8 writers, hold 0).
pub(crate) const HANDOFF_ALLOWANCE_NS: u64 = 300_000;
/// Background waiters waiting longer than this are served as interactive.
pub(crate) const BACKGROUND_PROMOTE: Duration = Duration::from_millis(250);

#[cfg(all(test, hybrid_futex))]
mod tests;
