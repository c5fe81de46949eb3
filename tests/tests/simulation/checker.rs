//! The checker can fail: broken runs fed straight to the invariants, each rejected with a
//! message that names what went wrong (and the same runs, repaired, accepted).

use std::sync::Arc;
use std::time::Instant;

use muster_core::{Incarnation, Member, MemberInfo, MemberState, Transition, TransitionKind};
use muster_master::View;

use crate::assertions::{self, Life};
use crate::reference::History;
use crate::sut;
use crate::transition::Op;

fn member(name: &str, state: MemberState, incarnation: u64) -> Member {
    Member {
        info: Arc::new(MemberInfo::new(name, "x:1")),
        state,
        incarnation: Incarnation(incarnation),
        record_revision: 2,
        since: 2,
        suspect_since: None,
    }
}

fn transition(kind: TransitionKind, member: Member, revision: i64) -> Transition {
    Transition {
        kind,
        member,
        revision,
        at: Instant::now(),
    }
}

fn empty_view() -> View {
    View {
        epoch: Default::default(),
        revision: 1,
        synced: true,
        members: Default::default(),
    }
}

/// A history in which the records of `names` were deleted at `revisions`.
fn deletions(entries: &[(&str, i64)]) -> History {
    let mut history = History::default();
    for (name, revision) in entries {
        history
            .leave_deletions
            .entry((*name).to_owned())
            .or_default()
            .insert(*revision);
    }
    history
}

#[test]
fn the_checker_rejects_a_left_without_a_leave() {
    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(
            TransitionKind::Joined,
            member("w0", MemberState::Alive, 1),
            2,
        ),
    );
    life.deliver(
        2,
        transition(TransitionKind::Left, member("w0", MemberState::Left, 1), 3),
    );
    let mut history = deletions(&[("w0", 3)]);
    history.record(3, tokio::time::Instant::now(), &Op::Leave { w: 0 }); // a leave of w0, but after the Left
    let err = assertions::lefts_follow_leaves(&life, &history).unwrap_err();
    assert!(err.contains("Left for w0"), "{err}");

    // With the leave issued before, the same log passes.
    let mut history = deletions(&[("w0", 3), ("w0", 6)]);
    history.record(2, tokio::time::Instant::now(), &Op::Leave { w: 0 });
    assertions::lefts_follow_leaves(&life, &history).unwrap();
    // A second Left needs a second leave.
    life.deliver(
        4,
        transition(
            TransitionKind::Joined,
            member("w0", MemberState::Alive, 2),
            5,
        ),
    );
    life.deliver(
        4,
        transition(TransitionKind::Left, member("w0", MemberState::Left, 2), 6),
    );
    let err = assertions::lefts_follow_leaves(&life, &history).unwrap_err();
    assert!(err.contains("Left #2"), "{err}");

    // No exception for a relist: one that finds w0 gone cannot know why, so a `Left` there
    // (no leave at its revision) is a guess reported as a fact.
    let history = deletions(&[("w0", 4)]);
    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(
            TransitionKind::Joined,
            member("w0", MemberState::Alive, 1),
            2,
        ),
    );
    life.deliver(
        2,
        transition(TransitionKind::Left, member("w0", MemberState::Left, 1), 5),
    );
    let err = assertions::lefts_follow_leaves(&life, &history).unwrap_err();
    assert!(err.contains("Left for w0"), "{err}");
}

#[test]
fn the_checker_rejects_a_suspect_without_a_lost_lease() {
    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(
            TransitionKind::Joined,
            member("w1", MemberState::Alive, 1),
            2,
        ),
    );
    life.deliver(
        2,
        transition(
            TransitionKind::Suspect,
            member("w1", MemberState::Suspect, 1),
            3,
        ),
    );
    let mut history = History::default();
    history.record(1, tokio::time::Instant::now(), &Op::Partition { w: 0 }); // another worker's partition
    let err = assertions::suspects_follow_lost_leases(&life, &history).unwrap_err();
    assert!(err.contains("Suspect for w1"), "{err}");
    history.record(2, tokio::time::Instant::now(), &Op::Hang { w: 1 });
    assertions::suspects_follow_lost_leases(&life, &history).unwrap();
}

#[test]
fn the_checker_rejects_duplicates_and_malformed_streams() {
    let mut life = Life::new(0, 0, 0, &empty_view());
    let joined = transition(
        TransitionKind::Joined,
        member("a", MemberState::Alive, 1),
        2,
    );
    life.deliver(1, joined.clone());
    life.deliver(2, joined);
    let err = assertions::no_duplicate_deliveries(&life).unwrap_err();
    assert!(err.contains("twice"), "{err}");
    let err = assertions::stream_replays_to_view(&life, &empty_view()).unwrap_err();
    assert!(err.contains("joined cannot follow state alive"), "{err}");

    // Recovered needs Suspect first.
    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(
            TransitionKind::Joined,
            member("a", MemberState::Alive, 1),
            2,
        ),
    );
    life.deliver(
        1,
        transition(
            TransitionKind::Recovered,
            member("a", MemberState::Alive, 1),
            3,
        ),
    );
    assert!(assertions::stream_replays_to_view(&life, &empty_view()).is_err());
}

