//! The callers' view: [`Discover`]'s changes and [`EndpointSet`]'s snapshots, one test per
//! rule of the `discover` module's table. On the in-memory backend under tokio's paused
//! clock (leases expire in simulated time).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use muster_core::{Incarnation, MemberInfo, MemberState};
use muster_master::{Change, Discover, EndpointSet, Filter, Master, MasterConfig, View};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{Worker, WorkerConfig};

const PREFIX: &str = "/g/";
const DEADLINE: Duration = Duration::from_secs(120);
const TTL: Duration = Duration::from_secs(2);

fn info(name: &str, zone: &str) -> MemberInfo {
    MemberInfo::new(name, "h:80").label("zone", zone)
}

async fn join_on(client: MemStore, info: MemberInfo, incarnation: u64) -> Worker {
    let config = WorkerConfig::new(PREFIX)
        .ttl(TTL)
        .incarnation(Incarnation(incarnation));
    Worker::register(client, info, config)
        .await
        .expect("register")
}

async fn join(cluster: &MemCluster, name: &str, zone: &str, incarnation: u64) -> Worker {
    join_on(cluster.client(), info(name, zone), incarnation).await
}

/// A change as `(+name)` / `(-name)`, to compare whole sequences.
fn show(change: &Change<String, muster_core::Member>) -> String {
    match change {
        Change::Insert(name, _) => format!("+{name}"),
        Change::Remove(name) => format!("-{name}"),
    }
}

async fn next(changes: &mut Discover) -> Change<String, muster_core::Member> {
    tokio::time::timeout(DEADLINE, changes.next())
        .await
        .expect("a change within the deadline")
        .expect("the master is running")
        .expect("discovery never fails")
}

/// The next `n` changes, shown.
async fn take(changes: &mut Discover, n: usize) -> Vec<String> {
    let mut shown = Vec::new();
    for _ in 0..n {
        shown.push(show(&next(changes).await));
    }
    shown
}

/// No change is waiting (every change the test expected has been taken).
fn nothing_waiting(changes: &mut Discover) {
    let more = futures::FutureExt::now_or_never(changes.next());
    assert!(more.is_none(), "unexpected change: {more:?}");
}

async fn until(master: &Master, what: &str, pred: impl FnMut(&View) -> bool) {
    tokio::time::timeout(DEADLINE, master.wait_until(pred))
        .await
        .unwrap_or_else(|_| panic!("the view never showed {what}"))
        .expect("the master stopped");
}

