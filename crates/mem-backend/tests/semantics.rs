//! Behaviour specific to the memory store (beyond the shared conformance suite): etcd's
//! starting revision and edge cases, the builder's settings, odd inputs, and the lifecycle
//! of the expiry task.

use std::time::Duration;

use futures::StreamExt;
use muster_core::{Condition, Error, Store, Txn, WatchStream};
use muster_mem_backend::{MemCluster, MemStore};
use tokio::time::timeout;

async fn next(stream: &mut WatchStream) -> Option<muster_core::Result<muster_core::WatchBatch>> {
    timeout(Duration::from_secs(1), stream.next())
        .await
        .expect("a watch item within 1 s")
}

fn put(key: &str, value: &str) -> Txn {
    Txn::new().put(key, value.as_bytes().to_vec(), 0)
}

#[tokio::test(start_paused = true)]
async fn an_empty_store_is_at_revision_one() {
    let store = MemStore::new();
    assert_eq!(store.cluster().revision(), 1);
    assert_eq!(store.list("").await.unwrap().revision, 1);
    assert_eq!(store.txn(put("/k", "v")).await.unwrap().revision, 2);
    assert_eq!(store.cluster().revision(), 2);
}

#[tokio::test(start_paused = true)]
async fn watch_from_zero_starts_at_the_next_revision() {
    let store = MemStore::new();
    store.txn(put("/p/old", "1")).await.unwrap();
    let mut watch = store.watch("/p/", 0).await.unwrap();
    let r = store.txn(put("/p/new", "2")).await.unwrap().revision;
    let batch = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(batch.revision, r);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kv.key, "/p/new");
}

