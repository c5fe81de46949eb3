//! The worker on the in-memory backend, under tokio's paused clock: waits are on status
//! changes and store state with deadlines; simulated time passes only where the test is
//! about time (a TTL running out).

use std::time::Duration;

use muster_core::{Incarnation, Keyspace, Liveness, MemberInfo, Record, Store};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{Error, OnDuplicate, Status, Worker, WorkerConfig};
use tokio::sync::watch;

const PREFIX: &str = "/t/";
const TTL: Duration = Duration::from_secs(2);

fn config(incarnation: u64) -> WorkerConfig {
    WorkerConfig::new(PREFIX)
        .ttl(TTL)
        .incarnation(Incarnation(incarnation))
}

fn info(name: &str) -> MemberInfo {
    MemberInfo::new(name, "10.0.0.1:80").cpus(2)
}

fn keys() -> Keyspace {
    Keyspace::new(PREFIX).unwrap()
}

async fn record(store: &MemStore, name: &str) -> Option<Record> {
    let kv = store.get(&keys().record_key(name)).await.unwrap()?;
    Some(Record::from_json(&kv.key, &kv.value).unwrap())
}

async fn liveness(store: &MemStore, name: &str) -> Option<(Liveness, i64)> {
    let kv = store.get(&keys().liveness_key(name)).await.unwrap()?;
    Some((Liveness::from_json(&kv.key, &kv.value).unwrap(), kv.lease))
}

/// Waits (with a deadline) until the status satisfies `pred`.
async fn wait_status(rx: &mut watch::Receiver<Status>, what: &str, pred: impl Fn(&Status) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.is_ok());
    if waited != Ok(true) {
        panic!("status never became {what}; last: {:?}", *rx.borrow());
    }
}

/// Waits (with a deadline) until the liveness key of `name` is gone, by watching it.
async fn wait_liveness_gone(store: &MemStore, name: &str) {
    use futures::StreamExt;
    let key = keys().liveness_key(name);
    let listing = store.list(&key).await.unwrap();
    if listing.kvs.is_empty() {
        return;
    }
    let mut watch = store.watch(&key, listing.revision + 1).await.unwrap();
    let deleted = async {
        while let Some(batch) = watch.next().await {
            let batch = batch.expect("watch failed");
            if batch
                .events
                .iter()
                .any(|e| e.kind == muster_core::EventKind::Delete)
            {
                return true;
            }
        }
        false
    };
    let gone = tokio::time::timeout(Duration::from_secs(60), deleted).await;
    assert_eq!(gone, Ok(true), "liveness of {name} never expired");
}

#[tokio::test(start_paused = true)]
async fn register_writes_record_and_leased_liveness_in_one_revision() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a").label("zone", "z"), config(7))
        .await
        .unwrap();
    let Status::Registered { lease, revision } = worker.status().borrow().clone() else {
        panic!("not registered: {:?}", worker.status().borrow());
    };
    let record_kv = store.get(&keys().record_key("a")).await.unwrap().unwrap();
    let live_kv = store.get(&keys().liveness_key("a")).await.unwrap().unwrap();
    assert_eq!(record_kv.mod_revision, revision);
    assert_eq!(live_kv.mod_revision, revision);
    assert_eq!(record_kv.lease, 0, "the record must not be leased");
    assert_eq!(live_kv.lease, lease);
    let record = Record::from_json(&record_kv.key, &record_kv.value).unwrap();
    assert_eq!(record.info, info("a").label("zone", "z"));
    assert_eq!(record.incarnation, Incarnation(7));
    assert_eq!(worker.incarnation(), Incarnation(7));
}

#[tokio::test(start_paused = true)]
async fn bad_names_and_prefixes_are_rejected_before_anything_is_written() {
    let cluster = MemCluster::new();
    for name in ["", "a/b", "with space"] {
        let err = Worker::register(cluster.client(), info(name), config(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid(muster_core::Error::InvalidName { .. })),
            "{err}"
        );
    }
    let err = Worker::register(cluster.client(), info("a"), WorkerConfig::new(""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid(muster_core::Error::InvalidPrefix { .. })
        ),
        "{err}"
    );
    assert_eq!(cluster.revision(), 1, "nothing was written");
}

