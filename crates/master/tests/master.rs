//! The master on the in-memory backend, driven by real workers, under tokio's paused clock.
//! Every wait is on the master's view or its transitions, with a deadline.

use std::time::Duration;

use muster_core::{
    Incarnation, Keyspace, MemberInfo, MemberState, Store, Transition, TransitionKind, Txn,
};
use muster_master::{Event, Master, MasterConfig, Subscription, View};
use muster_mem_backend::{MemCluster, MemStore};
use muster_testkit::wait::{states, summary};
use muster_worker::{Worker, WorkerConfig};

const PREFIX: &str = "/g/";
const TTL: Duration = Duration::from_secs(2);
const REAP: Duration = Duration::from_secs(10);
const DEADLINE: Duration = Duration::from_secs(120);
/// How long evictions hold in these tests.
const HOLD: Duration = Duration::from_secs(60);

fn master_config(seed: u64) -> MasterConfig {
    MasterConfig::new(PREFIX).reap_after(Some(REAP)).seed(seed)
}

fn worker_config(incarnation: u64) -> WorkerConfig {
    WorkerConfig::new(PREFIX)
        .ttl(TTL)
        .incarnation(Incarnation(incarnation))
}

fn info(name: &str) -> MemberInfo {
    MemberInfo::new(name, format!("{name}:80"))
}

async fn join(cluster: &MemCluster, name: &str, incarnation: u64) -> (Worker, MemStore) {
    let store = cluster
        .client()
        .with_request_timeout(Duration::from_millis(300));
    let worker = Worker::register(store.clone(), info(name), worker_config(incarnation))
        .await
        .unwrap();
    (worker, store)
}

async fn wait(master: &Master, what: &str, pred: impl FnMut(&View) -> bool) -> View {
    muster_testkit::wait::view_until(master, DEADLINE, what, pred).await
}

/// Receives transitions until `kind` for `name`, returning all received (with a deadline).
async fn until(events: &mut Subscription, kind: TransitionKind, name: &str) -> Vec<Transition> {
    muster_testkit::wait::transitions_until(events, DEADLINE, kind, name).await
}

