//! The transition contract of `Membership`, row by row: exact kinds, member states and
//! revisions for every observation the master can make (DESIGN §1, §2; the table in
//! `membership.rs`).

mod common;

use std::time::Duration;

use common::*;
use muster_core::{
    BadKey, BadKeyReason, Condition, Incarnation, MemberState, Membership, Op, Reap, Step,
    TransitionKind, Txn, WatchBatch,
};
use BadKeyReason::*;
use TransitionKind::*;

/// A machine that has seen `name` register (record + liveness) at one revision.
fn alive(sim: &mut Sim, m: &mut Membership, name: &str, incarnation: u64, clock: Clock) -> Step {
    let b = sim.txn(&register(name, &info(name, 1), incarnation));
    m.apply(&b, clock.at(0))
}

// ---------------------------------------------------------------------------------------------
// Watch rows
// ---------------------------------------------------------------------------------------------

#[test]
fn joined_when_record_and_liveness_are_written_in_one_revision() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let b = sim.txn(&register("a", &info("a", 1), 7));
    assert_eq!(b.revision, 2);
    let step = m.apply(&b, clock.at(1));

    assert_eq!(kinds(&step), vec![Joined]);
    assert!(step.skipped.is_empty());
    let t = &step.transitions[0];
    assert_eq!(t.revision, 2);
    assert_eq!(t.at, clock.at(1));
    assert_eq!(t.member.name(), "a");
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.info, info("a", 1));
    assert_eq!(t.member.incarnation, Incarnation(7));
    assert_eq!(t.member.record_revision, 2);
    assert_eq!(t.member.since, 2);
    assert_eq!(t.member.suspect_since, None);
    assert_eq!(m.revision(), 2);
    assert_eq!(m.get("a"), Some(&t.member));
    assert!(m.get("a").unwrap().state.in_group());
}

#[test]
fn joined_when_the_liveness_key_came_first_and_the_record_follows() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(0));
    assert_eq!(kinds(&step), vec![], "liveness alone is not membership");
    assert_eq!(m.get("a"), None);
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 1)]), clock.at(0));
    assert_eq!(kinds(&step), vec![Joined]);
    assert_eq!(step.transitions[0].member.state, MemberState::Alive);
    assert_eq!(step.transitions[0].revision, 3);
}

#[test]
fn joined_then_suspect_when_a_record_appears_without_liveness() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 3)]), clock.at(4));
    assert_eq!(kinds(&step), vec![Joined, Suspect]);
    for t in &step.transitions {
        assert_eq!(t.revision, 2);
        assert_eq!(t.member.state, MemberState::Suspect);
    }
    let a = m.get("a").unwrap();
    assert_eq!(a.state, MemberState::Suspect);
    assert!(!a.state.in_group());
    assert_eq!(a.suspect_since, Some(clock.at(4)));
}

#[test]
fn draining_when_the_record_turns_draining_on_and_updated_when_it_turns_it_off() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let draining = info("a", 1).draining(true);
    let step = m.apply(&sim.txn(&[put_record("a", &draining, 1)]), clock.at(1));
    assert_eq!(kinds(&step), vec![Draining]);
    let t = &step.transitions[0];
    assert_eq!(
        t.member.state,
        MemberState::Alive,
        "still a member while draining"
    );
    assert!(t.member.info.draining);
    assert_eq!(m.get("a").unwrap().info, draining);

    // Rewritten while draining, with other metadata: an update, not a second drain.
    let step = m.apply(
        &sim.txn(&[put_record("a", &info("a", 2).draining(true), 1)]),
        clock.at(2),
    );
    assert_eq!(kinds(&step), vec![Updated]);
    // Turned off again (a writer changed its mind): an update.
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 2), 1)]), clock.at(3));
    assert_eq!(kinds(&step), vec![Updated]);
    assert!(!m.get("a").unwrap().info.draining);

    // A master that starts now rebuilds a draining member exactly, from its record.
    sim.commit(&[put_record("a", &draining, 1)]);
    let mut fresh = machine();
    let step = fresh.resync(&sim.listing(), clock.at(4));
    assert_eq!(kinds(&step), vec![Joined]);
    assert_eq!(fresh.get("a").unwrap().info, draining);
}

#[test]
fn updated_when_the_record_is_rewritten_and_liveness_is_unchanged() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 2), 1)]), clock.at(1));

    assert_eq!(kinds(&step), vec![Updated]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 3);
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.info, info("a", 2));
    assert_eq!(t.member.incarnation, Incarnation(1));
    assert_eq!(t.member.record_revision, 3);
    assert_eq!(t.member.since, 2, "an update is not a state change");
    assert_eq!(m.get("a").unwrap().info, info("a", 2));
}

#[test]
fn rewriting_the_same_metadata_emits_nothing_but_tracks_the_record_revision() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 1)]), clock.at(1));
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(m.get("a").unwrap().record_revision, 3);
    assert_eq!(m.revision(), 3);
}

#[test]
fn suspect_when_the_liveness_key_is_deleted_alone() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[del_live("a")]), clock.at(5));

    assert_eq!(kinds(&step), vec![Suspect]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 3);
    assert_eq!(t.at, clock.at(5));
    assert_eq!(t.member.state, MemberState::Suspect);
    assert_eq!(t.member.since, 3);
    assert_eq!(t.member.suspect_since, Some(clock.at(5)));
    assert_eq!(t.member.record_revision, 2, "the record was not touched");
    assert_eq!(m.get("a").unwrap().state, MemberState::Suspect);
}

