//! Fault injection: partitions, dropped watches, failing calls, hung clients, and the
//! determinism that makes those scenarios repeatable. All under tokio's paused clock.

use std::time::Duration;

use futures::StreamExt;
use muster_core::{Error, EventKind, Store, Txn, WatchStream};
use muster_mem_backend::{MemCluster, MemStore};
use tokio::time::{timeout, Instant};

/// The next stream item within 1 s (simulated): `None` if the stream ended.
async fn next(stream: &mut WatchStream) -> Option<muster_core::Result<muster_core::WatchBatch>> {
    timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("a watch item within 1 s")
}

/// Whether the stream stays silent for `d` (simulated).
async fn silent_for(stream: &mut WatchStream, d: Duration) -> bool {
    timeout(d, stream.next()).await.is_err()
}

/// How long keep-alives here wait for an answer.
const WITHIN: Duration = Duration::from_secs(5);

fn put(key: &str, value: &str) -> Txn {
    Txn::new().put(key, value.as_bytes().to_vec(), 0)
}

fn is_unavailable(result: &muster_core::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(Error::Unavailable { backend: "mem", .. }))
}

#[tokio::test(start_paused = true)]
async fn partition_fails_calls_and_ends_watches_until_healed() {
    let cluster = MemCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    let mut watch = a.watch("/p/", 0).await.unwrap();
    assert_eq!(cluster.watches(), 1);

    cluster.partition(a.id());
    assert!(cluster.is_partitioned(a.id()));
    let item = next(&mut watch).await;
    assert!(
        matches!(item, Some(Err(Error::Unavailable { .. }))),
        "{item:?}"
    );
    assert!(
        next(&mut watch).await.is_none(),
        "the stream ends after the error"
    );
    assert!(is_unavailable(&a.get("/p/k").await));
    assert!(is_unavailable(&a.txn(put("/p/k", "a")).await));
    assert!(is_unavailable(&a.watch("/p/", 0).await.map(|_| ())));
    assert_eq!(cluster.watches(), 0);

    // The other client is unaffected.
    let r = b.txn(put("/p/k", "b")).await.unwrap().revision;

    cluster.heal(a.id());
    assert!(!cluster.is_partitioned(a.id()));
    assert_eq!(a.get("/p/k").await.unwrap().unwrap().value, b"b");
    let mut watch = a.watch("/p/", r).await.unwrap();
    let batch = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(
        batch.events[0].kv.mod_revision, r,
        "re-watch resumes from a revision"
    );
}

