//! [`AsyncDatabase`]: the async face of [`Database`] (feature `tokio`).
//!
//! Every blocking call of the sync API runs on a thread this handle owns,
//! and the calling task waits on a oneshot channel, so no runtime worker
//! thread ever blocks on SQLite, a lock or a flush:
//!
//! | call                      | runs on                                         |
//! |---------------------------|-------------------------------------------------|
//! | `write(f).await`          | the writer thread (one; writes queue up in order) |
//! | `read(f).await`           | a reader thread (one per reader connection)     |
//! | `lock_metrics().await`    | a reader thread (it takes the writer's lock)    |
//! | `force_flush().await`, `flush_log(..).await`, `close().await` | the helper thread |
//! | `buffer().upsert(..)`     | the caller (no I/O; see [`AsyncDatabase::buffer`]) |
//! | `ticket.await`            | nowhere: the flusher wakes the task             |
//!
//! Why threads of its own rather than `spawn_blocking`: a write is queued
//! for the one writer connection anyway, so one thread that takes the
//! writes in turn does the same work without a blocking-pool thread per
//! waiting write. The library creates no runtime and the futures use none
//! of tokio's runtime (only its oneshot channel), so they run on any
//! executor.
//!
//! # Cancellation
//! * `write`: nothing happens until the future is first polled. From then
//!   on the closure runs to completion on the writer thread whether or not
//!   the future is still there: its transaction commits, or rolls back on
//!   an error, exactly as a sync [`Database::write`] would, and only the
//!   result is dropped. A write is never half applied.
//! * `read`, `lock_metrics`: submitted at the first poll like `write`; a
//!   read whose future is gone before a reader thread picks it up is
//!   skipped (it has no effect to lose).
//! * `ticket.await`: dropping it stops the waiting, not the write: the
//!   operation stays queued and is written as usual.
//! * `force_flush`, `flush_log`: run to completion once submitted.
//! * `close`: starts when called; dropping its future lets it finish in
//!   the background.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use crate::buffer::WriteBuffer;
use crate::database::{Database, DatabaseBuilder};
use crate::error::{Error, Result};
use hybrid::LockStats;

/// Work for one of the handle's threads, run with the database.
type Job = Box<dyn FnOnce(&Database) + Send>;

/// What the handle's threads receive.
enum Msg {
    Run(Job),
    /// Leave the loop. The helper's stop carries the shutdown to perform.
    Stop(Option<Shutdown>),
}

/// What the helper does last: wait for the other threads (each finishes
/// the jobs queued before its stop), then close the database.
struct Shutdown {
    workers: Vec<JoinHandle<()>>,
    reply: Option<oneshot::Sender<Result<()>>>,
}

/// An async handle on a [`Database`]: the same operations, as futures that
/// never block the runtime's threads. See the module docs for which thread
/// runs what and what dropping a future does.
///
/// Share it with `Arc<AsyncDatabase>` (axum `State`). Call
/// [`AsyncDatabase::close`] at shutdown to wait for the final flush and see
/// its errors; dropping the handle flushes too, but in the background.
///
/// ```
/// use sqlite_hybrid::{AsyncDatabase, Database, Row};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let db = AsyncDatabase::open(Database::builder(dir.path().join("app.db"))).await?;
/// db.write(|tx| Ok(tx.execute_batch("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")?))
///     .await?;
///
/// // Retried write transaction, on the writer thread.
/// db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('a', '1')", [])?)).await?;
///
/// // Buffered write: enqueue now, await the commit of its batch.
/// let ticket = db.buffer().upsert("kv", Row::new().set("k", "b").set("v", "2"), &["k"])?;
/// ticket.await?;
///
/// let n: i64 = db
///     .read(|conn| Ok(conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?))
///     .await?;
/// assert_eq!(n, 2);
/// db.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct AsyncDatabase {
    // Declared before `threads` on purpose: fields drop in order, so this
    // handle's reference is gone before `Threads::drop` asks the helper to
    // close the database, which needs the only one.
    db: Arc<Database>,
    threads: Threads,
}