#[test]
fn recovered_when_liveness_returns_with_the_records_incarnation() {
    let clock = Clock::start();
    // The worker re-registers (record + liveness) with its own incarnation.
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&register("a", &info("a", 1), 1)), clock.at(2));
    assert_eq!(kinds(&step), vec![Recovered]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 4);
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.incarnation, Incarnation(1));
    assert_eq!(t.member.since, 4);
    assert_eq!(t.member.suspect_since, None);

    // Only the liveness key comes back.
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(2));
    assert_eq!(kinds(&step), vec![Recovered]);
    assert_eq!(step.transitions[0].member.state, MemberState::Alive);
}

#[test]
fn recovered_with_new_metadata_is_recovered_then_updated() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&register("a", &info("a", 9), 1)), clock.at(2));
    assert_eq!(kinds(&step), vec![Recovered, Updated]);
    assert!(step
        .transitions
        .iter()
        .all(|t| t.member.info == info("a", 9)));
}

#[test]
fn restarted_from_suspect_when_a_new_incarnation_registers() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&register("a", &info("a", 1), 2)), clock.at(2));

    assert_eq!(kinds(&step), vec![Restarted]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 4);
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.incarnation, Incarnation(2));
    assert_eq!(t.member.record_revision, 4);
    assert_eq!(t.member.since, 4);

    // With new metadata too.
    m.apply(&sim.txn(&[del_live("a")]), clock.at(3));
    let step = m.apply(&sim.txn(&register("a", &info("a", 5), 3)), clock.at(4));
    assert_eq!(kinds(&step), vec![Restarted, Updated]);
}

/// A new process that replaces both keys in one transaction (the liveness key is
/// overwritten, so its create revision stays) is a restart, seen on the watch and in a
/// resync alike: the view's incarnation changes, so a transition must say so.
#[test]
fn restarted_when_both_keys_are_replaced_by_a_new_incarnation() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&register("a", &info("a", 1), 2)), clock.at(1));
    assert_eq!(kinds(&step), vec![Restarted]);
    let t = &step.transitions[0];
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.incarnation, Incarnation(2));
    assert_eq!(t.member.since, 3, "a restart is a change of state");
    assert_eq!(m.get("a").unwrap().incarnation, Incarnation(2));

    // With a new address too: a restart first, then the update.
    let step = m.apply(&sim.txn(&register("a", &info("a", 7), 3)), clock.at(2));
    assert_eq!(kinds(&step), vec![Restarted, Updated]);

    // Unseen, then found by a resync: the same.
    sim.commit(&register("a", &info("a", 7), 4));
    let step = m.resync(&sim.listing(), clock.at(3));
    assert_eq!(kinds(&step), vec![Restarted]);
    assert_eq!(m.get("a").unwrap().incarnation, Incarnation(4));
}

#[test]
fn restarted_directly_from_alive_when_a_resync_shows_a_new_incarnation() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    // Unseen by the machine: the lease expired and a new process registered.
    sim.commit(&[del_live("a")]);
    sim.commit(&register("a", &info("a", 1), 2));
    let step = m.resync(&sim.listing(), clock.at(9));

    assert_eq!(kinds(&step), vec![Restarted]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 4);
    assert_eq!(t.at, clock.at(9));
    assert_eq!(t.member.state, MemberState::Alive);
    assert_eq!(t.member.incarnation, Incarnation(2));
    assert_eq!(m.revision(), 4);
}

#[test]
fn suspect_then_recovered_when_a_resync_shows_liveness_recreated_by_the_same_process() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    sim.commit(&[del_live("a")]);
    sim.commit(&register("a", &info("a", 1), 1));
    let step = m.resync(&sim.listing(), clock.at(9));

    assert_eq!(kinds(&step), vec![Suspect, Recovered]);
    assert!(step.transitions.iter().all(|t| t.revision == 4));
    assert_eq!(step.transitions[1].member.state, MemberState::Alive);
    assert_eq!(m.get("a").unwrap().state, MemberState::Alive);
    assert_eq!(m.get("a").unwrap().suspect_since, None);
}

/// A transition carries "the member after the transition"; for `Left`/`Failed` the machine
/// already rewrites the state to match the kind. The `Suspect` half of a `Suspect`,
/// `Recovered` pair should likewise carry a `Suspect` member, not the final `Alive` one.
#[test]
fn the_suspect_half_of_suspect_recovered_carries_a_suspect_member() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    sim.commit(&[del_live("a")]);
    sim.commit(&register("a", &info("a", 1), 1));
    let step = m.resync(&sim.listing(), clock.at(9));
    assert_eq!(kinds(&step), vec![Suspect, Recovered]);
    assert_eq!(
        step.transitions[0].member.state,
        MemberState::Suspect,
        "a Suspect transition reports its member as {:?}",
        step.transitions[0].member.state
    );
}

#[test]
fn left_when_both_keys_are_deleted_in_one_revision_while_alive() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[del_record("a"), del_live("a")]), clock.at(3));

    assert_eq!(kinds(&step), vec![Left]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 3);
    assert_eq!(t.member.state, MemberState::Left);
    assert_eq!(t.member.info, info("a", 1));
    assert_eq!(t.member.incarnation, Incarnation(1));
    assert_eq!(t.member.since, 3);
    assert_eq!(t.member.suspect_since, None);
    assert_eq!(m.get("a"), None);
    assert_eq!(m.view().len(), 0);
}

#[test]
fn left_when_an_operator_evicts_the_record_of_an_alive_member() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[del_record("a")]), clock.at(3));
    assert_eq!(kinds(&step), vec![Left]);
    assert_eq!(step.transitions[0].member.state, MemberState::Left);
    assert_eq!(m.get("a"), None);
    // The orphaned liveness key going away later is not a transition.
    let step = m.apply(&sim.txn(&[del_live("a")]), clock.at(4));
    assert_eq!(kinds(&step), vec![]);
}

