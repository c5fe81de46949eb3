//! Master and workers end to end on real etcd: every transition of the contract, a master
//! restart, duplicate names, malformed values. The scenarios of `crates/master/tests` on
//! the in-memory backend, here on etcd, in real time, with TTL 2 s.

use std::time::Duration;

use muster_core::{MemberState, Store, TransitionKind, Txn};
use muster_worker::{OnDuplicate, Status, Worker};

use crate::support::{
    assert_history, info, lease_of, states, status_until, summary, until, wait, Group, DEADLINE,
};

/// Short enough to keep the test quick, long enough that a member this test brings back
/// (a lost lease, a restart) is back well before it could be reaped.
const REAP: Duration = Duration::from_secs(3);

#[tokio::test]
async fn every_transition_of_the_lifecycle_is_reported_with_increasing_revisions() {
    use TransitionKind::*;
    let group = Group::new("lifecycle");
    let master = group.master(Some(REAP)).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let mut all = Vec::new();

    // Join.
    let a = group.join(info("a")).await;
    let first = a.incarnation();
    all.extend(until(&mut events, Joined, "a").await);
    assert_eq!(master.member("a").expect("a").state, MemberState::Alive);

    // Update: the new metadata reaches the master.
    a.update(info("a").cpus(4).label("version", "2"))
        .await
        .expect("update");
    let t = until(&mut events, Updated, "a").await;
    let updated = &t.last().expect("Updated").member;
    assert_eq!(updated.info.cpus, 4);
    assert_eq!(&updated.info.labels["version"], "2");
    all.extend(t);

    // The lease is lost while the process lives (revoked by another client, as an etcd
    // restart or a long partition would): Suspect; the worker registers again on a new lease
    // with the same incarnation and its current metadata: Recovered.
    let lost = lease_of(&a);
    group.store().await.revoke(lost).await.expect("revoke");
    all.extend(until(&mut events, Suspect, "a").await);
    let t = until(&mut events, Recovered, "a").await;
    let recovered = &t.last().expect("Recovered").member;
    assert_eq!(recovered.incarnation, first);
    assert_eq!(
        &recovered.info.labels["version"], "2",
        "re-registered with the current metadata"
    );
    all.extend(t);
    let status = status_until(&a, "re-registered", |s| {
        matches!(s, Status::Reregistered { .. })
    })
    .await;
    assert!(
        matches!(status, Status::Reregistered { lease, .. } if lease != lost),
        "a new lease: {status:?}"
    );

    // A crash (the lease simply expires): Suspect, and the record stays.
    a.abandon();
    all.extend(until(&mut events, Suspect, "a").await);
    assert_eq!(master.member("a").expect("a").state, MemberState::Suspect);

    // A new process under the same name, with new metadata: Restarted, with its
    // incarnation, and Updated, both caused by its one registration write.
    let a2 = group.join(info("a").label("version", "3")).await;
    assert_ne!(a2.incarnation(), first);
    let t = until(&mut events, Updated, "a").await;
    assert_eq!(
        summary(&t),
        [(Restarted, "a".into()), (Updated, "a".into())]
    );
    assert_eq!(t[0].revision, t[1].revision);
    assert_eq!(&t[1].member.info.labels["version"], "3");
    all.extend(t);
    assert_eq!(master.member("a").expect("a").incarnation, a2.incarnation());

    // A graceful leave: Left, and the member is gone.
    let second = a2.incarnation();
    a2.leave().await.expect("leave");
    all.extend(until(&mut events, Left, "a").await);
    assert!(master.member("a").is_none());

    // A crash that stays down: Suspect, then Failed once reap_after has passed.
    let b = group.join(info("b")).await;
    let b_inc = b.incarnation();
    all.extend(until(&mut events, Joined, "b").await);
    b.abandon();
    let suspect = until(&mut events, Suspect, "b").await;
    let suspect_at = suspect.last().expect("Suspect").at;
    all.extend(suspect);
    let failed = until(&mut events, Failed, "b").await;
    let waited = failed.last().expect("Failed").at - suspect_at;
    all.extend(failed);
    assert!(
        waited >= REAP,
        "reaped {waited:?} after Suspect, before reap_after {REAP:?}"
    );
    assert!(master.member("b").is_none());
    assert_eq!(master.health().reaps, 1);

    assert_history(
        &all,
        "a",
        &[
            (Joined, first),
            (Updated, first),
            (Suspect, first),
            (Recovered, first),
            (Suspect, first),
            (Restarted, second),
            (Updated, second),
            (Left, second),
        ],
    );
    assert_history(
        &all,
        "b",
        &[(Joined, b_inc), (Suspect, b_inc), (Failed, b_inc)],
    );
    let revisions: Vec<_> = all.iter().map(|t| t.revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] <= w[1]),
        "transitions come in revision order: {revisions:?}"
    );
    assert!(
        events
            .try_next_transition()
            .expect("the subscriber lagged")
            .is_none(),
        "nothing else happened: {:?}",
        events.try_next_transition().expect("the subscriber lagged")
    );
    assert_eq!(
        states(&master.view()),
        group.states(&group.store().await).await
    );
    let health = master.health();
    assert!(health.synced && health.watching, "{health:?}");
    assert_eq!(health.skipped, 0, "{health:?}");
}

