//! What the test expects, independently of the system under test.
//!
//! Two parts:
//!
//! - [`Reference`]: the abstract state the generator needs for preconditions (which workers
//!   and hosts have a process, which members a host still holds, which clients are cut off
//!   or hung). Generation and execution apply the same ops to it, so every op of a
//!   schedule is valid where it stands.
//! - [`History`]: what the schedule *did* that allows a transition: the `Leave`s that may
//!   explain a `Left` (a host's removals and leaves among them), the crashes, hangs and
//!   partitions that may explain a `Suspect` (a host's for every member on its lease), and
//!   the leases whose keys went together. The driver records it as it runs; the invariants
//!   in `assertions.rs` read it.

use std::collections::{BTreeMap, BTreeSet};

use muster_core::{EventKind, Incarnation, LeaseId, Revision};
use tokio::time::Instant;

use crate::transition::{worker_name, Op};

/// The abstract state of one worker name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerModel {
    /// A process runs (registering, registered or waiting for the name) for this name.
    pub has_process: bool,
    /// Its client is partitioned.
    pub partitioned: bool,
    /// Its client is hung.
    pub hung: bool,
}

/// The abstract state of one host (a `WorkerGroup` process and its members).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostModel {
    /// A process runs (starting or started) for this host.
    pub has_process: bool,
    /// Per member index: the current process holds it (added, not removed).
    pub held: Vec<bool>,
    /// Its client is partitioned.
    pub partitioned: bool,
    /// Its client is hung.
    pub hung: bool,
}

/// The abstract state of one master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterModel {
    /// Its client is partitioned.
    pub partitioned: bool,
    /// Its client is hung.
    pub hung: bool,
}

/// The model the generator and the driver step together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Per worker index.
    pub workers: Vec<WorkerModel>,
    /// Per master index.
    pub masters: Vec<MasterModel>,
    /// Per host index.
    pub hosts: Vec<HostModel>,
}

impl Reference {
    /// The start of every run: all masters up and connected, no worker or host process.
    pub fn new(masters: usize, workers: usize, hosts: usize, members: usize) -> Self {
        let host = HostModel {
            held: vec![false; members],
            ..HostModel::default()
        };
        Self {
            workers: vec![WorkerModel::default(); workers],
            masters: vec![MasterModel::default(); masters],
            hosts: vec![host; hosts],
        }
    }

    /// Whether `op` makes sense now.
    pub fn precondition(&self, op: &Op) -> bool {
        let worker = |w: usize| self.workers.get(w);
        let master = |m: usize| self.masters.get(m);
        let host = |h: usize| self.hosts.get(h);
        let held = |h: usize, i: usize| {
            host(h).is_some_and(|s| s.has_process && s.held.get(i).copied().unwrap_or(false))
        };
        match *op {
            Op::Join { w } => worker(w).is_some_and(|s| !s.has_process),
            Op::Update { w, .. }
            | Op::Leave { w }
            | Op::Crash { w }
            | Op::Restart { w }
            | Op::Evict { w } => worker(w).is_some_and(|s| s.has_process),
            Op::Hang { w } => worker(w).is_some_and(|s| !s.hung),
            Op::Unhang { w } => worker(w).is_some_and(|s| s.hung),
            Op::Partition { w } => worker(w).is_some_and(|s| !s.partitioned),
            Op::Heal { w } => worker(w).is_some_and(|s| s.partitioned),
            Op::FailCalls { w, .. } => worker(w).is_some(),
            Op::PartitionMaster { m } => master(m).is_some_and(|s| !s.partitioned),
            Op::HealMaster { m } => master(m).is_some_and(|s| s.partitioned),
            Op::HangMaster { m } => master(m).is_some_and(|s| !s.hung),
            Op::UnhangMaster { m } => master(m).is_some_and(|s| s.hung),
            Op::FailMasterCalls { m, .. } => master(m).is_some(),
            Op::DropWatch { m } => master(m).is_some_and(|s| !s.partitioned),
            Op::RestartMaster { m } => master(m).is_some(),
            Op::Compact | Op::Advance { .. } => true,
            Op::HostStart { h } => host(h).is_some_and(|s| !s.has_process),
            Op::HostCrash { h } | Op::HostRestart { h } | Op::HostLeave { h } => {
                host(h).is_some_and(|s| s.has_process)
            }
            Op::HostRemove { h, i } | Op::HostEvict { h, i } | Op::HostUpdate { h, i, .. } => {
                held(h, i)
            }
            Op::HostHang { h } => host(h).is_some_and(|s| !s.hung),
            Op::HostUnhang { h } => host(h).is_some_and(|s| s.hung),
            Op::HostPartition { h } => host(h).is_some_and(|s| !s.partitioned),
            Op::HostHeal { h } => host(h).is_some_and(|s| s.partitioned),
            Op::HostFailCalls { h, .. } => host(h).is_some(),
        }
    }