#[test]
fn an_eviction_with_its_marker_is_left_for_an_alive_member_and_the_marker_is_no_member() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&evict("a", 1)), clock.at(3));
    assert_eq!(kinds(&step), vec![Left]);
    assert!(step.skipped.is_empty(), "{:?}", step.skipped);
    assert!(
        step.bad_keys.is_empty(),
        "a marker is no bad key: {:?}",
        step.bad_keys
    );
    assert_eq!(m.get("a"), None);
    assert_eq!(m.revision(), 3);
    // A listing holding only the marker has no member, and nothing to report.
    let mut fresh = machine();
    let step = fresh.resync(&sim.listing(), clock.at(4));
    assert_eq!(kinds(&step), vec![]);
    assert!(step.skipped.is_empty(), "{:?}", step.skipped);
    assert!(step.bad_keys.is_empty(), "{:?}", step.bad_keys);
    assert_eq!(fresh.view().len(), 0);
    // The marker's hold ending is a revision of its own, with nothing to report.
    let step = m.apply(&sim.txn(&[del_marker("a", 1)]), clock.at(5));
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(m.revision(), 4);
    // A new incarnation joins under the name.
    let step = m.apply(&sim.txn(&register("a", &info("a", 2), 2)), clock.at(6));
    assert_eq!(kinds(&step), vec![Joined]);
}

#[test]
fn an_eviction_of_a_suspect_member_with_its_marker_is_failed() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(
        &sim.txn(&[del_record("a"), put_marker("a", 1)]),
        clock.at(2),
    );
    assert_eq!(kinds(&step), vec![Failed]);
    assert_eq!(m.get("a"), None);
}

#[test]
fn failed_when_the_record_is_deleted_while_suspect() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&[del_record("a")]), clock.at(2));

    assert_eq!(kinds(&step), vec![Failed]);
    let t = &step.transitions[0];
    assert_eq!(t.revision, 4);
    assert_eq!(t.member.state, MemberState::Failed);
    assert_eq!(t.member.since, 4);
    assert_eq!(t.member.suspect_since, None);
    assert_eq!(m.get("a"), None);
    assert_eq!(m.poll_timeout(), None, "nothing left to reap");
}

#[test]
fn a_record_recreated_between_observations_is_removed_then_joined() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    sim.commit(&[del_record("a"), del_live("a")]);
    sim.commit(&register("a", &info("a", 1), 1));
    let step = m.resync(&sim.listing(), clock.at(1));
    // The listing cannot tell a leave from a crash and a reap: cause unknown.
    assert_eq!(kinds(&step), vec![Removed, Joined]);
    assert_eq!(step.transitions[0].member.state, MemberState::Removed);
    assert_eq!(step.transitions[1].member.state, MemberState::Alive);
    assert_eq!(step.transitions[1].member.since, 4);
}

// ---------------------------------------------------------------------------------------------
// Reaping
// ---------------------------------------------------------------------------------------------

#[test]
fn a_suspect_member_is_reaped_after_reap_after_and_the_reap_is_retried() {
    let clock = Clock::start();
    let (mut sim, m) = (Sim::new(), machine());
    let mut m = m.with_reap_retry(Duration::from_secs(2));
    alive(&mut sim, &mut m, "a", 1, clock);
    assert_eq!(m.poll_timeout(), None, "alive members are never due");
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));

    assert_eq!(m.poll_timeout(), Some(clock.at(11)));
    assert_eq!(m.handle_timeout(clock.at_ms(10_999)), vec![]);
    assert_eq!(m.poll_timeout(), Some(clock.at(11)));

    let reaps = m.handle_timeout(clock.at(11));
    let expected = Reap {
        name: "a".into(),
        record_revision: 2,
    };
    assert_eq!(reaps, vec![expected.clone()]);
    assert_eq!(
        expected.txn(m.keyspace()),
        Txn {
            when: vec![
                Condition::ModRevision(rkey("a"), 2),
                Condition::Absent(lkey("a")),
            ],
            then: vec![Op::Delete { key: rkey("a") }],
        }
    );

    // The transaction was lost: nothing is proposed before the retry interval, then again.
    assert_eq!(m.poll_timeout(), Some(clock.at(13)));
    assert_eq!(m.handle_timeout(clock.at(12)), vec![]);
    assert_eq!(m.handle_timeout(clock.at(13)), vec![expected]);
    assert_eq!(m.poll_timeout(), Some(clock.at(15)));

    // This time it lands.
    let step = m.apply(&sim.txn(&[del_record("a")]), clock.at(14));
    assert_eq!(kinds(&step), vec![Failed]);
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.handle_timeout(clock.at(100)), vec![]);
}

#[test]
fn the_reap_guard_holds_only_while_nothing_changed() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(0));
    let reaps = m.handle_timeout(clock.at(10));
    assert_eq!(reaps.len(), 1);
    let txn = reaps[0].txn(m.keyspace());
    assert!(txn.when.iter().all(|c| sim.holds(c)));

    // Liveness back (not yet observed by the master): the guard fails.
    let mut other = sim.clone();
    other.commit(&[put_live("a", 1)]);
    assert!(!txn.when.iter().all(|c| other.holds(c)));
    // Record rewritten: the guard fails.
    let mut other = sim.clone();
    other.commit(&[put_record("a", &info("a", 2), 1)]);
    assert!(!txn.when.iter().all(|c| other.holds(c)));
}

#[test]
fn a_reap_names_the_latest_record_revision_and_keeps_the_original_deadline() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 3), 1)]), clock.at(5));
    assert_eq!(kinds(&step), vec![Updated]);
    assert_eq!(step.transitions[0].member.state, MemberState::Suspect);
    assert_eq!(m.get("a").unwrap().suspect_since, Some(clock.at(1)));
    assert_eq!(m.poll_timeout(), Some(clock.at(11)));
    assert_eq!(
        m.handle_timeout(clock.at(11)),
        vec![Reap {
            name: "a".into(),
            record_revision: 4
        }]
    );
}

