//! The HTTP server's connections: how many at once, how long a client may take to send its
//! request's header, and what happens when `accept` fails.
//!
//! `axum::serve` has none of these limits: a client that opens a connection and sends half
//! a header holds it forever, and 500 of them (or a low file-descriptor limit) leave
//! `/healthz` unanswered while `accept` fails in a loop. Here every connection holds one of
//! [`Limits::max_connections`] permits (the next `accept` waits for a free one, so the
//! kernel's backlog queues what comes meanwhile), a header not complete within
//! [`Limits::header_read_timeout`] closes the connection, and a failing `accept` (too many
//! open files) waits a moment and logs once per [`ACCEPT_LOG_EVERY`], never a flood.
//!
//! Long-lived requests (`/v1/events`, the `/v1/endpoints` long poll and stream) hold their
//! permit while they last: the cap bounds them too.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How often at most a failing `accept` is logged.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(30);

/// How long to wait after a failed `accept` before the next (the failure is usually a
/// full file-descriptor table, which a closing connection frees).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; the next waits in the kernel's backlog.
    pub max_connections: usize,
    /// How long a client may take to send a request's whole header (HTTP/1).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    /// 512 connections, 10 s to send a header.
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits`, until the future is dropped.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) -> std::io::Result<()> {
    let permits = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut failed_since_log = 0u64;
    loop {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                failed_since_log += 1;
                let now = tokio::time::Instant::now();
                let due = match last_logged {
                    Some(at) => now.duration_since(at) >= ACCEPT_LOG_EVERY,
                    None => true,
                };
                if due {
                    tracing::warn!(
                        %error,
                        failures = failed_since_log,
                        "the HTTP server cannot accept connections (too many open files? raise `ulimit -n`); retrying"
                    );
                    last_logged = Some(now);
                    failed_since_log = 0;
                }
                drop(permit);
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            // A connection that ends badly (reset, timed out) concerns that client only.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
