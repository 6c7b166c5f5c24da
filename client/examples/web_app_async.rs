//! The async twin of `web_app.rs`: an axum service on [`AsyncDatabase`].
//!
//! * `PUT /sessions/{user}` (body: the page) records the user's session
//!   through the write buffer and answers 200 only once the buffered write
//!   has committed (`ticket.await`): a 200 is an acknowledged write.
//! * `GET /sessions/{user}` reads it back (a read transaction on a reader
//!   thread); 404 if it is not in the database.
//! * `POST /orders` (body: the customer) places an order in a retried write
//!   transaction on the writer thread and answers `{"id": ...}`.
//! * `GET /metrics` answers the lock statistics and buffer counters as JSON.
//!
//! No handler blocks a runtime thread: the sync calls run on the handle's
//! threads, and the buffer rejects (503) instead of blocking when full.
//! `tests/async_web.rs` drives this router over real sockets.
//!
//! Run: `cargo run -p sqlite-hybrid --features tokio --example web_app_async [-- ADDR]`
//! (default `127.0.0.1:3000`; Ctrl-C stops it and closes the database), then
//! `curl -X PUT --data /home localhost:3000/sessions/ann`,
//! `curl localhost:3000/sessions/ann`, `curl localhost:3000/metrics`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use sqlite_hybrid::rusqlite::OptionalExtension;
use sqlite_hybrid::{AsyncDatabase, Backpressure, BufferOptions, Database, Error, Row};

/// The app's tables.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total_cents INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS sessions(user TEXT PRIMARY KEY, last_page TEXT NOT NULL);";

/// How long a request waits for its buffered write to commit. Past it the
/// answer is 504: not acknowledged (the write stays queued and is still
/// written; the client was just not promised it).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Opens (creating) the app's database. The buffer rejects when full, so
/// a burst costs 503s, never a blocked runtime thread. Its flush interval
/// matters only for writes nobody awaits: awaiting a ticket asks the
/// flusher to write at once, and the requests that arrive while it writes
/// share its next transaction (group commit).
pub async fn open_app_db(path: &Path) -> sqlite_hybrid::Result<AsyncDatabase> {
    let builder = Database::builder(path).write_buffer(BufferOptions {
        flush_interval: Duration::from_millis(200),
        backpressure: Backpressure::Reject,
        ..BufferOptions::default()
    });
    let db = AsyncDatabase::open(builder).await?;
    db.write(|tx| Ok(tx.execute_batch(SCHEMA)?)).await?;
    Ok(db)
}

/// The service's routes over `db`.
pub fn router(db: Arc<AsyncDatabase>) -> Router {
    Router::new()
        .route("/sessions/{user}", put(put_session).get(get_session))
        .route("/orders", post(post_order))
        .route("/metrics", get(metrics))
        .with_state(db)
}

type Db = State<Arc<AsyncDatabase>>;

async fn put_session(State(db): Db, UrlPath(user): UrlPath<String>, page: String) -> Response {
    let row = Row::new()
        .set("user", user.as_str())
        .set("last_page", page.as_str());
    // No I/O here; a full buffer answers at once (Backpressure::Reject).
    let ticket = match db.buffer().upsert("sessions", row, &["user"]) {
        Ok(ticket) => ticket,
        Err(e) => return failure(e),
    };
    // Sleeps (no thread held) until the flusher commits the batch holding
    // this write.
    match tokio::time::timeout(COMMIT_WAIT, ticket).await {
        Ok(Ok(())) => (StatusCode::OK, "committed\n").into_response(),
        Ok(Err(e)) => failure(e),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "not committed yet\n").into_response(),
    }
}

async fn get_session(State(db): Db, UrlPath(user): UrlPath<String>) -> Response {
    let page = db
        .read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT last_page FROM sessions WHERE user = ?1",
                    [&user],
                    |r| r.get::<_, String>(0),
                )
                .optional()?)
        })
        .await;
    match page {
        Ok(Some(page)) => Json(json!({ "last_page": page })).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such session\n").into_response(),
        Err(e) => failure(e),
    }
}

async fn post_order(State(db): Db, customer: String) -> Response {
    // May run more than once (retried on lock errors): database work only.
    let placed = db
        .write(move |tx| {
            tx.execute(
                "INSERT INTO orders(customer, total_cents) VALUES (?1, 1999)",
                [&customer],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await;
    match placed {
        Ok(id) => Json(json!({ "id": id })).into_response(),
        Err(e) => failure(e),
    }
}

async fn metrics(State(db): Db) -> Response {
    let locks = match db.lock_metrics().await {
        Ok(locks) => locks,
        Err(e) => return failure(e),
    };
    let buffer = db.buffer().stats();
    Json(json!({
        "locks": {
            "db": locks.db,
            "mode": locks.mode.as_str(),
            "busy_events": locks.busy_events,
            "acquired": locks.acquired,
            "gave_up": locks.gave_up,
            "handoffs": locks.handoffs,
            "wait_max_ms": locks.wait_max_ms,
            "wait_p99_ms": locks.wait_p99_ms,
        },
        "buffer": {
            "enqueued": buffer.enqueued,
            "coalesced": buffer.coalesced,
            "flushed_entries": buffer.flushed_entries,
            "flushed_batches": buffer.flushed_batches,
            "pending": buffer.pending,
            "rejected": buffer.rejected,
            "avg_flush_ms": buffer.avg_flush_ms,
        },
    }))
    .into_response()
}

/// The HTTP answer to an error: 503 for "try again later", 422 for data
/// the database refused, 500 otherwise.
fn failure(e: Error) -> Response {
    let status = match &e {
        Error::BufferFull { .. } | Error::LockTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::InvalidInput(_) | Error::Constraint(_) | Error::FlushFailed { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let dir = tempfile::tempdir()?;
    let db = Arc::new(open_app_db(&dir.path().join("shop.db")).await?);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "listening on http://{} (Ctrl-C stops)",
        listener.local_addr()?
    );
    axum::serve(listener, router(Arc::clone(&db)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // The server and its clones of the handle are gone: close it, and wait
    // for the final flush of whatever is still buffered.
    let db = Arc::try_unwrap(db).map_err(|_| "the database handle is still shared")?;
    db.close().await?;
    Ok(())
}