#[test]
fn nothing_is_reaped_when_reap_after_is_none() {
    let clock = Clock::start();
    let mut sim = Sim::new();
    let mut m = Membership::new(keyspace(), None);
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    assert_eq!(kinds(&step), vec![Suspect]);
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.handle_timeout(clock.at(1_000_000)), vec![]);
    assert_eq!(m.get("a").unwrap().state, MemberState::Suspect);
}

#[test]
fn a_member_that_recovers_is_no_longer_due() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    assert_eq!(m.poll_timeout(), Some(clock.at(11)));
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(5));
    assert_eq!(kinds(&step), vec![Recovered]);
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.handle_timeout(clock.at(100)), vec![]);

    // Suspect again later: the clock starts over.
    m.apply(&sim.txn(&[del_live("a")]), clock.at(150));
    assert_eq!(m.poll_timeout(), Some(clock.at(160)));
}

#[test]
fn only_due_members_are_reaped_and_the_earliest_deadline_is_polled() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    alive(&mut sim, &mut m, "b", 1, clock);
    m.apply(&sim.txn(&[del_live("b")]), clock.at(1));
    m.apply(&sim.txn(&[del_live("a")]), clock.at(4));
    assert_eq!(m.poll_timeout(), Some(clock.at(11)));
    let reaps = m.handle_timeout(clock.at(12));
    assert_eq!(
        reaps.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert_eq!(
        m.poll_timeout(),
        Some(clock.at(13)),
        "b's retry at 12 + 1 s"
    );
    let reaps = m.handle_timeout(clock.at(14));
    assert_eq!(
        reaps.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
}

#[test]
fn a_resync_keeps_the_suspicion_clock_and_a_fresh_master_starts_its_own() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    // Same master, re-listing later: the reap is not postponed.
    let step = m.resync(&sim.listing(), clock.at(8));
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(m.get("a").unwrap().suspect_since, Some(clock.at(1)));
    assert_eq!(m.poll_timeout(), Some(clock.at(11)));
    // A master that restarts can delay the reap but never hasten it.
    let mut fresh = machine();
    let step = fresh.resync(&sim.listing(), clock.at(8));
    assert_eq!(kinds(&step), vec![Joined, Suspect]);
    assert_eq!(fresh.get("a").unwrap().suspect_since, Some(clock.at(8)));
    assert_eq!(fresh.poll_timeout(), Some(clock.at(18)));
}

// ---------------------------------------------------------------------------------------------
// Restart and resync
// ---------------------------------------------------------------------------------------------

/// The view as (name, state, info, incarnation, record revision).
fn summary(m: &Membership) -> Vec<(String, MemberState, u32, Incarnation, i64)> {
    m.members()
        .map(|x| {
            (
                x.name().to_owned(),
                x.state,
                x.info.cpus,
                x.incarnation,
                x.record_revision,
            )
        })
        .collect()
}

#[test]
fn a_fresh_master_resynced_from_a_listing_rebuilds_the_watchers_view() {
    let clock = Clock::start();
    let (mut sim, mut watcher) = (Sim::new(), machine());
    let history: Vec<Vec<Write>> = vec![
        register("alive", &info("alive", 1), 1),
        register("suspect", &info("suspect", 1), 1),
        register("updated", &info("updated", 1), 1),
        register("left", &info("left", 1), 1),
        register("restarted", &info("restarted", 1), 1),
        register("failed", &info("failed", 1), 1),
        vec![del_live("suspect")],
        vec![put_record("updated", &info("updated", 2), 1)],
        vec![del_record("left"), del_live("left")],
        vec![del_live("restarted")],
        register("restarted", &info("restarted", 1), 2),
        vec![del_live("failed")],
        vec![del_record("failed")],
        vec![put_record("orphan", &info("orphan", 1), 4)],
    ];
    for (i, writes) in history.iter().enumerate() {
        watcher.apply(&sim.txn(writes), clock.at(i as u64));
    }

    let mut fresh = machine();
    let step = fresh.resync(&sim.listing(), clock.at(100));
    assert_eq!(summary(&fresh), summary(&watcher));
    assert_eq!(fresh.revision(), watcher.revision());
    assert_eq!(
        named(&step),
        vec![
            ("alive".into(), Joined),
            ("orphan".into(), Joined),
            ("orphan".into(), Suspect),
            ("restarted".into(), Joined),
            ("suspect".into(), Joined),
            ("suspect".into(), Suspect),
            ("updated".into(), Joined),
        ]
    );
    assert!(step.transitions.iter().all(|t| t.revision == sim.revision));
    assert_eq!(
        fresh.get("suspect").unwrap().state,
        MemberState::Suspect,
        "a record without liveness is Suspect after a restart too"
    );
    assert_eq!(fresh.get("restarted").unwrap().incarnation, Incarnation(2));
}