#[tokio::test(start_paused = true)]
async fn the_initial_set_comes_after_the_first_listing_then_one_change_per_rule() {
    let cluster = MemCluster::new();
    let _a = join(&cluster, "a", "z1", 1).await;
    let _b = join(&cluster, "b", "z2", 2).await;
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    // Created before the first listing: it gives nothing until the whole listing is in.
    let mut changes = master.discover(Filter::alive().label("zone", "z1"));
    assert!(!changes.is_synced());
    let first = next(&mut changes).await;
    assert_eq!(show(&first), "+a");
    assert!(changes.is_synced());
    match first {
        Change::Insert(_, member) => assert_eq!(member.state, MemberState::Alive),
        Change::Remove(_) => unreachable!(),
    }
    nothing_waiting(&mut changes);

    // joined and matching: Insert; joined and not matching: nothing.
    let c_client = cluster.client();
    let c = join_on(c_client.clone(), info("c", "z1"), 3).await;
    let _d = join(&cluster, "d", "z2", 4).await;
    assert_eq!(take(&mut changes, 1).await, ["+c"]);
    until(&master, "d", |v| v.get("d").is_some()).await;
    nothing_waiting(&mut changes);

    // updated and still matching: Insert with the new value.
    c.update(info("c", "z1").label("v", "2")).await.unwrap();
    match next(&mut changes).await {
        Change::Insert(name, member) => {
            assert_eq!(name, "c");
            assert_eq!(&member.info.labels["v"], "2");
        }
        other => panic!("expected an insert, got {other:?}"),
    }

    // suspect: Remove; recovered: Insert.
    cluster.partition(c_client.id());
    assert_eq!(take(&mut changes, 1).await, ["-c"]);
    assert_eq!(master.member("c").unwrap().state, MemberState::Suspect);
    cluster.heal(c_client.id());
    assert_eq!(take(&mut changes, 1).await, ["+c"]);

    // updated out of the filter: Remove; back into it: Insert.
    c.update(info("c", "z2")).await.unwrap();
    assert_eq!(take(&mut changes, 1).await, ["-c"]);
    c.update(info("c", "z1")).await.unwrap();
    assert_eq!(take(&mut changes, 1).await, ["+c"]);

    // left: Remove. A member outside the filter leaving: nothing.
    c.leave().await.unwrap();
    assert_eq!(take(&mut changes, 1).await, ["-c"]);
    let b_gone = _b.leave();
    b_gone.await.unwrap();
    until(&master, "b gone", |v| v.get("b").is_none()).await;
    nothing_waiting(&mut changes);
    assert_eq!(
        changes.members().keys().collect::<Vec<_>>(),
        ["a"],
        "the stream's own set follows its changes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_member_is_removed_at_suspect_and_not_again_when_reaped() {
    let cluster = MemCluster::new();
    let config = MasterConfig::new(PREFIX).reap_after(Some(Duration::from_secs(5)));
    let master = Master::start(cluster.client(), config).unwrap();
    master.ready().await.unwrap();
    let mut changes = master.discover(Filter::alive());
    let a = join(&cluster, "a", "z1", 1).await;
    assert_eq!(take(&mut changes, 1).await, ["+a"]);
    a.abandon();
    assert_eq!(take(&mut changes, 1).await, ["-a"]);
    until(&master, "a reaped", |v| v.get("a").is_none()).await;
    nothing_waiting(&mut changes);

    // A filter that keeps suspects too drops the member only when it is reaped (failed).
    let mut with_suspects = master.discover(Filter::any_state());
    let b = join(&cluster, "b", "z1", 2).await;
    assert_eq!(take(&mut with_suspects, 1).await, ["+b"]);
    b.abandon();
    match next(&mut with_suspects).await {
        Change::Insert(name, member) => {
            assert_eq!((name.as_str(), member.state), ("b", MemberState::Suspect))
        }
        other => panic!("expected b as suspect, got {other:?}"),
    }
    assert_eq!(take(&mut with_suspects, 1).await, ["-b"]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_replaces_the_member_in_place() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    master.ready().await.unwrap();
    let mut changes = master.discover(Filter::alive());
    let old = join(&cluster, "a", "z1", 1).await;
    assert_eq!(take(&mut changes, 1).await, ["+a"]);
    old.abandon();
    assert_eq!(take(&mut changes, 1).await, ["-a"]);
    // A new process under the same name: Insert with its incarnation.
    let _new = join(&cluster, "a", "z1", 2).await;
    match next(&mut changes).await {
        Change::Insert(name, member) => {
            assert_eq!((name.as_str(), member.incarnation), ("a", Incarnation(2)))
        }
        other => panic!("expected an insert, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_lagging_stream_catches_up_with_the_exact_difference() {
    let cluster = MemCluster::new();
    let config = MasterConfig::new(PREFIX).subscriber_buffer(2);
    let master = Master::start(cluster.client(), config).unwrap();
    master.ready().await.unwrap();
    let a = join(&cluster, "a", "z1", 1).await;
    let b = join(&cluster, "b", "z1", 2).await;
    let mut changes = master.discover(Filter::alive());
    assert_eq!(take(&mut changes, 2).await, ["+a", "+b"]);
    // Far more events than the buffer holds, none taken meanwhile: b left, c and d joined,
    // a changed, e joined and left.
    b.leave().await.unwrap();
    let _c = join(&cluster, "c", "z1", 3).await;
    let _d = join(&cluster, "d", "z1", 4).await;
    a.update(info("a", "z1").label("v", "2")).await.unwrap();
    let e = join(&cluster, "e", "z1", 5).await;
    e.leave().await.unwrap();
    until(&master, "e gone", |v| {
        v.get("e").is_none() && v.get("d").is_some()
    })
    .await;
    let mut shown = take(&mut changes, 4).await;
    shown.sort();
    assert_eq!(
        shown,
        ["+a", "+c", "+d", "-b"],
        "removals and inserts, e never"
    );
    nothing_waiting(&mut changes);
    let names: Vec<&String> = changes.members().keys().collect();
    assert_eq!(names, ["a", "c", "d"]);
    assert_eq!(&changes.members()["a"].info.labels["v"], "2");
}

#[tokio::test(start_paused = true)]
async fn a_resync_after_compaction_gives_the_difference_it_explains() {
    let cluster = MemCluster::new();
    let master_client = cluster.client();
    let master_id = master_client.id();
    let master = Master::start(master_client, MasterConfig::new(PREFIX)).unwrap();
    master.ready().await.unwrap();
    let a = join(&cluster, "a", "z1", 1).await;
    let _b = join(&cluster, "b", "z1", 2).await;
    let mut changes = master.discover(Filter::alive());
    until(&master, "a and b", |v| v.alive().count() == 2).await;
    assert_eq!(take(&mut changes, 2).await, ["+a", "+b"]);
    // The master is cut off; meanwhile a leaves, c joins, and the history is compacted
    // away, so the master must list again when it is back.
    cluster.partition(master_id);
    a.leave().await.unwrap();
    let _c = join(&cluster, "c", "z1", 3).await;
    cluster.compact(cluster.revision()).unwrap();
    cluster.heal(master_id);
    let mut shown = take(&mut changes, 2).await;
    shown.sort();
    assert_eq!(shown, ["+c", "-a"]);
    nothing_waiting(&mut changes);
    assert!(master.health().resyncs >= 1, "{:?}", master.health());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_set_publishes_once_per_change_and_ends_with_the_master() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    let mut set: EndpointSet = master.endpoints(Filter::alive().label("zone", "z1"));
    assert!(
        !set.peek().synced,
        "nothing is known before the first listing"
    );
    // An empty group is still a known set once listed.
    tokio::time::timeout(DEADLINE, set.wait_for(|e| e.synced))
        .await
        .expect("synced within the deadline")
        .expect("the master is running");
    assert!(set.current().members.is_empty());

    let a = join(&cluster, "a", "z1", 1).await;
    tokio::time::timeout(DEADLINE, set.changed())
        .await
        .unwrap()
        .unwrap();
    let endpoints = set.current();
    assert_eq!(endpoints.members.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(endpoints.revision, cluster.revision());

    // A member outside the filter changes nothing the set's readers see.
    let _b = join(&cluster, "b", "z2", 2).await;
    until(&master, "b", |v| v.get("b").is_some()).await;
    assert!(!set.has_changed(), "{:?}", set.peek());

    a.leave().await.unwrap();
    tokio::time::timeout(DEADLINE, set.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.current().members, BTreeMap::new());

    master.shutdown().await;
    let end = tokio::time::timeout(DEADLINE, set.changed()).await.unwrap();
    assert!(end.is_err(), "changed() fails once the master has stopped");
}

#[tokio::test(start_paused = true)]
async fn a_discover_stream_is_a_tower_discover_and_ends_with_the_master() {
    use tower::discover::Discover as _;
    let cluster = MemCluster::new();
    let _a = join(&cluster, "a", "z1", 1).await;
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    let mut changes = master.discover(Filter::alive());
    let first = futures::future::poll_fn(|cx| std::pin::Pin::new(&mut changes).poll_discover(cx));
    let first = tokio::time::timeout(DEADLINE, first).await.unwrap();
    assert_eq!(show(&first.unwrap().unwrap()), "+a");
    master.shutdown().await;
    let end = tokio::time::timeout(DEADLINE, changes.next())
        .await
        .unwrap();
    assert!(
        end.is_none(),
        "the stream ends when the master stops: {end:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_draining_member_is_removed_and_stays_out_until_it_leaves() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    master.ready().await.unwrap();
    let mut changes = master.discover(Filter::alive());
    let mut with_draining = master.discover(Filter::alive().draining(true));
    let mut events = master.subscribe();
    let a = join(&cluster, "a", "z1", 1).await;
    let _b = join(&cluster, "b", "z1", 2).await;
    assert_eq!(take(&mut changes, 2).await, ["+a", "+b"]);
    assert_eq!(take(&mut with_draining, 2).await, ["+a", "+b"]);

    a.drain().await.expect("drain");
    assert_eq!(take(&mut changes, 1).await, ["-a"]);
    match next(&mut with_draining).await {
        Change::Insert(name, member) => {
            assert_eq!(name, "a");
            assert!(member.info.draining, "the new value says draining");
            assert_eq!(member.state, MemberState::Alive, "still a member");
        }
        other => panic!("expected a's new value, got {other:?}"),
    }
    let kinds: Vec<_> = std::iter::from_fn(|| events.try_next_transition().unwrap())
        .map(|t| (t.kind, t.member.name().to_owned()))
        .collect();
    assert_eq!(
        kinds,
        [
            (muster_core::TransitionKind::Joined, "a".to_owned()),
            (muster_core::TransitionKind::Joined, "b".to_owned()),
            (muster_core::TransitionKind::Draining, "a".to_owned()),
        ]
    );

    // An update while draining keeps it draining: still out.
    a.update(info("a", "z1").label("v", "2")).await.unwrap();
    until(&master, "a's update", |v| {
        v.get("a").is_some_and(|m| m.info.labels.contains_key("v"))
    })
    .await;
    assert!(master.member("a").unwrap().info.draining);
    nothing_waiting(&mut changes);
    a.leave().await.unwrap();
    until(&master, "a gone", |v| v.get("a").is_none()).await;
    nothing_waiting(&mut changes);
    let names: Vec<&String> = changes.members().keys().collect();
    assert_eq!(names, ["b"]);
}
