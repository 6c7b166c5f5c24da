//! The flusher thread: waits for a reason to flush, takes everything
//! pending, writes it in batches, and reports each entry's outcome.
//!
//! # Failure handling (why each branch exists)
//! * A **row-level** error (constraint, type mismatch, too big) belongs to
//!   one entry. SQLite's default conflict action (ABORT) undoes only the
//!   failing statement, so the batch's other entries continue; an entry
//!   with two statements runs inside a savepoint so it fails as a whole.
//!   If the error ended the transaction (an `ON CONFLICT ROLLBACK` clause),
//!   the batch restarts without that entry.
//! * A constraint that fails only at **COMMIT** (a `DEFERRABLE INITIALLY
//!   DEFERRED` foreign key) belongs to some entries of the batch, not to the
//!   batch: the entries are split in halves, each half written on its own,
//!   down to the single entries that cause it. Those fail; every other entry
//!   commits.
//! * A **batch-level** error (lock timeout, disk full, I/O, read-only)
//!   says nothing about the rows: the batch and everything after it go
//!   back into the queue (merged with newer operations on the same keys,
//!   older first) and are retried after a backoff.
//! * On **close**, batch-level errors are retried a few times; entries
//!   still unwritten then fail with the error, so nothing vanishes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::entry::{EntryKey, FailedEntry, Item};
use super::state::{InFlightView, Shared, State};
use super::ticket::TicketStatus;
use crate::error::{Error, Result};
use crate::plan::EntryPlan;
use crate::plan::Step;

/// Attempts at close before unwritten entries are failed.
const CLOSE_ATTEMPTS: u32 = 3;
/// Longest pause between retries of a failed batch.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