#[test]
fn a_resync_after_compaction_emits_the_transitions_that_explain_the_difference() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    // The old view, observed by watching.
    for name in [
        "gone-alive",
        "live-again",
        "meta",
        "new-process",
        "recreated",
        "steady",
    ] {
        alive(&mut sim, &mut m, name, 1, clock);
    }
    alive(&mut sim, &mut m, "gone-suspect", 1, clock);
    m.apply(&sim.txn(&[del_live("gone-suspect")]), clock.at(0));
    alive(&mut sim, &mut m, "suspect-back", 1, clock);
    m.apply(&sim.txn(&[del_live("suspect-back")]), clock.at(0));
    let old = m.revision();

    // Unseen: everything changes while the watch is down and history is compacted.
    let gap: Vec<Vec<Write>> = vec![
        vec![del_record("gone-alive"), del_live("gone-alive")],
        vec![del_record("gone-suspect")],
        register("new-alive", &info("new-alive", 1), 1),
        vec![put_record("new-suspect", &info("new-suspect", 1), 1)],
        vec![del_live("live-again")],
        vec![put_live("live-again", 1)],
        vec![del_live("new-process")],
        register("new-process", &info("new-process", 1), 2),
        vec![put_record("meta", &info("meta", 2), 1)],
        vec![del_record("recreated"), del_live("recreated")],
        register("recreated", &info("recreated", 1), 1),
        vec![put_live("suspect-back", 1)],
    ];
    for writes in &gap {
        assert!(!sim.commit(writes).is_empty());
    }
    let listing = sim.listing();
    let step = m.resync(&listing, clock.at(50));

    assert_eq!(
        named(&step),
        vec![
            // Gone, and the listing cannot say why (it left, or crashed and was reaped).
            ("gone-alive".into(), Removed),
            ("gone-suspect".into(), Removed),
            ("live-again".into(), Suspect),
            ("live-again".into(), Recovered),
            ("meta".into(), Updated),
            ("new-alive".into(), Joined),
            ("new-process".into(), Restarted),
            ("new-suspect".into(), Joined),
            ("new-suspect".into(), Suspect),
            ("recreated".into(), Removed),
            ("recreated".into(), Joined),
            ("suspect-back".into(), Recovered),
        ]
    );
    assert!(step.skipped.is_empty());
    assert!(step
        .transitions
        .iter()
        .all(|t| t.revision == listing.revision));
    assert!(step.transitions.iter().all(|t| t.at == clock.at(50)));
    assert!(listing.revision > old);
    assert_eq!(m.revision(), listing.revision);
    assert_eq!(m.get("gone-alive"), None);
    assert_eq!(m.get("gone-suspect"), None);
    assert_eq!(m.get("steady").unwrap().state, MemberState::Alive);
    assert_eq!(m.get("new-process").unwrap().incarnation, Incarnation(2));
    assert_eq!(m.get("meta").unwrap().info, info("meta", 2));

    // And it is exactly the view a fresh master builds from the same listing.
    let mut fresh = machine();
    fresh.resync(&listing, clock.at(50));
    assert_eq!(summary(&fresh), summary(&m));

    // Resyncing again with the same listing changes nothing.
    assert_eq!(m.resync(&listing, clock.at(51)), Step::default());
}

#[test]
fn the_watch_continues_after_a_resync() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let stale = sim.txn(&[del_live("a")]); // lost with the broken watch
    m.resync(&sim.listing(), clock.at(1));
    assert_eq!(m.get("a").unwrap().state, MemberState::Suspect);
    assert_eq!(
        m.apply(&stale, clock.at(2)),
        Step::default(),
        "already in the listing"
    );
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(3));
    assert_eq!(kinds(&step), vec![Recovered]);
}

// ---------------------------------------------------------------------------------------------
// Malformed values and foreign keys
// ---------------------------------------------------------------------------------------------

#[test]
fn a_record_that_is_not_json_is_skipped_with_its_key_and_counts_as_absent() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(
        &sim.txn(&[
            Write::Put(rkey("a"), b"{not json".to_vec()),
            put_live("a", 1),
        ]),
        clock.at(0),
    );
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(step.skipped.len(), 1);
    assert_eq!(step.skipped[0].key, rkey("a"));
    assert_eq!(step.skipped[0].revision, 2);
    assert!(!step.skipped[0].reason.is_empty());
    assert_eq!(m.get("a"), None);

    // A good record replaces it: the member joins.
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 1)]), clock.at(1));
    assert_eq!(kinds(&step), vec![Joined]);
    assert!(step.skipped.is_empty());

    // A bad one over a good one: as if the record were deleted.
    let step = m.apply(
        &sim.txn(&[Write::Put(rkey("a"), b"[]".to_vec())]),
        clock.at(2),
    );
    assert_eq!(kinds(&step), vec![Left]);
    assert_eq!(step.skipped.len(), 1);
    assert_eq!(step.skipped[0].key, rkey("a"));
    assert_eq!(step.skipped[0].revision, 4);
}

#[test]
fn a_liveness_value_that_cannot_be_decoded_is_skipped_and_counts_as_absent() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(
        &sim.txn(&[
            put_record("a", &info("a", 1), 1),
            Write::Put(lkey("a"), b"{}".to_vec()),
        ]),
        clock.at(0),
    );
    assert_eq!(kinds(&step), vec![Joined, Suspect]);
    assert_eq!(step.skipped.len(), 1);
    assert_eq!(step.skipped[0].key, lkey("a"));
    assert_eq!(step.skipped[0].revision, 2);

    // An alive member whose liveness value turns bad is suspect.
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let step = m.apply(
        &sim.txn(&[Write::Put(lkey("a"), b"nope".to_vec())]),
        clock.at(1),
    );
    assert_eq!(kinds(&step), vec![Suspect]);
    assert_eq!(step.skipped[0].key, lkey("a"));
}

#[test]
fn a_record_naming_another_member_is_skipped() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(
        &sim.txn(&[put_record("a", &info("b", 1), 1), put_live("a", 1)]),
        clock.at(0),
    );
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(step.skipped.len(), 1);
    assert_eq!(step.skipped[0].key, rkey("a"));
    assert!(
        step.skipped[0].reason.contains("\"a\"") && step.skipped[0].reason.contains("\"b\""),
        "{}",
        step.skipped[0].reason
    );
    assert_eq!(m.get("a"), None);
    assert_eq!(m.get("b"), None);
}

