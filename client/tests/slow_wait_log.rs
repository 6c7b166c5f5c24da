//! A write that waits for the lock longer than the slow-wait threshold
//! becomes a `tracing` warning (target `sqlite_hybrid::lock`) naming the
//! wait: once while it lasts, once when it ends. Its own test binary: the
//! threshold is process-wide.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlite_hybrid::Database;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Collects (target, message) of every event.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let target = event.metadata().target().to_string();
        self.0.lock().unwrap().push((target, message.0));
    }
}

#[test]
fn a_slow_lock_wait_becomes_a_tracing_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.db");
    let db = Database::open(&path).unwrap();
    db.write(|tx| tx.execute_batch("CREATE TABLE t(x)").map_err(Into::into))
        .unwrap();
    assert_eq!(sqlite_hybrid::log_waits(), Some(Duration::from_secs(1)));
    sqlite_hybrid::set_log_waits(Some(Duration::from_millis(100)));

    // Another program holds the write lock for 400 ms.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        other.execute_batch("COMMIT").unwrap();
    });
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, || {
        db.write(|tx| {
            tx.execute("INSERT INTO t VALUES (1)", [])
                .map_err(Into::into)
        })
        .unwrap();
    });
    release.join().unwrap();
    let rows: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(rows, 1);
    if !sqlite_hybrid::FUTEX_QUEUE {
        // Backoff mode (no futex queue in this build) never hears that a
        // retry succeeded: the wait ends, and is reported as acquired, at
        // the connection's next wait or close (docs/sql-reference.md, "What
        // a wait is").
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, || drop(db));
    }

    let events = capture.0.lock().unwrap().clone();
    let lock_events: Vec<&String> = events
        .iter()
        .filter(|(target, _)| target == "sqlite_hybrid::lock")
        .map(|(_, message)| message)
        .collect();
    assert_eq!(lock_events.len(), 2, "{events:?}");
    assert!(
        lock_events[0].contains("still waiting for the write lock")
            && lock_events[0].contains("holder unknown"),
        "{}",
        lock_events[0]
    );
    assert!(
        lock_events[1].contains("acquired the write lock"),
        "{}",
        lock_events[1]
    );
}
