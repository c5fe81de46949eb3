//! `Membership::poll_timeout` and `Membership::handle_timeout` against a brute-force model
//! of the reap deadlines, after many changes.
//!
//! The model keeps, per `Suspect` member, when its suspicion started and when its next reap
//! proposal is due, derived from the public view alone:
//!
//! - a member newly `Suspect` (its `suspect_since` is not the one the model holds) is due
//!   `reap_after` after its `suspect_since`;
//! - a member still suspect since the same instant keeps its deadline (which a proposal may
//!   have pushed back);
//! - a member that is no longer `Suspect` has no deadline;
//! - `handle_timeout(now)` proposes every member due at `now`, in name order, and pushes each
//!   one's deadline to `now + reap_retry`.
//!
//! Time strictly advances between actions, so a new suspicion (which starts at the current
//! `now`) never has the same `suspect_since` as an old one. Before and after every action,
//! `poll_timeout` must be the earliest deadline of the model, found by scanning all of them.
//!
//! Failures are persisted to `crates/core/proptest-regressions/reap_deadlines.txt`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use muster_core::{MemberState, Membership, Reap, Step};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/reap_deadlines.txt"
);

/// The member names the generator writes to.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// The reap policy of a case.
#[derive(Debug, Clone, Copy)]
struct Policy {
    reap_after: Option<Duration>,
    reap_retry: Duration,
}

