//! Minimal repros of the bugs the simulation found, one test each, named for the behaviour
//! that should hold. Each fails until its bug is fixed; the seeds that found them are in
//! `tests/proptest-regressions/simulation.txt`.

use std::time::{Duration, Instant};

use muster_core::{
    Incarnation, KeyValue, Keyspace, Listing, MemberInfo, MemberState, Membership, Record,
};

use crate::sut;
use crate::transition::{Op, Schedule};

fn run(schedule: Schedule) {
    if let Err(failure) = sut::run(&schedule) {
        panic!("{failure}\nschedule: {schedule:?}");
    }
}

/// A relist that finds a member whose record was rewritten without any transition (an
/// update to the same metadata while the master was cut off) must publish the new record
/// revision: the view must equal what the store says.
///
/// Today the published view keeps record revision 2 while the master's own state machine
/// (and the store) say 3: `Shared::publish` only touches members named by a transition, and
/// `Shared::refresh` runs only on the watch path (and only for batches without any
/// transition), never after a relist.
#[test]
fn a_relist_publishes_a_record_rewritten_without_a_transition() {
    run(Schedule {
        masters: 1,
        workers: 2,
        hosts: 0,
        members: 0,
        ops: vec![
            Op::Join { w: 0 },
            Op::PartitionMaster { m: 0 },
            Op::Update { w: 0, v: 0 },
            // One more revision, so that compaction removes the rewrite from history.
            Op::Join { w: 1 },
            Op::Compact,
            Op::HealMaster { m: 0 },
        ],
    });
}

/// The same gap, worse: `Suspect` before and after the relist, but a new process registered
/// and lost its lease meanwhile, so the record has a new incarnation. The published view
/// keeps incarnation 1 (the machine says 2), no transition tells the subscriber, and when
/// the new process comes back the subscriber gets `Recovered` for an incarnation it never
/// saw. A relist that finds a new incarnation should say so (`Restarted`, then `Suspect`).
#[test]
fn a_relist_reports_a_new_incarnation_of_a_suspect_member() {
    run(Schedule {
        masters: 1,
        workers: 1,
        hosts: 0,
        members: 0,
        ops: vec![
            Op::Join { w: 0 },
            Op::Crash { w: 0 },
            Op::Advance { millis: 3000 },
            Op::PartitionMaster { m: 0 },
            Op::Join { w: 0 },
            Op::Partition { w: 0 },
            Op::Advance { millis: 3000 },
            Op::Compact,
            Op::HealMaster { m: 0 },
        ],
    });
}

/// A worker whose first registration met failures must start its life with a fresh retry
/// backoff: a blip of three failed calls right after registering must not cost the lease.
///
/// Today `Core::first_registration` does not reset the backoff on success (the keep-alive
/// and re-registration paths do), so the first keep-alive failures after a troubled
/// registration retry at the grown delays (up to TTL/3 each) and the lease runs out:
/// `Suspect` then `Recovered` with no fault on the worker beyond four failed calls.
#[test]
fn a_blip_right_after_a_troubled_registration_costs_no_lease() {
    run(Schedule {
        masters: 1,
        workers: 3,
        hosts: 0,
        members: 0,
        ops: vec![
            Op::FailCalls { w: 1, n: 2 },
            Op::Join { w: 0 },
            Op::Join { w: 1 },
            Op::Advance { millis: 648 },
            Op::FailCalls { w: 1, n: 3 },
            Op::Advance { millis: 4845 },
        ],
    });
}

/// A relist must not hasten a reap: when a member is `Suspect` before and after, but its
/// record was rewritten in between (it came back and was lost again while this master was
/// cut off), its suspicion starts again at the relist.
///
/// Today `Membership::settle` keeps `suspect_since` (and `reap_due`) whenever the member
/// is `Suspect` before and after, so the reap falls due `reap_after` after the *first*
/// suspicion. In the simulation (the schedule below, once the relist publishes correctly)
/// the record is deleted 26 s after the liveness key went, with `reap_after` 30 s:
///
/// ```text
/// Join w0, Partition w0, Advance 3 s, PartitionMaster m0, Heal w0, Advance 1 s, Crash w0,
/// Advance 3 s, Compact, HealMaster m0, Advance 30 s
/// ```
///
/// The state machine shows it directly, without a master.
#[test]
fn a_relist_does_not_hasten_a_reap() {
    const REAP_AFTER: Duration = Duration::from_secs(30);
    let keyspace = Keyspace::new("/r/").expect("a valid prefix");
    let record = |created: i64, modified: i64| KeyValue {
        key: keyspace.record_key("a"),
        value: Record {
            info: MemberInfo::new("a", "a:1"),
            incarnation: Incarnation(1),
        }
        .to_json(),
        create_revision: created,
        mod_revision: modified,
        version: 1,
        lease: 0,
    };
    let mut machine = Membership::new(keyspace.clone(), Some(REAP_AFTER));
    let t0 = Instant::now();
    // At revision 3 `a` has a record and no liveness: Suspect from t0.
    machine.resync(
        &Listing {
            revision: 3,
            kvs: vec![record(2, 2)],
        },
        t0,
    );
    assert_eq!(machine.poll_timeout(), Some(t0 + REAP_AFTER));
    // 20 s later, after a compaction: the record was rewritten at revision 4 (the worker
    // registered again, liveness and record in one transaction) and the liveness is gone
    // again (revision 5). The member was alive in between: suspicion starts again.
    let t1 = t0 + Duration::from_secs(20);
    machine.resync(
        &Listing {
            revision: 5,
            kvs: vec![record(2, 4)],
        },
        t1,
    );
    let member = machine.get("a").expect("a is still a member");
    assert_eq!(member.state, MemberState::Suspect);
    assert_eq!(
        member.suspect_since,
        Some(t1),
        "the suspicion must restart at the relist that found the record rewritten"
    );
    let due = machine.poll_timeout().expect("a reap is due some day");
    assert!(
        due >= t1 + REAP_AFTER,
        "the reap falls due {:?} after the relist, before reap_after ({REAP_AFTER:?})",
        due - t1
    );
}

/// A master that last saw a member `Alive`, then lost to compaction the history in which it
/// crashed and was reaped by another master, relists and finds only "record gone". It cannot
/// know why, and says so: `Removed`. (It used to report `Left`, a guess presented as a fact,
/// which the checker had to tolerate; now every `Left` must be a leave seen on the watch.)
#[test]
fn a_relist_says_removed_for_a_member_reaped_while_the_master_was_away() {
    let trace = sut::run(&Schedule {
        masters: 2,
        workers: 1,
        hosts: 0,
        members: 0,
        ops: vec![
            Op::Join { w: 0 },
            Op::PartitionMaster { m: 0 },
            Op::Crash { w: 0 },
            Op::Advance { millis: 10_000 },
            Op::Advance { millis: 10_000 },
            Op::Advance { millis: 10_000 },
            Op::Advance { millis: 5_000 },
            Op::Compact,
            Op::HealMaster { m: 0 },
        ],
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(
        trace.iter().any(|line| line.contains("m0: removed w0")),
        "m0 should report w0 removed (cause unknown) after the relist:\n{}",
        trace.join("\n")
    );
    assert!(
        !trace.iter().any(|line| line.contains("m0: left w0")),
        "m0 reported a leave it never saw:\n{}",
        trace.join("\n")
    );
}
