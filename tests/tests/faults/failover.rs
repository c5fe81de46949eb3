//! Scenario 1: a three-member etcd cluster loses its leader, then its quorum.
//!
//! Every client is given all three endpoints. Killing the leader — made, first, the member
//! serving the master's watch — costs an election: the workers keep their leases (the
//! outage is far shorter than the TTL, so no `Suspect`), and the master's watch moves to a
//! healthy member without missing an event — checked against etcd's history, revision by
//! revision. Stopping a second member
//! then loses the quorum: nothing can be written or renewed, and instead of hanging
//! silently the workers report `Reconnecting` and the master's health says it is not
//! watching, with the reason. When the quorum returns, both recover by themselves, on the
//! same leases.

use std::time::{Duration, Instant};

use futures::future::join_all;
use muster_core::{Store, TransitionKind};
use muster_etcd_backend::EtcdStore;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_worker::Status;

use crate::support::{
    assert_view_is_truth, connect, count, health_until, info, join, lease_of, master_config, ms,
    report, status_until, view_until, worker_config, History, Outcome, Recorder, Updater,
};

const PREFIX: &str = "/faults/failover/";
/// Far longer than an election, so losing the leader must not cost any lease.
const TTL: Duration = Duration::from_secs(10);
const WORKERS: usize = 4;
/// Calls made to see how often a request meets the dead member.
const PROBES: usize = 30;

#[tokio::test]
async fn losing_the_leader_costs_no_lease_and_no_event_and_a_lost_quorum_is_reported() -> Outcome {
    use TransitionKind::*;
    let cluster = Cluster::start().await?;
    let store = connect(cluster.config()).await;
    let master = Master::start(connect(cluster.config()).await, master_config(PREFIX))?;
    master.ready().await.expect("the master stopped");
    let mut log = Recorder::attach(&master);
    let config = worker_config(PREFIX, TTL);
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let own = connect(cluster.config()).await;
        workers.push(join(own, info(&format!("w{i}")), config.clone()).await);
    }
    let leases: Vec<_> = workers.iter().map(lease_of).collect();
    // One more keeps writing through everything, so every fault falls between writes.
    let busy = Updater::start(
        join(
            connect(cluster.config()).await,
            info("busy"),
            config.clone(),
        )
        .await,
        Duration::from_millis(50),
    );
    busy.writes_more(3).await;
    view_until(&master, "every worker alive", |v| {
        v.alive().count() == WORKERS + 1
    })
    .await;

    // Part 1: kill the leader, and make it the member serving the master's watch, so that
    // the watch has to move.
    let mut watched = None;
    for node in cluster.nodes() {
        if cluster.watchers(node).await? > 0 {
            watched = Some(node);
        }
    }
    let watched = watched.expect("one member serves the master's watch");
    cluster.move_leader(watched).await?;
    let leader = cluster.leader().await?;
    assert_eq!(leader, watched);
    let reconnects_before = master.health().reconnects;
    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    let new_leader = cluster.leader().await?;
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // A member joining now is seen by the master: its watch is on a healthy member.
    // (On a client made before the kill: a new one may fail to connect while a member is
    // dead; see `a_dead_member_fails_neither_connects_nor_calls`.)
    let probe = join(store.clone(), info("probe-1"), config.clone()).await;
    log.until_kind(Joined, "probe-1").await;
    let master_follows = killed_at.elapsed();
    busy.writes_more(5).await;
    let writes_resumed = killed_at.elapsed();
    let reconnects_on_kill = master.health().reconnects - reconnects_before;
    assert!(
        reconnects_on_kill > 0,
        "the master's watch was on the killed leader"
    );
    // How a client given all three endpoints fares while one of them is dead.
    let mut failed_calls = 0;
    for _ in 0..PROBES {
        if store.status().await.is_err() {
            failed_calls += 1;
        }
    }
    for (worker, lease) in workers.iter().zip(&leases) {
        status_until(worker, "renewing", |s| {
            matches!(s, Status::Registered { .. })
        })
        .await;
        assert_eq!(lease_of(worker), *lease, "{} kept its lease", worker.name());
    }
    assert_eq!(
        count(log.drain(), Suspect, None),
        0,
        "no Suspect for an election"
    );

    // Part 2: stop a second member: the quorum is lost.
    let second = cluster.leader().await?;
    let stopped_at = Instant::now();
    cluster.stop(second).await?;
    let down = health_until(&master, "its watch failing", |h| !h.watching).await;
    let master_detected = down.unhealthy_since.map_or(Duration::ZERO, |since| {
        since.saturating_duration_since(stopped_at)
    });
    let workers_detected = join_all(workers.iter().map(|w| async move {
        match status_until(w, "reconnecting", |s| {
            matches!(s, Status::Reconnecting { .. })
        })
        .await
        {
            Status::Reconnecting { since, .. } => since.saturating_duration_since(stopped_at),
            _ => unreachable!(),
        }
    }))
    .await;
    let workers_detected = workers_detected.into_iter().max().unwrap_or_default();
    // Its health report says why, once it has asked the member still running.
    let reason = health_until(&master, "the lost quorum as the reason", |h| {
        !h.watching
            && h.last_error
                .as_deref()
                .is_some_and(|e| e.contains("quorum"))
    })
    .await;
    let error = reason.last_error.unwrap_or_default();
    let explained = stopped_at.elapsed();

    // The quorum returns.
    let restarted_at = Instant::now();
    let restarted = async {
        cluster.restart(second).await?;
        Ok::<_, muster_testkit::Error>(restarted_at.elapsed())
    };
    let master_back = async {
        health_until(&master, "watching again", |h| h.watching).await;
        restarted_at.elapsed()
    };
    let workers_back = join_all(workers.iter().map(|w| async move {
        status_until(w, "renewing again", |s| {
            matches!(s, Status::Registered { .. })
        })
        .await;
        restarted_at.elapsed()
    }));
    let (boot, master_back, workers_back) = tokio::join!(restarted, master_back, workers_back);
    let boot = boot?;
    let quorum_lost_for = stopped_at.elapsed() - (restarted_at.elapsed() - boot);
    let workers_back = workers_back.into_iter().max().unwrap_or_default();
    let probe2 = join(store.clone(), info("probe-2"), config.clone()).await;
    log.until_kind(Joined, "probe-2").await;
    let writable_again = restarted_at.elapsed();
    for (worker, lease) in workers.iter().zip(&leases) {
        assert_eq!(lease_of(worker), *lease, "{} kept its lease", worker.name());
    }

    // The first leader comes back too.
    cluster.restart(leader).await?;

    // Nothing missed through both faults: the log is exactly what etcd's history implies.
    busy.writes_more(3).await;
    let (written, refused) = busy.counts();
    let (busy, last) = busy.stop().await;
    view_until(&master, "busy's last update", |v| {
        v.get("busy").is_some_and(|m| m.info.cpus == last)
    })
    .await;
    let history = History::read(&store, PREFIX).await?;
    let emitted = log.up_to(&master, history.end).await.to_vec();
    let compared = history.assert_explains("the master", &emitted);
    assert_eq!(count(&emitted, Suspect, None), 0, "no false Suspect");
    assert_view_is_truth("the master", &master, &store, PREFIX).await?;
    let health = master.health();

    report(
        "S1 3-member cluster: leader killed, then quorum lost",
        &[
            ("TTL", ms(TTL)),
            ("leader killed: new leader elected after", ms(elected)),
            (
                "leader killed: master sees a new member after",
                ms(master_follows),
            ),
            (
                "leader killed: writes flowing again after",
                ms(writes_resumed),
            ),
            (
                "leader killed: master watch re-opens",
                reconnects_on_kill.to_string(),
            ),
            (
                "leader killed: calls failing while one member is dead",
                format!("{failed_calls} of {PROBES}"),
            ),
            (
                "leader killed: false Suspects / leases lost",
                "0 / 0".into(),
            ),
            (
                "quorum lost: time to detect, master not watching",
                ms(master_detected),
            ),
            (
                "quorum lost: time to detect, workers reconnecting (max)",
                ms(workers_detected),
            ),
            (
                "quorum lost: master's health names the lost quorum after",
                ms(explained),
            ),
            ("quorum lost: master's reason", error),
            (
                "quorum lost for (stop to member ready)",
                ms(quorum_lost_for),
            ),
            ("quorum back: member start-up", ms(boot)),
            (
                "quorum back: time to recover, master watching",
                ms(master_back),
            ),
            (
                "quorum back: time to recover, workers renewing (max)",
                ms(workers_back),
            ),
            (
                "quorum back: master sees a new member after",
                ms(writable_again),
            ),
            (
                "transitions compared with etcd's history",
                format!("{compared} ({} events)", history.events),
            ),
            (
                "busy worker's updates written / refused",
                format!("{written} / {refused}"),
            ),
            ("events lost / false Suspects", "0 / 0".into()),
            (
                "master watch re-opens in all",
                health.reconnects.to_string(),
            ),
        ],
    );
    drop((probe, probe2, busy));
    Ok(())
}