#[tokio::test(start_paused = true)]
async fn bad_addresses_label_keys_and_ttls_are_rejected_before_anything_is_written() {
    let cluster = MemCluster::new();
    for addr in ["not-an-addr", "10.0.0.1", ":99999", "h:0", "::1:80"] {
        let err = Worker::register(cluster.client(), MemberInfo::new("a", addr), config(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(muster_core::Error::InvalidAddr { addr: a, .. }) if a == addr),
            "{addr:?}: {err}"
        );
        assert!(err.to_string().contains("use HOST:PORT"), "{err}");
    }
    let err = Worker::register(cluster.client(), info("a").label("a=b", "c"), config(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid(muster_core::Error::InvalidLabel { .. })),
        "{err}"
    );
    for (ttl, needle) in [
        (Duration::from_secs(100_000 * 3600), "at most 1h"),
        (Duration::from_secs(3601), "at most 1h"),
        (Duration::from_millis(999), "at least 1s"),
        (Duration::ZERO, "at least 1s"),
    ] {
        let err = Worker::register(cluster.client(), info("a"), config(1).ttl(ttl))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidTtl { ttl: t, .. } if t == ttl),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(cluster.revision(), 1, "nothing was written");

    // No address at all is allowed (an empty one), and so are both TTL bounds.
    for ttl in [WorkerConfig::MIN_TTL, WorkerConfig::MAX_TTL] {
        let name = format!("ttl-{}", ttl.as_secs());
        let worker = Worker::register(
            cluster.client(),
            MemberInfo::new(name, ""),
            config(1).ttl(ttl),
        )
        .await
        .unwrap();
        // An update is checked as registration is, and a bad one changes nothing.
        let err = worker
            .update(MemberInfo::new(worker.name(), "10.0.0.1"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid(muster_core::Error::InvalidAddr { .. })),
            "{err}"
        );
        let stored = record(&cluster.client(), worker.name()).await.unwrap();
        assert_eq!(stored.info.addr, "");
        worker.leave().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_live_process_with_the_same_name_is_refused() {
    let cluster = MemCluster::new();
    let first = Worker::register(cluster.client(), info("a"), config(1))
        .await
        .unwrap();
    let err = Worker::register(cluster.client(), info("a"), config(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateName { ref name, holder } if name == "a" && holder == Incarnation(1)),
        "{err}"
    );
    assert!(err.to_string().contains("already held"), "{err}");
    // The first registration is untouched.
    let store = cluster.client();
    assert_eq!(
        liveness(&store, "a").await.unwrap().0.incarnation,
        Incarnation(1)
    );
    assert_eq!(
        record(&store, "a").await.unwrap().incarnation,
        Incarnation(1)
    );
    assert_eq!(
        cluster.leases(),
        1,
        "the refused worker gave its lease back"
    );
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn wait_policy_takes_the_name_over_once_the_old_lease_expires() {
    let cluster = MemCluster::new();
    let old = Worker::register(cluster.client(), info("a"), config(1))
        .await
        .unwrap();
    old.abandon();
    let store = cluster.client();
    let started = tokio::time::Instant::now();
    let new = Worker::register(
        store.clone(),
        info("a"),
        config(2).on_duplicate(OnDuplicate::Wait),
    )
    .await
    .unwrap();
    assert!(started.elapsed() >= TTL / 2, "it waited for the old lease");
    assert!(new.status().borrow().is_registered());
    assert_eq!(
        liveness(&store, "a").await.unwrap().0.incarnation,
        Incarnation(2)
    );
}

#[tokio::test(start_paused = true)]
async fn keep_alive_holds_the_registration_for_many_ttls() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let (_, lease) = liveness(&store, "a").await.unwrap();
    tokio::time::sleep(TTL * 20).await;
    assert_eq!(
        liveness(&store, "a").await.map(|l| l.1),
        Some(lease),
        "same lease, still alive"
    );
    assert!(matches!(
        *worker.status().borrow(),
        Status::Registered { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn after_a_partition_longer_than_the_ttl_it_registers_again_with_current_metadata() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let observer = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    let (_, old_lease) = liveness(&observer, "a").await.unwrap();

    cluster.partition(store.id());
    wait_status(&mut status, "reconnecting", |s| {
        matches!(s, Status::Reconnecting { .. })
    })
    .await;
    wait_liveness_gone(&observer, "a").await;
    // The record stays: the master sees Suspect, not Left.
    assert!(record(&observer, "a").await.is_some());

    // An update during the outage cannot be written now; it is kept and written later.
    let err = worker.update(info("a").label("v", "2")).await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");

    cluster.heal(store.id());
    wait_status(&mut status, "re-registered", |s| {
        matches!(s, Status::Reregistered { .. })
    })
    .await;
    let (live, new_lease) = liveness(&observer, "a").await.unwrap();
    assert_ne!(new_lease, old_lease);
    assert_eq!(
        live.incarnation,
        Incarnation(1),
        "same process, same incarnation"
    );
    assert_eq!(
        record(&observer, "a").await.unwrap().info,
        info("a").label("v", "2")
    );
}

#[tokio::test(start_paused = true)]
async fn retries_during_an_outage_are_paced_not_a_busy_loop() {
    let cluster = MemCluster::new();
    let store = cluster
        .client()
        .with_request_timeout(Duration::from_millis(300));
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    cluster.hang(store.id());
    // Over 30 s of a hung store, every attempt waits for its timeout and a backoff delay.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let Status::Reconnecting { attempts, .. } = status.borrow_and_update().clone() else {
        panic!("not reconnecting: {:?}", status.borrow());
    };
    assert!(attempts >= 3, "it kept trying ({attempts} attempts)");
    assert!(
        attempts <= 60,
        "at most one attempt per request timeout ({attempts} attempts)"
    );
    cluster.unhang(store.id());
    wait_status(&mut status, "registered again", |s| s.is_registered()).await;
}

/// A renewal waits half the TTL for its answer, whatever the TTL (no store or worker timeout
/// cuts it shorter), and the store's own message says how long it waited.
#[tokio::test(start_paused = true)]
async fn with_a_long_ttl_a_renewal_waits_half_the_ttl_before_it_counts_as_failed() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let ttl = Duration::from_secs(60);
    let config = WorkerConfig::new(PREFIX)
        .ttl(ttl)
        .incarnation(Incarnation(1));
    assert_eq!(config.renew_timeout(), Duration::from_secs(30));
    let worker = Worker::register(store.clone(), info("a"), config)
        .await
        .unwrap();
    let mut status = worker.status();
    let hung_at = tokio::time::Instant::now();
    cluster.hang(store.id());
    // The first renewal goes out one keep-alive interval (TTL/3) later, and waits 30 s.
    wait_status(&mut status, "reconnecting", |s| {
        matches!(s, Status::Reconnecting { .. })
    })
    .await;
    let waited = hung_at.elapsed();
    let reconnecting = status.borrow().clone();
    let Status::Reconnecting { error, .. } = reconnecting else {
        unreachable!()
    };
    assert!(
        error.contains("renewing the lease") && error.contains("no answer within 30s"),
        "{error}"
    );
    assert!(
        waited >= ttl / 3 + Duration::from_secs(30),
        "the renewal was given up after {waited:?} of a hung store"
    );
    cluster.unhang(store.id());
    wait_status(&mut status, "registered again", |s| s.is_registered()).await;
}

#[tokio::test(start_paused = true)]
async fn update_rewrites_the_record_and_keeps_the_liveness() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let (_, lease) = liveness(&store, "a").await.unwrap();
    worker.update(info("a").cpus(16)).await.unwrap();
    assert_eq!(record(&store, "a").await.unwrap().info.cpus, 16);
    assert_eq!(liveness(&store, "a").await.unwrap().1, lease);
    let err = worker.update(info("b")).await.unwrap_err();
    assert!(matches!(err, Error::NameChanged { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_update_after_losing_the_liveness_key_registers_again() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    // Someone (an operator) deletes the liveness key: the guard no longer holds.
    store
        .txn(muster_core::Txn::new().delete(keys().liveness_key("a")))
        .await
        .unwrap();
    worker.update(info("a").cpus(9)).await.unwrap();
    wait_status(&mut status, "re-registered", |s| {
        matches!(s, Status::Reregistered { .. })
    })
    .await;
    assert_eq!(record(&store, "a").await.unwrap().info.cpus, 9);
    assert!(liveness(&store, "a").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn leave_deletes_both_keys_in_one_revision_and_revokes_the_lease() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    let before = cluster.revision();
    worker.leave().await.unwrap();
    assert_eq!(
        cluster.revision(),
        before + 1,
        "one transaction, one revision"
    );
    assert!(record(&store, "a").await.is_none());
    assert!(liveness(&store, "a").await.is_none());
    assert_eq!(cluster.leases(), 0);
    wait_status(&mut status, "left", |s| *s == Status::Left).await;
}

#[tokio::test(start_paused = true)]
async fn a_leave_that_meets_a_failed_call_is_retried() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    cluster.fail_next(store.id(), 1);
    worker.leave().await.expect("left on a retry");
    assert!(record(&store, "a").await.is_none(), "Left, not Suspect");
    assert!(liveness(&store, "a").await.is_none());
    assert_eq!(cluster.leases(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_leave_that_keeps_failing_gives_up_after_a_ttl_and_says_so() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let status = worker.status();
    cluster.partition(store.id());
    let err = tokio::time::timeout(Duration::from_secs(60), worker.leave())
        .await
        .expect("the retries are bounded")
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    let status = status.borrow().clone();
    match &status {
        Status::Failed { error } => assert!(error.contains("could not leave"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_worker_leaves() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    drop(worker);
    wait_status(&mut status, "left", |s| *s == Status::Left).await;
    assert!(record(&store, "a").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn abandon_is_a_crash_the_liveness_expires_and_the_record_stays() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    worker.abandon();
    wait_liveness_gone(&store, "a").await;
    assert!(record(&store, "a").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_fails_registration_after_the_register_timeout() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    cluster.partition(store.id());
    let err = Worker::register(
        store,
        info("a"),
        config(1).register_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                source: muster_core::Error::Unavailable { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("granting a lease"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Evictions hold
// ---------------------------------------------------------------------------------------------

/// How long the evictions of these tests hold.
const HOLD: Duration = Duration::from_secs(30);

/// Evicts `name` as `muster_master::evict` does, with the protocol's transaction: grants a
/// lease of [`HOLD`] for the marker, deletes both keys and puts the marker in one revision,
/// then (if `revoke`) revokes the member's lease. Returns the eviction's revision.
async fn evict(store: &MemStore, name: &str, revoke: bool) -> i64 {
    let ks = keys();
    let record = store.get(&ks.record_key(name)).await.unwrap().unwrap();
    let live = store.get(&ks.liveness_key(name)).await.unwrap();
    let incarnation = match &live {
        Some(kv) => Liveness::from_json(&kv.key, &kv.value).unwrap().incarnation,
        None => {
            Record::from_json(&record.key, &record.value)
                .unwrap()
                .incarnation
        }
    };
    let hold = store.grant(HOLD).await.unwrap();
    let marker = muster_core::EvictionMarker {
        incarnation,
        at_unix_ms: 0,
        hold_ms: HOLD.as_millis() as u64,
    };
    let txn = ks.evict_txn(
        name,
        record.mod_revision,
        live.as_ref().map(|kv| kv.mod_revision),
        &marker,
        hold.id,
    );
    let outcome = store.txn(txn).await.unwrap();
    assert!(outcome.succeeded, "the eviction's guards held");
    if let (true, Some(live)) = (revoke, &live) {
        store.revoke(live.lease).await.unwrap();
    }
    outcome.revision
}

/// Watches `name`'s keys from `from` until the eviction marker of `incarnation` is deleted
/// (its hold ends), with a deadline; returns every put of a record or liveness key of
/// `incarnation` seen before.
async fn puts_until_marker_gone(
    store: &MemStore,
    name: &str,
    incarnation: u64,
    from: i64,
) -> Vec<String> {
    use futures::StreamExt;
    let ks = keys();
    let marker = ks.eviction_key(name, Incarnation(incarnation));
    let mut watch = store.watch(PREFIX, from).await.unwrap();
    let mut puts = Vec::new();
    let watched = async {
        while let Some(batch) = watch.next().await {
            for event in batch.expect("watch failed").events {
                if event.kv.key == marker && event.kind == muster_core::EventKind::Delete {
                    return true;
                }
                let ours = [ks.record_key(name), ks.liveness_key(name)].contains(&event.kv.key);
                if ours && event.kind == muster_core::EventKind::Put {
                    puts.push(String::from_utf8_lossy(&event.kv.value).into_owned());
                }
            }
        }
        false
    };
    let ended = tokio::time::timeout(HOLD * 4, watched).await;
    assert_eq!(ended, Ok(true), "the marker of {name} never went away");
    puts.retain(|value| value.contains(&format!("\"incarnation\":{incarnation}")));
    puts
}

#[tokio::test(start_paused = true)]
async fn an_evicted_live_worker_stops_reports_evicted_and_never_registers_again() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let observer = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();

    let revision = evict(&observer, "a", true).await;
    wait_status(&mut status, "evicted", |s| {
        *s == Status::Evicted { revision }
    })
    .await;
    let puts = puts_until_marker_gone(&observer, "a", 1, revision + 1).await;
    assert_eq!(
        puts,
        Vec::<String>::new(),
        "the evicted process wrote again"
    );
    assert!(record(&observer, "a").await.is_none());
    assert!(liveness(&observer, "a").await.is_none());

    let err = worker.update(info("a").cpus(3)).await.unwrap_err();
    assert!(
        matches!(err, Error::Evicted { ref name, incarnation: Incarnation(1), revision: r } if name == "a" && r == revision),
        "{err}"
    );
    let err = worker.leave().await.unwrap_err();
    assert!(matches!(err, Error::Evicted { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_new_process_joins_under_an_evicted_name_while_the_marker_holds() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    let revision = evict(&store, "a", true).await;
    wait_status(&mut status, "evicted", |s| {
        matches!(s, Status::Evicted { .. })
    })
    .await;

    let marker = keys().eviction_key("a", Incarnation(1));
    assert!(store.get(&marker).await.unwrap().is_some());
    let next = Worker::register(cluster.client(), info("a"), config(2))
        .await
        .unwrap();
    let (live, _) = liveness(&store, "a").await.unwrap();
    assert_eq!(live.incarnation, Incarnation(2));
    assert!(store.get(&marker).await.unwrap().is_some());
    // The old process stays out while the new one holds the name.
    assert!(puts_until_marker_gone(&store, "a", 1, revision + 1)
        .await
        .is_empty());
    next.leave().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn registering_an_evicted_incarnation_again_fails_with_evicted() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    let revision = evict(&store, "a", true).await;
    wait_status(&mut status, "evicted", |s| {
        matches!(s, Status::Evicted { .. })
    })
    .await;

    let err = Worker::register(cluster.client(), info("a"), config(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Evicted { revision: r, .. } if r == revision),
        "{err}"
    );
    assert!(liveness(&store, "a").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_evicted_worker_whose_lease_survived_notices_at_its_next_record_write() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    // The operator could not revoke the lease: keep-alives still succeed.
    let revision = evict(&store, "a", false).await;
    worker.update(info("a").cpus(5)).await.unwrap();
    wait_status(&mut status, "evicted", |s| {
        *s == Status::Evicted { revision }
    })
    .await;
    assert!(record(&store, "a").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_worker_evicted_while_cut_off_is_refused_when_it_comes_back() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let observer = cluster.client();
    let worker = Worker::register(store.clone(), info("a"), config(1))
        .await
        .unwrap();
    let mut status = worker.status();
    cluster.partition(store.id());
    wait_liveness_gone(&observer, "a").await;
    // Suspect now: the eviction has no lease to revoke.
    let revision = evict(&observer, "a", true).await;
    cluster.heal(store.id());
    wait_status(&mut status, "evicted", |s| {
        *s == Status::Evicted { revision }
    })
    .await;
    assert!(puts_until_marker_gone(&observer, "a", 1, revision + 1)
        .await
        .is_empty());
    assert!(record(&observer, "a").await.is_none());
}
