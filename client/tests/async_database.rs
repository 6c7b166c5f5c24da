//! The async handle (feature `tokio`): which thread runs what, that the
//! runtime is never blocked, what dropping a future does, tickets as
//! futures (woken by the commit), panics, close and drop.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use sqlite_hybrid::{
    AsyncDatabase, BufferOptions, Database, DatabaseBuilder, Error, LogOptions, RetryPolicy, Row,
    TicketStatus,
};

const SCHEMA: &str = "
    CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
    CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
    INSERT INTO counter VALUES (1, 0);";

/// A long flush interval: the buffer writes only when asked (or awaited).
fn builder(dir: &tempfile::TempDir) -> DatabaseBuilder {
    Database::builder(dir.path().join("a.db")).write_buffer(BufferOptions {
        flush_interval: Duration::from_secs(600),
        ..BufferOptions::default()
    })
}

async fn open(dir: &tempfile::TempDir) -> AsyncDatabase {
    let db = AsyncDatabase::open(builder(dir)).await.unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).await.unwrap();
    db
}

fn kv(k: &str, v: i64) -> Row {
    Row::new().set("k", k).set("v", v)
}

async fn value(db: &AsyncDatabase, k: &str) -> Option<i64> {
    let k = k.to_string();
    db.read(move |c| {
        Ok(
            c.query_row("SELECT v FROM kv WHERE k = ?1", [&k], |r| r.get(0))
                .optional()?,
        )
    })
    .await
    .unwrap()
}

/// The value in the file, through a connection of our own.
fn value_in_file(dir: &tempfile::TempDir, k: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
    conn.query_row("SELECT v FROM kv WHERE k = ?1", [k], |r| r.get(0))
        .optional()
        .unwrap()
}

/// Polls `future` once, with the current task's waker.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// A waker that counts its wakes and reports each on a channel.
struct CountingWaker {
    wakes: AtomicUsize,
    woken: std::sync::Mutex<mpsc::Sender<()>>,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let _ = self.woken.lock().unwrap().send(());
    }
}

fn counting_waker() -> (Arc<CountingWaker>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let waker = Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
        woken: std::sync::Mutex::new(tx),
    });
    (waker, rx)
}

/// Every future can be handed to `tokio::spawn`: `Send` and not borrowing
/// the handle (a compile-time check).
#[tokio::test]
async fn the_futures_are_send_and_static() {
    fn spawnable<F: Future + Send + 'static>(f: F) -> F {
        f
    }
    let dir = tempfile::tempdir().unwrap();
    let db = spawnable(AsyncDatabase::open(builder(&dir))).await.unwrap();
    spawnable(db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)))
        .await
        .unwrap();
    let ticket = db.buffer().upsert("kv", kv("s", 1), &["k"]).unwrap();
    spawnable(ticket.into_future()).await.unwrap();
    spawnable(db.read(|_| Ok(()))).await.unwrap();
    spawnable(db.force_flush()).await.unwrap();
    spawnable(db.lock_metrics()).await.unwrap();
    let flush_log = spawnable(db.flush_log(Duration::from_secs(1)));
    assert!(matches!(flush_log.await, Err(Error::InvalidInput(_))));
    spawnable(db.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_run_on_the_handles_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let writer = db
        .write(|tx| {
            tx.execute("INSERT INTO kv VALUES ('a', 1)", [])?;
            Ok(std::thread::current().name().map(str::to_string))
        })
        .await
        .unwrap();
    let reader = db
        .read(|c| {
            let v: i64 = c.query_row("SELECT v FROM kv WHERE k = 'a'", [], |r| r.get(0))?;
            Ok((v, std::thread::current().name().map(str::to_string)))
        })
        .await
        .unwrap();
    assert_eq!(writer.as_deref(), Some("sqlite-hybrid-writer"));
    assert_eq!(reader, (1, Some("sqlite-hybrid-reader".to_string())));
    db.close().await.unwrap();
}