/// The view a fresh listing of the store implies, by name and state.
async fn truth(store: &MemStore) -> Vec<(String, MemberState)> {
    let listing = store.list(PREFIX).await.unwrap();
    let mut machine = muster_core::Membership::new(Keyspace::new(PREFIX).unwrap(), None);
    machine.resync(&listing, std::time::Instant::now());
    machine
        .members()
        .map(|m| (m.name().to_owned(), m.state))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn members_present_before_the_master_starts_are_listed_and_announced() {
    let cluster = MemCluster::new();
    let (_a, _) = join(&cluster, "a", 1).await;
    let (_b, _) = join(&cluster, "b", 2).await;
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    let got = until(&mut events, TransitionKind::Joined, "b").await;
    assert_eq!(
        summary(&got),
        vec![
            (TransitionKind::Joined, "a".into()),
            (TransitionKind::Joined, "b".into())
        ]
    );
    let view = master.ready().await.expect("the master stopped");
    assert_eq!(
        states(&view),
        vec![
            ("a".into(), MemberState::Alive),
            ("b".into(), MemberState::Alive)
        ]
    );
    assert!(master.health().synced && master.health().watching);
}

#[tokio::test(start_paused = true)]
async fn the_whole_lifecycle_is_reported_with_revisions() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");

    let (a, a_store) = join(&cluster, "a", 1).await;
    let t = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(t.len(), 1);
    let joined_at = t[0].revision;

    a.update(info("a").label("v", "2")).await.unwrap();
    let t = until(&mut events, TransitionKind::Updated, "a").await;
    assert_eq!(t.len(), 1);
    assert!(t[0].revision > joined_at);
    assert_eq!(&t[0].member.info.labels["v"], "2");

    // A blip longer than the TTL: Suspect, then the same process is back: Recovered.
    cluster.partition(a_store.id());
    let t = until(&mut events, TransitionKind::Suspect, "a").await;
    assert_eq!(summary(&t), vec![(TransitionKind::Suspect, "a".into())]);
    assert_eq!(master.member("a").unwrap().state, MemberState::Suspect);
    cluster.heal(a_store.id());
    let t = until(&mut events, TransitionKind::Recovered, "a").await;
    assert_eq!(summary(&t), vec![(TransitionKind::Recovered, "a".into())]);

    // A crash and a new process under the same name: Suspect, then Restarted.
    a.abandon();
    until(&mut events, TransitionKind::Suspect, "a").await;
    let (a2, _) = join(&cluster, "a", 2).await;
    let t = until(&mut events, TransitionKind::Restarted, "a").await;
    assert_eq!(t.last().unwrap().member.incarnation, Incarnation(2));

    // A graceful leave: Left, and the member is gone from the view.
    a2.leave().await.unwrap();
    until(&mut events, TransitionKind::Left, "a").await;
    assert!(master.member("a").is_none());

    // A crash that stays down: Suspect, then after reap_after, Failed.
    let (b, _) = join(&cluster, "b", 3).await;
    until(&mut events, TransitionKind::Joined, "b").await;
    b.abandon();
    let suspect = until(&mut events, TransitionKind::Suspect, "b").await;
    let failed = until(&mut events, TransitionKind::Failed, "b").await;
    let waited = failed[0].at - suspect.last().unwrap().at;
    assert!(
        waited >= REAP,
        "reaped after {waited:?}, before reap_after {REAP:?}"
    );
    assert_eq!(master.health().reaps, 1);
    assert_eq!(states(&master.view()), truth(&cluster.client()).await);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_watch_resumes_without_losing_or_repeating_events() {
    let cluster = MemCluster::new();
    let master_store = cluster.client();
    let master = Master::start(master_store.clone(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let (_a, _) = join(&cluster, "a", 1).await;
    until(&mut events, TransitionKind::Joined, "a").await;

    cluster.partition(master_store.id());
    let (_b, _) = join(&cluster, "b", 2).await;
    let (c, _) = join(&cluster, "c", 3).await;
    c.leave().await.unwrap();
    cluster.heal(master_store.id());

    let got = until(&mut events, TransitionKind::Left, "c").await;
    assert_eq!(
        summary(&got),
        vec![
            (TransitionKind::Joined, "b".into()),
            (TransitionKind::Joined, "c".into()),
            (TransitionKind::Left, "c".into()),
        ]
    );
    let health = master.health();
    assert!(health.reconnects >= 1, "{health:?}");
    assert_eq!(
        health.resyncs, 0,
        "history was there: resumed, not relisted"
    );
    assert_eq!(states(&master.view()), truth(&cluster.client()).await);
}

#[tokio::test(start_paused = true)]
async fn after_compaction_it_lists_again_and_explains_the_difference() {
    let cluster = MemCluster::new();
    let master_store = cluster.client();
    let master = Master::start(master_store.clone(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let (a, _) = join(&cluster, "a", 1).await;
    let (b, _) = join(&cluster, "b", 2).await;
    let (c, _) = join(&cluster, "c", 3).await;
    until(&mut events, TransitionKind::Joined, "c").await;

    cluster.partition(master_store.id());
    a.leave().await.unwrap(); // alive -> gone, unseen: Removed (the relist cannot say why)
    b.update(info("b").cpus(3)).await.unwrap(); // Updated
    c.abandon(); // Suspect once the lease expires
    let observer = cluster.client();
    let c_key = Keyspace::new(PREFIX).unwrap().liveness_key("c");
    let mut watch = observer
        .watch(&c_key, cluster.revision() + 1)
        .await
        .unwrap();
    futures_next(&mut watch).await; // the expiry of c's lease
    let (_d, _) = join(&cluster, "d", 4).await; // Joined
    cluster.compact(cluster.revision()).unwrap();
    cluster.heal(master_store.id());

    let mut got = until(&mut events, TransitionKind::Suspect, "c").await;
    got.extend(until(&mut events, TransitionKind::Joined, "d").await);
    got.sort_by(|x, y| x.member.name().cmp(y.member.name()));
    assert_eq!(
        summary(&got),
        vec![
            (TransitionKind::Removed, "a".into()),
            (TransitionKind::Updated, "b".into()),
            (TransitionKind::Suspect, "c".into()),
            (TransitionKind::Joined, "d".into()),
        ]
    );
    assert_eq!(master.health().resyncs, 1);
    assert_eq!(states(&master.view()), truth(&observer).await);
}

async fn futures_next(stream: &mut muster_core::WatchStream) -> muster_core::WatchBatch {
    use futures::StreamExt;
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("no watch event in time")
        .expect("watch ended")
        .expect("watch failed")
}

#[tokio::test(start_paused = true)]
async fn two_masters_reap_once_and_both_report_failed() {
    let cluster = MemCluster::new();
    let m1 = Master::start(cluster.client(), master_config(1)).unwrap();
    let m2 = Master::start(cluster.client(), master_config(2)).unwrap();
    let (mut e1, mut e2) = (m1.subscribe(), m2.subscribe());
    let (a, _) = join(&cluster, "a", 1).await;
    a.abandon();
    let f1 = until(&mut e1, TransitionKind::Failed, "a").await;
    let f2 = until(&mut e2, TransitionKind::Failed, "a").await;
    assert_eq!(f1.last().unwrap().revision, f2.last().unwrap().revision);
    assert_eq!(
        m1.health().reaps + m2.health().reaps,
        1,
        "exactly one reap won"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_master_rebuilds_the_same_view() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let (_a, _) = join(&cluster, "a", 1).await;
    let (b, _) = join(&cluster, "b", 2).await;
    b.abandon();
    let before = wait(&master, "b suspect", |v| {
        v.state_of("b") == Some(MemberState::Suspect)
    })
    .await;
    master.shutdown().await;

    let again = Master::start(cluster.client(), master_config(1)).unwrap();
    let after = again.ready().await.expect("the master stopped");
    assert_eq!(states(&after), states(&before));
    assert_eq!(after.get("b").unwrap().incarnation, Incarnation(2));
}

#[tokio::test(start_paused = true)]
async fn malformed_values_are_skipped_and_counted_while_the_master_keeps_working() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let ks = Keyspace::new(PREFIX).unwrap();
    let other = cluster.client();
    other
        .txn(Txn::new().put(ks.record_key("junk"), b"{not json".to_vec(), 0))
        .await
        .unwrap();
    other
        .txn(Txn::new().put(format!("{PREFIX}unrelated/x"), b"whatever".to_vec(), 0))
        .await
        .unwrap();
    let (_a, _) = join(&cluster, "a", 1).await;
    let got = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(master.health().skipped, 1);
    assert!(master.member("junk").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_subscription_joins_its_snapshot_without_gap_or_overlap() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    master.ready().await.expect("the master stopped");
    let (_a, _) = join(&cluster, "a", 1).await;
    wait(&master, "a alive", |v| {
        v.state_of("a") == Some(MemberState::Alive)
    })
    .await;
    let mut events = master.subscribe();
    assert_eq!(
        states(&events.snapshot),
        vec![("a".into(), MemberState::Alive)]
    );
    let (_b, _) = join(&cluster, "b", 2).await;
    let got = until(&mut events, TransitionKind::Joined, "b").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "b".into())]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_prefix_is_a_clear_error() {
    let cluster = MemCluster::new();
    let err = Master::start(cluster.client(), MasterConfig::new("")).unwrap_err();
    assert!(
        matches!(
            err,
            muster_master::Error::Invalid(muster_core::Error::InvalidPrefix { .. })
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_replaced_by_an_empty_one_is_noticed_and_the_view_rebuilt() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    let (_a, _) = join(&cluster, "a", 1).await;
    let (_b, _) = join(&cluster, "b", 2).await;
    let (c, _) = join(&cluster, "c", 3).await;
    until(&mut events, TransitionKind::Joined, "c").await;
    // Push the old store's revision well past where the new one will be after re-registration.
    for i in 0..20 {
        c.update(info("c").cpus(i)).await.unwrap();
    }
    until(&mut events, TransitionKind::Updated, "c").await;
    c.abandon();
    let old_epoch = master.view().epoch;
    let mut raw = master.subscribe();

    // etcd is replaced by an empty one: every key, lease and revision gone.
    cluster.wipe();
    let view = wait(&master, "the store replacement handled", |v| {
        v.synced && v.revision > 0 && v.get("c").is_none() && v.revision < 10
    })
    .await;
    assert_eq!(
        master.health().store_replacements,
        1,
        "{:?}",
        master.health()
    );
    // The healthy workers re-registered on the new store and are alive; the crashed one is gone.
    assert_eq!(
        states(&view),
        vec![
            ("a".into(), MemberState::Alive),
            ("b".into(), MemberState::Alive)
        ]
    );
    assert_eq!(states(&view), truth(&cluster.client()).await);
    // A new history of the store: a new epoch, on the view and on every position after.
    assert_ne!(view.epoch, old_epoch, "the replaced store is a new epoch");
    let mut synced_in_new = false;
    while let Some(event) = raw.try_next() {
        match event {
            Event::Transition { position, .. } => {
                assert_eq!(position.epoch, view.epoch, "a position after the wipe")
            }
            Event::Synced { epoch, .. } => synced_in_new |= epoch == view.epoch,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        synced_in_new,
        "the relist's synced marker names the new epoch"
    );
    // Healthy workers were never reported missing: no Left, Suspect, Failed or Removed for
    // a or b. The crashed c is gone, and the master cannot know why: Removed, not Left.
    let mut c_removed = false;
    while let Some(t) = events.try_next_transition().expect("the subscriber lagged") {
        if t.member.name() != "c" {
            assert!(
                !matches!(
                    t.kind,
                    TransitionKind::Left
                        | TransitionKind::Suspect
                        | TransitionKind::Failed
                        | TransitionKind::Removed
                ),
                "healthy worker reported missing: {:?} {}",
                t.kind,
                t.member.name()
            );
        } else {
            assert_ne!(t.kind, TransitionKind::Left, "c never left");
            c_removed |= t.kind == TransitionKind::Removed;
        }
    }
    assert!(c_removed, "c's disappearance is reported as removed");
    // And the master follows the new store from here.
    let (_d, _) = join(&cluster, "d", 4).await;
    until(&mut events, TransitionKind::Joined, "d").await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_makes_the_master_unhealthy_and_it_catches_up_afterwards() {
    let cluster = MemCluster::new();
    let master_store = cluster
        .client()
        .with_request_timeout(Duration::from_millis(500));
    let master = Master::start(master_store.clone(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    cluster.hang(master_store.id());
    let (_a, _) = join(&cluster, "a", 1).await;
    let health = tokio::time::timeout(
        DEADLINE,
        master.wait_until_health(|h| !h.watching && h.unhealthy_since.is_some()),
    )
    .await
    .expect("the master never noticed the hung store")
    .expect("the master stopped");
    // The store's own words, not a master-made timeout: which call, how long, and why.
    let last_error = health.last_error.as_deref().unwrap_or("");
    assert!(
        last_error.contains("no answer within 500ms")
            && last_error.contains(&format!("{} is hung", master_store.id())),
        "{health:?}"
    );
    cluster.unhang(master_store.id());
    until(&mut events, TransitionKind::Joined, "a").await;
    let health = master.health();
    assert!(
        health.watching && health.unhealthy_since.is_none(),
        "{health:?}"
    );
}

/// A store whose first watch is stuck: it delivers nothing and never ends, as a watch on an
/// etcd member cut off from its cluster would, while every other call works.
struct FirstWatchStuck {
    inner: MemStore,
    stuck: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for FirstWatchStuck {
    async fn grant(&self, ttl: Duration) -> muster_core::Result<muster_core::Lease> {
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: i64, within: Duration) -> muster_core::Result<Duration> {
        self.inner.keep_alive(lease, within).await
    }
    async fn revoke(&self, lease: i64) -> muster_core::Result<()> {
        self.inner.revoke(lease).await
    }
    async fn txn(&self, txn: Txn) -> muster_core::Result<muster_core::TxnOutcome> {
        self.inner.txn(txn).await
    }
    async fn get(&self, key: &str) -> muster_core::Result<Option<muster_core::KeyValue>> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> muster_core::Result<muster_core::Listing> {
        self.inner.list(prefix).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> muster_core::Result<muster_core::WatchStream> {
        if self.stuck.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(Box::pin(futures::stream::pending()));
        }
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: i64) -> muster_core::Result<()> {
        self.inner.compact(revision).await
    }
    async fn status(&self) -> muster_core::Result<muster_core::StoreStatus> {
        self.inner.status().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_silently_stuck_watch_is_noticed_and_reopened() {
    let cluster = MemCluster::new();
    let store = FirstWatchStuck {
        inner: cluster.client(),
        stuck: true.into(),
    };
    let master =
        Master::start(store, master_config(1).stall_check(Duration::from_secs(5))).unwrap();
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let (_a, _) = join(&cluster, "a", 1).await;
    let got = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(master.health().watch_refreshes, 1, "{:?}", master.health());
}

#[tokio::test(start_paused = true)]
async fn an_evicted_live_worker_is_left_stops_for_good_and_a_new_process_takes_the_name() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    let (a, _) = join(&cluster, "a", 1).await;
    let mut status = a.status();
    until(&mut events, TransitionKind::Joined, "a").await;

    let eviction = muster_master::evict(&cluster.client(), PREFIX, "a", HOLD)
        .await
        .unwrap();
    assert_eq!(eviction.was, MemberState::Alive);
    assert_eq!(eviction.blocked, Incarnation(1));
    assert_eq!(eviction.hold, HOLD);
    assert!(eviction.lease_revoked);
    let left = until(&mut events, TransitionKind::Left, "a").await;
    assert_eq!(left.last().unwrap().revision, eviction.revision);
    // Its lease was revoked: the worker notices, its registration meets the marker, it stops.
    let noticed = tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| {
            *s == muster_worker::Status::Evicted {
                revision: eviction.revision,
            }
        }),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        noticed == Ok(true),
        "the worker never noticed its eviction: {:?}",
        *status.borrow()
    );
    let err = a.update(info("a")).await.unwrap_err();
    assert!(matches!(err, muster_worker::Error::Evicted { .. }), "{err}");

    // A new process takes the name while the marker still holds; nothing came in between.
    let (b, store) = join(&cluster, "a", 2).await;
    let got = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(got[0].member.incarnation, Incarnation(2));
    assert!(store.get(&eviction.marker).await.unwrap().is_some());
    assert!(
        master.health().bad_keys.is_empty(),
        "a marker is no bad key: {:?}",
        master.health()
    );
    b.leave().await.unwrap();
    until(&mut events, TransitionKind::Left, "a").await;
}

#[tokio::test(start_paused = true)]
async fn an_evicted_suspect_member_is_failed_and_its_process_is_refused_when_it_returns() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    let (a, store) = join(&cluster, "a", 1).await;
    let mut status = a.status();
    until(&mut events, TransitionKind::Joined, "a").await;
    cluster.partition(store.id());
    until(&mut events, TransitionKind::Suspect, "a").await;

    let eviction = muster_master::evict(&cluster.client(), PREFIX, "a", HOLD)
        .await
        .unwrap();
    assert_eq!(eviction.was, MemberState::Suspect);
    assert!(!eviction.lease_revoked, "a suspect member has no lease");
    until(&mut events, TransitionKind::Failed, "a").await;

    cluster.heal(store.id());
    let noticed = tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| matches!(s, muster_worker::Status::Evicted { .. })),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        noticed == Ok(true),
        "the returning worker was not refused: {:?}",
        *status.borrow()
    );
    // Nothing of it reached the view: the next transition is the new process's.
    let (_b, _) = join(&cluster, "a", 2).await;
    let got = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "a".into())]);
    assert_eq!(got[0].member.incarnation, Incarnation(2));
}

#[tokio::test(start_paused = true)]
async fn evicting_one_member_of_a_group_leaves_its_siblings_alone() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), master_config(1)).unwrap();
    let mut events = master.subscribe();
    let group = muster_worker::WorkerGroup::start(cluster.client(), worker_config(1))
        .await
        .unwrap();
    for result in group.add_many(["a", "b", "c"].map(info)).await {
        result.unwrap();
    }
    until(&mut events, TransitionKind::Joined, "c").await;
    let mut members = group.members();

    let eviction = muster_master::evict(&cluster.client(), PREFIX, "b", HOLD)
        .await
        .unwrap();
    assert!(eviction.lease_shared, "{eviction:?}");
    assert!(!eviction.lease_revoked, "the shared lease carries a and c");
    let got = until(&mut events, TransitionKind::Left, "b").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Left, "b".into())]);
    let noticed = tokio::time::timeout(
        DEADLINE,
        members.wait_for(|m| {
            m.get("b")
                == Some(&muster_worker::MemberStatus::Evicted {
                    revision: eviction.revision,
                })
        }),
    )
    .await
    .map(|r| r.is_ok());
    assert_eq!(noticed, Ok(true), "{:?}", *members.borrow());

    // Many TTLs later: a and c are still alive, nothing else happened, b stayed out.
    tokio::time::sleep(TTL * 5).await;
    let view = master.view();
    let states: Vec<(String, MemberState)> = view
        .members
        .values()
        .map(|m| (m.info.name.clone(), m.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_string(), MemberState::Alive),
            ("c".to_string(), MemberState::Alive)
        ]
    );
    assert!(
        matches!(events.try_next_transition(), Ok(None)),
        "no transition since the eviction"
    );

    // A crash of the group: both turn suspect in one revision.
    group.abandon();
    let got = until(&mut events, TransitionKind::Suspect, "c").await;
    let suspects: Vec<&Transition> = got
        .iter()
        .filter(|t| t.kind == TransitionKind::Suspect)
        .collect();
    assert_eq!(suspects.len(), 2, "{got:?}");
    assert_eq!(suspects[0].revision, suspects[1].revision, "{got:?}");
}