    /// Steps the model. Call only when [`precondition`](Self::precondition) holds.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Join { w } | Op::Restart { w } => self.workers[w].has_process = true,
            Op::Leave { w } | Op::Crash { w } | Op::Evict { w } => {
                self.workers[w].has_process = false
            }
            Op::Hang { w } => self.workers[w].hung = true,
            Op::Unhang { w } => self.workers[w].hung = false,
            Op::Partition { w } => self.workers[w].partitioned = true,
            Op::Heal { w } => self.workers[w].partitioned = false,
            Op::PartitionMaster { m } => self.masters[m].partitioned = true,
            Op::HealMaster { m } => self.masters[m].partitioned = false,
            Op::HangMaster { m } => self.masters[m].hung = true,
            Op::UnhangMaster { m } => self.masters[m].hung = false,
            Op::HostStart { h } | Op::HostRestart { h } => {
                let host = &mut self.hosts[h];
                host.has_process = true;
                host.held.iter_mut().for_each(|held| *held = true);
            }
            Op::HostCrash { h } | Op::HostLeave { h } => {
                let host = &mut self.hosts[h];
                host.has_process = false;
                host.held.iter_mut().for_each(|held| *held = false);
            }
            Op::HostRemove { h, i } | Op::HostEvict { h, i } => self.hosts[h].held[i] = false,
            Op::HostHang { h } => self.hosts[h].hung = true,
            Op::HostUnhang { h } => self.hosts[h].hung = false,
            Op::HostPartition { h } => self.hosts[h].partitioned = true,
            Op::HostHeal { h } => self.hosts[h].partitioned = false,
            Op::HostUpdate { .. }
            | Op::HostFailCalls { .. }
            | Op::Update { .. }
            | Op::FailCalls { .. }
            | Op::FailMasterCalls { .. }
            | Op::DropWatch { .. }
            | Op::RestartMaster { .. }
            | Op::Compact
            | Op::Advance { .. } => {}
        }
    }

    /// Keeps the ops of `raw` whose precondition holds where they stand, in order.
    pub fn filter(mut self, raw: Vec<Op>) -> Vec<Op> {
        let mut ops = Vec::with_capacity(raw.len());
        for op in raw {
            if self.precondition(&op) {
                self.apply(&op);
                ops.push(op);
            }
        }
        ops
    }

    /// The first op of `ops` whose precondition fails, with its index.
    pub fn first_invalid(mut self, ops: &[Op]) -> Option<(usize, Op)> {
        for (i, op) in ops.iter().enumerate() {
            if !self.precondition(op) {
                return Some((i, *op));
            }
            self.apply(op);
        }
        None
    }
}

/// One graceful leave the schedule asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveRecord {
    /// The step (1-based op number) that issued it.
    pub op: usize,
    /// When it was issued.
    pub issued_at: Instant,
    /// The step during whose settling its task was seen finished, if it has finished.
    pub done_op: Option<usize>,
    /// When its task was seen finished (no earlier than it finished).
    pub done_at: Option<Instant>,
}

/// One eviction the operator made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionRecord {
    /// The step (1-based op number) that made it.
    pub op: usize,
    /// The revision of its transaction.
    pub revision: Revision,
    /// The incarnation its marker refuses.
    pub blocked: Incarnation,
}