#[tokio::test(start_paused = true)]
async fn compaction_boundaries_follow_etcd() {
    let store = MemStore::new();
    let r1 = store.txn(put("/p/k", "1")).await.unwrap().revision;
    let r2 = store.txn(put("/p/k", "2")).await.unwrap().revision;
    store.compact(r2).await.unwrap();
    assert_eq!(store.cluster().compacted_revision(), r2);

    // The compaction revision itself is kept (etcd: only revisions below it are gone).
    let mut watch = store.watch("/p/", r2).await.unwrap();
    let batch = next(&mut watch).await.unwrap().unwrap();
    assert_eq!(batch.events[0].kv.mod_revision, r2);

    let mut watch = store.watch("/p/", r1).await.unwrap();
    let first = next(&mut watch).await.unwrap();
    assert!(
        matches!(first, Err(Error::Compacted { requested, compacted }) if requested == r1 && compacted == r2),
        "{first:?}"
    );
    assert!(next(&mut watch).await.is_none());

    // Compacting again at or below the compaction revision changes nothing; into the
    // future fails.
    store.compact(r2).await.unwrap();
    store.compact(r1).await.unwrap();
    assert_eq!(store.cluster().compacted_revision(), r2);
    let err = store.compact(r2 + 10).await.unwrap_err();
    assert!(
        matches!(err, Error::Rejected { backend: "mem", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("future revision"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn builder_settings_apply() {
    let cluster = MemCluster::builder()
        .min_ttl(Duration::from_millis(100))
        .max_value_size(8)
        .build();
    let store = cluster.client();
    let lease = store.grant(Duration::ZERO).await.unwrap();
    assert_eq!(lease.ttl, Duration::from_millis(100));
    let lease = store.grant(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        lease.ttl,
        Duration::from_secs(1),
        "a TTL above the minimum is kept"
    );

    store.txn(put("/k", "12345678")).await.expect("8 bytes fit");
    let err = store.txn(put("/k", "123456789")).await.unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, size: 9, limit: 8 } if key == "/k"),
        "{err}"
    );

    let default = MemStore::new();
    let lease = default.grant(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        lease.ttl,
        Duration::from_secs(2),
        "etcd's minimum by default"
    );
}

#[tokio::test(start_paused = true)]
async fn odd_inputs_are_errors_not_panics() {
    let store = MemStore::new();
    let err = store.txn(put("", "v")).await.unwrap_err();
    assert!(err.to_string().contains("key is not provided"), "{err}");
    let err = store.grant(Duration::MAX).await.unwrap_err();
    assert!(err.to_string().contains("too large lease TTL"), "{err}");
    for lease in [0, -1, i64::MIN, i64::MAX] {
        assert!(matches!(
            store.keep_alive(lease, Duration::from_secs(5)).await,
            Err(Error::LeaseNotFound { .. })
        ));
        store
            .revoke(lease)
            .await
            .expect("revoking a missing lease is fine");
    }
    let err = store
        .txn(Txn::new().put("/k", Vec::new(), 42))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { lease: 42 }), "{err}");
    for from in [i64::MIN, -1, i64::MAX] {
        let _stream = store
            .watch("/", from)
            .await
            .expect("any start revision is accepted");
    }
    assert!(store.compact(i64::MAX).await.is_err());
    for rev in [i64::MIN, 0] {
        store
            .compact(rev)
            .await
            .expect("nothing to compact is not an error");
    }
    store.get("").await.unwrap();
    store.list("").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn duplicate_writes_in_one_txn_follow_etcd() {
    let store = MemStore::new();
    let err = store
        .txn(put("/k", "1").put("/k", b"2".to_vec(), 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected { backend: "mem", .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("duplicate key given in txn request"),
        "{err}"
    );
    let err = store.txn(put("/k", "1").delete("/k")).await.unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");

    // etcd allows deleting one key twice: the second delete finds nothing.
    store.txn(put("/k", "1")).await.unwrap();
    let r = store.cluster().revision();
    let out = store
        .txn(Txn::new().delete("/k").delete("/k"))
        .await
        .unwrap();
    assert_eq!(out.revision, r + 1);
}

#[tokio::test(start_paused = true)]
async fn conditions_on_missing_keys() {
    let store = MemStore::new();
    for condition in [
        Condition::ModRevision("/missing".into(), 0),
        Condition::LeaseIs("/missing".into(), 0),
    ] {
        let out = store.txn(Txn::new().when(condition.clone())).await.unwrap();
        assert!(!out.succeeded, "{condition:?} requires the key to exist");
    }
}

#[tokio::test(start_paused = true)]
async fn lease_ids_are_deterministic_and_not_small() {
    let (a, b) = (MemStore::new(), MemStore::new());
    let ids_a = [
        a.grant(Duration::from_secs(5)).await.unwrap().id,
        a.grant(Duration::from_secs(5)).await.unwrap().id,
    ];
    let ids_b = [
        b.grant(Duration::from_secs(5)).await.unwrap().id,
        b.grant(Duration::from_secs(5)).await.unwrap().id,
    ];
    assert_eq!(ids_a, ids_b);
    assert!(ids_a[0] > 1 << 32, "lease ids do not look like revisions");
    assert_ne!(ids_a[0], ids_a[1]);
}

#[tokio::test(start_paused = true)]
async fn expiry_needs_no_call_and_one_lease_is_one_revision() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let l1 = store.grant(Duration::from_secs(2)).await.unwrap();
    let l2 = store.grant(Duration::from_secs(2)).await.unwrap();
    store
        .txn(
            Txn::new()
                .put("/a", Vec::new(), l1.id)
                .put("/b", Vec::new(), l1.id)
                .put("/c", Vec::new(), l2.id),
        )
        .await
        .unwrap();
    let r = cluster.revision();
    let mut watch = store.watch("/", r + 1).await.unwrap();
    // Nobody calls the store: the background task expires both leases at the deadline.
    let mut batches = Vec::new();
    while batches.len() < 2 {
        let batch = timeout(Duration::from_secs(3), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        batches.push(batch);
    }
    let revs: Vec<Vec<i64>> = batches
        .iter()
        .map(|b| b.events.iter().map(|e| e.kv.mod_revision).collect())
        .collect();
    assert_eq!(
        revs,
        [vec![r + 1, r + 1], vec![r + 2]],
        "one revision per lease"
    );
}

#[test]
fn a_cluster_built_outside_a_runtime_still_expires_leases() {
    let store = MemStore::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let lease = store.grant(Duration::from_secs(2)).await.unwrap();
        let r = store
            .txn(Txn::new().put("/k", Vec::new(), lease.id))
            .await
            .unwrap()
            .revision;
        let mut watch = store.watch("/", r + 1).await.unwrap();
        let batch = timeout(Duration::from_secs(3), watch.next()).await;
        assert!(
            matches!(batch, Ok(Some(Ok(_)))),
            "expired by the task started lazily"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn dropping_the_cluster_stops_the_expiry_task_and_ends_streams() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let store = MemStore::new();
    store.grant(Duration::from_secs(100)).await.unwrap();
    let mut watch = store.watch("/", 0).await.unwrap();
    assert_eq!(
        metrics.num_alive_tasks(),
        before + 1,
        "the expiry task runs"
    );
    drop(store);
    assert!(
        next(&mut watch).await.is_none(),
        "a dropped cluster ends its streams"
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), before, "the expiry task exited");
}
