//! Scenario 3: etcd is replaced by an empty one (data lost, revisions start again).
//!
//! The etcd container is removed with its data and a fresh etcd starts on the same port: a
//! new cluster id, and a revision far behind the one the master had seen. The workers find
//! their leases gone and register again on their own; the master notices that the store is
//! not the one its view came from, waits `store_replaced_grace` for the workers to come
//! back, and rebuilds its view from the new store, instead of waiting forever for revisions
//! that will never come. No healthy worker is ever reported missing.

use std::time::{Duration, Instant};

use futures::future::join_all;
use muster_core::{MemberState, TransitionKind};
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_worker::Status;

use crate::support::{
    assert_view_is_truth, connect, health_until, info, join, lease_of, master_config, ms, report,
    status_until, summary, view_until, worker_config, Outcome, Recorder,
};

const PREFIX: &str = "/faults/replaced/";
const TTL: Duration = Duration::from_secs(2);
/// Longer than a worker needs to notice the lost lease (TTL/3) and register again.
const GRACE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn etcd_replaced_by_an_empty_one_is_noticed_and_the_view_rebuilt() -> Outcome {
    let mut etcd = Cluster::single().await?;
    let store = connect(etcd.config()).await;
    let master = Master::start(
        connect(etcd.config()).await,
        master_config(PREFIX).store_replaced_grace(GRACE),
    )?;
    master.ready().await.expect("the master stopped");
    let mut workers = Vec::new();
    for name in ["a", "b", "c"] {
        let own = connect(etcd.config()).await;
        workers.push(join(own, info(name), worker_config(PREFIX, TTL)).await);
    }
    // Push the old store's revision well past where the new one will be.
    for cpus in 1..=20 {
        workers[2].update(info("c").cpus(cpus)).await?;
    }
    let before = view_until(&master, "three members, c's last update", |v| {
        v.alive().count() == 3 && v.get("c").is_some_and(|c| c.info.cpus == 20)
    })
    .await;
    let old_leases: Vec<_> = workers.iter().map(lease_of).collect();
    let mut log = Recorder::attach(&master);

    // Replace etcd: every key, lease and revision gone; a new cluster on the same port.
    let replaced_at = Instant::now();
    let replaced = async {
        etcd.replace_with_empty().await?;
        Ok::<_, muster_testkit::Error>(replaced_at.elapsed())
    };
    let noticed = async {
        health_until(&master, "the store replacement", |h| {
            h.store_replacements == 1
        })
        .await;
        replaced_at.elapsed()
    };
    let reregistered = join_all(workers.iter().map(|w| async move {
        status_until(w, "registered again", |s| {
            matches!(s, Status::Reregistered { .. })
        })
        .await;
        replaced_at.elapsed()
    }));
    let rebuilt = async {
        view_until(&master, "the view rebuilt from the new store", |v| {
            v.synced && v.revision < before.revision && v.alive().count() == 3
        })
        .await;
        replaced_at.elapsed()
    };
    let (boot, noticed, reregistered, rebuilt) =
        tokio::join!(replaced, noticed, reregistered, rebuilt);
    let boot = boot?;
    let reregistered = reregistered.into_iter().max().unwrap_or_default();

    let health = master.health();
    assert_eq!(health.store_replacements, 1, "{health:#?}");
    assert!(
        health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("replaced")),
        "the health report says what happened: {health:#?}"
    );
    for (worker, old) in workers.iter().zip(&old_leases) {
        assert_ne!(
            lease_of(worker),
            *old,
            "{} is on a new lease",
            worker.name()
        );
    }
    // The master's view is the new store's truth, and it is every worker, alive, with its
    // current metadata.
    assert_view_is_truth("the master", &master, &store, PREFIX).await?;
    let view = master.view();
    // A new history of the store: positions from before it can never be mistaken for
    // positions after it (etcd's new cluster id here).
    assert_ne!(
        view.epoch, before.epoch,
        "the replaced store is a new epoch"
    );
    for worker in &workers {
        let member = view.get(worker.name()).expect("every worker is back");
        assert_eq!(member.state, MemberState::Alive);
        assert_eq!(member.incarnation, worker.incarnation());
    }
    assert_eq!(view.get("c").map(|c| c.info.cpus), Some(20));
    // Healthy workers were never reported missing: no transition at all for them.
    let emitted = log.drain().to_vec();
    assert!(
        emitted.is_empty(),
        "healthy workers re-registered inside the grace period, yet: {:?}",
        summary(&emitted)
    );

    // And the master follows the new store from here.
    let d = join(store.clone(), info("d"), worker_config(PREFIX, TTL)).await;
    let joined = log.until_kind(TransitionKind::Joined, "d").await;
    assert!(joined.revision < before.revision);

    report(
        "S3 etcd replaced by an empty one",
        &[
            ("new etcd start-up (remove to ready)", ms(boot)),
            ("time to detect: store replacement noticed", ms(noticed)),
            ("time to recover: workers re-registered", ms(reregistered)),
            (
                "time to recover: view rebuilt (includes the grace period)",
                ms(rebuilt),
            ),
            ("grace period", ms(GRACE)),
            (
                "old revision / new revision",
                format!("{} / {}", before.revision, joined.revision),
            ),
            ("healthy workers reported missing", "0".into()),
        ],
    );
    drop(d);
    Ok(())
}