/// One write to the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WriteOp {
    /// Record and liveness in one revision.
    Register {
        name: &'static str,
        incarnation: u64,
    },
    /// The liveness key alone is deleted.
    LoseLease { name: &'static str },
    /// The liveness key comes back, for the record's incarnation.
    Relive { name: &'static str },
    /// The record is rewritten (same incarnation, maybe new metadata).
    Rewrite { name: &'static str, v: u32 },
    /// The record alone is deleted.
    Evict { name: &'static str },
    /// Both keys are deleted in one revision.
    Leave { name: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// A write, seen by the machine's watch (`seen`) or missed until the next resync.
    Write {
        op: WriteOp,
        seen: bool,
        millis: u64,
    },
    /// Several writes, seen as one multi-revision batch.
    Batch { ops: Vec<WriteOp>, millis: u64 },
    /// The machine relists.
    Resync { millis: u64 },
    /// Time passes, then the due reaps are asked for; `run` says whether the ones proposed
    /// are committed (and seen) or lost.
    Tick { millis: u64, run: bool },
    /// Time passes to exactly the next deadline (or 1 ms if there is none, or it is past).
    TickToDeadline { run: bool },
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    let name = || prop::sample::select(NAMES.to_vec());
    prop_oneof![
        3 => (name(), 1..=3u64)
            .prop_map(|(name, incarnation)| WriteOp::Register { name, incarnation }),
        4 => name().prop_map(|name| WriteOp::LoseLease { name }),
        2 => name().prop_map(|name| WriteOp::Relive { name }),
        2 => (name(), 0..3u32).prop_map(|(name, v)| WriteOp::Rewrite { name, v }),
        1 => name().prop_map(|name| WriteOp::Evict { name }),
        1 => name().prop_map(|name| WriteOp::Leave { name }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (write_op(), prop::bool::weighted(0.85), 1..=2_000u64)
            .prop_map(|(op, seen, millis)| Action::Write { op, seen, millis }),
        2 => (prop::collection::vec(write_op(), 1..5), 1..=2_000u64)
            .prop_map(|(ops, millis)| Action::Batch { ops, millis }),
        2 => (1..=2_000u64).prop_map(|millis| Action::Resync { millis }),
        4 => (1..=8_000u64, any::<bool>()).prop_map(|(millis, run)| Action::Tick { millis, run }),
        3 => any::<bool>().prop_map(|run| Action::TickToDeadline { run }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            6 => (1..=6_000u64).prop_map(|ms| Some(Duration::from_millis(ms))),
            1 => Just(None),
        ],
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_millis(1)),
            Just(Duration::from_secs(1)),
            Just(Duration::from_millis(2_500)),
        ],
    )
        .prop_map(|(reap_after, reap_retry)| Policy {
            reap_after,
            reap_retry,
        })
}

/// The brute-force model: per `Suspect` member, (suspect since, next reap due).
#[derive(Debug, Default)]
struct Deadlines(BTreeMap<String, (Instant, Instant)>);

impl Deadlines {
    /// Follows the view after an observation.
    fn observe(&mut self, machine: &Membership, policy: Policy) {
        let Some(reap_after) = policy.reap_after else {
            self.0.clear();
            return;
        };
        let mut next = BTreeMap::new();
        for member in machine.members() {
            if member.state != MemberState::Suspect {
                continue;
            }
            let since = member
                .suspect_since
                .expect("a suspect member has suspect_since");
            let entry = match self.0.get(member.name()) {
                Some(&(held, due)) if held == since => (held, due),
                _ => (since, since + reap_after),
            };
            next.insert(member.name().to_owned(), entry);
        }
        self.0 = next;
    }

    /// The earliest deadline, by scanning every member.
    fn earliest(&self) -> Option<Instant> {
        self.0.values().map(|&(_, due)| due).min()
    }

    /// The reaps due at `now`, in name order, pushing each one's deadline back.
    fn take_due(&mut self, machine: &Membership, now: Instant, policy: Policy) -> Vec<Reap> {
        let mut reaps = Vec::new();
        for (name, (_, due)) in self.0.iter_mut() {
            if *due <= now {
                let member = machine
                    .get(name)
                    .expect("a member with a deadline is in the view");
                reaps.push(Reap {
                    name: name.clone(),
                    record_revision: member.record_revision,
                });
                *due = now + policy.reap_retry;
            }
        }
        reaps
    }
}

struct Harness {
    policy: Policy,
    sim: Sim,
    machine: Membership,
    model: Deadlines,
    now: Instant,
}

impl Harness {
    fn new(policy: Policy) -> Self {
        let machine =
            Membership::new(keyspace(), policy.reap_after).with_reap_retry(policy.reap_retry);
        Self {
            policy,
            sim: Sim::new(),
            machine,
            model: Deadlines::default(),
            now: Clock::start().0,
        }
    }

    fn writes(&self, op: &WriteOp) -> Vec<Write> {
        // The incarnation of the record there now, if any.
        let incarnation = |name: &str| {
            self.sim
                .get(&rkey(name))
                .and_then(|kv| muster_core::Record::from_json(&kv.key, &kv.value).ok())
                .map_or(1, |r| r.incarnation.0)
        };
        match *op {
            WriteOp::Register { name, incarnation } => register(name, &info(name, 0), incarnation),
            WriteOp::LoseLease { name } => vec![del_live(name)],
            WriteOp::Relive { name } => vec![put_live(name, incarnation(name))],
            WriteOp::Rewrite { name, v } => {
                vec![put_record(name, &info(name, v), incarnation(name))]
            }
            WriteOp::Evict { name } => vec![del_record(name)],
            WriteOp::Leave { name } => vec![del_record(name), del_live(name)],
        }
    }

    fn advance(&mut self, millis: u64) {
        self.now += Duration::from_millis(millis.max(1));
    }

    fn observed(&mut self, _step: Step) {
        self.model.observe(&self.machine, self.policy);
    }

    fn check(&self, when: &str) -> Result<(), String> {
        let got = self.machine.poll_timeout();
        let want = self.model.earliest();
        if got != want {
            return Err(format!(
                "{when}: poll_timeout is {:?}, the earliest deadline is {:?} (model {:?})",
                got.map(|t| t - self.now.min(t)),
                want.map(|t| t - self.now.min(t)),
                self.model
            ));
        }
        Ok(())
    }

    fn tick(&mut self, run: bool) -> Result<(), String> {
        let want = self.model.take_due(&self.machine, self.now, self.policy);
        let got = self.machine.handle_timeout(self.now);
        if got != want {
            return Err(format!("handle_timeout: got {got:?}, want {want:?}"));
        }
        if got.is_empty() {
            return Ok(());
        }
        self.check("after handle_timeout")?;
        if run {
            let mut txns = Vec::new();
            for reap in &got {
                let record = self.sim.get(&rkey(&reap.name));
                let unchanged = record.is_some_and(|kv| kv.mod_revision == reap.record_revision);
                if unchanged && self.sim.get(&lkey(&reap.name)).is_none() {
                    txns.push(vec![del_record(&reap.name)]);
                }
            }
            let batch = self.sim.txns(&txns);
            self.advance(1);
            let step = self.machine.apply(&batch, self.now);
            self.observed(step);
        }
        Ok(())
    }

    fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Write { op, seen, millis } => {
                self.advance(*millis);
                let writes = self.writes(op);
                let batch = self.sim.txn(&writes);
                if *seen {
                    let step = self.machine.apply(&batch, self.now);
                    self.observed(step);
                }
            }
            Action::Batch { ops, millis } => {
                self.advance(*millis);
                let mut events = Vec::new();
                for op in ops {
                    let writes = self.writes(op);
                    events.extend(self.sim.commit(&writes));
                }
                let batch = batch(events);
                let step = self.machine.apply(&batch, self.now);
                self.observed(step);
            }
            Action::Resync { millis } => {
                self.advance(*millis);
                let listing = self.sim.listing();
                let step = self.machine.resync(&listing, self.now);
                self.observed(step);
            }
            Action::Tick { millis, run } => {
                self.advance(*millis);
                self.tick(*run)?;
            }
            Action::TickToDeadline { run } => {
                match self.machine.poll_timeout() {
                    Some(due) if due > self.now => self.now = due,
                    _ => self.advance(1),
                }
                self.tick(*run)?;
            }
        }
        self.check(&format!("after {action:?}"))
    }

    fn run(policy: Policy, actions: &[Action]) -> Result<(), String> {
        let mut harness = Harness::new(policy);
        harness.check("at the start")?;
        for (i, action) in actions.iter().enumerate() {
            harness
                .act(action)
                .map_err(|e| format!("action {i}: {e}"))?;
        }
        Ok(())
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        // At least 256; `PROPTEST_CASES` may ask for more.
        cases: ProptestConfig::default().cases.max(256),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn poll_timeout_is_the_earliest_deadline_after_any_changes(
        policy in policy(),
        actions in prop::collection::vec(action(), 1..80),
    ) {
        Harness::run(policy, &actions).map_err(TestCaseError::fail)?;
    }
}

/// Many members, suspect at different times, each lost and some recovered or reaped: after
/// every change the deadline is the earliest of them all.
#[test]
fn poll_timeout_follows_many_members() {
    let policy = Policy {
        reap_after: Some(Duration::from_secs(30)),
        reap_retry: Duration::from_secs(1),
    };
    let mut harness = Harness::new(policy);
    let names: Vec<String> = (0..400)
        .map(|i| format!("m{:03}", (i * 7919) % 400))
        .collect();
    let sim_op = |harness: &mut Harness, writes: Vec<Write>, millis: u64| {
        harness.advance(millis);
        let batch = harness.sim.txn(&writes);
        let step = harness.machine.apply(&batch, harness.now);
        harness.observed(step);
        harness.check("after a write").unwrap();
    };
    for name in &names {
        sim_op(&mut harness, register(name, &info(name, 1), 1), 1);
    }
    for (i, name) in names.iter().enumerate() {
        sim_op(&mut harness, vec![del_live(name)], 1 + (i as u64 % 5) * 13);
        if i % 3 == 0 {
            // An earlier suspect comes back: the earliest deadline moves on.
            let back = &names[i / 2];
            sim_op(&mut harness, vec![put_live(back, 1)], 2);
        }
    }
    let mut reaped = 0;
    for _ in 0..200 {
        harness.advance(700);
        let before = harness.machine.view().len();
        harness.tick(true).unwrap();
        harness.check("after a tick").unwrap();
        reaped += before - harness.machine.view().len();
        if harness.machine.poll_timeout().is_none() {
            break;
        }
    }
    assert!(reaped > 100, "only {reaped} reaped");
    assert_eq!(harness.machine.poll_timeout(), None);
    assert!(harness
        .machine
        .members()
        .all(|m| m.state == MemberState::Alive));
}
