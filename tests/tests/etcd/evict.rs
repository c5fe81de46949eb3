//! Evictions hold, on real etcd: `muster_master::evict` of a live worker is reported `Left`,
//! the worker learns of it at its next keep-alive, reports `Status::Evicted` and never
//! registers again while the marker holds; a new process takes the name at once. A member
//! evicted while suspect (cut off, lease expired) is `Failed`, and its process is refused
//! when the network heals.

use std::time::Duration;

use futures::StreamExt;
use muster_core::{EventKind, Store, TransitionKind};
use muster_worker::Status;

use crate::support::{info, lease_of, status_until, summary, until, wait, Group, DEADLINE};

/// Short, so that the marker's deletion (the hold ending) bounds the watch below; far longer
/// than the worker needs to notice (its next keep-alive, a third of the 2 s TTL).
const HOLD: Duration = Duration::from_secs(5);

#[tokio::test]
async fn an_evicted_live_worker_is_left_reports_evicted_and_never_registers_again() {
    let group = Group::new("evict-live");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let a = group.join(info("a")).await;
    let lease = lease_of(&a);
    until(&mut events, TransitionKind::Joined, "a").await;

    let store = group.store().await;
    let eviction = muster_master::evict(&store, &group.prefix, "a", HOLD)
        .await
        .expect("evict");
    assert_eq!(eviction.reported_as(), TransitionKind::Left);
    assert_eq!(eviction.blocked, a.incarnation());
    assert!(eviction.lease_revoked);
    let marker = store
        .get(&eviction.marker)
        .await
        .expect("get")
        .expect("the marker is written with the eviction");
    assert_eq!(marker.create_revision, eviction.revision);
    assert_ne!(marker.lease, lease, "the marker is on the hold lease");
    let t = until(&mut events, TransitionKind::Left, "a").await;
    assert_eq!(t.last().unwrap().revision, eviction.revision);

    let status = status_until(&a, "evicted", |s| matches!(s, Status::Evicted { .. })).await;
    assert_eq!(
        status,
        Status::Evicted {
            revision: eviction.revision
        }
    );
    let err = a.update(info("a").cpus(9)).await.unwrap_err();
    assert!(matches!(err, muster_worker::Error::Evicted { .. }), "{err}");

    // From the eviction until its hold ends (the marker's deletion, etcd's own event), the
    // evicted process writes nothing: no record, no liveness key.
    let keyspace = group.keyspace();
    let ours = [keyspace.record_key("a"), keyspace.liveness_key("a")];
    let mut watch = store
        .watch(&group.prefix, eviction.revision + 1)
        .await
        .expect("watch");
    let mut writes = Vec::new();
    let watched = async {
        while let Some(batch) = watch.next().await {
            for event in batch.expect("watch").events {
                if event.kv.key == eviction.marker && event.kind == EventKind::Delete {
                    return true;
                }
                if ours.contains(&event.kv.key) {
                    writes.push((event.kind, event.kv.key, event.kv.mod_revision));
                }
            }
        }
        false
    };
    let ended = tokio::time::timeout(HOLD + DEADLINE, watched).await;
    assert_eq!(ended, Ok(true), "the marker's hold never ended");
    assert_eq!(writes, vec![], "the evicted process wrote again");
    assert!(master.member("a").is_none());

    // A new process under the name joins (the marker blocked only the old incarnation).
    let b = group.join(info("a")).await;
    assert_ne!(b.incarnation(), eviction.blocked);
    let t = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&t), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(t[0].member.incarnation, b.incarnation());
    b.leave().await.expect("leave");
    wait(&master, "a gone", |v| v.get("a").is_none()).await;
}

