//! Reaching etcd at start-up, with a bounded wait.
//!
//! A program that starts before etcd (a boot race, a container started in parallel) keeps
//! trying for `--connect-timeout`; after that it says which endpoints it could not reach
//! and exits, rather than hang or retry silently forever. A refusal that waiting cannot fix
//! (a wrong password, a TLS handshake failure, a file that cannot be read) ends the wait at
//! once with exit status 2: the backend reports them as `Rejected`.

use std::time::Duration;

use muster_etcd_backend::EtcdStore;
use tokio::time::Instant;

use crate::cli::CommonArgs;
use crate::fatal::Fatal;

/// The longest pause between two connection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Connects to the endpoints of `common`, retrying until `common.connect_timeout` has
/// passed. The error names the endpoints and the last failure.
pub async fn connect(common: &CommonArgs) -> Result<EtcdStore, Fatal> {
    // Never empty: a blank list is an error, no list at all the default. TLS and auth
    // settings that contradict each other or the endpoints are bad input (exit 2).
    let config = common.config()?;
    let endpoints = config.endpoints.clone();
    let wait = common.connect_timeout;
    // The store keeps etcd-backend's default timeouts for its whole life; the start-up wait
    // is bounded from outside, so one slow attempt cannot outlast it.
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, EtcdStore::connect(config.clone())).await {
            Ok(Ok(store)) => {
                tracing::info!(endpoints = ?endpoints, "connected to etcd");
                return Ok(store);
            }
            Ok(Err(error)) if !error.is_retryable() => {
                return Err(Fatal::usage(format!(
                    "cannot use etcd endpoints {}: {error}",
                    endpoints.join(",")
                )));
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "etcd not reachable yet; retrying");
                last_error = Some(error);
            }
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Err(Fatal::failure(match last_error {
        // The backend's message names the endpoints and the cause.
        Some(error) => format!("{error} (gave up after {wait:?}; --connect-timeout waits longer)"),
        None => format!(
            "cannot reach etcd at {} within {wait:?}: no answer; check --endpoints (MUSTER_ENDPOINTS) and that etcd is running",
            endpoints.join(",")
        ),
    }))
}
