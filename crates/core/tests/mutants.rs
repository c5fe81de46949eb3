//! Behaviours of `keyspace` (with the protocol's transactions, `protocol`), `member` and
//! `membership` that no other test pinned down, written for mutation testing
//! (`crates/core/MUTANTS.md`): each test here fails if the code it names is changed in a way
//! the rest of the suite let through. Grouped by the function they hold to its word.

mod common;

use std::sync::Arc;

use common::*;
use muster_core::{
    Condition, EvictionMarker, Incarnation, KeyValue, MemberInfo, MemberState, Membership, Op,
    Record, TransitionKind, Txn,
};
use TransitionKind::*;

// ---------------------------------------------------------------------------------------------
// Display: the names the programs print and parse back
// ---------------------------------------------------------------------------------------------

#[test]
fn member_states_display_as_their_lowercase_names() {
    let shown: Vec<String> = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Left,
        MemberState::Failed,
        MemberState::Removed,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(shown, ["alive", "suspect", "left", "failed", "removed"]);
}

#[test]
fn transition_kinds_display_as_their_lowercase_names() {
    let shown: Vec<String> = TransitionKind::ALL
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            "joined",
            "updated",
            "draining",
            "suspect",
            "recovered",
            "restarted",
            "left",
            "failed",
            "removed"
        ]
    );
}

#[test]
fn an_incarnation_displays_as_sixteen_hex_digits() {
    assert_eq!(Incarnation(0xff).to_string(), "00000000000000ff");
    assert_eq!(Incarnation(u64::MAX).to_string(), "ffffffffffffffff");
}

// ---------------------------------------------------------------------------------------------
// MemberInfo compared with a shared MemberInfo, both ways round
// ---------------------------------------------------------------------------------------------

#[test]
fn member_info_equals_a_shared_copy_from_either_side() {
    let plain = MemberInfo::new("a", "h:1");
    let shared = Arc::new(plain.clone());
    let other = MemberInfo::new("a", "h:2");
    assert!(shared == plain);
    assert!(plain == shared);
    assert!(shared != other);
    assert!(other != shared);
}

// ---------------------------------------------------------------------------------------------
// MemberInfo::to_json: the record's metadata as operators read it
// ---------------------------------------------------------------------------------------------

#[test]
fn member_info_encodes_as_json_that_decodes_back_to_it() {
    let info = MemberInfo::new("a", "h:1").cpus(4).label("zone", "z");
    let json = info.to_json();
    let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(value["name"], "a");
    assert_eq!(value["addr"], "h:1");
    assert_eq!(value["cpus"], 4);
    assert_eq!(value["labels"]["zone"], "z");
    assert_eq!(MemberInfo::from_json("k", &json).unwrap(), info);
}

// ---------------------------------------------------------------------------------------------
// Membership::tick: time never goes backwards inside the machine
// ---------------------------------------------------------------------------------------------

#[test]
fn an_observation_with_an_earlier_now_is_stamped_with_the_latest_now() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    m.apply(&sim.txn(&register("a", &info("a", 1), 1)), clock.at(10));
    let step = m.apply(&sim.txn(&[del_live("a")]), clock.at(5));
    assert_eq!(kinds(&step), vec![Suspect]);
    assert_eq!(step.transitions[0].at, clock.at(10));
    assert_eq!(m.get("a").unwrap().suspect_since, Some(clock.at(10)));
    assert_eq!(m.poll_timeout(), Some(clock.at(20)));
}

#[test]
fn a_timeout_with_an_earlier_now_still_reaps_what_was_due_at_the_latest_now() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    m.apply(&sim.txn(&register("a", &info("a", 1), 1)), clock.at(0));
    m.apply(&sim.txn(&[del_live("a")]), clock.at(0));
    // An unrelated observation at 30 s moves the machine's clock past a's deadline (10 s).
    m.apply(&sim.txn(&register("b", &info("b", 1), 1)), clock.at(30));
    let reaps = m.handle_timeout(clock.at(1));
    assert_eq!(
        reaps.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    // The retry is counted from the latest now too.
    assert_eq!(m.poll_timeout(), Some(clock.at(31)));
}

