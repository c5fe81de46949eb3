//! The whole-system simulation: real masters, workers and hosts on the in-memory backend,
//! under random schedules of joins, updates, leaves, crashes, restarts, evictions, hangs,
//! partitions, failed calls (of workers and of masters), watch drops, compactions, master
//! restarts and the passing of time, on tokio's paused clock.
//!
//! A host is one `muster_worker::WorkerGroup` process: ONE lease, and several members
//! (`host{h}-m{i}`) on it, each with its own record and its own liveness key bound to that
//! lease. Its ops: start (a new process, fresh incarnation, adding every member), crash
//! (`abandon`: the lease runs out, every member goes `Suspect`), restart, the removal of one
//! member (`remove`: that one `Left`, the others stay `Alive`), an operator's eviction of
//! one member (its siblings keep the lease; the group reports it `MemberStatus::Evicted`
//! and never writes its keys again), a member's update or drain, the host's leave, and
//! hangs, partitions and failed calls of its client. Every invariant below holds for
//! host members as for workers ("worker" below: a worker, or a member its host holds): a
//! host's crash, restart, hang or partition (or a blip on a failure streak) licenses a lost
//! lease for every one of its members, a removal or the host's leave a `Left` for each
//! member concerned. A host's leave that fails licenses `Suspect` too: `WorkerGroup::leave`
//! retries each member's leave for up to a TTL (as `Worker::leave` does), and a member
//! whose leave still failed goes with the lease.
//!
//! After every op the system settles, then every invariant is checked for every master:
//!
//! 1. a connected master's view equals what a fresh listing of the store says (state,
//!    incarnation, metadata, record revision), at the store's revision;
//! 2. `Left` only after a `Leave` (or an `Evict`) of that name (for a host member: a
//!    `HostRemove`, `HostLeave` or `HostEvict`);
//! 3. `Suspect` only after a lost lease (crash, restart, hang or partition of its worker or
//!    host, or a blip of failed calls landing on a failure streak already under way);
//! 4. a worker healthy for `HEALTHY_AFTER` is `Alive`, with its incarnation and latest
//!    metadata, in every connected master's view;
//! 5. no ghost: every member in a view has a record in the store;
//! 6. no transition delivered twice (name, kind, revision) to one subscriber, across watch
//!    drops and resyncs (a master restart starts a new subscriber), and none out of
//!    revision order;
//! 7. each subscriber's stream is well formed and, applied to its snapshot, gives the view;
//! 8. a successful leave removes the record (while nothing registers the name again);
//! 9. no ghost liveness: a liveness key belongs to a running process, or to one that ended
//!    less than a TTL ago;
//! 10. no early reap: a record deleted on its own goes only after its liveness has been gone
//!     for `reap_after` (unless its worker was leaving), never while the liveness exists;
//! 11. a worker cut off (partitioned or hung) for longer than a TTL has no liveness key;
//! 12. an evicted incarnation never writes its keys again (the marker holds longer than any
//!     run), and in the finale every evicted process has stopped, reporting
//!     `Status::Evicted` at its eviction's revision, and every member evicted from a host
//!     process that still runs is reported `MemberStatus::Evicted` at that revision by its
//!     group (its siblings stay `Alive`, by 4);
//! 13. one lease, one revision: every liveness key of one process is on one lease (all of a
//!     host's members on the group's lease); when a lease runs out, every key on it goes in
//!     that one revision; and a master that reports any of those members `Suspect` at that
//!     revision reports every one it had `Alive` `Suspect` at that same revision.
//!
//! Invariant 2 counts an eviction as a leave (it is reported `Left` for an alive member), and
//! invariant 10 lets an eviction delete a suspect member's record at once. Invariant 2 has no
//! exception: a relist that finds a member gone cannot know why and says `Removed`, so every
//! `Left` sits at a revision where the member's two keys were deleted together (see
//! `assertions::lefts_follow_leaves`).
//!
//! # Layout (after firezone's tunnel tests)
//!
//! - `transition.rs`: the ops and the schedule.
//! - `strategies.rs`: generation.
//! - `reference.rs`: the model behind the preconditions, and the history that licenses
//!   transitions.
//! - `sut.rs`: the system under test and the driver (settling, the finale).
//! - `assertions.rs`: the invariants, as pure functions.
//! - `checker.rs`: broken runs fed to the invariants, to show each one can fail.
//! - `regressions.rs`: minimal repros of the bugs the simulation found.
//!
//! # Replaying a failure
//!
//! proptest prints the minimal failing schedule and saves its seed in
//! `tests/proptest-regressions/simulation.txt`; every later run replays the saved seeds
//! first (commit that file). The failure message also holds the schedule as Rust source,
//! ready for `sut::run(&...)` in a test, and a trace of the run. `PROPTEST_RNG_SEED=<n>`
//! replays a whole run; `PROPTEST_CASES=<n>` runs more cases.

mod assertions;
mod checker;
mod reference;
mod regressions;
mod strategies;
mod sut;
mod transition;

use std::collections::BTreeSet;

use muster_core::TransitionKind;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

use crate::reference::Reference;
use crate::transition::{Op, Schedule};

