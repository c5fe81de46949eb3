//! A balanced channel against real parts: tonic servers on loopback, workers and a master
//! on the etcd shared by this test binary (in Docker, from the test kit), tonic's client.
//!
//! The service is the test kit's `Who` (`muster_testkit::grpc`): it answers the name of the
//! server that took the call, so the tests see where each request went.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_core::{Incarnation, MemberInfo, MemberState};
use muster_master::{Filter, Master, MasterConfig};
use muster_testkit::group::Group;
use muster_testkit::grpc::{serve, who};
use muster_testkit::wait::{view_until, within};
use muster_tonic::{balanced_channel, http_endpoint, Follower};
use muster_worker::{Worker, WorkerConfig};
use tokio::sync::watch;
use tonic::transport::Channel;

const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);

/// `n` calls; how many each server answered.
async fn spread(channel: &Channel, n: usize) -> BTreeMap<String, usize> {
    let mut answered = BTreeMap::new();
    for _ in 0..n {
        let name = who(channel)
            .await
            .unwrap_or_else(|e| panic!("every call succeeds: {e}"));
        *answered.entry(name).or_default() += 1;
    }
    answered
}

/// Waits until the follower has handed exactly `names` to the channel.
async fn handed(follower: &Follower, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut members: watch::Receiver<BTreeSet<String>> = follower.members();
    let last = members.borrow().clone();
    within(
        DEADLINE,
        format_args!("the channel never held exactly {want:?}"),
        move || format!("it held {last:?}"),
        members.wait_for(|m| *m == want),
    )
    .await
    .expect("the follower is running");
}

async fn register(group: &Group, name: &str, addr: &str, incarnation: u64) -> Worker {
    let config = WorkerConfig::new(group.prefix.as_str())
        .ttl(TTL)
        .incarnation(Incarnation(incarnation));
    Worker::register(group.store().await, MemberInfo::new(name, addr), config)
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

async fn master(group: &Group) -> Master {
    let master = Master::start(
        group.store().await,
        MasterConfig::new(group.prefix.as_str()),
    )
    .expect("start the master");
    within(
        DEADLINE,
        "the master's first listing",
        String::new,
        master.ready(),
    )
    .await
    .expect("the master runs");
    master
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_every_alive_member_and_none_once_it_is_suspect() {
    let group = Group::new("tonic", "spread");
    let servers = [serve("a").await, serve("b").await, serve("c").await];
    let mut workers = Vec::new();
    for (i, (name, server)) in ["a", "b", "c"].iter().zip(&servers).enumerate() {
        workers.push(register(&group, name, &server.addr.to_string(), i as u64 + 1).await);
    }
    let master = master(&group).await;
    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a", "b", "c"]).await;
    let answered = spread(&channel, 60).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "every member takes calls: {answered:?}"
    );

    // b crashes (its lease lapses) but its server still answers: once the master says
    // suspect, the channel stops sending to it.
    let b = workers.remove(1);
    b.abandon();
    view_until(&master, DEADLINE, "b suspect", |v| {
        v.state_of("b") == Some(MemberState::Suspect)
    })
    .await;
    handed(&follower, &["a", "c"]).await;
    let b_calls = servers[1].answered();
    let answered = spread(&channel, 60).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["a", "c"],
        "{answered:?}"
    );
    assert_eq!(
        servers[1].answered(),
        b_calls,
        "no call reaches a suspect member"
    );

    // A fourth member is served once it joins; one that leaves takes no more calls.
    let d_server = serve("d").await;
    let _d = register(&group, "d", &d_server.addr.to_string(), 4).await;
    handed(&follower, &["a", "c", "d"]).await;
    let answered = spread(&channel, 60).await;
    assert!(answered.contains_key("d"), "{answered:?}");
    workers.remove(0).leave().await.expect("a leaves");
    handed(&follower, &["c", "d"]).await;
    let answered = spread(&channel, 40).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["c", "d"],
        "{answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_selects_by_label_and_members_without_an_address_are_left_out() {
    let group = Group::new("tonic", "filter");
    let a_server = serve("a").await;
    let b_server = serve("b").await;
    let config = |i| {
        WorkerConfig::new(group.prefix.as_str())
            .ttl(TTL)
            .incarnation(Incarnation(i))
    };
    let _a = Worker::register(
        group.store().await,
        MemberInfo::new("a", a_server.addr.to_string()).label("zone", "z1"),
        config(1),
    )
    .await
    .unwrap();
    let _b = Worker::register(
        group.store().await,
        MemberInfo::new("b", b_server.addr.to_string()).label("zone", "z2"),
        config(2),
    )
    .await
    .unwrap();
    // A batch worker in zone z1 with no address: nothing to connect to.
    let _batch = Worker::register(
        group.store().await,
        MemberInfo::new("batch", "").label("zone", "z1"),
        config(3),
    )
    .await
    .unwrap();
    let master = master(&group).await;
    let (channel, follower) =
        balanced_channel(&master, Filter::alive().label("zone", "z1"), http_endpoint);
    handed(&follower, &["a"]).await;
    let answered = spread(&channel, 20).await;
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["a"], "{answered:?}");

    let error = http_endpoint(&master.member("batch").unwrap()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "member \"batch\" has no address; register it with HOST:PORT to receive requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_ends_when_the_channel_is_dropped_or_the_master_stops() {
    let group = Group::new("tonic", "ends");
    let server = serve("a").await;
    let _a = register(&group, "a", &server.addr.to_string(), 1).await;
    let master = master(&group).await;

    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a"]).await;
    assert_eq!(who(&channel).await.unwrap(), "a");
    let clone = channel.clone();
    drop(channel);
    assert!(!follower.is_finished(), "a clone still uses it");
    drop(clone);
    within(
        DEADLINE,
        "the follower ending after the last channel",
        String::new,
        follower.finished(),
    )
    .await;

    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a"]).await;
    master.shutdown().await;
    within(
        DEADLINE,
        "the follower ending with the master",
        String::new,
        follower.finished(),
    )
    .await;
    // The channel keeps the endpoints it had.
    assert_eq!(who(&channel).await.unwrap(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_member_takes_no_new_calls_while_it_is_still_a_member() {
    let group = Group::new("tonic", "drain");
    let a_server = serve("a").await;
    let b_server = serve("b").await;
    let a = register(&group, "a", &a_server.addr.to_string(), 1).await;
    let _b = register(&group, "b", &b_server.addr.to_string(), 2).await;
    let master = master(&group).await;
    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a", "b"]).await;
    assert_eq!(spread(&channel, 40).await.len(), 2);

    a.drain().await.expect("a drains");
    handed(&follower, &["b"]).await;
    let a_calls = a_server.answered();
    let answered = spread(&channel, 40).await;
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["b"], "{answered:?}");
    assert_eq!(a_server.answered(), a_calls);
    let a_now = master.member("a").expect("a is still a member");
    assert_eq!(a_now.state, MemberState::Alive);
    assert!(a_now.info.draining);
    a.leave().await.expect("a leaves");
}