/// The handle's threads and the queues that feed them.
struct Threads {
    writer: Sender<Msg>,
    readers: Sender<Msg>,
    reader_threads: usize,
    helper: Sender<Msg>,
    /// The writer and reader threads (the helper joins them at shutdown).
    workers: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl AsyncDatabase {
    /// Opens the database on a short-lived thread of its own (opening may
    /// wait for another process's lock) and starts the handle's threads.
    pub async fn open(builder: DatabaseBuilder) -> Result<AsyncDatabase> {
        let (reply, answer) = oneshot::channel();
        std::thread::Builder::new()
            .name("sqlite-hybrid-open".into())
            .spawn(move || {
                let opened = catch_unwind(AssertUnwindSafe(|| {
                    builder.open().and_then(AsyncDatabase::new)
                }));
                // If the caller is gone, the handle is dropped here and
                // closes itself.
                let _ = reply.send(opened);
            })
            .map_err(Error::Spawn)?;
        match answer.await {
            Ok(Ok(opened)) => opened,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => Err(Error::Closed),
        }
    }

    /// Starts the handle's threads on an open database: one writer, one
    /// reader per reader connection (at least one) and a helper.
    /// [`Error::Spawn`] if the system cannot start them (the database is
    /// then closed by the last thread to end).
    pub fn new(db: Database) -> Result<AsyncDatabase> {
        let db = Arc::new(db);
        let reader_threads = db.reader_count().max(1);
        let (writer, writer_queue) = unbounded();
        let (readers, readers_queue) = unbounded();
        let (helper, helper_queue) = unbounded();
        // On an early return the queues' senders drop, so the threads
        // already started see a closed queue and end.
        let mut workers = Vec::with_capacity(reader_threads + 1);
        workers.push(spawn("sqlite-hybrid-writer", &db, writer_queue)?);
        for _ in 0..reader_threads {
            workers.push(spawn("sqlite-hybrid-reader", &db, readers_queue.clone())?);
        }
        // Not joined: it ends right after answering `close`.
        drop(spawn("sqlite-hybrid-helper", &db, helper_queue)?);
        Ok(AsyncDatabase {
            db,
            threads: Threads {
                writer,
                readers,
                reader_threads,
                helper,
                workers,
                stopped: false,
            },
        })
    }

    /// [`Database::write`] on the writer thread: `f` runs in a `BEGIN
    /// IMMEDIATE` transaction, re-run whole on lock errors until the retry
    /// deadline, and the future resolves when it has committed (or failed).
    ///
    /// Submitted at the first poll; from then on it runs to completion even
    /// if the future is dropped (commits, or rolls back on error). Writes
    /// run one at a time, in the order they were submitted. If `f` panics,
    /// the transaction rolls back, the writer thread carries on, and the
    /// panic resumes in the task awaiting the future.
    pub fn write<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + use<T, F>
    where
        F: FnMut(&Transaction<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        submit(&self.threads.writer, Submit::RunAlways, move |db| {
            db.write(f)
        })
    }

    /// [`Database::read`] on a reader thread: `f` runs in one read
    /// transaction on a read-only connection (a consistent snapshot; in WAL
    /// mode it never waits for writers). A read whose future was dropped
    /// before a reader thread took it is skipped. Panics resume in the
    /// awaiting task, as for [`AsyncDatabase::write`].
    pub fn read<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + use<T, F>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        submit(&self.threads.readers, Submit::SkipIfAbandoned, move |db| {
            db.read(f)
        })
    }

    /// [`Database::transact`] on the writer thread, the same as
    /// [`AsyncDatabase::write`] but on either engine (the closure gets a
    /// [`crate::Tx`]).
    pub fn transact<T, F>(&self, f: F) -> impl Future<Output = Result<T>> + Send + use<T, F>
    where
        F: FnMut(&mut crate::engine::tx::Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        submit(&self.threads.writer, Submit::RunAlways, move |db| {
            db.transact(f)
        })
    }