/// What one revision did to one name's two keys, as the observer's watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The revision.
    pub revision: Revision,
    /// When it happened (the observer's watch delivers at once on the paused clock).
    pub at: Instant,
    /// What happened to the record, if anything.
    pub record: Option<EventKind>,
    /// What happened to the liveness key, if anything.
    pub liveness: Option<EventKind>,
}

/// One revision at which liveness keys went without their records: a lease ran out (or was
/// revoked), and etcd deletes all of a lease's keys together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The revision.
    pub revision: Revision,
    /// The lease the keys were on.
    pub lease: LeaseId,
    /// The names whose liveness key (on that lease) went alone at this revision.
    pub names: BTreeSet<String>,
    /// The names whose liveness key is still on that lease after the revision (none, unless
    /// the store split a lease's expiry).
    pub stayed: BTreeSet<String>,
}

/// What the schedule did that licenses transitions, per member name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Every `Leave`, per name, in order.
    pub leaves: BTreeMap<String, Vec<LeaveRecord>>,
    /// Steps that could cost a name its lease (crash, restart, hang, partition), per name.
    pub lease_losses: BTreeMap<String, Vec<usize>>,
    /// Every change to each name's keys, in order, from a watch of the whole history (an
    /// observer's, never faulted, opened before anything was written).
    pub key_log: BTreeMap<String, Vec<KeyChange>>,
    /// The revisions at which each name's record and liveness were deleted together (what
    /// a leave does), from `key_log`.
    pub leave_deletions: BTreeMap<String, BTreeSet<Revision>>,
    /// Every eviction that removed a member, per name, in order.
    pub evictions: BTreeMap<String, Vec<EvictionRecord>>,
    /// Every put of a record or a liveness key, per name: its revision and the incarnation
    /// it carries, from the observer's watch.
    pub incarnation_puts: BTreeMap<String, Vec<(Revision, Incarnation)>>,
    /// The lease of each name's liveness key, while it exists, from the observer's watch.
    pub live_leases: BTreeMap<String, LeaseId>,
    /// Every revision at which liveness keys went alone, per lease, in order.
    pub expiries: Vec<Expiry>,
}

impl History {
    /// Records what op number `op`, applied at `at`, licenses.
    pub fn record(&mut self, op_number: usize, at: Instant, op: &Op) {
        match *op {
            Op::Leave { w } => self
                .leaves
                .entry(worker_name(w))
                .or_default()
                .push(LeaveRecord {
                    op: op_number,
                    issued_at: at,
                    done_op: None,
                    done_at: None,
                }),
            Op::Crash { w } | Op::Restart { w } | Op::Hang { w } | Op::Partition { w } => self
                .lease_losses
                .entry(worker_name(w))
                .or_default()
                .push(op_number),
            _ => {}
        }
    }

    /// Records a leave of `name` issued by step `op_number` at `at` (one member of a host
    /// leaving, or every member of a leaving host); returns its index.
    pub fn leave(&mut self, name: &str, op_number: usize, at: Instant) -> usize {
        let leaves = self.leaves.entry(name.to_owned()).or_default();
        leaves.push(LeaveRecord {
            op: op_number,
            issued_at: at,
            done_op: None,
            done_at: None,
        });
        leaves.len() - 1
    }

    /// Records one revision's changes, per name (with the lease of a liveness key put), and
    /// the leases whose keys went at it.
    pub fn revision(
        &mut self,
        revision: Revision,
        changes: Vec<(String, KeyChange, Option<LeaseId>)>,
    ) {
        let mut expired: BTreeMap<LeaseId, BTreeSet<String>> = BTreeMap::new();
        for (name, change, lease) in changes {
            match change.liveness {
                Some(EventKind::Put) => {
                    if let Some(lease) = lease {
                        self.live_leases.insert(name.clone(), lease);
                    }
                }
                Some(EventKind::Delete) => {
                    let lease = self.live_leases.remove(&name);
                    if let (Some(lease), None) = (lease, change.record) {
                        expired.entry(lease).or_default().insert(name.clone());
                    }
                }
                None => {}
            }
            self.key_change(&name, change);
        }
        for (lease, names) in expired {
            let stayed = self
                .live_leases
                .iter()
                .filter(|(_, l)| **l == lease)
                .map(|(name, _)| name.clone())
                .collect();
            self.expiries.push(Expiry {
                revision,
                lease,
                names,
                stayed,
            });
        }
    }