#[tokio::test]
async fn a_new_process_joins_while_the_marker_of_the_evicted_one_still_holds() {
    let group = Group::new("evict-rejoin");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let a = group.join(info("a")).await;
    until(&mut events, TransitionKind::Joined, "a").await;

    let store = group.store().await;
    let eviction = muster_master::evict(
        &store,
        &group.prefix,
        "a",
        muster_master::DEFAULT_EVICTION_HOLD,
    )
    .await
    .expect("evict");
    until(&mut events, TransitionKind::Left, "a").await;
    status_until(&a, "evicted", |s| matches!(s, Status::Evicted { .. })).await;

    let b = group.join(info("a").label("v", "2")).await;
    let t = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&t), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(t[0].member.incarnation, b.incarnation());
    assert!(
        store.get(&eviction.marker).await.expect("get").is_some(),
        "the old incarnation stays refused"
    );
    // Registering the evicted incarnation again is refused, atomically, by the marker.
    let again = muster_worker::Worker::register(
        group.store().await,
        info("a"),
        group.worker_config().incarnation(eviction.blocked),
    )
    .await;
    assert!(
        matches!(again, Err(muster_worker::Error::Evicted { .. })),
        "{again:?}"
    );
    b.leave().await.expect("leave");
    // Clean up the hour-long marker: revoking its lease deletes it.
    let marker = store
        .get(&eviction.marker)
        .await
        .expect("get")
        .expect("marker");
    store
        .revoke(marker.lease)
        .await
        .expect("revoke the hold lease");
}

/// A member evicted while it is suspect (its process cut off from etcd, its lease expired)
/// is reported `Failed`; when the network heals, the process finds its lease gone, tries to
/// register again, is refused by the marker (atomically, in the registration itself),
/// reports `Status::Evicted` and writes nothing.
#[tokio::test]
async fn an_evicted_suspect_member_is_failed_and_its_process_is_refused_when_it_returns() {
    let group = Group::new("evict-suspect");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let proxy = muster_testkit::proxy::Proxy::start(&group.endpoint())
        .await
        .expect("start a proxy");
    let mut config = group.etcd.config();
    config.endpoints = vec![proxy.endpoint()];
    let own = muster_testkit::etcd::connect(config).await;
    let a = muster_worker::Worker::register(own, info("a"), group.worker_config())
        .await
        .expect("register a");
    until(&mut events, TransitionKind::Joined, "a").await;

    proxy.cut();
    until(&mut events, TransitionKind::Suspect, "a").await;
    let store = group.store().await;
    let eviction = muster_master::evict(&store, &group.prefix, "a", HOLD)
        .await
        .expect("evict");
    assert_eq!(eviction.reported_as(), TransitionKind::Failed);
    assert_eq!(eviction.blocked, a.incarnation());
    let t = until(&mut events, TransitionKind::Failed, "a").await;
    assert_eq!(t.last().unwrap().revision, eviction.revision);

    // Watch the group's keys from the eviction on, then let the process back.
    let keyspace = group.keyspace();
    let ours = [keyspace.record_key("a"), keyspace.liveness_key("a")];
    let mut watch = store
        .watch(&group.prefix, eviction.revision + 1)
        .await
        .expect("watch");
    proxy.heal();
    let status = status_until(&a, "evicted", |s| matches!(s, Status::Evicted { .. })).await;
    assert_eq!(
        status,
        Status::Evicted {
            revision: eviction.revision
        }
    );
    let mut writes = Vec::new();
    let watched = async {
        while let Some(batch) = watch.next().await {
            for event in batch.expect("watch").events {
                if event.kv.key == eviction.marker && event.kind == EventKind::Delete {
                    return true;
                }
                if ours.contains(&event.kv.key) {
                    writes.push((event.kind, event.kv.key, event.kv.mod_revision));
                }
            }
        }
        false
    };
    let ended = tokio::time::timeout(HOLD + DEADLINE, watched).await;
    assert_eq!(ended, Ok(true), "the marker's hold never ended");
    assert_eq!(writes, vec![], "the evicted process wrote again");
    assert!(master.member("a").is_none());
}
