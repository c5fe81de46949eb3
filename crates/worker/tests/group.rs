//! [`WorkerGroup`] on the in-memory backend, under tokio's paused clock: many members on one
//! lease. Waits are on status changes and store events with deadlines; simulated time passes
//! only where the test is about time (a TTL running out).

use std::time::Duration;

use futures::StreamExt;
use muster_core::{
    EventKind, Incarnation, Keyspace, Liveness, MemberInfo, Membership, Record, Store, Transition,
    TransitionKind, WatchStream,
};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{Error, MemberStatus, OnDuplicate, Status, Worker, WorkerConfig, WorkerGroup};
use tokio::sync::watch;

const PREFIX: &str = "/t/";
const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(60);

fn config(incarnation: u64) -> WorkerConfig {
    WorkerConfig::new(PREFIX)
        .ttl(TTL)
        .incarnation(Incarnation(incarnation))
}

fn info(name: &str) -> MemberInfo {
    MemberInfo::new(name, "10.0.0.1:80").cpus(2)
}

fn slots(n: usize) -> Vec<MemberInfo> {
    (0..n).map(|i| info(&format!("slot-{i}"))).collect()
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

async fn add_all(group: &WorkerGroup, infos: Vec<MemberInfo>) {
    for (i, result) in group.add_many(infos).await.into_iter().enumerate() {
        result.unwrap_or_else(|e| panic!("member {i}: {e}"));
    }
}

/// Waits (with a deadline) until `rx`'s value satisfies `pred`.
async fn wait<T: std::fmt::Debug>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    pred: impl Fn(&T) -> bool,
) {
    let waited = tokio::time::timeout(DEADLINE, rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.is_ok());
    if waited != Ok(true) {
        panic!("never {what}; last: {:?}", *rx.borrow());
    }
}

/// A master's view of the group, on a client of its own: `muster_core::Membership` (the
/// state machine a master runs) fed a listing, then the watch from there.
struct Master {
    machine: Membership,
    watch: WatchStream,
    transitions: Vec<Transition>,
}

impl Master {
    async fn start(store: &MemStore) -> Self {
        let listing = store.list(PREFIX).await.unwrap();
        let mut machine = Membership::new(keys(), None);
        machine.resync(&listing, std::time::Instant::now());
        let watch = store.watch(PREFIX, listing.revision + 1).await.unwrap();
        Self {
            machine,
            watch,
            transitions: Vec::new(),
        }
    }

    /// How `name` went, as the master reports it: waits (with a deadline) for its first
    /// `Left`, `Suspect` or `Failed` transition.
    async fn fate(&mut self, name: &str) -> TransitionKind {
        use TransitionKind::{Failed, Left, Suspect};
        loop {
            if let Some(t) = self
                .transitions
                .iter()
                .find(|t| t.member.name() == name && matches!(t.kind, Left | Suspect | Failed))
            {
                return t.kind;
            }
            let batch = tokio::time::timeout(DEADLINE, self.watch.next())
                .await
                .unwrap_or_else(|_| panic!("{name} never left nor turned suspect"))
                .expect("a batch")
                .expect("no watch error");
            let step = self.machine.apply(&batch, std::time::Instant::now());
            self.transitions.extend(step.transitions);
        }
    }
}

/// Evicts `name` as `muster_master::evict` does for a member on a shared lease: the marker
/// and the deletes in one revision, the lease left alone. Returns the eviction's revision.
async fn evict(store: &MemStore, name: &str) -> i64 {
    let ks = keys();
    let record = store.get(&ks.record_key(name)).await.unwrap().unwrap();
    let live = store.get(&ks.liveness_key(name)).await.unwrap().unwrap();
    let liveness = Liveness::from_json(&live.key, &live.value).unwrap();
    assert!(
        liveness.shared,
        "a group member's liveness says its lease is shared"
    );
    let hold = store.grant(Duration::from_secs(30)).await.unwrap();
    let marker = muster_core::EvictionMarker {
        incarnation: liveness.incarnation,
        at_unix_ms: 0,
        hold_ms: 30_000,
    };
    let txn = ks.evict_txn(
        name,
        record.mod_revision,
        Some(live.mod_revision),
        &marker,
        hold.id,
    );
    let outcome = store.txn(txn).await.unwrap();
    assert!(outcome.succeeded, "the eviction's guards held");
    outcome.revision
}