// ---------------------------------------------------------------------------------------------
// Membership::apply_revision: many keys in one revision
// ---------------------------------------------------------------------------------------------

/// The events of one revision that writes `count` keys: the records of members `m0`, `m1`,
/// ... and the liveness keys of all but the last when `count` is odd, written in reverse name
/// order. Returns the batch and the transitions it implies, in name order.
fn many_keys_in_one_revision(
    count: usize,
) -> (muster_core::WatchBatch, Vec<(String, TransitionKind)>) {
    let members = count.div_ceil(2);
    let names: Vec<String> = (0..members).map(|i| format!("m{i}")).collect();
    let mut writes = Vec::new();
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate().rev() {
        writes.push(put_record(name, &info(name, 1), 1));
        if 2 * i + 1 < count {
            writes.push(put_live(name, 1));
        }
    }
    for (i, name) in names.iter().enumerate() {
        expected.push((name.clone(), Joined));
        if 2 * i + 1 >= count {
            expected.push((name.clone(), Suspect));
        }
    }
    let batch = Sim::new().txn(&writes);
    assert_eq!(batch.events.len(), count);
    (batch, expected)
}

#[test]
fn one_revision_writing_many_keys_settles_every_member_in_name_order() {
    let clock = Clock::start();
    // Around the four events the machine keeps on the stack before it spills to the heap.
    for count in 1..=10 {
        let mut m = machine();
        let (batch, expected) = many_keys_in_one_revision(count);
        let step = m.apply(&batch, clock.at(0));
        assert_eq!(named(&step), expected, "{count} keys in one revision");
        assert_eq!(
            m.view().len(),
            count.div_ceil(2),
            "{count} keys in one revision"
        );
    }
}

#[test]
fn foreign_keys_among_many_in_one_revision_are_ignored() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let mut writes = vec![
        Write::Put(format!("{PREFIX}config"), b"x".to_vec()),
        Write::Put("/elsewhere/members/z".into(), record_json(&info("z", 1), 1)),
    ];
    for n in ["c", "b", "a"] {
        writes.extend(register(n, &info(n, 1), 1));
    }
    let step = m.apply(&sim.txn(&writes), clock.at(0));
    assert_eq!(
        named(&step),
        vec![
            ("a".into(), Joined),
            ("b".into(), Joined),
            ("c".into(), Joined)
        ]
    );
    assert!(step.skipped.is_empty());
}

// ---------------------------------------------------------------------------------------------
// decode_reason: a skipped value says what was wrong, without repeating its key
// ---------------------------------------------------------------------------------------------

#[test]
fn a_skipped_value_carries_the_decoders_reason() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    let bad = b"not json".to_vec();
    let step = m.apply(
        &sim.txn(&[Write::Put(rkey("a"), bad.clone()), put_live("a", 1)]),
        clock.at(0),
    );
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(step.skipped.len(), 1);
    let skipped = &step.skipped[0];
    assert_eq!(skipped.key, rkey("a"));
    let want = match Record::from_json(&rkey("a"), &bad) {
        Err(muster_core::Error::Decode { reason, .. }) => reason,
        other => panic!("expected a decode error, got {other:?}"),
    };
    assert_eq!(skipped.reason, want);
    assert!(!skipped.reason.contains(&rkey("a")), "{}", skipped.reason);
}

#[test]
fn a_record_under_another_members_key_is_skipped_with_both_names() {
    let clock = Clock::start();
    let mut m = machine();
    let kv = KeyValue {
        key: rkey("a"),
        value: record_json(&info("b", 1), 1),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        lease: 0,
    };
    let step = m.resync(&listing(2, vec![kv]), clock.at(0));
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(step.skipped.len(), 1);
    assert!(
        step.skipped[0].reason.contains("\"a\"") && step.skipped[0].reason.contains("\"b\""),
        "{}",
        step.skipped[0].reason
    );
    assert_eq!(m.get("a"), None);
}