/// On a single-threaded runtime: while the write waits for a lock another
/// connection holds, timers and reads on the same runtime thread go on. A
/// write that blocked its caller would hold the only runtime thread until
/// its retry deadline and fail with a lock timeout.
#[tokio::test(flavor = "current_thread")]
async fn a_write_waiting_for_a_lock_leaves_the_runtime_free() {
    let dir = tempfile::tempdir().unwrap();
    let db = AsyncDatabase::open(builder(&dir).retry(RetryPolicy {
        deadline: Duration::from_secs(60),
        ..RetryPolicy::default()
    }))
    .await
    .unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).await.unwrap();
    let holder = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let write = tokio::spawn(db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('w', 1)", [])?)));
    // Until the writer is seen waiting in the busy handler (read through a
    // reader connection's view of this process's lock statistics; other
    // tests' files have other directories).
    let file = format!(
        "%{}/a.db",
        dir.path().file_name().unwrap().to_str().unwrap()
    );
    let waiting = async {
        loop {
            let file = file.clone();
            let in_flight: i64 = db
                .read(move |c| {
                    Ok(c.query_row(
                        "SELECT coalesce(sum(in_flight), 0) FROM hybrid_lock_metrics \
                         WHERE scope = 'process' AND db LIKE ?1",
                        [file],
                        |r| r.get(0),
                    )?)
                })
                .await
                .unwrap();
            if in_flight > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the writer waits for the lock while this task runs");
    assert!(!write.is_finished());
    holder.execute_batch("COMMIT").unwrap();
    write.await.unwrap().unwrap();
    assert_eq!(value(&db, "w").await, Some(1));
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_write_dropped_before_its_first_poll_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let never_polled = db.write(move |tx| {
        flag.store(true, Ordering::SeqCst);
        Ok(tx.execute("INSERT INTO kv VALUES ('x', 1)", [])?)
    });
    drop(never_polled);
    // Writes run in submission order: once this one is done, an earlier
    // submission would have run too.
    db.write(|_| Ok(())).await.unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(value(&db, "x").await, None);
    db.close().await.unwrap();
}

/// The future is dropped while its closure is running on the writer
/// thread: the transaction still commits, or, when the closure fails,
/// still rolls back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_after_submission_commits_or_rolls_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    for fail in [false, true] {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (go, go_rx) = mpsc::channel::<()>();
        let mut started_tx = Some(started_tx);
        let mut future = Box::pin(db.write(move |tx| {
            tx.execute("INSERT INTO kv VALUES ('a', 1)", [])?;
            if let Some(s) = started_tx.take() {
                let _ = s.send(());
            }
            // Blocks the writer thread (not the runtime) until the test
            // has dropped the future.
            let _ = go_rx.recv();
            tx.execute("INSERT INTO kv VALUES ('b', 2)", [])?;
            if fail {
                return Err(Error::InvalidInput("refused after two inserts".into()));
            }
            Ok(())
        }));
        assert!(poll_once(&mut future).await.is_pending());
        started.await.unwrap();
        drop(future);
        go.send(()).unwrap();
        db.write(|_| Ok(())).await.unwrap();
        let expected = if fail {
            (None, None)
        } else {
            (Some(1), Some(2))
        };
        assert_eq!((value(&db, "a").await, value(&db, "b").await), expected);
        db.write(|tx| Ok(tx.execute_batch("DELETE FROM kv")?))
            .await
            .unwrap();
    }
    db.close().await.unwrap();
}

/// Dropped while still queued behind another write (submitted, not yet
/// started): it still runs once the writer gets to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_while_queued_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let mut started_tx = Some(started_tx);
    let busy = db.write(move |_| {
        if let Some(s) = started_tx.take() {
            let _ = s.send(());
        }
        let _ = go_rx.recv();
        Ok(())
    });
    let busy = tokio::spawn(busy);
    started.await.unwrap();
    let mut queued = Box::pin(db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('q', 1)", [])?)));
    assert!(poll_once(&mut queued).await.is_pending());
    drop(queued);
    go.send(()).unwrap();
    busy.await.unwrap().unwrap();
    db.write(|_| Ok(())).await.unwrap();
    assert_eq!(value(&db, "q").await, Some(1));
    db.close().await.unwrap();
}