#[tokio::test]
async fn members_present_before_the_master_starts_are_listed_and_announced() {
    let group = Group::new("listed");
    let _a = group.join(info("a")).await;
    let b = group.join(info("b")).await;
    let b_inc = b.incarnation();
    b.abandon();
    // b's lease runs out: observe it with a master that then goes away.
    let first = group.master(None).await;
    wait(&first, "b suspect", |v| {
        v.state_of("b") == Some(MemberState::Suspect)
    })
    .await;
    first.shutdown().await;

    let master = group.master(None).await;
    let mut events = master.subscribe();
    let got = until(&mut events, TransitionKind::Suspect, "b").await;
    assert_eq!(
        summary(&got),
        vec![
            (TransitionKind::Joined, "a".into()),
            (TransitionKind::Joined, "b".into()),
            (TransitionKind::Suspect, "b".into()),
        ],
        "a record without liveness is announced as joined, then suspect"
    );
    assert_eq!(got[1].member.incarnation, b_inc);
    let view = master.ready().await.expect("the master stopped");
    assert_eq!(
        states(&view),
        vec![
            ("a".into(), MemberState::Alive),
            ("b".into(), MemberState::Suspect)
        ]
    );
}

#[tokio::test]
async fn a_restarted_master_rebuilds_the_same_view_including_suspects() {
    let group = Group::new("master-restart");
    let master = group.master(None).await;
    let a = group.join(info("a").label("zone", "x")).await;
    let b = group.join(info("b").cpus(2)).await;
    let c = group.join(info("c")).await;
    c.leave().await.expect("leave");
    let b_inc = b.incarnation();
    b.abandon();
    let before = wait(&master, "a alive, b suspect, c gone", |v| {
        v.state_of("a") == Some(MemberState::Alive)
            && v.state_of("b") == Some(MemberState::Suspect)
            && v.get("c").is_none()
    })
    .await;
    master.shutdown().await;

    let again = group.master(None).await;
    let after = tokio::time::timeout(DEADLINE, again.ready())
        .await
        .expect("the restarted master lists within the deadline")
        .expect("the master stopped");
    assert_eq!(states(&after), states(&before));
    assert_eq!(
        states(&after),
        vec![
            ("a".into(), MemberState::Alive),
            ("b".into(), MemberState::Suspect)
        ]
    );
    for name in ["a", "b"] {
        let (old, new) = (&before.members[name], &after.members[name]);
        assert_eq!(new.info, old.info, "{name}'s metadata");
        assert_eq!(new.incarnation, old.incarnation, "{name}'s incarnation");
        assert_eq!(
            new.record_revision, old.record_revision,
            "{name}'s record revision"
        );
    }
    assert_eq!(after.members["b"].incarnation, b_inc);
    assert_eq!(after.members["a"].incarnation, a.incarnation());
    assert!(after.revision >= before.revision);
    assert_eq!(again.health().skipped, 0);
}