#[test]
fn a_listing_with_bad_values_reports_them_and_keeps_the_rest() {
    let clock = Clock::start();
    let l = listing(
        9,
        vec![
            kv(&rkey("bad"), b"{", 3, 3),
            kv(&lkey("bad"), &live_json(1), 3, 3),
            kv(&rkey("good"), &record_json(&info("good", 1), 1), 4, 4),
            kv(&lkey("good"), &live_json(1), 4, 4),
            kv(&rkey("half"), &record_json(&info("half", 1), 1), 5, 5),
            kv(&lkey("half"), b"17", 5, 6),
        ],
    );
    let mut m = machine();
    let step = m.resync(&l, clock.at(0));
    assert_eq!(
        named(&step),
        vec![
            ("good".into(), Joined),
            ("half".into(), Joined),
            ("half".into(), Suspect),
        ]
    );
    let skipped: Vec<_> = step
        .skipped
        .iter()
        .map(|s| (s.key.clone(), s.revision))
        .collect();
    // In listing order: `alive/` sorts before `members/`.
    assert_eq!(skipped, vec![(lkey("half"), 6), (rkey("bad"), 3)]);
}

/// `Step::skipped` promises each bad value is "counted once per write"; a resync after
/// compaction lists the same, unchanged bad write again and must not count it twice.
#[test]
fn a_resync_does_not_report_an_already_skipped_write_again() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(
        &sim.txn(&[Write::Put(rkey("a"), b"{".to_vec())]),
        clock.at(0),
    );
    assert_eq!(step.skipped.len(), 1);
    let step = m.resync(&sim.listing(), clock.at(1));
    assert_eq!(
        step.skipped,
        vec![],
        "the write at revision 2 was already reported"
    );
}

/// A key under the prefix that is no member key changes nothing but is reported, once per
/// write, with why it is bad; a key outside the prefix is not the group's business.
#[test]
fn keys_outside_members_and_alive_are_reported_and_otherwise_ignored() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let long = "x".repeat(muster_core::MAX_NAME_LEN + 1);
    let foreign = [
        (format!("{PREFIX}config"), Some(UnknownKind)),
        (format!("{PREFIX}membersx/a"), Some(UnknownKind)),
        (format!("{PREFIX}members/a/b"), Some(InvalidName)),
        (format!("{PREFIX}alive/"), Some(EmptyName)),
        (format!("{PREFIX}members/"), Some(EmptyName)),
        (format!("{PREFIX}alive/a b"), Some(InvalidName)),
        (format!("{PREFIX}members/a\u{1b}[31m"), Some(InvalidName)),
        (format!("{PREFIX}members/{long}"), Some(NameTooLong)),
        ("/other/members/a".to_owned(), None),
    ];
    for (key, reason) in &foreign {
        let step = m.apply(
            &sim.txn(&[Write::Put(key.clone(), record_json(&info("a", 1), 1))]),
            clock.at(0),
        );
        let want = reason.map(|reason| BadKey {
            key: key.clone(),
            revision: sim.revision,
            reason,
        });
        assert_eq!(step.bad_keys, Vec::from_iter(want), "{key}");
        assert_eq!(
            Step {
                bad_keys: vec![],
                ..step
            },
            Step::default(),
            "{key}"
        );
    }
    assert_eq!(m.revision(), sim.revision);
    assert_eq!(m.view().len(), 0);
    // Already reported: a resync does not report them again; a fresh machine does, once.
    assert_eq!(m.resync(&sim.listing(), clock.at(0)), Step::default());
    let mut fresh = machine();
    let step = fresh.resync(&sim.listing(), clock.at(0));
    let mut reported: Vec<_> = step
        .bad_keys
        .iter()
        .map(|b| (b.key.clone(), b.reason))
        .collect();
    reported.sort();
    let mut want: Vec<_> = foreign
        .iter()
        .filter_map(|(key, reason)| Some((key.clone(), (*reason)?)))
        .collect();
    want.sort();
    assert_eq!(reported, want);
    assert_eq!(step.transitions, vec![]);
    assert_eq!(fresh.view().len(), 0);
    for (key, _) in &foreign {
        let step = m.apply(&sim.txn(&[Write::Delete(key.clone())]), clock.at(0));
        assert_eq!(step, Step::default(), "{key}");
    }
}

/// A bad key written again is a new bad write, reported again; one deleted and written again
/// too. Neither a replayed batch nor a listing of the same write reports it twice.
#[test]
fn a_bad_key_is_reported_once_per_write_on_a_watch_and_on_a_resync() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let key = format!("{PREFIX}whatever");
    let put = || Write::Put(format!("{PREFIX}whatever"), b"x".to_vec());
    let reported = |step: &Step| -> Vec<(String, muster_core::Revision)> {
        step.bad_keys
            .iter()
            .map(|b| (b.key.clone(), b.revision))
            .collect()
    };
    let b = sim.txn(&[put()]);
    assert_eq!(reported(&m.apply(&b, clock.at(0))), vec![(key.clone(), 2)]);
    assert_eq!(m.apply(&b, clock.at(0)), Step::default());
    assert_eq!(m.resync(&sim.listing(), clock.at(0)), Step::default());
    // Written again while the machine was not watching: the next listing reports it.
    sim.txn(&[put()]);
    let step = m.resync(&sim.listing(), clock.at(0));
    assert_eq!(reported(&step), vec![(key.clone(), 3)]);
    assert_eq!(m.resync(&sim.listing(), clock.at(0)), Step::default());
    // Deleted, and written again, on the watch.
    assert_eq!(
        m.apply(&sim.txn(&[Write::Delete(key.clone())]), clock.at(0)),
        Step::default()
    );
    let step = m.apply(&sim.txn(&[put()]), clock.at(0));
    assert_eq!(reported(&step), vec![(key.clone(), 5)]);
    // Several in one revision, between member keys: each once, the member unaffected.
    let step = m.apply(
        &sim.txn(&[
            put_record("a", &info("a", 1), 1),
            Write::Put(format!("{PREFIX}members/"), b"x".to_vec()),
            put_live("a", 1),
            Write::Put(format!("{PREFIX}alive/a b"), b"x".to_vec()),
        ]),
        clock.at(0),
    );
    assert_eq!(kinds(&step), vec![Joined]);
    assert_eq!(
        step.bad_keys,
        vec![
            BadKey {
                key: format!("{PREFIX}members/"),
                revision: 6,
                reason: EmptyName
            },
            BadKey {
                key: format!("{PREFIX}alive/a b"),
                revision: 6,
                reason: InvalidName
            },
        ]
    );
}