/// With one member of three dead, the cluster serves: connecting with every member's
/// endpoint, and calling, must work without the caller retrying.
#[tokio::test]
async fn a_dead_member_fails_neither_connects_nor_calls() -> Outcome {
    let cluster = Cluster::start().await?;
    let dead = cluster.nodes()[2];
    cluster.kill(dead).await?;
    cluster.leader().await?;
    let mut failed_connects = Vec::new();
    for _ in 0..PROBES {
        if let Err(err) = EtcdStore::connect(cluster.config()).await {
            failed_connects.push(err.to_string());
        }
    }
    let store = EtcdStore::connect_lazy(cluster.config()).await?;
    let mut failed_calls = Vec::new();
    for _ in 0..PROBES {
        if let Err(err) = store.status().await {
            failed_calls.push(err.to_string());
        }
    }
    report(
        "S1 one member of three dead",
        &[
            (
                "connects failing",
                format!("{} of {PROBES}", failed_connects.len()),
            ),
            (
                "calls failing",
                format!("{} of {PROBES}", failed_calls.len()),
            ),
        ],
    );
    assert!(
        failed_connects.is_empty() && failed_calls.is_empty(),
        "{dead} is dead, two members serve, yet {} of {PROBES} connects and {} of {PROBES} calls failed; first: {:?}",
        failed_connects.len(),
        failed_calls.len(),
        failed_connects.first().or(failed_calls.first()),
    );
    Ok(())
}