#[tokio::test]
async fn a_duplicate_name_is_rejected_and_the_holder_keeps_it() {
    let group = Group::new("duplicate");
    let master = group.master(None).await;
    let holder = group.join(info("api-7")).await;
    let lease = lease_of(&holder);

    let err = Worker::register(
        group.store().await,
        info("api-7").label("intruder", "yes"),
        group.worker_config(),
    )
    .await
    .expect_err("the name is held by a live process");
    let text = err.to_string();
    assert!(
        matches!(&err, muster_worker::Error::DuplicateName { name, holder: h }
            if name == "api-7" && *h == holder.incarnation()),
        "{text}"
    );
    assert!(text.contains("api-7"), "the message names the name: {text}");

    // Nothing was overwritten: the liveness key is still on the holder's lease, the record
    // still the holder's, and the master never saw anything but the one join.
    let store = group.store().await;
    let ks = group.keyspace();
    let live = store
        .get(&ks.liveness_key("api-7"))
        .await
        .expect("get")
        .expect("liveness key");
    assert_eq!(live.lease, lease);
    let record = store
        .get(&ks.record_key("api-7"))
        .await
        .expect("get")
        .expect("record");
    let record = muster_core::Record::from_json(&record.key, &record.value).expect("a record");
    assert_eq!(record.incarnation, holder.incarnation());
    assert!(!record.info.labels.contains_key("intruder"));
    let view = wait(&master, "api-7 alive", |v| {
        v.state_of("api-7") == Some(MemberState::Alive)
    })
    .await;
    assert_eq!(view.members["api-7"].incarnation, holder.incarnation());
    assert_eq!(
        master.health().transitions.values().sum::<u64>(),
        1,
        "only the join: {:?}",
        master.health().transitions
    );
}

#[tokio::test]
async fn with_on_duplicate_wait_a_new_process_takes_over_once_the_old_lease_expires() {
    let group = Group::new("duplicate-wait");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    let old = group.join(info("api-8")).await;
    let old_inc = old.incarnation();
    until(&mut events, TransitionKind::Joined, "api-8").await;
    // A crash and a restart within one TTL: the old liveness key is still there.
    old.abandon();
    let new = tokio::time::timeout(
        DEADLINE,
        Worker::register(
            group.store().await,
            info("api-8"),
            group.worker_config().on_duplicate(OnDuplicate::Wait),
        ),
    )
    .await
    .expect("registers once the old lease expires")
    .expect("register");
    let got = until(&mut events, TransitionKind::Restarted, "api-8").await;
    assert_eq!(
        summary(&got),
        vec![
            (TransitionKind::Suspect, "api-8".into()),
            (TransitionKind::Restarted, "api-8".into())
        ]
    );
    assert_eq!(got[0].member.incarnation, old_inc);
    assert_eq!(got[1].member.incarnation, new.incarnation());
}

#[tokio::test]
async fn malformed_values_are_skipped_and_counted_while_the_master_keeps_working() {
    let group = Group::new("malformed");
    let ks = group.keyspace();
    let other = group.store().await;
    // One bad record before the master starts (seen by its listing) ...
    other
        .txn(Txn::new().put(ks.record_key("early-junk"), b"{not json".to_vec(), 0))
        .await
        .expect("put");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    assert_eq!(master.health().skipped, 1, "{:?}", master.health());

    // ... one after (seen by its watch), and a key under the prefix that is not muster's.
    other
        .txn(Txn::new().put(ks.record_key("junk"), b"{not json".to_vec(), 0))
        .await
        .expect("put");
    other
        .txn(Txn::new().put(
            format!("{}unrelated/x", group.prefix),
            b"whatever".to_vec(),
            0,
        ))
        .await
        .expect("put");
    let _a = group.join(info("a")).await;
    let got = until(&mut events, TransitionKind::Joined, "a").await;
    assert_eq!(summary(&got), vec![(TransitionKind::Joined, "a".into())]);
    let health = master.health();
    assert_eq!(health.skipped, 2, "{health:?}");
    assert!(health.watching, "the watch goes on: {health:?}");
    assert!(master.member("junk").is_none());
    assert!(master.member("early-junk").is_none());
    assert_eq!(
        states(&master.view()),
        vec![("a".into(), MemberState::Alive)]
    );
}