/// A liveness key with no record is reported (with the liveness key's revision) when it is
/// first observed, whoever wrote it, and not again until it changes or had a record between.
#[test]
fn a_liveness_key_without_a_record_is_reported_when_observed() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let orphan = |revision| BadKey {
        key: lkey("a"),
        revision,
        reason: LivenessWithoutRecord,
    };
    // Written by hand.
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(0));
    assert_eq!(step.bad_keys, vec![orphan(2)]);
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(m.resync(&sim.listing(), clock.at(0)), Step::default());
    // Written again: a new write.
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(0));
    assert_eq!(step.bad_keys, vec![orphan(3)]);
    // A record arrives: a member, nothing bad.
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 1)]), clock.at(0));
    assert_eq!(kinds(&step), vec![Joined]);
    assert_eq!(step.bad_keys, vec![]);
    // An operator deletes the record while the lease lives on.
    let step = m.apply(&sim.txn(&[del_record("a")]), clock.at(0));
    assert_eq!(kinds(&step), vec![Left]);
    assert_eq!(step.bad_keys, vec![orphan(3)]);
    // An undecodable record is no record either (and is reported as skipped, too).
    let step = m.apply(&sim.txn(&[put_record("a", &info("a", 1), 1)]), clock.at(0));
    assert_eq!(step.bad_keys, vec![]);
    let step = m.apply(
        &sim.txn(&[Write::Put(rkey("a"), b"{".to_vec())]),
        clock.at(0),
    );
    assert_eq!(step.bad_keys, vec![orphan(3)]);
    assert_eq!(step.skipped.len(), 1);
    // Listings that still hold it do not report it again; a fresh machine does, once.
    assert_eq!(m.resync(&sim.listing(), clock.at(1)), Step::default());
    let mut fresh = machine();
    assert_eq!(
        fresh.resync(&sim.listing(), clock.at(1)).bad_keys,
        vec![orphan(3)]
    );
    assert_eq!(fresh.resync(&sim.listing(), clock.at(1)).bad_keys, vec![]);
    // Gone with its lease: nothing to report, and a later hand-written one is new again.
    assert_eq!(
        m.apply(&sim.txn(&[del_live("a")]), clock.at(2)).bad_keys,
        vec![]
    );
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(2));
    assert_eq!(step.bad_keys, vec![orphan(sim.revision)]);
}

/// The normal lifecycle never leaves a liveness key without a record between revisions:
/// register, lose the lease, come back, restart, leave, be reaped, in single batches and in
/// one multi-revision batch, and in a listing.
#[test]
fn a_normal_lifecycle_reports_no_bad_key() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let mut batches = vec![
        sim.txn(&register("a", &info("a", 1), 1)),
        sim.txn(&register("b", &info("b", 1), 1)),
        sim.txn(&[del_live("a")]),
        sim.txn(&register("a", &info("a", 1), 1)),
        sim.txn(&[put_record("a", &info("a", 2), 2), put_live("a", 2)]),
        sim.txn(&[del_record("a"), del_live("a")]),
        sim.txn(&[del_live("b")]),
        sim.txn(&[del_record("b")]),
    ];
    for b in &batches {
        let step = m.apply(b, clock.at(0));
        assert_eq!(step.bad_keys, vec![], "{b:?}");
    }
    batches.push(sim.txn(&register("c", &info("c", 1), 1)));
    let mut all = machine();
    let events = batches.iter().flat_map(|b| b.events.clone()).collect();
    assert_eq!(all.apply(&batch(events), clock.at(0)).bad_keys, vec![]);
    assert_eq!(
        machine().resync(&sim.listing(), clock.at(0)).bad_keys,
        vec![]
    );
}

// ---------------------------------------------------------------------------------------------
// Revisions and time
// ---------------------------------------------------------------------------------------------

#[test]
fn events_at_or_below_the_current_revision_are_ignored() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let b1 = sim.txn(&register("a", &info("a", 1), 1));
    let b2 = sim.txn(&[del_live("a")]);
    assert_eq!(kinds(&m.apply(&b1, clock.at(0))), vec![Joined]);
    assert_eq!(kinds(&m.apply(&b2, clock.at(0))), vec![Suspect]);
    // A resumed watch repeats both.
    assert_eq!(m.apply(&b1, clock.at(1)), Step::default());
    assert_eq!(m.apply(&b2, clock.at(1)), Step::default());
    assert_eq!(m.get("a").unwrap().state, MemberState::Suspect);
    assert_eq!(m.revision(), 3);

    // A batch overlapping what was seen applies only the new revisions.
    let b3 = sim.txn(&[put_live("a", 1)]);
    let mut overlap = b2.events.clone();
    overlap.extend(b3.events.clone());
    let step = m.apply(
        &WatchBatch {
            revision: b3.revision,
            events: overlap,
        },
        clock.at(2),
    );
    assert_eq!(timeline(&step), vec![("a".into(), Recovered, 4)]);
}

