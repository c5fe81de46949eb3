//! Scenario 5: one worker is partitioned from etcd for longer than its lease TTL.
//!
//! The worker reaches etcd through a proxy that the test cuts. Its lease expires: the
//! master marks it `Suspect` (the record stays, it is not removed). The application updates
//! the worker's metadata during the partition. When the link heals, the worker finds its
//! lease gone and registers again with its *current* metadata, as the same process: the
//! master says `Recovered`, with the new metadata. Another worker, never cut off, is never
//! reported missing.

use std::time::{Duration, Instant};

use muster_core::{MemberState, TransitionKind};
use muster_etcd_backend::EtcdConfig;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_testkit::proxy::Proxy;
use muster_worker::Status;

use crate::support::{
    assert_view_is_truth, connect, count, info, join, lease_of, master_config, ms, report,
    status_until, summary, view_until, worker_config, History, Outcome, Recorder,
};

const PREFIX: &str = "/faults/partition/";
const TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_worker_partitioned_longer_than_its_ttl_is_suspect_then_recovered_with_new_metadata(
) -> Outcome {
    use TransitionKind::*;
    let etcd = Cluster::single().await?;
    let node = etcd.nodes()[0];
    let store = connect(etcd.config()).await;
    let master = Master::start(connect(etcd.config()).await, master_config(PREFIX))?;
    master.ready().await.expect("the master stopped");
    let mut log = Recorder::attach(&master);

    let link = Proxy::start(&etcd.endpoint(node)).await?;
    let behind_proxy = connect(EtcdConfig {
        endpoints: vec![link.endpoint()],
        ..etcd.config()
    })
    .await;
    let cut_off = join(behind_proxy, info("cut-off"), worker_config(PREFIX, TTL)).await;
    let control = join(
        connect(etcd.config()).await,
        info("control"),
        worker_config(PREFIX, TTL),
    )
    .await;
    view_until(&master, "both alive", |v| v.alive().count() == 2).await;
    let first_lease = lease_of(&cut_off);

    // Partition the worker from etcd.
    let cut_at = Instant::now();
    link.cut();
    // The application changes the metadata meanwhile: refused for now, kept for later.
    let new_info = info("cut-off").cpus(8).label("during", "partition");
    let refused = cut_off.update(new_info.clone()).await;
    assert!(refused.is_err(), "etcd is unreachable: {refused:?}");
    let suspect = log.until_kind(Suspect, "cut-off").await;
    let detected = cut_at.elapsed();
    assert_eq!(suspect.member.state, MemberState::Suspect);
    let status = status_until(&cut_off, "reconnecting", |s| {
        matches!(s, Status::Reconnecting { .. })
    })
    .await;

    // Heal: the worker registers again with its current metadata; the master says Recovered.
    let partitioned_for = cut_at.elapsed();
    let healed_at = Instant::now();
    link.heal();
    let recovered = log.until_kind(Recovered, "cut-off").await;
    let recovery = healed_at.elapsed();
    assert_eq!(recovered.member.incarnation, cut_off.incarnation());
    assert_eq!(
        recovered.member.info, new_info,
        "re-registered with the current metadata"
    );
    status_until(&cut_off, "registered again", |s| {
        matches!(s, Status::Reregistered { .. })
    })
    .await;
    assert_ne!(lease_of(&cut_off), first_lease, "a new lease");
    let attempts = match status {
        Status::Reconnecting { attempts, .. } => attempts,
        _ => 0,
    };

    // Exactly Suspect then Recovered for the partitioned worker (the metadata rides along
    // with the return, in the same revision), nothing for the other; and the log is what
    // etcd's history implies.
    let history = History::read(&store, PREFIX).await?;
    let emitted = log.up_to(&master, history.end).await.to_vec();
    let mine: Vec<_> = emitted
        .iter()
        .filter(|t| t.member.name() == "cut-off")
        .cloned()
        .collect();
    assert_eq!(
        summary(&mine),
        vec![
            (Joined, "cut-off".to_string()),
            (Suspect, "cut-off".into()),
            (Recovered, "cut-off".into()),
            (Updated, "cut-off".into()),
        ]
    );
    assert_eq!(
        mine[2].revision, mine[3].revision,
        "one write brought it back, updated"
    );
    assert_eq!(
        count(&emitted, Suspect, Some("control")),
        0,
        "the control worker"
    );
    history.assert_explains("the master", &emitted);
    assert_view_is_truth("the master", &master, &store, PREFIX).await?;

    report(
        "S5 worker partitioned longer than its TTL",
        &[
            ("TTL", ms(TTL)),
            ("time to detect: Suspect after the cut", ms(detected)),
            ("partition lasted", ms(partitioned_for)),
            ("time to recover: Recovered after heal", ms(recovery)),
            (
                "worker reconnect attempts seen when Suspect",
                attempts.to_string(),
            ),
            ("false Suspects (control worker)", "0".into()),
            ("events lost", "0 (log = etcd's history)".into()),
        ],
    );
    drop(control);
    Ok(())
}