#[test]
fn the_checker_rejects_a_view_that_is_not_the_store() {
    let mut view = empty_view();
    view.revision = 5;
    view.members
        .insert("a".into(), member("a", MemberState::Alive, 1));
    let mut truth = view.members.clone();
    assertions::view_matches_store("m0", &view, &truth, 5).unwrap();
    truth.get_mut("a").unwrap().state = MemberState::Suspect;
    let err = assertions::view_matches_store("m0", &view, &truth, 5).unwrap_err();
    assert!(err.contains("a: view alive"), "{err}");
    truth.clear();
    let err = assertions::view_matches_store("m0", &view, &truth, 6).unwrap_err();
    assert!(err.contains("revision 6"), "{err}");

    // A worker healthy long enough but missing from the view.
    let healthy = [assertions::HealthyWorker {
        name: "b".into(),
        incarnation: Incarnation(2),
        info: MemberInfo::new("b", "x:1"),
        healthy_for: sut::HEALTHY_AFTER,
        info_age: sut::HEALTHY_AFTER,
        registered: true,
    }];
    let err =
        assertions::healthy_workers_alive("m0", &view, &healthy, sut::HEALTHY_AFTER).unwrap_err();
    assert!(err.contains("b (incarnation 2"), "{err}");
}

fn kv(key: String, value: Vec<u8>, revision: i64) -> muster_core::KeyValue {
    muster_core::KeyValue {
        key,
        value,
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        lease: 0,
    }
}

fn keyspace() -> muster_core::Keyspace {
    muster_core::Keyspace::new(sut::PREFIX).unwrap()
}

#[test]
fn the_checker_rejects_ghosts_in_the_view_and_in_the_store() {
    let ks = keyspace();
    let mut view = empty_view();
    view.members
        .insert("a".into(), member("a", MemberState::Suspect, 1));
    let empty = muster_core::Listing {
        revision: 1,
        kvs: vec![],
    };
    let err = assertions::no_ghosts("m0", &view, &empty, &ks).unwrap_err();
    assert!(err.contains("ghost members in m0's view"), "{err}");

    // A liveness key of a process that ended more than a TTL ago.
    let live = muster_core::Liveness {
        incarnation: Incarnation(7),
        shared: false,
    };
    let listing = muster_core::Listing {
        revision: 3,
        kvs: vec![kv(ks.liveness_key("w0"), live.to_json(), 3)],
    };
    let now = tokio::time::Instant::now();
    let mut processes = std::collections::BTreeMap::new();
    processes.insert(
        Incarnation(7),
        assertions::ProcessLife {
            names: ["w0".to_owned()].into(),
            ended: Some(now),
        },
    );
    assertions::no_ghost_liveness(&listing, &ks, &processes, now + sut::TTL, sut::TTL).unwrap();
    let later = now + sut::TTL + std::time::Duration::from_millis(1);
    let err =
        assertions::no_ghost_liveness(&listing, &ks, &processes, later, sut::TTL).unwrap_err();
    assert!(err.contains("outlived its process"), "{err}");
    processes.clear();
    let err = assertions::no_ghost_liveness(&listing, &ks, &processes, now, sut::TTL).unwrap_err();
    assert!(err.contains("no process of the run had"), "{err}");

    // The same key, with its worker cut off for longer than a TTL.
    let cut_off = [("w0".to_owned(), sut::TTL * 2)];
    let err =
        assertions::cut_off_workers_lose_liveness(&listing, &ks, &cut_off, sut::TTL).unwrap_err();
    assert!(err.contains("w0 has been cut off"), "{err}");

    // A record left behind by a successful leave.
    let listing = muster_core::Listing {
        revision: 3,
        kvs: vec![kv(ks.record_key("w0"), b"{}".to_vec(), 3)],
    };
    let err =
        assertions::left_members_have_no_record(&listing, &ks, &["w0".to_owned()]).unwrap_err();
    assert!(err.contains("w0 left successfully"), "{err}");
}

#[test]
fn the_checker_rejects_an_early_reap_and_transitions_out_of_order() {
    use muster_core::EventKind::{Delete, Put};
    let t0 = tokio::time::Instant::now();
    let change = |revision, secs, record, liveness| crate::reference::KeyChange {
        revision,
        at: t0 + std::time::Duration::from_secs(secs),
        record,
        liveness,
    };
    let mut history = History::default();
    history.key_change("w0", change(2, 0, Some(Put), Some(Put)));
    history.key_change("w0", change(3, 2, None, Some(Delete)));
    history.key_change("w0", change(4, 12, Some(Delete), None));
    let err = assertions::no_early_reaps(&history, sut::REAP_AFTER).unwrap_err();
    assert!(err.contains("only Some(10s) after its liveness"), "{err}");
    // The same deletion 30 s after the liveness went is a reap on time.
    let mut history = History::default();
    history.key_change("w0", change(2, 0, Some(Put), Some(Put)));
    history.key_change("w0", change(3, 2, None, Some(Delete)));
    history.key_change("w0", change(4, 32, Some(Delete), None));
    assertions::no_early_reaps(&history, sut::REAP_AFTER).unwrap();

    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(
            TransitionKind::Joined,
            member("a", MemberState::Alive, 1),
            5,
        ),
    );
    life.deliver(
        2,
        transition(
            TransitionKind::Joined,
            member("b", MemberState::Alive, 2),
            4,
        ),
    );
    let err = assertions::deliveries_in_revision_order(&life).unwrap_err();
    assert!(err.contains("at revision 4 after"), "{err}");
}