// ---------------------------------------------------------------------------------------------
// Keys::is_empty: a name with no key left is forgotten, so memory follows the live names
// ---------------------------------------------------------------------------------------------

#[test]
fn a_name_with_no_key_left_is_forgotten_entirely() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    m.apply(
        &sim.txn(&register("gone", &info("gone", 1), 1)),
        clock.at(0),
    );
    m.apply(
        &sim.txn(&register("kept", &info("kept", 1), 1)),
        clock.at(0),
    );
    // One leaves with both keys in one revision; a liveness key alone comes and goes.
    m.apply(
        &sim.txn(&[del_record("gone"), del_live("gone")]),
        clock.at(1),
    );
    m.apply(&sim.txn(&[put_live("ghost", 3)]), clock.at(2));
    m.apply(&sim.txn(&[del_live("ghost")]), clock.at(3));
    // The machine holds nothing about either any more (its Debug form shows all it holds).
    let held = format!("{m:?}");
    assert!(!held.contains("gone"), "{held}");
    assert!(!held.contains("ghost"), "{held}");
    assert!(held.contains("kept"), "{held}");
}

// ---------------------------------------------------------------------------------------------
// Membership::forget_revisions: a store whose revisions started again
// ---------------------------------------------------------------------------------------------

/// A machine that watched `a` and `b` register on one store, and a second store where the
/// same processes registered again in the other order (so every create revision differs).
fn replaced_store() -> (Membership, Sim, Clock) {
    let clock = Clock::start();
    let (mut old, mut m) = (Sim::new(), machine());
    m.apply(&old.txn(&register("a", &info("a", 1), 1)), clock.at(0));
    m.apply(&old.txn(&register("b", &info("b", 1), 2)), clock.at(0));
    let mut new = Sim::new();
    new.commit(&register("b", &info("b", 1), 2));
    new.commit(&register("a", &info("a", 1), 1));
    (m, new, clock)
}

#[test]
fn a_store_replaced_under_the_machine_shows_as_recreated_records_without_forget_revisions() {
    let (mut m, new, clock) = replaced_store();
    let step = m.resync(&new.listing(), clock.at(1));
    assert_eq!(
        named(&step),
        vec![
            ("a".into(), Removed),
            ("a".into(), Joined),
            ("b".into(), Removed),
            ("b".into(), Joined)
        ]
    );
}

#[test]
fn after_forget_revisions_the_same_processes_on_a_new_store_are_no_transition() {
    let (mut m, new, clock) = replaced_store();
    m.forget_revisions();
    assert_eq!(m.revision(), 0);
    let before = m.view().clone();
    let step = m.resync(&new.listing(), clock.at(1));
    assert_eq!(kinds(&step), vec![]);
    assert_eq!(m.revision(), 3);
    assert_eq!(m.view().len(), 2);
    for (name, member) in m.view() {
        assert_eq!(member.state, MemberState::Alive);
        assert_eq!(member.incarnation, before[name].incarnation);
    }
}

#[test]
fn after_forget_revisions_a_bad_value_at_a_reused_revision_is_reported_again() {
    let clock = Clock::start();
    let mut m = machine();
    let bad = kv(&rkey("x"), b"not json", 2, 2);
    let step = m.resync(&listing(2, vec![bad.clone()]), clock.at(0));
    assert_eq!(step.skipped.len(), 1);
    let step = m.resync(&listing(2, vec![bad.clone()]), clock.at(0));
    assert_eq!(step.skipped.len(), 0, "the same bad write is reported once");
    m.forget_revisions();
    let step = m.resync(&listing(2, vec![bad]), clock.at(0));
    assert_eq!(
        step.skipped.len(),
        1,
        "a new store's write, though at the same revision"
    );
}

#[test]
fn after_forget_revisions_a_new_process_on_the_new_store_is_restarted() {
    let (mut m, _, clock) = replaced_store();
    let mut new = Sim::new();
    new.commit(&register("b", &info("b", 1), 2));
    new.commit(&register("a", &info("a", 1), 7));
    m.forget_revisions();
    let step = m.resync(&new.listing(), clock.at(1));
    assert_eq!(named(&step), vec![("a".into(), Restarted)]);
    assert_eq!(m.get("a").unwrap().incarnation, Incarnation(7));
}

