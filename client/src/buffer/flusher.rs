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
//! * A **batch-level** error (lock timeout, disk full, I/O, read-only)
//!   says nothing about the rows: the batch and everything after it go
//!   back into the queue (merged with newer operations on the same keys,
//!   older first) and are retried after a backoff.
//! * On **close**, batch-level errors are retried a few times; entries
//!   still unwritten then fail with the error, so nothing vanishes.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{Transaction, ffi, params_from_iter};

use super::pending::{Before, Columns};
use super::{Item, Shared, State};
use crate::error::{Error, Result};
use crate::sql;

/// Attempts at close before unwritten entries are failed.
const CLOSE_ATTEMPTS: u32 = 3;
/// Longest pause between retries of a failed batch.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
const SAVEPOINT: &str = "hybrid_buffer_entry";

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
            shared.state.lock().stats.last_error =
                Some("internal error: the flusher panicked; entries kept".into());
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

/// Takes every pending entry, ordered by table priority (higher first),
/// table name, then first enqueue.
fn take_pending(state: &mut State, shared: &Shared) -> Vec<Item> {
    let mut items: Vec<Item> = state.keyed.drain().map(|(_, item)| item).collect();
    items.append(&mut state.inserts);
    items.sort_by(|a, b| {
        let pa = shared.options.priority(&a.table().name);
        let pb = shared.options.priority(&b.table().name);
        pb.cmp(&pa)
            .then_with(|| a.table().name.cmp(&b.table().name))
            .then_with(|| a.seq().cmp(&b.seq()))
    });
    for item in &items {
        if let Item::Keyed { key, ops, .. } = item {
            state.in_flight_keyed.insert(key.clone(), ops.clone());
        }
    }
    state.in_flight = items.len();
    state.in_flight_cells = items
        .iter()
        .flat_map(|i| i.cells().into_iter().cloned())
        .collect();
    state.oldest_pending = None;
    items
}

/// Writes `items` batch by batch; returns false if a batch failed as a
/// whole (the rest were put back).
fn write_all(shared: &Shared, mut items: Vec<Item>) -> bool {
    while !items.is_empty() {
        let rest = items.split_off(items.len().min(shared.options.batch_size));
        let batch = std::mem::replace(&mut items, rest);
        let started = Instant::now();
        match write_batch(shared, &batch) {
            Ok(failures) => finish_batch(shared, batch, failures, started.elapsed()),
            Err(error) => {
                let mut back = batch;
                back.extend(items);
                requeue(shared, back, &error);
                return false;
            }
        }
    }
    true
}

/// One batch in one transaction. Ok: the indexes of entries that failed
/// for row-level reasons (the others committed). Err: nothing committed.
fn write_batch(shared: &Shared, batch: &[Item]) -> Result<Vec<(usize, String)>> {
    let mut excluded: Vec<(usize, String)> = Vec::new();
    loop {
        let skip: HashSet<usize> = excluded.iter().map(|(i, _)| *i).collect();
        let mut restart: Option<(usize, String)> = None;
        let mut attempts = 0u32;
        let result = shared.core.write(|tx| {
            attempts += 1;
            let mut failed = Vec::new();
            for (index, item) in batch.iter().enumerate() {
                if skip.contains(&index) {
                    continue;
                }
                let statements = statement_count(item);
                if statements > 1 {
                    tx.execute_batch(&format!("SAVEPOINT {SAVEPOINT}"))?;
                }
                match apply(tx, item) {
                    Ok(()) => {
                        if statements > 1 {
                            tx.execute_batch(&format!("RELEASE {SAVEPOINT}"))?;
                        }
                    }
                    Err(error) if is_row_error(&error) => {
                        if tx.is_autocommit() {
                            // The error rolled back the whole transaction.
                            restart = Some((index, error.to_string()));
                            return Err(Error::InvalidInput("batch restarted".into()));
                        }
                        if statements > 1 {
                            tx.execute_batch(&format!(
                                "ROLLBACK TO {SAVEPOINT}; RELEASE {SAVEPOINT}"
                            ))?;
                        }
                        failed.push((index, error.to_string()));
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            Ok(failed)
        });
        shared.state.lock().stats.lock_retries += u64::from(attempts.saturating_sub(1));
        if let Some(failure) = restart {
            excluded.push(failure);
            continue;
        }
        let mut failed = result?;
        failed.extend(excluded);
        return Ok(failed);
    }
}

fn statement_count(item: &Item) -> usize {
    match item {
        Item::Insert { .. } => 1,
        Item::Keyed { ops, .. } => ops.statement_count(),
    }
}

fn apply(tx: &Transaction<'_>, item: &Item) -> rusqlite::Result<()> {
    match item {
        Item::Insert { table, columns, .. } => {
            let indexes: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
            execute(
                tx,
                &sql::insert(table, &indexes),
                columns.iter().map(|(_, v)| v),
            )
        }
        Item::Keyed {
            table,
            key_columns,
            key_values,
            ops,
            ..
        } => {
            match &ops.before {
                Before::Nothing => {}
                Before::Delete => execute(tx, &sql::delete(table, key_columns), key_values.iter())?,
                Before::Update(set) => {
                    let indexes: Vec<usize> = set.iter().map(|(c, _)| *c).collect();
                    let values = set.iter().map(|(_, v)| v).chain(key_values.iter());
                    execute(tx, &sql::update(table, &indexes, key_columns), values)?;
                }
            }
            if let Some(columns) = &ops.upsert {
                let columns: &Columns = columns;
                let indexes: Vec<usize> = columns.iter().map(|(c, _)| *c).collect();
                execute(
                    tx,
                    &sql::upsert(table, &indexes, key_columns),
                    columns.iter().map(|(_, v)| v),
                )?;
            }
            Ok(())
        }
    }
}

fn execute<'a>(
    tx: &Transaction<'_>,
    text: &str,
    values: impl Iterator<Item = &'a rusqlite::types::Value>,
) -> rusqlite::Result<()> {
    tx.prepare_cached(text)?.execute(params_from_iter(values))?;
    Ok(())
}

/// Errors that belong to one row, not to the batch.
fn is_row_error(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.extended_code & 0xff,
            ffi::SQLITE_CONSTRAINT
                | ffi::SQLITE_MISMATCH
                | ffi::SQLITE_TOOBIG
                | ffi::SQLITE_RANGE
                | ffi::SQLITE_ERROR
        ),
        rusqlite::Error::ToSqlConversionFailure(_) | rusqlite::Error::InvalidParameterCount(..) => {
            true
        }
        _ => false,
    }
}