#[tokio::test(start_paused = true)]
async fn every_member_is_registered_on_the_one_lease_with_a_shared_liveness() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(7)).await.unwrap();
    add_all(&group, slots(100)).await;
    assert_eq!(cluster.leases(), 1, "one lease for the whole group");
    let mut leases = std::collections::BTreeSet::new();
    for i in 0..100 {
        let name = format!("slot-{i}");
        let (live, lease) = liveness(&store, &name).await.expect("registered");
        assert_eq!(live.incarnation, Incarnation(7));
        assert!(live.shared);
        leases.insert(lease);
        let record = record(&store, &name).await.expect("a record");
        assert_eq!(record.info, info(&name));
    }
    assert_eq!(leases.len(), 1);
    let members = group.members().borrow().clone();
    assert_eq!(members.len(), 100);
    assert!(members
        .values()
        .all(|s| matches!(s, MemberStatus::Registered { .. })));
    // Many TTLs later everything still stands, on the same single lease.
    tokio::time::sleep(TTL * 10).await;
    assert!(liveness(&store, "slot-99").await.is_some());
    assert_eq!(cluster.leases(), 1);
    assert!(group.status().borrow().is_registered());
}

#[tokio::test(start_paused = true)]
async fn a_crashed_group_loses_every_liveness_key_in_one_revision_and_keeps_the_records() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let observer = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(50)).await;
    let from = cluster.revision() + 1;
    let alive = format!("{PREFIX}alive/");
    let mut watch = observer.watch(&alive, from).await.unwrap();

    group.abandon();
    let batch = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .expect("the lease expired")
        .expect("a batch")
        .expect("no watch error");
    assert_eq!(batch.events.len(), 50, "all 50 in the first batch");
    let revisions: std::collections::BTreeSet<_> =
        batch.events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions.len(), 1, "one revision: {revisions:?}");
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    assert!(
        record(&observer, "slot-0").await.is_some(),
        "records stay: Suspect"
    );
}