pub(super) fn run(shared: &Shared) {
    let mut retry_pause = Duration::from_millis(50);
    let mut close_attempts = 0;
    loop {
        let (items, closing) = {
            let mut state = shared.state.lock();
            loop {
                if state.closed
                    || state.flush_requested
                    || state.pending_count() >= shared.options.batch_size
                {
                    break;
                }
                let wait = match state.oldest_pending {
                    Some(oldest) => {
                        let age = oldest.elapsed();
                        if age >= shared.options.flush_interval {
                            break;
                        }
                        shared.options.flush_interval - age
                    }
                    None => shared.options.flush_interval,
                };
                shared.wake.wait_for(&mut state, wait);
            }
            state.flush_requested = false;
            (take_pending(&mut state, shared), state.closed)
        };
        if items.is_empty() {
            if closing {
                return;
            }
            continue;
        }
        let ok = catch_unwind(AssertUnwindSafe(|| write_all(shared, items))).unwrap_or_else(|_| {
            // A bug. The entries being written were dropped with the
            // unwinding; report each one instead of leaving its ticket
            // pending forever.
            let mut state = shared.state.lock();
            let message = "internal error: the write-buffer flusher panicked; entry not written";
            let pending: Vec<_> = state
                .in_flight_cells
                .iter()
                .filter(|c| c.status() == TicketStatus::Pending)
                .cloned()
                .collect();
            pending.iter().for_each(|c| c.fail(message));
            state.stats.failed_entries += pending.len() as u64;
            state.stats.last_error = Some(message.into());
            end_drain(&mut state);
            drop(state);
            shared.room.notify_all();
            shared.board.notify();
            false
        });
        if ok {
            retry_pause = Duration::from_millis(50);
            continue;
        }
        if closing {
            close_attempts += 1;
            if close_attempts >= CLOSE_ATTEMPTS {
                fail_everything_pending(shared);
                return;
            }
        }
        // Back off before retrying a failed batch, unless asked to stop.
        let mut state = shared.state.lock();
        if !state.closed || closing {
            shared.wake.wait_for(&mut state, retry_pause);
        }
        retry_pause = (retry_pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// Takes the whole queue: enqueue order, or, when table priorities are
/// set, higher priority first (a stable sort keeps enqueue order within a
/// priority). Records what `get` and `force_flush` need of it.
fn take_pending(state: &mut State, shared: &Shared) -> Vec<Item> {
    let mut items = std::mem::take(&mut state.queue);
    let mut index = std::mem::take(&mut state.queue_index);
    if !shared.options.table_priority.is_empty() {
        items.sort_by_cached_key(|item| {
            std::cmp::Reverse(shared.options.priority(&item.table().name))
        });
        index.clear();
        for (position, item) in items.iter().enumerate() {
            if let Item::Keyed { key, .. } = item {
                index.insert(key.clone(), position);
            }
        }
    }
    state.in_flight_views = items
        .iter()
        .map(|item| InFlightView {
            ops: match item {
                Item::Keyed { ops, .. } => Some(Arc::clone(ops)),
                Item::Insert { .. } => None,
            },
            first_cell: Arc::clone(&item.cells()[0]),
        })
        .collect();
    state.in_flight_index = index;
    state.in_flight = items.len();
    state.in_flight_cells = items
        .iter()
        .flat_map(|i| i.cells().iter().cloned())
        .collect();
    state.oldest_pending = None;
    items
}

/// The drain is over: forget its bookkeeping.
fn end_drain(state: &mut State) {
    state.in_flight = 0;
    state.in_flight_cells.clear();
    state.in_flight_views.clear();
    state.in_flight_index.clear();
}

/// Writes `items` batch by batch; returns false if a batch failed as a
/// whole (its unwritten entries and the rest were put back).
fn write_all(shared: &Shared, items: Vec<Item>) -> bool {
    // Batches are taken from an iterator: peeling them off the front of the
    // Vec moved the whole remaining queue per batch (quadratic; it was 40%
    // of flush time at 100k entries).
    let mut items = items.into_iter();
    loop {
        let batch: Vec<Item> = items.by_ref().take(shared.options.batch_size).collect();
        if batch.is_empty() {
            return true;
        }
        let started = Instant::now();
        let mut outcomes = vec![Outcome::Unwritten; batch.len()];
        let all: Vec<usize> = (0..batch.len()).collect();
        let plans: Vec<EntryPlan<'_>> = batch.iter().map(Item::plan).collect();
        let stopped = write_entries(shared, &plans, &all, &mut outcomes).err();
        let (done, back): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .zip(outcomes)
            .partition(|(_, outcome)| !matches!(outcome, Outcome::Unwritten));
        if !done.is_empty() {
            finish_batch(shared, done, started.elapsed());
        }
        if let Some(error) = stopped {
            let mut back: Vec<Item> = back.into_iter().map(|(item, _)| item).collect();
            back.extend(items);
            requeue(shared, back, &error);
            return false;
        }
    }
}

/// What became of one entry of a batch.
#[derive(Debug, Clone)]
enum Outcome {
    Committed,
    /// A row-level failure: rolled back alone, reported with this message.
    Failed(String),
    /// Not written: a batch-level error stopped the batch first.
    Unwritten,
}

/// Writes the entries `indexes` of `batch` in one transaction and records
/// each one's outcome. A failure at COMMIT (a deferred constraint) is
/// narrowed down by writing each half on its own. Stops at the first
/// batch-level error (lock timeout, I/O, full disk): entries not yet
/// written stay `Unwritten`.
fn write_entries(
    shared: &Shared,
    batch: &[EntryPlan<'_>],
    indexes: &[usize],
    outcomes: &mut [Outcome],
) -> Result<()> {
    let mut live: Vec<usize> = indexes.to_vec();
    while !live.is_empty() {
        let mut attempts = 0u32;
        let result = shared.core.write_batch_step(batch, &live, &mut attempts);
        shared.state.lock().stats.lock_retries += u64::from(attempts.saturating_sub(1));
        match result {
            Ok(Step::Restart(index, message)) => {
                outcomes[index] = Outcome::Failed(message);
                live.retain(|&i| i != index);
            }
            Ok(Step::Done(failed)) => {
                for &index in &live {
                    outcomes[index] = Outcome::Committed;
                }
                for (index, message) in failed {
                    outcomes[index] = Outcome::Failed(message);
                }
                return Ok(());
            }
            // Row-level errors are caught above, so a constraint error here
            // came from COMMIT: a deferred constraint some entry broke.
            Err(Error::Constraint(error)) if live.len() == 1 => {
                outcomes[live[0]] = Outcome::Failed(format!("at commit: {error}"));
                return Ok(());
            }
            Err(Error::Constraint(_)) => {
                let (first, second) = live.split_at(live.len() / 2);
                write_entries(shared, batch, first, outcomes)?;
                return write_entries(shared, batch, second, outcomes);
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Marks written entries: committed entries' tickets, failed entries to
/// `take_failed`, counters; wakes waiters.
fn finish_batch(shared: &Shared, entries: Vec<(Item, Outcome)>, took: Duration) {
    let mut state = shared.state.lock();
    let mut failed = 0u64;
    for (item, outcome) in &entries {
        match outcome {
            Outcome::Failed(message) => {
                item.cells().iter().for_each(|c| c.fail(message));
                keep_failed(&mut state, shared, item.to_failed(message));
                state.stats.last_error = Some(message.clone());
                failed += 1;
            }
            _ => item.cells().iter().for_each(|c| c.commit()),
        }
    }
    state.in_flight -= entries.len().min(state.in_flight);
    state.stats.flushed_entries += entries.len() as u64 - failed;
    state.stats.failed_entries += failed;
    state.stats.flushed_batches += 1;
    let ms = took.as_secs_f64() * 1000.0;
    state.flush_total_ms += ms;
    state.stats.last_flush_ms = Some(ms);
    state.stats.max_flush_ms = state.stats.max_flush_ms.max(ms);
    state.stats.avg_flush_ms = Some(state.flush_total_ms / state.stats.flushed_batches as f64);
    if state.in_flight == 0 {
        end_drain(&mut state);
    }
    drop(state);
    shared.room.notify_all();
    shared.board.notify();
}

fn keep_failed(state: &mut State, shared: &Shared, entry: FailedEntry) {
    if state.failed.len() >= shared.options.max_pending {
        state.failed.pop_front();
        state.stats.failed_evicted += 1;
    }
    state.failed.push_back(entry);
}

/// Puts unwritten entries back in the queue, ahead of what was queued
/// meanwhile; an entry whose key was enqueued again is merged with the
/// newer entry, older operations first.
fn requeue(shared: &Shared, items: Vec<Item>, error: &Error) {
    let mut state = shared.state.lock();
    let mut back: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        let merged_into = match &item {
            Item::Keyed { key, .. } => state.queue_index.get(key).copied(),
            Item::Insert { .. } => None,
        };
        match (item, merged_into.and_then(|p| state.queue.get_mut(p))) {
            (
                Item::Keyed {
                    mut ops,
                    mut tickets,
                    ..
                },
                Some(Item::Keyed {
                    ops: newer,
                    tickets: newer_tickets,
                    ..
                }),
            ) => {
                Arc::make_mut(&mut ops).then(newer);
                tickets.append(newer_tickets);
                *newer = ops;
                *newer_tickets = tickets;
            }
            (item, _) => back.push(item),
        }
    }
    back.append(&mut state.queue);
    state.queue = back;
    state.queue_index.clear();
    let positions: Vec<(EntryKey, usize)> = state
        .queue
        .iter()
        .enumerate()
        .filter_map(|(p, item)| match item {
            Item::Keyed { key, .. } => Some((key.clone(), p)),
            Item::Insert { .. } => None,
        })
        .collect();
    state.queue_index.extend(positions);
    end_drain(&mut state);
    state.oldest_pending.get_or_insert_with(Instant::now);
    // Retried after the flusher's retry pause (50 ms, doubling to 5 s), not
    // after a whole flush interval counted from now.
    state.flush_requested = true;
    state.stats.failed_batches += 1;
    state.stats.last_error = Some(error.to_string());
    drop(state);
    shared.batch_failures.fetch_add(1, Ordering::AcqRel);
    shared.board.notify();
}

/// At close, after repeated batch failures: every entry still queued
/// fails with the last error.
fn fail_everything_pending(shared: &Shared) {
    let mut state = shared.state.lock();
    let message = format!(
        "the write buffer closed before this entry could be written: {}",
        state.stats.last_error.clone().unwrap_or_default()
    );
    let items = std::mem::take(&mut state.queue);
    state.queue_index.clear();
    for item in &items {
        item.cells().iter().for_each(|c| c.fail(&message));
        keep_failed(&mut state, shared, item.to_failed(&message));
    }
    state.stats.failed_entries += items.len() as u64;
    drop(state);
    shared.room.notify_all();
    shared.board.notify();
}