#[tokio::test]
async fn awaiting_a_ticket_asks_for_a_flush_and_resolves_on_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let first = db.buffer().upsert("kv", kv("a", 1), &["k"]).unwrap();
    let merged = db.buffer().upsert("kv", kv("a", 2), &["k"]).unwrap();
    assert_eq!(first.status(), TicketStatus::Pending);
    // The flush interval is 10 minutes: only the await's nudge flushes.
    tokio::time::timeout(Duration::from_secs(60), merged.clone())
        .await
        .expect("flushed on request")
        .unwrap();
    first.clone().await.unwrap();
    assert_eq!(first.status(), TicketStatus::Committed);
    assert_eq!(value(&db, "a").await, Some(2));
    assert_eq!(db.buffer().stats().flushed_entries, 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_ticket_future_does_not_cancel_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let ticket = db.buffer().upsert("kv", kv("d", 7), &["k"]).unwrap();
    let mut future = ticket.clone().into_future();
    let _ = poll_once(&mut future).await;
    drop(future);
    db.force_flush().await.unwrap();
    assert_eq!(ticket.status(), TicketStatus::Committed);
    assert_eq!(value(&db, "d").await, Some(7));
    db.close().await.unwrap();
}

/// No executor here: the futures are polled by hand with wakers that
/// count. While another connection holds the write lock the flush cannot
/// commit, so the first poll is pending for sure; the commit after the
/// lock is released must wake each waiting future exactly once.
#[test]
fn ticket_futures_are_woken_by_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    // The flush waits for the lock (it does not give up) until released.
    let db = builder(&dir)
        .retry(RetryPolicy {
            deadline: Duration::from_secs(60),
            ..RetryPolicy::default()
        })
        .open()
        .unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).unwrap();
    let holder = rusqlite::Connection::open(dir.path().join("a.db")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();

    let ticket = db.buffer().upsert("kv", kv("a", 1), &["k"]).unwrap();
    let mut futures = [ticket.clone().into_future(), ticket.clone().into_future()];
    let wakers: Vec<_> = (0..2).map(|_| counting_waker()).collect();
    for (future, (waker, _)) in futures.iter_mut().zip(&wakers) {
        let waker = Waker::from(Arc::clone(waker));
        let polled = Pin::new(&mut *future).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        // Polled again by the same task: still one registration.
        let polled = Pin::new(&mut *future).poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
    }
    assert_eq!(ticket.status(), TicketStatus::Pending);

    holder.execute_batch("COMMIT").unwrap();
    for (future, (waker, woken)) in futures.iter_mut().zip(&wakers) {
        woken
            .recv_timeout(Duration::from_secs(60))
            .expect("woken by the commit");
        let waker = Waker::from(Arc::clone(waker));
        let polled = Pin::new(future).poll(&mut Context::from_waker(&waker));
        assert!(matches!(polled, Poll::Ready(Ok(()))));
    }
    assert_eq!(
        wakers
            .iter()
            .map(|(w, _)| w.wakes.load(Ordering::SeqCst))
            .collect::<Vec<_>>(),
        [1, 1]
    );
    assert_eq!(value_in_file(&dir, "a"), Some(1));
}

