//! The HTTP server's limits (`muster_programs::server`): a client that sends half a header
//! is cut off after the header-read timeout, and with every connection slot held a new
//! client is served as soon as one frees. A small router of its own (`/healthz` only), on
//! loopback; no etcd.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use muster_programs::server::{serve, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::DEADLINE;

const HALF_A_HEADER: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: muster\r\n";
const A_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: muster\r\nConnection: close\r\n\r\n";

async fn server(limits: Limits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(serve(listener, router, limits));
    addr
}

/// Connects and sends half a request header, then holds the connection.
async fn half_header(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(HALF_A_HEADER).await.unwrap();
    stream
}

/// Sends a whole request on a new connection and returns the answer, within the deadline.
async fn request(addr: std::net::SocketAddr) -> String {
    let answer = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(A_REQUEST).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::time::timeout(DEADLINE, answer)
        .await
        .unwrap_or_else(|_| panic!("no answer from the server within {DEADLINE:?}"))
}

/// Waits until the server ends `stream` (end of file or a reset), within the deadline.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the server kept a half-sent request open for over {DEADLINE:?}"
    );
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_cut_off_and_others_are_served() {
    let addr = server(Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(200),
    })
    .await;
    // As many slow clients as there are slots: each is cut off by the header timeout.
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(half_header(addr).await);
    }
    for stream in &mut slow {
        closed_by_server(stream).await;
    }
    let answer = request(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

#[tokio::test]
async fn with_every_slot_held_a_new_client_is_served_once_one_frees() {
    // A header timeout far beyond the test: only a client closing frees a slot.
    let addr = server(Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(3600),
    })
    .await;
    let first = half_header(addr).await;
    let _second = half_header(addr).await;
    let mut waiting = tokio::spawn(request(addr));
    // While both slots are held the third client is not served. (A wait that can only
    // pass when the cap holds: a correct server never answers here, however slow.)
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    drop(first);
    let answer = waiting.await.expect("the request task");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