#[tokio::test(start_paused = true)]
async fn partitioned_clients_lease_expires_after_its_ttl() {
    let cluster = MemCluster::new();
    let (worker, master) = (cluster.client(), cluster.client());
    let granted = Instant::now();
    let lease = worker.grant(Duration::from_secs(10)).await.unwrap();
    let r = worker
        .txn(Txn::new().put("/alive/w", Vec::new(), lease.id))
        .await
        .unwrap()
        .revision;
    let mut watch = master.watch("/alive/", r + 1).await.unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.partition(worker.id());
    assert!(is_unavailable(&worker.keep_alive(lease.id, WITHIN).await));

    tokio::time::sleep_until(granted + Duration::from_millis(9_999)).await;
    assert!(
        master.get("/alive/w").await.unwrap().is_some(),
        "alive until the TTL"
    );
    assert_eq!(cluster.leases(), 1);

    let batch = timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("expiry within the TTL")
        .unwrap()
        .unwrap();
    assert_eq!(
        Instant::now() - granted,
        Duration::from_secs(10),
        "exactly at the TTL"
    );
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kind, EventKind::Delete);
    assert_eq!(cluster.leases(), 0);

    cluster.heal(worker.id());
    let err = worker.keep_alive(lease.id, WITHIN).await.unwrap_err();
    assert!(
        matches!(err, Error::LeaseNotFound { lease: l } if l == lease.id),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn drop_watches_ends_streams_but_calls_keep_working() {
    let cluster = MemCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    let mut wa1 = a.watch("/p/", 0).await.unwrap();
    let mut wa2 = a.watch("/q/", 0).await.unwrap();
    let mut wb = b.watch("/p/", 0).await.unwrap();

    assert_eq!(cluster.drop_watches(a.id()), 2);
    for w in [&mut wa1, &mut wa2] {
        assert!(matches!(
            next(w).await,
            Some(Err(Error::Unavailable { .. }))
        ));
        assert!(next(w).await.is_none());
    }
    a.txn(put("/p/k", "v")).await.expect("calls still work");
    let batch = next(&mut wb).await.unwrap().unwrap();
    assert_eq!(
        batch.events[0].kv.key, "/p/k",
        "other clients' watches still work"
    );
}

#[tokio::test(start_paused = true)]
async fn fail_next_fails_exactly_n_calls() {
    let cluster = MemCluster::new();
    let (a, b) = (cluster.client(), cluster.client());
    cluster.fail_next(a.id(), 2);
    assert!(is_unavailable(&a.get("/k").await));
    assert!(b.get("/k").await.is_ok(), "only the targeted client fails");
    assert!(is_unavailable(&a.grant(Duration::from_secs(5)).await));
    assert!(a.get("/k").await.is_ok(), "the third call works");

    cluster.fail_next(a.id(), 5);
    cluster.fail_next(a.id(), 0);
    assert!(a.get("/k").await.is_ok(), "fail_next(0) clears the count");
}

#[tokio::test(start_paused = true)]
async fn hang_holds_calls_and_deliveries_until_unhang() {
    let cluster = MemCluster::new();
    // A request timeout longer than the hang, to see calls held, not failed.
    let a = cluster
        .client()
        .with_request_timeout(Duration::from_secs(600));
    let b = cluster.client();
    let mut watch = a.watch("/p/", 0).await.unwrap();

    cluster.hang(a.id());
    let held = tokio::spawn({
        let a = a.clone();
        async move { a.txn(put("/p/from-a", "1")).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !held.is_finished(),
        "a hung client's call does not complete"
    );
    assert!(
        timeout(Duration::from_secs(1), a.get("/p/x"))
            .await
            .is_err(),
        "a timeout is how a caller sees a hung store"
    );

    b.txn(put("/p/from-b", "2")).await.unwrap();
    assert!(
        silent_for(&mut watch, Duration::from_secs(30)).await,
        "a hung client's watch delivers nothing"
    );

    cluster.unhang(a.id());
    let out = held
        .await
        .unwrap()
        .expect("the held call completes after unhang");
    assert!(out.succeeded);
    let mut keys = Vec::new();
    while keys.len() < 2 {
        let batch = next(&mut watch).await.unwrap().unwrap();
        keys.extend(batch.events.into_iter().map(|e| e.kv.key));
    }
    assert_eq!(
        keys,
        ["/p/from-b", "/p/from-a"],
        "held events arrive, in order"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_fails_after_the_request_timeout_and_a_keep_alive_after_its_own_deadline() {
    let cluster = MemCluster::new();
    let a = cluster
        .client()
        .with_request_timeout(Duration::from_secs(2));
    let lease = a.grant(Duration::from_secs(60)).await.unwrap();
    cluster.hang(a.id());

    let started = Instant::now();
    let err = a.get("/k").await.unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "the request timeout"
    );
    assert!(
        matches!(&err, Error::Unavailable { backend: "mem", message }
            if message.contains("no answer within 2s") && message.contains(&format!("{} is hung", a.id()))),
        "{err}"
    );

    let started = Instant::now();
    let err = a
        .keep_alive(lease.id, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "the caller's deadline"
    );
    assert!(err.to_string().contains("no answer within 30s"), "{err}");
    assert_eq!(a.request_timeout(), Duration::from_secs(2));
    assert_eq!(
        cluster.client().request_timeout(),
        muster_mem_backend::DEFAULT_REQUEST_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn partition_fails_calls_held_by_a_hang() {
    let cluster = MemCluster::new();
    let a = cluster.client();
    cluster.hang(a.id());
    let held = tokio::spawn({
        let a = a.clone();
        async move { a.get("/k").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.partition(a.id());
    let result = timeout(Duration::from_secs(1), held)
        .await
        .expect("a partition releases held calls")
        .unwrap();
    assert!(is_unavailable(&result));
}

/// Runs a script of calls from three clients (leases, expiry by simulated time, a
/// partition, transactions, revoke, compaction) and returns everything observed.
async fn script() -> Vec<String> {
    let cluster = MemCluster::new();
    let (master, w1, w2) = (cluster.client(), cluster.client(), cluster.client());
    let mut watch = master.watch("/g/", 1).await.unwrap();
    let mut log = Vec::new();

    let l1 = w1.grant(Duration::from_secs(3)).await.unwrap();
    let l2 = w2.grant(Duration::from_secs(5)).await.unwrap();
    log.push(format!("leases {l1:?} {l2:?}"));
    for (w, l, name) in [(&w1, l1.id, "w1"), (&w2, l2.id, "w2")] {
        let out = w
            .txn(
                Txn::new()
                    .put(format!("/g/alive/{name}"), name.as_bytes().to_vec(), l)
                    .put(format!("/g/members/{name}"), b"{}".to_vec(), 0),
            )
            .await
            .unwrap();
        log.push(format!("register {name}: {out:?}"));
    }
    cluster.partition(w1.id());
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        log.push(format!(
            "w1 keep_alive {:?}",
            w1.keep_alive(l1.id, WITHIN)
                .await
                .map_err(|e| e.to_string())
        ));
        log.push(format!(
            "w2 keep_alive {:?}",
            w2.keep_alive(l2.id, WITHIN).await
        ));
    }
    cluster.heal(w1.id());
    w2.revoke(l2.id).await.unwrap();
    let r = cluster.revision();
    master.compact(r - 1).await.unwrap();
    log.push(format!("revision {r}, leases {}", cluster.leases()));
    log.push(format!("listing {:?}", master.list("/g/").await.unwrap()));

    while let Ok(Some(item)) = timeout(Duration::from_millis(10), watch.next()).await {
        log.push(format!("watch {:?}", item.unwrap()));
    }
    log
}

#[tokio::test(start_paused = true)]
async fn same_script_same_run() {
    let first = script().await;
    let second = script().await;
    assert!(
        first.iter().any(|l| l.contains("Delete")),
        "the script sees an expiry: {first:#?}"
    );
    assert_eq!(first, second);
}

#[test]
fn same_script_same_run_across_runtimes() {
    let run = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(script())
    };
    assert_eq!(run(), run());
}

#[tokio::test(start_paused = true)]
async fn store_handles_share_or_split_client_ids() {
    let store = MemStore::new();
    let clone = store.clone();
    let other = store.cluster().client();
    assert_eq!(store.id(), clone.id());
    assert_ne!(store.id(), other.id());
    store.cluster().partition(store.id());
    assert!(
        is_unavailable(&clone.get("/k").await),
        "clones are the same client"
    );
    assert!(other.get("/k").await.is_ok());
}