    /// Notes that the `index`-th leave of `name` was seen finished during step
    /// `op_number`, at `at`.
    pub fn leave_done(&mut self, name: &str, index: usize, op_number: usize, at: Instant) {
        if let Some(leave) = self.leaves.get_mut(name).and_then(|l| l.get_mut(index)) {
            leave.done_op.get_or_insert(op_number);
            leave.done_at.get_or_insert(at);
        }
    }

    /// Records one revision's change to `name`'s keys.
    pub fn key_change(&mut self, name: &str, change: KeyChange) {
        if change.record == Some(EventKind::Delete) && change.liveness == Some(EventKind::Delete) {
            self.leave_deletions
                .entry(name.to_owned())
                .or_default()
                .insert(change.revision);
        }
        self.key_log
            .entry(name.to_owned())
            .or_default()
            .push(change);
    }

    /// Notes that step `op_number` could cost `name` its lease.
    pub fn lease_loss(&mut self, name: &str, op_number: usize) {
        self.lease_losses
            .entry(name.to_owned())
            .or_default()
            .push(op_number);
    }

    /// Records an eviction of `name` by step `op_number`.
    pub fn evicted(&mut self, name: &str, record: EvictionRecord) {
        self.evictions
            .entry(name.to_owned())
            .or_default()
            .push(record);
    }

    /// How many evictions of `name` could explain a `Left` delivered during step
    /// `delivered` to a master life that started at step `life_started`.
    pub fn evictions_visible(&self, name: &str, life_started: usize, delivered: usize) -> usize {
        self.evictions.get(name).map_or(0, |evictions| {
            evictions
                .iter()
                .filter(|e| e.op <= delivered && e.op >= life_started)
                .count()
        })
    }

    /// Whether `name`'s record was deleted by an eviction at `revision`.
    pub fn evicted_at(&self, name: &str, revision: Revision) -> bool {
        self.evictions
            .get(name)
            .is_some_and(|evictions| evictions.iter().any(|e| e.revision == revision))
    }

    /// Whether a leave of `name` was in flight at `at` (issued, not yet seen finished).
    pub fn leaving_at(&self, name: &str, at: Instant) -> bool {
        self.leaves.get(name).is_some_and(|leaves| {
            leaves
                .iter()
                .any(|l| l.issued_at <= at && !matches!(l.done_at, Some(done) if done < at))
        })
    }

    /// How many leaves of `name` could explain a `Left` delivered during step `delivered`
    /// to a master life that started at step `life_started`: issued no later than the
    /// delivery, and not already finished before that master life began.
    pub fn leaves_visible(&self, name: &str, life_started: usize, delivered: usize) -> usize {
        self.leaves.get(name).map_or(0, |leaves| {
            leaves
                .iter()
                .filter(|l| l.op <= delivered)
                .filter(|l| !matches!(l.done_op, Some(done) if done < life_started))
                .count()
        })
    }

    /// Whether `name`'s record and liveness were deleted together at `revision`. A master
    /// reports `Left` only at such a revision (a record deleted while the liveness stays is
    /// not something any op here does: an eviction deletes both too); a relist that finds a
    /// member gone says `Removed` (see `lefts_follow_leaves`).
    pub fn left_at(&self, name: &str, revision: Revision) -> bool {
        self.leave_deletions
            .get(name)
            .is_some_and(|revisions| revisions.contains(&revision))
    }

    /// Whether `name` could have lost a lease by step `delivered`.
    pub fn lease_lost_by(&self, name: &str, delivered: usize) -> bool {
        self.lease_losses
            .get(name)
            .is_some_and(|ops| ops.iter().any(|&op| op <= delivered))
    }
}