#[test]
fn the_checker_rejects_an_evicted_incarnation_that_writes_again() {
    let mut history = History::default();
    history.evicted(
        "w0",
        crate::reference::EvictionRecord {
            op: 3,
            revision: 10,
            blocked: Incarnation(1),
        },
    );
    history
        .incarnation_puts
        .insert("w0".into(), vec![(2, Incarnation(1)), (12, Incarnation(2))]);
    // Before the eviction, and a new process after it: fine.
    assert_eq!(assertions::evicted_never_reappear(&history), Ok(()));
    history
        .incarnation_puts
        .get_mut("w0")
        .unwrap()
        .push((14, Incarnation(1)));
    let err = assertions::evicted_never_reappear(&history).unwrap_err();
    assert!(
        err.contains("incarnation 1 of w0, evicted at revision 10") && err.contains("revision 14"),
        "{err}"
    );
}

#[test]
fn the_checker_rejects_a_lease_whose_members_do_not_go_together() {
    use muster_core::EventKind::{Delete, Put};
    let at = tokio::time::Instant::now();
    let change = |revision, record, liveness| crate::reference::KeyChange {
        revision,
        at,
        record,
        liveness,
    };
    let (a, b) = ("host0-m0", "host0-m1");
    // Both registered on lease 7, then the lease runs out.
    let registered = |history: &mut History| {
        history.revision(
            2,
            vec![(a.to_owned(), change(2, Some(Put), Some(Put)), Some(7))],
        );
        history.revision(
            3,
            vec![(b.to_owned(), change(3, Some(Put), Some(Put)), Some(7))],
        );
    };
    let mut history = History::default();
    registered(&mut history);
    history.revision(4, vec![(a.to_owned(), change(4, None, Some(Delete)), None)]);
    let err = assertions::leases_expire_in_one_revision(&history).unwrap_err();
    assert!(err.contains("stayed on it"), "{err}");
    let mut history = History::default();
    registered(&mut history);
    history.revision(
        4,
        vec![
            (a.to_owned(), change(4, None, Some(Delete)), None),
            (b.to_owned(), change(4, None, Some(Delete)), None),
        ],
    );
    assertions::leases_expire_in_one_revision(&history).unwrap();

    // A master that turns only one of them Suspect at the expiry's revision.
    let mut life = Life::new(0, 0, 0, &empty_view());
    life.deliver(
        1,
        transition(TransitionKind::Joined, member(a, MemberState::Alive, 1), 2),
    );
    life.deliver(
        1,
        transition(TransitionKind::Joined, member(b, MemberState::Alive, 1), 3),
    );
    life.deliver(
        2,
        transition(
            TransitionKind::Suspect,
            member(a, MemberState::Suspect, 1),
            4,
        ),
    );
    let err = assertions::suspects_of_one_lease_together(&life, &history).unwrap_err();
    assert!(
        err.contains("Suspect at revision 4") && err.contains(&format!("not for {b}")),
        "{err}"
    );
    // The other one a revision later is still a split.
    life.deliver(
        2,
        transition(
            TransitionKind::Suspect,
            member(b, MemberState::Suspect, 1),
            5,
        ),
    );
    assert!(assertions::suspects_of_one_lease_together(&life, &history).is_err());
    // Both at revision 4: together.
    life.delivered.pop();
    life.deliver(
        2,
        transition(
            TransitionKind::Suspect,
            member(b, MemberState::Suspect, 1),
            4,
        ),
    );
    assertions::suspects_of_one_lease_together(&life, &history).unwrap();

    // In the store: one process's liveness keys on two leases.
    let ks = keyspace();
    let live = muster_core::Liveness {
        incarnation: Incarnation(1),
        shared: true,
    };
    let on = |name: &str, lease| muster_core::KeyValue {
        lease,
        ..kv(ks.liveness_key(name), live.to_json(), 3)
    };
    let listing = muster_core::Listing {
        revision: 3,
        kvs: vec![on(a, 7), on(b, 7)],
    };
    assertions::one_lease_per_process(&listing, &ks).unwrap();
    let listing = muster_core::Listing {
        revision: 3,
        kvs: vec![on(a, 7), on(b, 8)],
    };
    let err = assertions::one_lease_per_process(&listing, &ks).unwrap_err();
    assert!(err.contains("incarnation 1 are on 2 leases"), "{err}");
}