#[tokio::test(start_paused = true)]
async fn an_evicted_member_stops_and_its_siblings_keep_the_lease() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let operator = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(3)).await.unwrap();
    add_all(&group, slots(3)).await;
    let (_, lease) = liveness(&operator, "slot-0").await.unwrap();
    let mut members = group.members();

    let revision = evict(&operator, "slot-1").await;
    wait(&mut members, "evicted", |m| {
        m.get("slot-1") == Some(&MemberStatus::Evicted { revision })
    })
    .await;
    // Calls on it say so; its siblings are untouched on the same lease.
    let err = group
        .update(info("slot-1").label("v", "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotInGroup { .. }), "{err}");
    let watched_from = cluster.revision() + 1;
    tokio::time::sleep(TTL * 5).await;
    for name in ["slot-0", "slot-2"] {
        let (_, now) = liveness(&operator, name).await.expect("still alive");
        assert_eq!(now, lease, "{name} kept the lease");
    }
    assert!(liveness(&operator, "slot-1").await.is_none());
    assert!(record(&operator, "slot-1").await.is_none());
    // Nothing was written for the evicted member since.
    let listing = operator.list(PREFIX).await.unwrap();
    assert!(listing
        .kvs
        .iter()
        .filter(|kv| kv.key.ends_with("/slot-1"))
        .all(|kv| kv.mod_revision < watched_from));
    // A new process may take the name at once.
    let newcomer = Worker::register(operator.clone(), info("slot-1"), config(4)).await;
    assert!(newcomer.is_ok(), "{newcomer:?}");
}

#[tokio::test(start_paused = true)]
async fn an_evicted_member_is_noticed_after_the_eviction_watch_breaks() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let operator = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(3)).await.unwrap();
    add_all(&group, slots(2)).await;
    let mut members = group.members();
    assert_eq!(
        cluster.drop_watches(store.id()),
        1,
        "the group watches its markers"
    );
    let revision = evict(&operator, "slot-0").await;
    wait(&mut members, "evicted", |m| {
        m.get("slot-0") == Some(&MemberStatus::Evicted { revision })
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn remove_deletes_one_member_in_one_revision_and_leaves_the_rest() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(3)).await;
    let before = cluster.revision();
    group.remove("slot-1").await.unwrap();
    assert_eq!(cluster.revision(), before + 1, "both keys in one revision");
    assert!(record(&store, "slot-1").await.is_none());
    assert!(liveness(&store, "slot-1").await.is_none());
    assert!(liveness(&store, "slot-0").await.is_some());
    assert!(!group.members().borrow().contains_key("slot-1"));
    let err = group.remove("slot-1").await.unwrap_err();
    assert!(matches!(err, Error::NotInGroup { .. }), "{err}");
    assert!(err.to_string().contains("not in this group"), "{err}");
    // It may come back.
    group.add(info("slot-1")).await.unwrap();
    assert!(liveness(&store, "slot-1").await.is_some());
}

#[tokio::test(start_paused = true)]
async fn update_and_drain_rewrite_one_record() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(2)).await;
    group.update(info("slot-0").label("v", "2")).await.unwrap();
    assert_eq!(
        record(&store, "slot-0").await.unwrap().info,
        info("slot-0").label("v", "2")
    );
    group.drain("slot-0").await.unwrap();
    assert!(record(&store, "slot-0").await.unwrap().info.draining);
    // Draining lasts until the leave.
    group.update(info("slot-0").label("v", "3")).await.unwrap();
    assert!(record(&store, "slot-0").await.unwrap().info.draining);
    assert!(!record(&store, "slot-1").await.unwrap().info.draining);
    let err = group.drain("nobody").await.unwrap_err();
    assert!(matches!(err, Error::NotInGroup { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn bad_members_and_names_held_elsewhere_are_refused_one_by_one() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let _other = Worker::register(store.clone(), info("taken"), config(9))
        .await
        .unwrap();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    let results = group
        .add_many([
            info("ok"),
            info("bad name"),
            info("taken"),
            MemberInfo::new("bad-addr", "not-an-addr"),
        ])
        .await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(Error::Invalid(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(
            results[2],
            Err(Error::DuplicateName {
                holder: Incarnation(9),
                ..
            })
        ),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(Error::Invalid(_))),
        "{:?}",
        results[3]
    );
    let err = group.add(info("ok")).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInGroup { .. }), "{err}");
    let members: Vec<String> = group.members().borrow().keys().cloned().collect();
    assert_eq!(
        members,
        ["ok", "taken"],
        "the refused duplicate stays visible as failed"
    );
    assert!(matches!(
        group.members().borrow()["taken"],
        MemberStatus::Failed { .. }
    ));
    assert!(liveness(&store, "bad-addr").await.is_none());
}

#[tokio::test(start_paused = true)]
async fn with_the_wait_policy_a_member_takes_its_name_once_the_holder_is_gone() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let old = Worker::register(store.clone(), info("slot-0"), config(9))
        .await
        .unwrap();
    let group = WorkerGroup::start(store.clone(), config(1).on_duplicate(OnDuplicate::Wait))
        .await
        .unwrap();
    group.add(info("slot-0")).await.unwrap();
    let mut members = group.members();
    assert_eq!(
        members.borrow()["slot-0"],
        MemberStatus::WaitingForName {
            holder: Incarnation(9)
        }
    );
    old.abandon();
    wait(&mut members, "registered", |m| {
        matches!(m.get("slot-0"), Some(MemberStatus::Registered { .. }))
    })
    .await;
    let (live, _) = liveness(&store, "slot-0").await.unwrap();
    assert_eq!(live.incarnation, Incarnation(1));
}

