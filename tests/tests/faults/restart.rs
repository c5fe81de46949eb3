//! Scenario 2: a single etcd crashes and is restarted with its data.
//!
//! Keys and leases survive the restart (etcd persists them, and renews every lease when it
//! comes back). The workers' keep-alive streams and the master's watch break when etcd dies
//! and are re-opened by muster itself; a worker that keeps updating its metadata throughout
//! makes events right up to the crash and right after. Afterwards the master's transition
//! log is exactly what etcd's history implies, revision by revision: nothing lost, nothing
//! duplicated, and no worker was ever reported missing.

use std::time::{Duration, Instant};

use futures::future::join_all;
use muster_core::TransitionKind;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_worker::Status;

use crate::support::{
    assert_view_is_truth, connect, count, health_until, info, join, lease_of, master_config, ms,
    report, status_until, view_until, worker_config, History, Outcome, Recorder, Updater,
};

const PREFIX: &str = "/faults/restart/";
const TTL: Duration = Duration::from_secs(2);
const WORKERS: usize = 5;

#[tokio::test]
async fn etcd_restarted_with_its_data_loses_nothing_and_duplicates_nothing() -> Outcome {
    let etcd = Cluster::single().await?;
    let node = etcd.nodes()[0];
    let store = connect(etcd.config()).await;
    let master = Master::start(connect(etcd.config()).await, master_config(PREFIX))?;
    master.ready().await.expect("the master stopped");
    let mut log = Recorder::attach(&master);

    // Five workers, each on its own client as separate processes would be.
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let store = connect(etcd.config()).await;
        let name = format!("w{i}");
        workers.push(join(store, info(&name), worker_config(PREFIX, TTL)).await);
    }
    let leases: Vec<_> = workers.iter().map(lease_of).collect();
    view_until(&master, "every worker alive", |v| {
        v.alive().count() == WORKERS
    })
    .await;

    // One of them updates its metadata all the time, through the crash and the restart.
    let busy = Updater::start(workers.remove(0), Duration::from_millis(20));
    log.until_kind(TransitionKind::Updated, "w0").await;

    // Crash etcd, then start it again with its data.
    let killed_at = Instant::now();
    etcd.kill(node).await?;
    let down = health_until(&master, "its watch broken", |h| !h.watching).await;
    let master_detected = down.unhealthy_since.map_or(Duration::ZERO, |since| {
        since.saturating_duration_since(killed_at)
    });
    let worker_detected = match status_until(&workers[0], "reconnecting", |s| {
        matches!(s, Status::Reconnecting { .. })
    })
    .await
    {
        Status::Reconnecting { since, .. } => since.saturating_duration_since(killed_at),
        _ => unreachable!(),
    };
    // Start it again; everyone reconnects by themselves, on the same leases. Recovery
    // counts from the start command: etcd's own start-up is part of it.
    let back_at = Instant::now();
    let restarted = async {
        etcd.restart(node).await?;
        Ok::<_, muster_testkit::Error>(back_at.elapsed())
    };
    let master_back = async {
        health_until(&master, "watching again", |h| {
            h.watching && h.reconnects > 0
        })
        .await;
        back_at.elapsed()
    };
    let workers_back = join_all(workers.iter().map(|w| async move {
        status_until(w, "renewing again", |s| {
            matches!(s, Status::Registered { .. })
        })
        .await;
        back_at.elapsed()
    }));
    let (boot, master_back, workers_back) = tokio::join!(restarted, master_back, workers_back);
    let boot = boot?;
    let downtime = killed_at.elapsed() - (back_at.elapsed() - boot);
    let workers_back = workers_back.into_iter().max().unwrap_or_default();

    // The busy worker writes again after the restart; then it stops.
    busy.writes_more(10).await;
    let (written, refused) = busy.counts();
    let (busy, last_cpus) = busy.stop().await;
    view_until(&master, "the busy worker's last update", |v| {
        v.get("w0").is_some_and(|m| m.info.cpus == last_cpus)
    })
    .await;

    // The leases survived: nobody had to register again.
    workers.insert(0, busy);
    for (worker, lease) in workers.iter().zip(&leases) {
        assert_eq!(lease_of(worker), *lease, "{} kept its lease", worker.name());
    }

    // Nothing lost, nothing duplicated: the log is exactly what etcd's history implies.
    let history = History::read(&store, PREFIX).await?;
    let emitted = log.up_to(&master, history.end).await.to_vec();
    let compared = history.assert_explains("the master", &emitted);
    for kind in [
        TransitionKind::Suspect,
        TransitionKind::Left,
        TransitionKind::Failed,
    ] {
        assert_eq!(count(&emitted, kind, None), 0, "no worker reported {kind}");
    }
    assert_view_is_truth("the master", &master, &store, PREFIX).await?;
    let health = master.health();

    report(
        "S2 single etcd restarted with its data",
        &[
            ("etcd down (kill to ready)", ms(downtime)),
            ("etcd start-up (start command to ready)", ms(boot)),
            ("time to detect: master watch broken", ms(master_detected)),
            (
                "time to detect: first worker reconnecting",
                ms(worker_detected),
            ),
            (
                "time to recover from start command: master watching again",
                ms(master_back),
            ),
            (
                "time to recover from start command: all workers renewing, same leases",
                ms(workers_back),
            ),
            (
                "updates written / refused while down",
                format!("{written} / {refused}"),
            ),
            (
                "transitions compared with etcd's history",
                format!("{compared} (from {} events)", history.events),
            ),
            ("events lost / duplicated", "0 / 0".into()),
            (
                "false Suspects",
                count(&emitted, TransitionKind::Suspect, None).to_string(),
            ),
            ("master watch reconnects", health.reconnects.to_string()),
        ],
    );
    Ok(())
}
