//! Scenario 4: compaction while the master is away.
//!
//! The master's link to etcd is cut (a proxy in front of etcd); meanwhile the group goes
//! through every kind of change, many times over, and etcd compacts its history. When the
//! link heals, the revision the master wants to resume from is gone: it lists again, and
//! the diff between its old view and the listing emits exactly the transitions that
//! explain the difference — one per member that changed, all at the listing's revision.

use std::time::{Duration, Instant};

use muster_core::{Condition, Keyspace, MemberState, Store, TransitionKind, Txn};
use muster_etcd_backend::EtcdConfig;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_testkit::proxy::Proxy;
use muster_worker::Status;

use crate::support::{
    assert_view_is_truth, connect, health_until, info, join, lease_of, master_config, ms, report,
    status_until, summary, until_gone, view_until, worker_config, Outcome, Recorder,
};

const PREFIX: &str = "/faults/compaction/";
const TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_master_cut_off_across_a_compaction_relists_and_emits_exactly_the_difference() -> Outcome
{
    use TransitionKind::*;
    let etcd = Cluster::single().await?;
    let node = etcd.nodes()[0];
    let keys = Keyspace::new(PREFIX)?;
    // The master reaches etcd through a proxy; the workers and the test directly.
    let link = Proxy::start(&etcd.endpoint(node)).await?;
    let master_store = connect(EtcdConfig {
        endpoints: vec![link.endpoint()],
        ..etcd.config()
    })
    .await;
    let store = connect(etcd.config()).await;
    let config = worker_config(PREFIX, TTL);
    let master = Master::start(master_store, master_config(PREFIX))?;
    let mut log = Recorder::attach(&master);

    // Before the cut: eight members, two of them already Suspect.
    let steady = join(store.clone(), info("steady"), config.clone()).await;
    let updated = join(store.clone(), info("updated"), config.clone()).await;
    let leaver = join(store.clone(), info("leaver"), config.clone()).await;
    let crasher = join(store.clone(), info("crasher"), config.clone()).await;
    let flapper = join(store.clone(), info("flapper"), config.clone()).await;
    let rejoiner = join(store.clone(), info("rejoiner"), config.clone()).await;
    join(store.clone(), info("suspect-returns"), config.clone())
        .await
        .abandon();
    join(store.clone(), info("suspect-reaped"), config.clone())
        .await
        .abandon();
    view_until(&master, "eight members, two of them suspect", |v| {
        v.members.len() == 8
            && v.state_of("suspect-returns") == Some(MemberState::Suspect)
            && v.state_of("suspect-reaped") == Some(MemberState::Suspect)
    })
    .await;

    // Cut the master off.
    let cut_revision = master.view().revision;
    let cut_at = Instant::now();
    link.cut();
    health_until(&master, "the watch lost", |h| !h.watching).await;
    let detected = cut_at.elapsed();
    let emitted_before = log.drain().len();

    // Many changes while it is away.
    for cpus in 1..=50 {
        updated.update(info("updated").cpus(cpus)).await?;
    }
    leaver.leave().await?;
    crasher.abandon();
    until_gone(&store, &keys.liveness_key("crasher")).await?;
    let lost = lease_of(&flapper);
    store.revoke(lost).await?;
    status_until(
        &flapper,
        "registered again after losing its lease",
        |s| matches!(s, Status::Reregistered { lease, .. } if *lease != lost),
    )
    .await;
    rejoiner.leave().await?;
    let rejoiner = join(store.clone(), info("rejoiner"), config.clone()).await;
    let returned = join(store.clone(), info("suspect-returns"), config.clone()).await;
    let evicted = store
        .txn(
            Txn::new()
                .when(Condition::Absent(keys.liveness_key("suspect-reaped")))
                .delete(keys.record_key("suspect-reaped")),
        )
        .await?;
    assert!(evicted.succeeded, "evicting the suspect member");
    let newcomer = join(store.clone(), info("newcomer"), config.clone()).await;
    join(store.clone(), info("transient"), config.clone())
        .await
        .leave()
        .await?;
    let changed_up_to = store.status().await?.revision;
    store.compact(changed_up_to).await?;
    assert!(
        log.drain().len() == emitted_before,
        "the master was cut off, yet emitted {:?}",
        summary(&log.log[emitted_before..])
    );

    // Heal: the master's resume revision is compacted; it lists again and diffs.
    let healed_at = Instant::now();
    link.heal();
    let health = health_until(&master, "a resync after the compaction", |h| {
        h.resyncs == 1 && h.watching
    })
    .await;
    let recovered = healed_at.elapsed();
    let listed_at = master.view().revision;
    let diff = log.drain()[emitted_before..].to_vec();
    let expected = vec![
        (Suspect, "crasher".to_string()),
        (Suspect, "flapper".into()),
        (Recovered, "flapper".into()),
        // The deletes were compacted away: the listing shows them gone, not why.
        (Removed, "leaver".into()),
        (Joined, "newcomer".into()),
        (Removed, "rejoiner".into()),
        (Joined, "rejoiner".into()),
        (Removed, "suspect-reaped".into()),
        (Restarted, "suspect-returns".into()),
        (Updated, "updated".into()),
    ];
    assert_eq!(summary(&diff), expected, "the diff after the compaction");
    for t in &diff {
        assert_eq!(
            t.revision,
            listed_at,
            "{} {} comes from the listing at revision {listed_at}",
            t.kind,
            t.member.name()
        );
    }
    let by = |kind, name: &str| {
        diff.iter()
            .find(|t| t.kind == kind && t.member.name() == name)
            .expect("checked above")
            .member
            .clone()
    };
    assert_eq!(by(Updated, "updated").info.cpus, 50, "the last update wins");
    assert_eq!(by(Recovered, "flapper").incarnation, flapper.incarnation());
    assert_eq!(
        by(Restarted, "suspect-returns").incarnation,
        returned.incarnation()
    );
    assert_eq!(by(Joined, "rejoiner").incarnation, rejoiner.incarnation());
    assert_eq!(by(Joined, "newcomer").incarnation, newcomer.incarnation());
    assert!(
        health.last_error.is_some(),
        "the outage is on record: {health:?}"
    );
    let revision = assert_view_is_truth("the master", &master, &store, PREFIX).await?;
    assert!(revision >= changed_up_to);

    report(
        "S4 compaction while the master is away",
        &[
            ("time to detect the cut (watch lost)", ms(detected)),
            (
                "time to recover after heal (relisted, watching)",
                ms(recovered),
            ),
            (
                "changes while away / compacted up to",
                format!(
                    "{} revisions / revision {changed_up_to}",
                    changed_up_to - cut_revision
                ),
            ),
            (
                "transitions emitted by the diff (expected 10)",
                diff.len().to_string(),
            ),
            (
                "events lost",
                "0 (diff = expected, view = fresh listing)".into(),
            ),
            (
                "reconnect attempts while cut",
                health.reconnects.to_string(),
            ),
        ],
    );
    drop(steady);
    Ok(())
}