/// 256 cases unless `PROPTEST_CASES` says otherwise; failures saved under
/// `tests/proptest-regressions/`.
fn config() -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/simulation.txt"
    ))));
    // A whole run takes milliseconds; bound shrinking so a failure reports in seconds.
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = 2048;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_invariant_holds_at_every_quiescent_point(schedule in strategies::schedule()) {
        if let Err(failure) = sut::run(&schedule) {
            return Err(TestCaseError::fail(format!(
                "{failure}\nreplay with sut::run(&{schedule:?})"
            )));
        }
    }
}

/// `count` schedules from a runner with proptest's fixed-seed RNG.
fn deterministic_schedules(count: usize) -> Vec<Schedule> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = strategies::schedule();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("schedules can always be generated")
                .current()
        })
        .collect()
}

#[test]
fn generation_is_deterministic() {
    let first = deterministic_schedules(32);
    let second = deterministic_schedules(32);
    assert_eq!(first, second, "the same seed must give the same schedules");
    let distinct: BTreeSet<String> = first.iter().map(|s| format!("{s:?}")).collect();
    assert!(
        distinct.len() > 16,
        "schedules should vary: only {} distinct out of 32",
        distinct.len()
    );
}

#[test]
fn generated_schedules_are_valid_and_cover_every_op() {
    let mut kinds = BTreeSet::new();
    let mut masters = BTreeSet::new();
    for schedule in deterministic_schedules(200) {
        let reference = Reference::new(
            schedule.masters,
            schedule.workers,
            schedule.hosts,
            schedule.members,
        );
        if let Some((i, op)) = reference.first_invalid(&schedule.ops) {
            panic!("op {i} ({op:?}) breaks its precondition in {schedule:?}");
        }
        assert!((1..=strategies::MAX_MASTERS).contains(&schedule.masters));
        assert!(strategies::WORKERS.contains(&schedule.workers));
        assert!(strategies::HOSTS.contains(&schedule.hosts));
        assert!(strategies::HOST_MEMBERS.contains(&schedule.members));
        assert!(schedule.ops.len() <= strategies::MAX_OPS);
        kinds.extend(schedule.ops.iter().map(Op::kind));
        masters.insert(schedule.masters);
    }
    let missing: Vec<&str> = Op::KINDS
        .iter()
        .copied()
        .filter(|k| !kinds.contains(k))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
    assert_eq!(
        masters.len(),
        strategies::MAX_MASTERS,
        "both 1 and 2 masters"
    );
}

/// A schedule that walks every transition kind and most faults.
fn tour() -> Schedule {
    Schedule {
        masters: 2,
        workers: 3,
        hosts: 2,
        members: 3,
        ops: vec![
            Op::HostStart { h: 0 },
            Op::HostStart { h: 1 },
            Op::Join { w: 0 },
            Op::Join { w: 1 },
            Op::Join { w: 2 },
            Op::Advance { millis: 3000 },
            Op::Update { w: 0, v: 2 },
            Op::Partition { w: 1 },
            Op::Advance { millis: 4000 },
            Op::Update { w: 1, v: 3 },
            Op::Heal { w: 1 },
            Op::Advance { millis: 2000 },
            Op::Restart { w: 2 },
            Op::Advance { millis: 4000 },
            Op::PartitionMaster { m: 1 },
            Op::Leave { w: 0 },
            Op::Hang { w: 1 },
            Op::Advance { millis: 3000 },
            Op::Compact,
            Op::HealMaster { m: 1 },
            Op::Unhang { w: 1 },
            Op::DropWatch { m: 0 },
            Op::Crash { w: 2 },
            Op::Advance { millis: 10_000 },
            Op::RestartMaster { m: 0 },
            Op::Advance { millis: 10_000 },
            Op::Advance { millis: 10_000 },
            Op::Join { w: 0 },
            Op::Advance { millis: 3000 },
            Op::HostUpdate { h: 0, i: 1, v: 2 },
            Op::HostRemove { h: 0, i: 2 },
            Op::HostEvict { h: 1, i: 1 },
            Op::HostCrash { h: 0 },
            Op::Advance { millis: 3000 },
            Op::HostStart { h: 0 },
            Op::HostPartition { h: 1 },
            Op::Advance { millis: 3000 },
            Op::HostHeal { h: 1 },
            Op::HostRestart { h: 0 },
            Op::Advance { millis: 3000 },
            Op::HostFailCalls { h: 1, n: 3 },
            Op::Advance { millis: 3000 },
            Op::HostHang { h: 1 },
            Op::Advance { millis: 3000 },
            Op::HostUnhang { h: 1 },
            Op::HostUpdate { h: 1, i: 0, v: 3 },
            Op::HostLeave { h: 0 },
            Op::Advance { millis: 3000 },
        ],
    }
}

#[test]
fn a_tour_of_every_transition_keeps_every_invariant() {
    let trace = sut::run(&tour()).unwrap_or_else(|failure| panic!("{failure}"));
    for kind in TransitionKind::ALL {
        assert!(
            trace
                .iter()
                .any(|line| line.contains(&format!(": {kind} "))),
            "the tour never produced {kind}:\n{}",
            trace.join("\n")
        );
    }
}

#[test]
fn the_same_schedule_replays_identically() {
    let schedules = deterministic_schedules(4);
    for schedule in schedules.iter().chain([&tour()]) {
        // Pass or fail, both runs must tell the same story.
        let first = sut::run(schedule).map_err(|failure| failure.to_string());
        let second = sut::run(schedule).map_err(|failure| failure.to_string());
        assert_eq!(first, second, "two runs of {schedule:?} differ");
    }
}