#[tokio::test(start_paused = true)]
async fn after_a_partition_longer_than_the_ttl_every_member_registers_again_on_one_new_lease() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let observer = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(20)).await;
    let (_, old_lease) = liveness(&observer, "slot-0").await.unwrap();
    let mut status = group.status();

    cluster.partition(store.id());
    wait(&mut status, "reconnecting", |s| {
        matches!(s, Status::Reconnecting { .. })
    })
    .await;
    // The lease runs out: every member is Suspect.
    let alive = observer.list(&format!("{PREFIX}alive/")).await.unwrap();
    let expired = async {
        let mut watch = observer
            .watch(&format!("{PREFIX}alive/"), alive.revision + 1)
            .await
            .unwrap();
        watch.next().await
    };
    tokio::time::timeout(DEADLINE, expired)
        .await
        .expect("the lease expired");
    // An update during the outage is kept and written with the registration.
    let err = group
        .update(info("slot-3").label("v", "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");

    cluster.heal(store.id());
    wait(&mut status, "re-registered", |s| {
        matches!(s, Status::Reregistered { .. })
    })
    .await;
    let mut leases = std::collections::BTreeSet::new();
    for i in 0..20 {
        let (_, lease) = liveness(&observer, &format!("slot-{i}"))
            .await
            .expect("back");
        leases.insert(lease);
    }
    assert_eq!(leases.len(), 1, "one new lease: {leases:?}");
    assert!(!leases.contains(&old_lease));
    assert_eq!(
        record(&observer, "slot-3").await.unwrap().info,
        info("slot-3").label("v", "2")
    );
}

#[tokio::test(start_paused = true)]
async fn leave_deletes_every_member_and_revokes_the_lease() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(10)).await;
    let status = group.status();
    group.leave().await.unwrap();
    assert_eq!(*status.borrow(), Status::Left);
    let listing = store.list(PREFIX).await.unwrap();
    assert!(listing.kvs.is_empty(), "{:?}", listing.kvs);
    assert_eq!(cluster.leases(), 0, "the lease is revoked");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_leaves() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(4)).await;
    let mut status = group.status();
    drop(group);
    wait(&mut status, "left", |s| *s == Status::Left).await;
    let listing = store.list(PREFIX).await.unwrap();
    assert!(listing.kvs.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_leave_meets_a_failed_call_still_leaves() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(3)).await;
    let mut master = Master::start(&cluster.client()).await;

    // The first member's leave transaction fails (a blip); the group retries it.
    cluster.fail_next(store.id(), 1);
    let result = group.leave().await;
    for i in 0..3 {
        let name = format!("slot-{i}");
        assert_eq!(master.fate(&name).await, TransitionKind::Left, "{name}");
    }
    result.expect("the leave succeeded on a retry");
    let listing = store.list(PREFIX).await.unwrap();
    assert!(listing.kvs.is_empty(), "{:?}", listing.kvs);
    assert_eq!(cluster.leases(), 0, "the lease is revoked");
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_remove_meets_a_failed_call_still_leaves() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(3)).await;
    let (_, lease) = liveness(&store, "slot-0").await.unwrap();
    let mut master = Master::start(&cluster.client()).await;

    cluster.fail_next(store.id(), 1);
    group
        .remove("slot-1")
        .await
        .expect("the remove succeeded on a retry");
    assert_eq!(master.fate("slot-1").await, TransitionKind::Left);
    assert!(record(&store, "slot-1").await.is_none());
    assert!(!group.members().borrow().contains_key("slot-1"));
    // The others stay, on the same lease.
    for name in ["slot-0", "slot-2"] {
        let (_, now) = liveness(&store, name).await.expect("still alive");
        assert_eq!(now, lease, "{name}");
    }
    assert!(group.status().borrow().is_registered());
}