/// Marks a written batch: committed entries' tickets, failed entries to
/// `take_failed`, counters; wakes waiters.
fn finish_batch(shared: &Shared, batch: Vec<Item>, failures: Vec<(usize, String)>, took: Duration) {
    let mut state = shared.state.lock();
    let failed_index: std::collections::HashMap<usize, &str> =
        failures.iter().map(|(i, m)| (*i, m.as_str())).collect();
    for (index, item) in batch.iter().enumerate() {
        if let Item::Keyed { key, .. } = item {
            state.in_flight_keyed.remove(key);
        }
        match failed_index.get(&index) {
            None => item.cells().iter().for_each(|c| c.commit()),
            Some(message) => {
                item.cells().iter().for_each(|c| c.fail(message));
                keep_failed(&mut state, shared, item.to_failed(message));
            }
        }
    }
    state.in_flight -= batch.len().min(state.in_flight);
    let committed = batch.len() - failures.len();
    state.stats.flushed_entries += committed as u64;
    state.stats.failed_entries += failures.len() as u64;
    if let Some((_, message)) = failures.first() {
        state.stats.last_error = Some(message.clone());
    }
    state.stats.flushed_batches += 1;
    let ms = took.as_secs_f64() * 1000.0;
    state.flush_total_ms += ms;
    state.stats.last_flush_ms = Some(ms);
    state.stats.max_flush_ms = state.stats.max_flush_ms.max(ms);
    state.stats.avg_flush_ms = Some(state.flush_total_ms / state.stats.flushed_batches as f64);
    if state.in_flight == 0 {
        state.in_flight_cells.clear();
    }
    drop(state);
    shared.room.notify_all();
    shared.board.notify();
}

fn keep_failed(state: &mut State, shared: &Shared, entry: super::FailedEntry) {
    if state.failed.len() >= shared.options.max_pending {
        state.failed.pop_front();
        state.stats.failed_evicted += 1;
    }
    state.failed.push_back(entry);
}

/// Puts unwritten entries back in the queue, older operations first.
fn requeue(shared: &Shared, items: Vec<Item>, error: &Error) {
    let mut state = shared.state.lock();
    for item in items {
        match item {
            Item::Keyed {
                key,
                table,
                key_columns,
                key_values,
                mut ops,
                seq,
                mut tickets,
            } => {
                state.in_flight_keyed.remove(&key);
                // Newer operations on this key arrived while we wrote.
                if let Some(Item::Keyed {
                    ops: newer,
                    tickets: newer_tickets,
                    ..
                }) = state.keyed.remove(&key)
                {
                    ops.then(&newer);
                    tickets.extend(newer_tickets);
                }
                state.keyed.insert(
                    key.clone(),
                    Item::Keyed {
                        key,
                        table,
                        key_columns,
                        key_values,
                        ops,
                        seq,
                        tickets,
                    },
                );
            }
            insert @ Item::Insert { .. } => state.inserts.push(insert),
        }
    }
    state.inserts.sort_by_key(Item::seq);
    state.in_flight = 0;
    state.in_flight_cells.clear();
    state.oldest_pending.get_or_insert_with(Instant::now);
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
    let mut items: Vec<Item> = state.keyed.drain().map(|(_, i)| i).collect();
    items.append(&mut state.inserts);
    for item in &items {
        item.cells().iter().for_each(|c| c.fail(&message));
        keep_failed(&mut state, shared, item.to_failed(&message));
    }
    state.stats.failed_entries += items.len() as u64;
    drop(state);
    shared.room.notify_all();
    shared.board.notify();
}