    /// [`Database::query`] on a reader thread, on either engine.
    pub fn query(
        &self,
        sql: String,
        params: Vec<rusqlite::types::Value>,
    ) -> impl Future<Output = Result<Vec<Vec<rusqlite::types::Value>>>> + Send + use<> {
        submit(&self.threads.readers, Submit::SkipIfAbandoned, move |db| {
            let refs: Vec<&dyn rusqlite::ToSql> =
                params.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
            db.query(&sql, &refs)
        })
    }

    /// The write buffer (started on first use), the same as
    /// [`Database::buffer`]: enqueue with `upsert`, `insert`, `update` or
    /// `delete` and `.await` the returned [`crate::Ticket`] for the commit.
    ///
    /// Enqueueing does no I/O, but it is a sync call and it can block the
    /// calling thread in two cases:
    /// * the buffer is full (`max_pending` entries queued or being written)
    ///   and its backpressure is [`crate::Backpressure::Block`], the
    ///   default: the call waits for room, up to the configured timeout;
    /// * the first operation on a table (and the first after
    ///   [`Database::refresh_schema`]) reads the table's schema through a
    ///   reader connection, waiting for a free one.
    ///
    /// In an async service, configure [`crate::Backpressure::Reject`]: a
    /// full buffer then returns [`Error::BufferFull`] at once (answer it
    /// with 503) instead of holding a runtime thread; `web_app_async` does
    /// so.
    pub fn buffer(&self) -> &WriteBuffer {
        self.db.buffer()
    }

    /// [`WriteBuffer::force_flush`] on the helper thread: resolves once
    /// everything enqueued before the call is committed (errors as there;
    /// it gives up after 60 s with [`Error::Timeout`]).
    pub fn force_flush(&self) -> impl Future<Output = Result<()>> + Send + use<> {
        submit(&self.threads.helper, Submit::RunAlways, |db| {
            db.buffer().force_flush()
        })
    }

    /// Flushes the log database ([`crate::LogDatabase::flush`]) on the
    /// helper thread, waiting up to `timeout` there.
    /// [`Error::InvalidInput`] if the database was opened without one
    /// ([`DatabaseBuilder::log_database`]).
    pub fn flush_log(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send + use<> {
        submit(
            &self.threads.helper,
            Submit::RunAlways,
            move |db| match db.log() {
                Some(log) => log.flush(timeout),
                None => Err(Error::InvalidInput(
                    "flush_log: this database has no log database (DatabaseBuilder::log_database)"
                        .into(),
                )),
            },
        )
    }

    /// [`Database::lock_metrics`] on a reader thread: reading them takes
    /// the writer connection's lock for a moment, which a running write
    /// transaction holds until it ends.
    pub fn lock_metrics(&self) -> impl Future<Output = Result<LockStats>> + Send + use<> {
        submit(&self.threads.readers, Submit::SkipIfAbandoned, |db| {
            db.lock_metrics()
        })
    }

    /// The sync handle, for calls that neither block nor do I/O
    /// (`buffer().stats()`, `buffer().get(..)`, `take_failed()`, `path()`)
    /// or for use inside `spawn_blocking`.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Stops taking work, lets the writer and reader threads finish what
    /// was submitted before this call, then closes the database on the
    /// helper thread: the write buffer's final flush (its errors are
    /// returned, see [`Database::close`]) and the log database. Futures
    /// submitted after it resolve to [`Error::Closed`].
    ///
    /// The shutdown starts when this is called; dropping the returned
    /// future lets it finish in the background.
    pub fn close(self) -> impl Future<Output = Result<()>> + Send + use<> {
        let AsyncDatabase { db, mut threads } = self;
        drop(db);
        let (reply, answer) = oneshot::channel();
        threads.stop(Some(reply));
        async move { answer.await.unwrap_or(Err(Error::Closed)) }
    }
}

impl std::fmt::Debug for AsyncDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDatabase")
            .field("path", &self.db.path())
            .field("reader_threads", &self.threads.reader_threads)
            .finish()
    }
}