#[test]
fn a_replayed_bad_value_is_not_reported_again() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let b = sim.txn(&[Write::Put(rkey("a"), b"{".to_vec())]);
    assert_eq!(m.apply(&b, clock.at(0)).skipped.len(), 1);
    assert_eq!(m.apply(&b, clock.at(0)), Step::default());
}

/// `apply` documents that only event revisions advance the machine (a catching-up watch may
/// send a header revision ahead of its events); a progress notification changes nothing.
#[test]
fn a_progress_notification_changes_nothing() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    let before = m.view().clone();
    let step = m.apply(
        &WatchBatch {
            revision: 42,
            events: vec![],
        },
        clock.at(0),
    );
    assert_eq!(step, Step::default());
    assert_eq!(m.revision(), 2);
    assert_eq!(m.view(), &before);
}

#[test]
fn a_batch_of_several_revisions_emits_per_revision_in_order() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let b = sim.txns(&[
        register("b", &info("b", 1), 1),                           // 2
        register("a", &info("a", 1), 1),                           // 3
        vec![del_live("b")],                                       // 4
        vec![put_record("a", &info("a", 2), 1), del_live("a")],    // 5
        vec![put_live("b", 1), put_record("c", &info("c", 1), 1)], // 6
        vec![del_record("a")],                                     // 7
    ]);
    assert_eq!(b.revision, 7);
    let step = m.apply(&b, clock.at(3));
    assert_eq!(
        timeline(&step),
        vec![
            ("b".into(), Joined, 2),
            ("a".into(), Joined, 3),
            ("b".into(), Suspect, 4),
            ("a".into(), Suspect, 5),
            ("a".into(), Updated, 5),
            ("b".into(), Recovered, 6),
            ("c".into(), Joined, 6),
            ("c".into(), Suspect, 6),
            ("a".into(), Failed, 7),
        ]
    );
    assert!(step.transitions.iter().all(|t| t.at == clock.at(3)));
    assert_eq!(m.revision(), 7);
}

#[test]
fn time_going_backwards_is_clamped() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let step = m.apply(&sim.txn(&register("a", &info("a", 1), 1)), clock.at(20));
    assert_eq!(step.transitions[0].at, clock.at(20));

    let step = m.apply(&sim.txn(&[del_live("a")]), clock.at(5));
    assert_eq!(
        step.transitions[0].at,
        clock.at(20),
        "stamped with the latest time"
    );
    assert_eq!(m.get("a").unwrap().suspect_since, Some(clock.at(20)));
    assert_eq!(m.poll_timeout(), Some(clock.at(30)));

    // An earlier `now` neither reaps early nor moves the clock back.
    assert_eq!(m.handle_timeout(clock.at(29)), vec![]);
    assert_eq!(m.handle_timeout(clock.at(30)).len(), 1);
    assert_eq!(m.handle_timeout(clock.at(0)), vec![], "retry is due at 31");
    assert_eq!(m.poll_timeout(), Some(clock.at(31)));

    let step = m.resync(&sim.listing(), clock.at(1));
    assert_eq!(step, Step::default());
    let step = m.apply(&sim.txn(&[put_live("a", 1)]), clock.at(2));
    assert_eq!(step.transitions[0].at, clock.at(30));
}

/// A resync folded in page by page (`relisting`, `add` per page, `finish_resync`) is the
/// resync of the whole listing, wherever the pages split it: the same step (transitions,
/// bad values, bad keys) and the same view. A page at a newer revision starts the listing
/// over, as a store that read it again after a compaction hands it over.
#[test]
fn a_resync_in_pages_is_the_resync_of_the_whole_listing() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    alive(&mut sim, &mut m, "a", 1, clock);
    alive(&mut sim, &mut m, "b", 1, clock);
    // Unseen by the machine: b's lease expired, c registered, d's record is malformed, and
    // keys that are no member's appeared.
    sim.commit(&[del_live("b")]);
    sim.commit(&register("c", &info("c", 1), 1));
    sim.commit(&[Write::Put(rkey("d"), b"not json".to_vec())]);
    sim.commit(&[Write::Put(format!("{PREFIX}members/"), b"{}".to_vec())]);
    sim.commit(&[put_live("e", 1)]);
    let whole = sim.listing();
    assert!(whole.kvs.len() >= 7, "the listing: {whole:?}");
    let mut expected = m.clone();
    let expected_step = expected.resync(&whole, clock.at(9));
    assert_eq!(named(&expected_step).len(), 2, "{expected_step:?}");
    assert!(!expected_step.skipped.is_empty() && !expected_step.bad_keys.is_empty());

    for size in 1..=whole.kvs.len() {
        let mut paged = m.clone();
        let mut relisting = paged.relisting();
        // A stale start, superseded by the real listing at a newer revision.
        relisting.add(&listing(
            whole.revision - 1,
            vec![
                kv(&rkey("z"), &record_json(&info("z", 1), 1), 1, 1),
                kv(&lkey("z"), &live_json(1), 1, 1),
            ],
        ));
        for kvs in whole.kvs.chunks(size) {
            relisting.add(&listing(whole.revision, kvs.to_vec()));
        }
        assert_eq!(relisting.revision(), Some(whole.revision));
        let step = paged.finish_resync(relisting, clock.at(9));
        assert_eq!(step, expected_step, "pages of {size}");
        assert_eq!(paged.view(), expected.view(), "pages of {size}");
        assert_eq!(paged.revision(), expected.revision(), "pages of {size}");
    }
}