#[tokio::test]
async fn a_failed_row_fails_its_ticket_future() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.write(|tx| Ok(tx.execute("INSERT INTO users VALUES (1, 'x@y')", [])?))
        .await
        .unwrap();
    let ticket = db
        .buffer()
        .upsert(
            "users",
            Row::new().set("id", 2).set("email", "x@y"),
            &["id"],
        )
        .unwrap();
    match ticket.await {
        Err(Error::FlushFailed {
            failed,
            first_error,
        }) => {
            assert_eq!(failed, 1);
            assert!(first_error.contains("UNIQUE"), "{first_error}");
        }
        other => panic!("expected FlushFailed, got {other:?}"),
    }
    assert_eq!(db.buffer().take_failed().len(), 1);
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_panicking_closure_panics_the_awaiting_task_and_the_threads_survive() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let write = tokio::spawn(db.write(|tx| -> sqlite_hybrid::Result<()> {
        tx.execute("INSERT INTO kv VALUES ('p', 1)", [])?;
        panic!("boom in write")
    }));
    let read = tokio::spawn(db.read(|_| -> sqlite_hybrid::Result<()> { panic!("boom in read") }));
    for (task, message) in [(write, "boom in write"), (read, "boom in read")] {
        let panic = task.await.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&message));
    }
    // Rolled back, and both threads still serve.
    db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('q', 2)", [])?))
        .await
        .unwrap();
    assert_eq!(value(&db, "p").await, None);
    assert_eq!(value(&db, "q").await, Some(2));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_all_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(&dir).await);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let db = Arc::clone(&db);
            tokio::spawn(async move {
                for _ in 0..20 {
                    db.write(|tx| Ok(tx.execute("UPDATE counter SET n = n + 1", [])?))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let n: i64 = db
        .read(|c| Ok(c.query_row("SELECT n FROM counter", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(n, 64 * 20);
    Arc::try_unwrap(db).unwrap().close().await.unwrap();
}

#[tokio::test]
async fn force_flush_and_flush_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = AsyncDatabase::open(builder(&dir).log_database(LogOptions::default()))
        .await
        .unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).await.unwrap();
    let _ticket = db.buffer().upsert("kv", kv("f", 3), &["k"]).unwrap();
    db.force_flush().await.unwrap();
    assert_eq!(value(&db, "f").await, Some(3));
    db.flush_log(Duration::from_secs(30)).await.unwrap();
    db.close().await.unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let without_log = open(&other_dir).await;
    assert!(matches!(
        without_log.flush_log(Duration::from_secs(1)).await,
        Err(Error::InvalidInput(_))
    ));
    without_log.close().await.unwrap();
}

#[tokio::test]
async fn lock_metrics_are_this_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let metrics = db.lock_metrics().await.unwrap();
    assert!(metrics.db.ends_with("a.db"), "{}", metrics.db);
    assert_eq!(metrics.scope, sqlite_hybrid::LockScope::Process);
    db.close().await.unwrap();
}

#[tokio::test]
async fn close_flushes_and_later_calls_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let ticket = db.buffer().upsert("kv", kv("c", 5), &["k"]).unwrap();
    let late_write = db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('late', 1)", [])?));
    let late_read = db.read(|_| Ok(()));
    db.close().await.unwrap();
    assert_eq!(ticket.status(), TicketStatus::Committed);
    assert!(matches!(late_write.await, Err(Error::Closed)));
    assert!(matches!(late_read.await, Err(Error::Closed)));
    assert_eq!(value_in_file(&dir, "c"), Some(5));
    assert_eq!(value_in_file(&dir, "late"), None);
}

/// Dropping the handle (instead of `close`) flushes on the helper thread,
/// without blocking the task that dropped it.
#[tokio::test]
async fn dropping_the_handle_flushes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let ticket = db.buffer().upsert("kv", kv("g", 9), &["k"]).unwrap();
    drop(db);
    let start = Instant::now();
    while ticket.status() == TicketStatus::Pending {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "flushed after the drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ticket.status(), TicketStatus::Committed);
    assert_eq!(value_in_file(&dir, "g"), Some(9));
}

#[tokio::test]
async fn an_in_memory_database_reads_through_its_writer() {
    let db = AsyncDatabase::new(Database::open(":memory:").unwrap()).unwrap();
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).await.unwrap();
    db.write(|tx| Ok(tx.execute("INSERT INTO kv VALUES ('m', 4)", [])?))
        .await
        .unwrap();
    assert_eq!(db.database().reader_count(), 0);
    assert_eq!(value(&db, "m").await, Some(4));
    db.close().await.unwrap();
}

/// The engine-neutral calls have async faces too: `transact` on the
/// writer thread, `query` on a reader.
#[tokio::test]
async fn transact_and_query_run_on_the_handle_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let changed = db
        .transact(|tx| {
            tx.execute(
                "INSERT INTO kv(k, v) VALUES (?1, ?2)",
                rusqlite::params!["t", 7],
            )
        })
        .await
        .unwrap();
    assert_eq!(changed, 1);
    let rows = db
        .query(
            "SELECT v FROM kv WHERE k = ?1".into(),
            vec![rusqlite::types::Value::Text("t".into())],
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![rusqlite::types::Value::Integer(7)]]);
}