#[tokio::test(start_paused = true)]
async fn a_remove_retried_past_a_tick_keeps_renewing_the_lease() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(3)).await;
    let (_, lease) = liveness(&store, "slot-0").await.unwrap();
    let mut status = group.status();

    // Five failed calls: the remove's retries alone would take at least 0.68 s (backoff
    // delays are at least half of 0.1, 0.2, 0.4, 0.67 s), longer than the keep-alive
    // interval (TTL/3), so the group's renewal falls due while the remove is retrying. It
    // runs then (and fails: only a renewal reports `Reconnecting`), rather than after it.
    cluster.fail_next(store.id(), 5);
    let (removed, ()) = tokio::join!(
        group.remove("slot-1"),
        wait(&mut status, "reconnecting", |s| {
            matches!(s, Status::Reconnecting { .. })
        })
    );
    removed.expect("the remove succeeded on a retry");
    assert!(record(&store, "slot-1").await.is_none());
    wait(&mut status, "registered again", |s| s.is_registered()).await;
    for name in ["slot-0", "slot-2"] {
        let (_, now) = liveness(&store, name).await.expect("still alive");
        assert_eq!(now, lease, "{name} kept the lease");
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_whose_leave_keeps_failing_is_reported_failed_after_a_ttl() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(2)).await;
    let members = group.members();
    let status = group.status();

    cluster.partition(store.id());
    let err = tokio::time::timeout(DEADLINE, group.leave())
        .await
        .expect("the retries are bounded")
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert_eq!(*status.borrow(), Status::Left, "the group stopped");
    let members = members.borrow().clone();
    assert_eq!(members.len(), 2, "{members:?}");
    for (name, member) in &members {
        match member {
            MemberStatus::Failed { error } => {
                assert!(error.contains("could not leave"), "{name}: {error}");
                assert!(error.contains("Suspect"), "{name}: {error}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_leave_on_a_hung_store_gives_up_after_a_ttl_and_one_call_not_per_member() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    // More members than the group leaves at once (64): several rounds of calls.
    add_all(&group, slots(200)).await;
    let members = group.members();

    // Every call hangs until the client's request timeout (5 s, more than the TTL).
    cluster.hang(store.id());
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(DEADLINE, group.leave())
        .await
        .expect("the retries are bounded")
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    // The first round's calls fail after the TTL ran out; the members not tried yet are
    // not tried any more (a round per 64 members would take 4 x 5 s). Then the revoke
    // hangs too.
    let took = started.elapsed();
    let timeout = muster_mem_backend::DEFAULT_REQUEST_TIMEOUT;
    assert!(took <= TTL + 2 * timeout, "took {took:?}");
    let members = members.borrow().clone();
    assert_eq!(members.len(), 200);
    assert!(members
        .values()
        .all(|m| matches!(m, MemberStatus::Failed { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_command_is_served_while_the_eviction_watch_waits_to_watch_again() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let operator = cluster.client();
    let group = WorkerGroup::start(store.clone(), config(1)).await.unwrap();
    add_all(&group, slots(1)).await;

    // The eviction watch breaks, and the call that watches again fails: the group watches
    // again later (at its next tick).
    assert_eq!(cluster.drop_watches(store.id()), 1);
    cluster.fail_next(store.id(), 1);
    // Commands come first: this one (no store call) is served before the group meets the
    // broken watch. Once it is answered, the group has met the broken watch and the failed
    // call too (one thread: the group's task runs until it waits).
    let err = group.remove("nobody").await.unwrap_err();
    assert!(matches!(err, Error::NotInGroup { .. }), "{err}");
    assert_eq!(cluster.watches(), 0, "the group is between two watches");

    // A command now is served at once: the paused clock does not move (the old loop slept
    // until its next tick, a third of the TTL, before it read this command).
    let before = tokio::time::Instant::now();
    group.add(info("slot-1")).await.unwrap();
    assert_eq!(
        tokio::time::Instant::now(),
        before,
        "served without waiting for the watch's retry"
    );

    // The watch comes back, and an eviction is still noticed.
    let mut members = group.members();
    let revision = evict(&operator, "slot-0").await;
    wait(&mut members, "evicted", |m| {
        m.get("slot-0") == Some(&MemberStatus::Evicted { revision })
    })
    .await;
    assert!(matches!(
        members.borrow()["slot-1"],
        MemberStatus::Registered { .. }
    ));
}

/// A store whose transactions take `TXN_TIME` of (simulated) time: a busy etcd.
#[derive(Clone)]
struct Slow(MemStore);

const TXN_TIME: Duration = Duration::from_millis(50);

#[async_trait::async_trait]
impl Store for Slow {
    async fn grant(&self, ttl: Duration) -> muster_core::Result<muster_core::Lease> {
        self.0.grant(ttl).await
    }
    async fn keep_alive(
        &self,
        lease: muster_core::LeaseId,
        within: Duration,
    ) -> muster_core::Result<Duration> {
        self.0.keep_alive(lease, within).await
    }
    async fn revoke(&self, lease: muster_core::LeaseId) -> muster_core::Result<()> {
        self.0.revoke(lease).await
    }
    async fn txn(&self, txn: muster_core::Txn) -> muster_core::Result<muster_core::TxnOutcome> {
        tokio::time::sleep(TXN_TIME).await;
        self.0.txn(txn).await
    }
    async fn get(&self, key: &str) -> muster_core::Result<Option<muster_core::KeyValue>> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> muster_core::Result<muster_core::Listing> {
        self.0.list(prefix).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from: muster_core::Revision,
    ) -> muster_core::Result<WatchStream> {
        self.0.watch(prefix, from).await
    }
    async fn compact(&self, revision: muster_core::Revision) -> muster_core::Result<()> {
        self.0.compact(revision).await
    }
    async fn status(&self) -> muster_core::Result<muster_core::StoreStatus> {
        self.0.status().await
    }
}

/// Adding more members than one registration pass sends keeps the lease renewed throughout:
/// 4,096 members on a store whose transactions take 50 ms each (64 at a time: 3.2 s in all,
/// longer than the 2 s TTL) all register on the group's first lease, which never lapses
/// (a single pass used to hold the group's task past the TTL: the lease expired unrenewed
/// and every member registered again, past its register timeout).
#[tokio::test(start_paused = true)]
async fn a_large_add_keeps_the_lease_renewed_while_it_registers() {
    let cluster = MemCluster::new();
    let store = cluster.client();
    let group = WorkerGroup::start(Slow(store.clone()), config(7))
        .await
        .unwrap();
    let mut status = group.status();
    let first = match *status.borrow_and_update() {
        Status::Registered { lease, .. } => lease,
        ref other => panic!("a started group is registered: {other:?}"),
    };
    let started = tokio::time::Instant::now();
    tokio::time::timeout(DEADLINE, add_all(&group, slots(4096)))
        .await
        .expect("4,096 members registered within the deadline");
    assert!(
        started.elapsed() > TTL,
        "the registration outlasted a TTL, as the test means it to: {:?}",
        started.elapsed()
    );
    assert!(
        !status.has_changed().unwrap(),
        "the group's status never changed (no lost lease): {:?}",
        *status.borrow()
    );
    for name in ["slot-0", "slot-2048", "slot-4095"] {
        let (_, lease) = liveness(&store, name).await.expect("registered");
        assert_eq!(lease, first, "{name} is on the group's first lease");
    }
    assert_eq!(cluster.leases(), 1, "one lease, never replaced");
}