impl Threads {
    /// Queues a stop behind everything submitted so far; the helper's stop
    /// comes last and carries the shutdown. Idempotent.
    fn stop(&mut self, reply: Option<oneshot::Sender<Result<()>>>) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        // Sends fail only if a thread is gone, and then it needs no stop.
        let _ = self.writer.send(Msg::Stop(None));
        for _ in 0..self.reader_threads {
            let _ = self.readers.send(Msg::Stop(None));
        }
        let shutdown = Shutdown {
            workers: std::mem::take(&mut self.workers),
            reply,
        };
        let _ = self.helper.send(Msg::Stop(Some(shutdown)));
    }
}

impl Drop for Threads {
    /// Stops the threads without waiting: the helper flushes and closes
    /// the database in the background (see [`AsyncDatabase::close`] to wait
    /// for it and see its errors).
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// Starts one of the handle's threads.
fn spawn(name: &str, db: &Arc<Database>, queue: Receiver<Msg>) -> Result<JoinHandle<()>> {
    let db = Arc::clone(db);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || serve(db, queue))
        .map_err(Error::Spawn)
}

/// A thread's loop: run jobs in order until told to stop (or until every
/// sender is gone, which only happens if the handle was never built).
fn serve(db: Arc<Database>, queue: Receiver<Msg>) {
    let shutdown = loop {
        match queue.recv() {
            Ok(Msg::Run(job)) => job(&db),
            Ok(Msg::Stop(shutdown)) => break shutdown,
            Err(_) => break None,
        }
    };
    // Jobs submitted after the stop are dropped with the queue (once its
    // last thread leaves), and their futures resolve to `Error::Closed`.
    drop(queue);
    let Some(Shutdown { workers, reply }) = shutdown else {
        return;
    };
    for worker in workers {
        // A worker cannot panic (jobs catch the caller's panics); if one
        // did anyway, there is nothing left to wait for.
        let _ = worker.join();
    }
    let closed = match Arc::try_unwrap(db) {
        Ok(db) => db.close(),
        // Unreachable (every other reference was in the joined threads or
        // the handle); dropping still flushes, only the error is lost.
        Err(db) => {
            drop(db);
            Ok(())
        }
    };
    match reply {
        Some(reply) => {
            let _ = reply.send(closed);
        }
        None => {
            if let Err(e) = closed {
                log::error!("sqlite-hybrid: closing the async handle's database failed: {e}");
            }
        }
    }
}

/// What a thread does with a job whose future is gone.
#[derive(Clone, Copy)]
enum Submit {
    /// Runs it anyway (it has effects the caller counts on).
    RunAlways,
    /// Skips it (a read: nothing is lost).
    SkipIfAbandoned,
}

/// The future of one job on `queue`: submitted at the first poll,
/// resolved through a oneshot when the thread has run `call`.
fn submit<T, C>(
    queue: &Sender<Msg>,
    mode: Submit,
    call: C,
) -> impl Future<Output = Result<T>> + Send + use<T, C>
where
    T: Send + 'static,
    C: FnOnce(&Database) -> Result<T> + Send + 'static,
{
    let queue = queue.clone();
    async move {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db: &Database| {
            if matches!(mode, Submit::SkipIfAbandoned) && reply.is_closed() {
                return;
            }
            // The caller's panic is carried to the awaiting task instead of
            // ending this thread (which every later call needs).
            let outcome = catch_unwind(AssertUnwindSafe(|| call(db)));
            // Fails only if the future is gone: the work stands, the answer
            // has nobody to go to.
            let _ = reply.send(outcome);
        });
        queue.send(Msg::Run(job)).map_err(|_| Error::Closed)?;
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => resume_unwind(panic),
            // The job was dropped unrun: the handle was closed first.
            Err(_) => Err(Error::Closed),
        }
    }
}
