//! `examples/web_app_async.rs` end to end: its router served on 127.0.0.1,
//! 500 requests from 32 concurrent HTTP/1 clients (keep-alive connections),
//! then every acknowledged write (HTTP 200) looked up in the database file
//! through a plain connection, after the handle was closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

// The example's `main` and its command line are not used here.
#[allow(dead_code)]
#[path = "../examples/web_app_async.rs"]
mod web_app_async;

const REQUESTS: usize = 500;
const CLIENTS: usize = 32;

/// What request `i` is: mostly buffered session writes (one user each, so
/// every acknowledged value must be found as written), some orders through
/// `write().await`, some reads of a neighbour's session.
enum Kind {
    PutSession,
    GetSession,
    PostOrder,
}

fn kind(i: usize) -> Kind {
    match i % 5 {
        3 => Kind::GetSession,
        4 => Kind::PostOrder,
        _ => Kind::PutSession,
    }
}

struct Answer {
    request: usize,
    status: u16,
    body: String,
}

/// One client: a connection of its own, requests taken from the shared
/// counter until all are sent.
async fn client(addr: SocketAddr, next: Arc<AtomicUsize>) -> Vec<Answer> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(connection);
    let mut answers = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= REQUESTS {
            break;
        }
        let (method, uri, body) = match kind(i) {
            Kind::PutSession => (
                Method::PUT,
                format!("/sessions/user-{i}"),
                format!("/page/{i}"),
            ),
            Kind::GetSession => (
                Method::GET,
                format!("/sessions/user-{}", i - 1),
                String::new(),
            ),
            Kind::PostOrder => (Method::POST, "/orders".into(), format!("customer-{i}")),
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "127.0.0.1")
            .body(Body::from(body))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(Body::new(response.into_body()), 1 << 16)
            .await
            .expect("body");
        answers.push(Answer {
            request: i,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    drop(sender);
    let _ = driver.await;
    answers
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let driver = tokio::spawn(connection);
    let request = Request::builder()
        .uri(path)
        .header(header::HOST, "127.0.0.1")
        .body(Body::empty())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(Body::new(response.into_body()), 1 << 16)
        .await
        .expect("body");
    drop(sender);
    let _ = driver.await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_is_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let db = Arc::new(web_app_async::open_app_db(&path).await.unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, web_app_async::router(Arc::clone(&db)))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    // Bounded: 500 requests, and a generous limit in case something hangs.
    let next = Arc::new(AtomicUsize::new(0));
    let load = async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(client(addr, Arc::clone(&next))))
            .collect();
        let mut answers = Vec::new();
        for c in clients {
            answers.extend(c.await.expect("client task"));
        }
        answers
    };
    let answers = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("500 requests within 2 minutes");
    assert_eq!(answers.len(), REQUESTS);

    let mut sessions = BTreeMap::new();
    let mut orders = BTreeMap::new();
    for a in &answers {
        match kind(a.request) {
            Kind::PutSession => {
                // No rejection or timeout is expected at this load (the
                // buffer holds 1000 entries, 32 requests are in flight).
                assert_eq!(a.status, 200, "PUT {}: {}", a.request, a.body);
                sessions.insert(
                    format!("user-{}", a.request),
                    format!("/page/{}", a.request),
                );
            }
            Kind::PostOrder => {
                assert_eq!(a.status, 200, "POST {}: {}", a.request, a.body);
                let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                let id = json["id"].as_i64().expect("an order id");
                orders.insert(id, format!("customer-{}", a.request));
            }
            Kind::GetSession => match a.status {
                // The neighbour's write may not be in yet; if it is, it is
                // exactly what was written.
                404 => {}
                200 => {
                    let json: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                    assert_eq!(json["last_page"], format!("/page/{}", a.request - 1));
                }
                other => panic!("GET {}: {other} {}", a.request, a.body),
            },
        }
    }
    assert_eq!(sessions.len(), 300);
    assert_eq!(orders.len(), 100, "order ids are distinct");

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let metrics: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        metrics["locks"]["db"]
            .as_str()
            .unwrap()
            .ends_with("shop.db")
    );
    assert!(metrics["buffer"]["flushed_entries"].as_u64().unwrap() >= 300);
    assert_eq!(metrics["buffer"]["rejected"], 0);

    // Stop the server (its clones of the handle go with it), close the
    // handle, and look at the file with a connection of our own.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let db = Arc::try_unwrap(db).expect("the server released the handle");
    db.close().await.unwrap();

    let conn = rusqlite::Connection::open(&path).unwrap();
    let in_file: BTreeMap<String, String> = conn
        .prepare("SELECT user, last_page FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(in_file, sessions);
    let orders_in_file: BTreeMap<i64, String> = conn
        .prepare("SELECT id, customer FROM orders")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(orders_in_file, orders);
}
