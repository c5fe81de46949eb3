//! What `EtcdStore` does when etcd is unreachable, killed and restarted, or hung: calls and
//! streams fail as `Error::Unavailable` within their timeouts, never hang, and work again
//! once etcd is back (the cached lease keep-alive stream is reopened).

use std::time::{Duration, Instant};

use futures::StreamExt;
use muster_core::testing::KEEP_ALIVE_WITHIN;
use muster_core::{Error, Store, Txn, WatchStream};
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_testkit::etcd::Etcd;
use tokio::time::timeout;

fn start(env: &[(&str, &str)]) -> Etcd {
    Etcd::start_with(env).unwrap_or_else(|err| panic!("{err}"))
}

/// The watch's next item within `within`; panics if it neither yields nor ends by then.
async fn next_within(
    watch: &mut WatchStream,
    within: Duration,
) -> Option<muster_core::Result<muster_core::WatchBatch>> {
    timeout(within, watch.next())
        .await
        .unwrap_or_else(|_| panic!("the watch neither yielded nor ended within {within:?}"))
}

#[tokio::test]
async fn unreachable_endpoint_fails_fast_with_instructions() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = EtcdConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..EtcdConfig::new([endpoint.clone()])
    };
    let started = Instant::now();
    let err = EtcdStore::connect(config)
        .await
        .expect_err("nothing listens there");
    let text = err.to_string();
    eprintln!("connect to a dead endpoint: {text}");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: "etcd",
                ..
            }
        ),
        "{text}"
    );
    assert!(err.is_retryable(), "{text}");
    assert!(
        text.contains(&endpoint),
        "the message names the endpoint: {text}"
    );
    assert!(
        text.contains("is etcd running?"),
        "the message says what to check: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connect must give up within its timeouts, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn killed_etcd_breaks_streams_and_restarted_etcd_serves_again() {
    let etcd = start(&[]);
    let store = EtcdStore::connect(etcd.config()).await.expect("connect");
    let prefix = "/faults/restart/";
    let lease = store.grant(Duration::from_secs(60)).await.expect("grant");
    store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .expect("keep-alive before the kill");
    let listing = store.list(prefix).await.expect("list");
    let mut watch = store
        .watch(prefix, listing.revision + 1)
        .await
        .expect("watch");

    etcd.kill().unwrap_or_else(|err| panic!("{err}"));
    match next_within(&mut watch, Duration::from_secs(10)).await {
        Some(Err(Error::Unavailable { .. })) | None => {}
        other => panic!("a killed etcd must end the watch (with Unavailable), got {other:?}"),
    }
    let err = store
        .get("/faults/restart/x")
        .await
        .expect_err("etcd is down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    let err = store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .expect_err("etcd is down");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");

    etcd.restart().unwrap_or_else(|err| panic!("{err}"));
    // The client reconnects on its own; the first calls may still see the old connection.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ttl = loop {
        match store.keep_alive(lease.id, KEEP_ALIVE_WITHIN).await {
            Ok(ttl) => break ttl,
            Err(err) if Instant::now() < deadline => {
                assert!(matches!(err, Error::Unavailable { .. }), "{err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("keep-alive after the restart: {err}"),
        }
    };
    assert_eq!(ttl, lease.ttl, "the lease survived the restart");
    let from = store
        .list(prefix)
        .await
        .expect("list after restart")
        .revision
        + 1;
    let mut watch = store
        .watch(prefix, from)
        .await
        .expect("watch after restart");
    let put = store
        .txn(Txn::new().put(format!("{prefix}k"), b"v".to_vec(), lease.id))
        .await
        .expect("put after restart");
    let batch = next_within(&mut watch, Duration::from_secs(5))
        .await
        .expect("the new watch is open")
        .expect("a batch");
    assert_eq!(batch.events.len(), 1, "{batch:?}");
    assert_eq!(batch.events[0].revision(), put.revision, "{batch:?}");
}

#[tokio::test]
async fn hung_etcd_fails_watches_and_keep_alives_instead_of_hanging() {
    // Let the server accept pings every second, so that the client can detect the hang fast.
    let etcd = start(&[("ETCD_GRPC_KEEPALIVE_MIN_TIME", "1s")]);
    let config = EtcdConfig {
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let prefix = "/faults/hang/";
    let lease = store.grant(Duration::from_secs(60)).await.expect("grant");
    store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .expect("keep-alive before the hang");
    let listing = store.list(prefix).await.expect("list");
    let mut watch = store
        .watch(prefix, listing.revision + 1)
        .await
        .expect("watch");

    etcd.pause().unwrap_or_else(|err| panic!("{err}"));
    let started = Instant::now();
    match next_within(&mut watch, Duration::from_secs(15)).await {
        Some(Err(Error::Unavailable { .. })) | None => {}
        other => panic!("a hung etcd must end the watch (with Unavailable), got {other:?}"),
    }
    let watch_failed_after = started.elapsed();
    let err = timeout(
        Duration::from_secs(15),
        store.keep_alive(lease.id, KEEP_ALIVE_WITHIN),
    )
    .await
    .expect("keep-alive on a hung etcd must fail, not hang")
    .expect_err("etcd is hung");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    // Said once: a broken stream's cause is not wrapped in muster's context twice.
    assert_eq!(
        err.to_string().matches("cannot reach etcd").count(),
        1,
        "{err}"
    );
    let err = timeout(Duration::from_secs(15), store.get("/faults/hang/x"))
        .await
        .expect("a get on a hung etcd must fail, not hang")
        .expect_err("etcd is hung");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    eprintln!("watch failed {watch_failed_after:?} after the pause; then: {err}");
    etcd.unpause().unwrap_or_else(|err| panic!("{err}"));
}