// ---------------------------------------------------------------------------------------------
// emit_kinds: each half of a pair found by a resync carries the state it stands for
// ---------------------------------------------------------------------------------------------

#[test]
fn the_restarted_half_of_restarted_suspect_carries_an_alive_member() {
    let clock = Clock::start();
    let (mut sim, mut m) = (Sim::new(), machine());
    m.apply(&sim.txn(&register("a", &info("a", 1), 1)), clock.at(0));
    m.apply(&sim.txn(&[del_live("a")]), clock.at(1));
    // Unseen by the machine: a new process registered and lost its lease too.
    sim.commit(&register("a", &info("a", 1), 2));
    sim.commit(&[del_live("a")]);
    let step = m.resync(&sim.listing(), clock.at(9));
    assert_eq!(kinds(&step), vec![Restarted, Suspect]);
    let (restarted, suspect) = (&step.transitions[0].member, &step.transitions[1].member);
    assert_eq!(restarted.state, MemberState::Alive);
    assert_eq!(restarted.suspect_since, None);
    assert_eq!(restarted.incarnation, Incarnation(2));
    assert_eq!(suspect.state, MemberState::Suspect);
    assert_eq!(suspect.suspect_since, Some(clock.at(9)));
    assert_eq!(m.get("a"), Some(suspect));
}

// ---------------------------------------------------------------------------------------------
// The protocol's transactions (protocol.rs, `Keyspace` methods): each guard and write exactly
// as the table in its module docs says
// ---------------------------------------------------------------------------------------------

#[test]
fn update_rewrites_the_record_only_while_the_liveness_key_is_on_the_lease() {
    let ks = keyspace();
    let record = Record {
        info: info("a", 2),
        incarnation: Incarnation(9),
    };
    assert_eq!(
        ks.update_txn(&record, 42),
        Txn {
            when: vec![Condition::LeaseIs(lkey("a"), 42)],
            then: vec![Op::Put {
                key: rkey("a"),
                value: record.to_json(),
                lease: 0
            }],
        }
    );
}

#[test]
fn leave_deletes_both_keys_only_while_the_liveness_key_is_on_the_lease() {
    assert_eq!(
        keyspace().leave_txn("a", 42),
        Txn {
            when: vec![Condition::LeaseIs(lkey("a"), 42)],
            then: vec![Op::Delete { key: rkey("a") }, Op::Delete { key: lkey("a") }],
        }
    );
}

#[test]
fn leave_without_a_lease_deletes_the_record_only_while_no_liveness_key_exists() {
    assert_eq!(
        keyspace().leave_without_lease_txn("a"),
        Txn {
            when: vec![Condition::Absent(lkey("a"))],
            then: vec![Op::Delete { key: rkey("a") }],
        }
    );
}

#[test]
fn evict_deletes_both_keys_only_if_both_are_as_the_operator_read_them_and_leaves_a_marker() {
    let ks = keyspace();
    let marker = EvictionMarker {
        incarnation: Incarnation(3),
        at_unix_ms: 10,
        hold_ms: 20,
    };
    let mkey = ks.eviction_key("a", Incarnation(3));
    let then = vec![
        Op::Delete { key: rkey("a") },
        Op::Delete { key: lkey("a") },
        Op::Put {
            key: mkey,
            value: marker.to_json(),
            lease: 77,
        },
    ];
    assert_eq!(
        ks.evict_txn("a", 5, Some(6), &marker, 77),
        Txn {
            when: vec![
                Condition::ModRevision(rkey("a"), 5),
                Condition::ModRevision(lkey("a"), 6),
            ],
            then: then.clone(),
        }
    );
    assert_eq!(
        ks.evict_txn("a", 5, None, &marker, 77),
        Txn {
            when: vec![
                Condition::ModRevision(rkey("a"), 5),
                Condition::Absent(lkey("a")),
            ],
            then,
        }
    );
}
