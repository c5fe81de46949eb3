//! Many members on one lease (`WorkerGroup`), on real etcd: etcd keeps one lease for the
//! whole group, deletes every liveness key of a crashed group in one revision (the master
//! reports them all `Suspect` at that revision), and an eviction of one member leaves the
//! shared lease, and so its siblings, alone.

use std::collections::BTreeSet;
use std::time::Duration;

use muster_core::{MemberState, Store, TransitionKind};
use muster_worker::{MemberStatus, WorkerGroup};

use crate::support::{info, until, wait, Group, DEADLINE};

const MEMBERS: usize = 200;

async fn start(group: &Group) -> WorkerGroup {
    let members = WorkerGroup::start(group.store().await, group.worker_config())
        .await
        .expect("start the group");
    let infos = (0..MEMBERS).map(|i| info(&format!("slot-{i}")));
    for (i, result) in members.add_many(infos).await.into_iter().enumerate() {
        result.unwrap_or_else(|err| panic!("slot-{i}: {err}"));
    }
    members
}

#[tokio::test]
async fn a_crashed_group_turns_every_member_suspect_in_one_revision() {
    let group = Group::new("group-crash");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let members = start(&group).await;
    wait(&master, "every slot alive", |v| {
        v.members
            .values()
            .filter(|m| m.state == MemberState::Alive)
            .count()
            == MEMBERS
    })
    .await;
    let store = group.store().await;
    let listing = store.list(&group.prefix).await.expect("list");
    let leases: BTreeSet<i64> = listing
        .kvs
        .iter()
        .filter(|kv| kv.key.contains("/alive/"))
        .map(|kv| kv.lease)
        .collect();
    assert_eq!(
        leases.len(),
        1,
        "one lease for {MEMBERS} members: {leases:?}"
    );

    members.abandon();
    let view = wait(&master, "every slot suspect", |v| {
        v.members
            .values()
            .filter(|m| m.state == MemberState::Suspect)
            .count()
            == MEMBERS
    })
    .await;
    let mut revisions = BTreeSet::new();
    let mut suspects = 0;
    while suspects < MEMBERS {
        let t = tokio::time::timeout(DEADLINE, events.next_transition())
            .await
            .expect("a transition in time")
            .expect("no lag")
            .expect("the master runs");
        if t.kind == TransitionKind::Suspect {
            suspects += 1;
            revisions.insert(t.revision);
        }
    }
    assert_eq!(revisions.len(), 1, "one revision: {revisions:?}");
    assert!(view.revision >= *revisions.iter().next().unwrap());
}

#[tokio::test]
async fn evicting_one_member_of_a_group_keeps_the_lease_and_the_siblings() {
    let group = Group::new("group-evict");
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let members = start(&group).await;
    until(
        &mut events,
        TransitionKind::Joined,
        &format!("slot-{}", MEMBERS - 1),
    )
    .await;
    let mut statuses = members.members();

    let store = group.store().await;
    let eviction = muster_master::evict(&store, &group.prefix, "slot-7", Duration::from_secs(5))
        .await
        .expect("evict");
    assert!(
        eviction.lease_shared && !eviction.lease_revoked,
        "{eviction:?}"
    );
    until(&mut events, TransitionKind::Left, "slot-7").await;
    let noticed = tokio::time::timeout(
        DEADLINE,
        statuses.wait_for(|m| {
            m.get("slot-7")
                == Some(&MemberStatus::Evicted {
                    revision: eviction.revision,
                })
        }),
    )
    .await
    .map(|r| r.is_ok());
    assert_eq!(noticed, Ok(true), "{:?}", statuses.borrow().get("slot-7"));

    // Three TTLs on (a lease that was revoked would have expired all of them), the other
    // members are alive and nothing else was reported.
    let later = master.view().revision;
    tokio::time::sleep(group.worker_config().ttl * 3).await;
    let view = master.view();
    assert_eq!(view.members.len(), MEMBERS - 1);
    assert!(view.members.values().all(|m| m.state == MemberState::Alive));
    while let Ok(Some(t)) = events.try_next_transition() {
        assert!(t.revision <= later, "nothing after the eviction: {t:?}");
    }
    members.leave().await.expect("leave");
}
