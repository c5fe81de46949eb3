//! The system under test: one in-memory cluster, 1-2 real masters, real workers and hosts,
//! all in one current-thread tokio runtime on a paused clock, driven op by op.
//!
//! Every worker name has its own client (its "machine"), so a fault hits exactly that
//! worker; every host (a `WorkerGroup`: one lease, several members) has one too, so a fault
//! hits all its members at once; every master has its own client too; an observer client,
//! never faulted, lists the store for the invariants. Registrations and leaves can block
//! (waiting for the name, for the network) and run in spawned tasks that the driver tracks;
//! updates are awaited (with a deadline: an update always answers, if only with an error).
//! A host's start (its lease, then its members added) and its leave run in spawned tasks
//! too; its members' updates and removals are awaited, with the same deadline.
//!
//! After each op the driver *settles*: it lets simulated time pass in small steps until
//! every connected master has applied the store's latest revision, then checks every
//! invariant of `assertions.rs`. After the last op comes a finale: every fault healed, time
//! passes, and everything is checked once more with every worker and every member a host
//! holds due to be `Alive`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use muster_core::{
    Incarnation, KeyKind, Keyspace, LeaseId, Listing, MemberInfo, Revision, Store, WatchBatch,
};
use muster_master::{Master, MasterConfig, Subscription};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{MemberStatus, OnDuplicate, Worker, WorkerConfig, WorkerGroup};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::assertions::{self, HealthyWorker, Life, ProcessLife};
use crate::reference::{EvictionRecord, History, KeyChange, Reference};
use crate::transition::{host_member_name, worker_name, Op, Schedule};

/// The group's prefix.
pub const PREFIX: &str = "/sim/";
/// The workers' lease TTL (etcd's minimum).
pub const TTL: Duration = Duration::from_secs(2);
/// How long a member stays `Suspect` before a master reaps it.
pub const REAP_AFTER: Duration = Duration::from_secs(30);
/// How long a worker must have run with a healthy client (no partition, no hang, no
/// failed calls) before every connected master must have it `Alive`: the name may first
/// have to be freed by an earlier process of the same name (its lease runs out within a TTL
/// of its last keep-alive), then one retry (at most TTL/3 apart while waiting for a name)
/// and the registration itself; with a blip of failed calls, three more retries.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);
/// How long the simulation's evictions hold: longer than any run, so an evicted
/// incarnation must never come back.
/// The metadata version whose update is a drain (`Worker::drain`'s write).
const DRAIN_VERSION: u32 = 3;
const EVICTION_HOLD: Duration = Duration::from_secs(3600);
/// A worker's store client fails a hung call after this (its renewals: after TTL/2).
const WORKER_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// A master's store client fails a hung call after this.
const MASTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Settling looks at the system this often.
const SETTLE_STEP: Duration = Duration::from_millis(20);
/// A connected master that has not caught up with the store after this is stuck.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// An update or a master shutdown that takes longer than this is stuck.
const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// How long the finale lets pass after healing everything: more than [`HEALTHY_AFTER`]
/// plus a master's longest retry delay (5 s).
const FINALE: Duration = Duration::from_secs(15);

/// A failed run: what broke, and what led there.
pub struct Failure {
    /// The violated invariant, with the op after which it was seen.
    pub message: String,
    /// The run up to the failure: ops, registrations, leaves, transitions, with times.
    pub trace: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const TAIL: usize = 200;
        writeln!(f, "{}", self.message)?;
        let skip = self.trace.len().saturating_sub(TAIL);
        writeln!(
            f,
            "--- trace ({} lines{}) ---",
            self.trace.len(),
            if skip > 0 { ", the last 200 shown" } else { "" }
        )?;
        for line in &self.trace[skip..] {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `schedule` in a fresh runtime on a paused clock. Returns the trace of the run (the
/// same schedule always gives the same trace), or the first invariant it broke.
pub fn run(schedule: &Schedule) -> Result<Vec<String>, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread tokio runtime");
    runtime.block_on(async {
        let mut sim = Sim::start(schedule);
        match sim.run(schedule).await {
            Ok(()) => Ok(std::mem::take(&mut sim.trace)),
            Err(message) => Err(Failure {
                message,
                trace: std::mem::take(&mut sim.trace),
            }),
        }
    })
}

/// The metadata of `name` at version `v`.
pub fn info(name: &str, v: u32) -> MemberInfo {
    MemberInfo::new(name, format!("{name}.sim:80")).cpus(v)
}

type Registration = JoinHandle<Result<Worker, muster_worker::Error>>;

/// The current process of a worker name.
enum Process {
    /// None: never started, crashed, or handed to a leave task.
    Idle,
    /// `Worker::register` runs in a task (possibly waiting for the name or the network).
    Registering {
        incarnation: Incarnation,
        info: MemberInfo,
        started: Instant,
        task: Registration,
    },
    /// Registered; its background task keeps the lease alive.
    Running {
        incarnation: Incarnation,
        info: MemberInfo,
        started: Instant,
        /// When `info` was last handed to the worker (`started` if never).
        updated: Instant,
        worker: Worker,
    },
}

/// A leave in progress.
struct Leaving {
    /// Which leave of this name (index into `History::leaves[name]`).
    index: usize,
    /// The process leaving.
    incarnation: Incarnation,
    /// Awaits the registration if needed, then `Worker::leave`.
    task: JoinHandle<Result<(), String>>,
}

/// A process an operator evicted: it must stop by itself, reporting the eviction.
enum Evicted {
    /// It was registered: its worker must report `Status::Evicted`.
    Worker(Worker),
    /// Its registration task had not been collected: it must end with `Error::Evicted`, or
    /// with a worker that reports `Status::Evicted`.
    Registering(Registration),
}

/// One worker name: its client and its processes.
struct Slot {
    /// The member name.
    name: String,
    /// The client every process of this name uses; faults target it.
    client: MemStore,
    /// The current process.
    process: Process,
    /// Earlier processes still leaving.
    leaving: Vec<Leaving>,
    /// Processes evicted by an operator: (incarnation, eviction revision, the process).
    evicted: Vec<(Incarnation, Revision, Evicted)>,
    /// The faults on the client.
    link: Link,
    /// The incarnation of the latest process started.
    latest: Option<Incarnation>,
    /// The latest process left and its leave returned `Ok`.
    left_cleanly: bool,
}

/// The faults on a worker's or a host's client, and since when.
struct Link {
    /// Whether the client is partitioned.
    partitioned: bool,
    /// Whether the client is hung.
    hung: bool,
    /// When the client last became free of faults.
    healthy_since: Instant,
    /// Since when the client has been partitioned or hung, while it is.
    cut_off_since: Option<Instant>,
}

impl Link {
    fn new(now: Instant) -> Self {
        Self {
            partitioned: false,
            hung: false,
            healthy_since: now,
            cut_off_since: None,
        }
    }

    /// Whether the client is free of partitions and hangs.
    fn healthy(&self) -> bool {
        !self.partitioned && !self.hung
    }

    /// Records a fault change on the client, keeping the healthy/cut-off times.
    fn set_faults(&mut self, partitioned: bool, hung: bool) {
        let was_cut_off = self.partitioned || self.hung;
        self.partitioned = partitioned;
        self.hung = hung;
        let now = Instant::now();
        match (was_cut_off, partitioned || hung) {
            (false, true) => self.cut_off_since = Some(now),
            (true, false) => {
                self.cut_off_since = None;
                self.healthy_since = now;
            }
            _ => {}
        }
    }
}

/// What a host's start task gives back: the group, with every member added (registered, or
/// waiting for its name).
type HostStarting = JoinHandle<Result<WorkerGroup, String>>;

/// Holds a group while its members are being added; dropped (the start task aborted by a
/// crash), it abandons the group, as a crash does, instead of leaving as a dropped group
/// would.
struct Crashing(Option<WorkerGroup>);

impl Drop for Crashing {
    fn drop(&mut self) {
        if let Some(group) = self.0.take() {
            group.abandon();
        }
    }
}

/// The current process of a host.
enum HostProcess {
    /// None: never started, crashed, or handed to a leave task.
    Idle,
    /// `WorkerGroup::start` and `add_many` run in a task.
    Starting {
        incarnation: Incarnation,
        started: Instant,
        task: HostStarting,
    },
    /// Started, every member added; its background task keeps the one lease alive.
    Running {
        incarnation: Incarnation,
        started: Instant,
        group: WorkerGroup,
    },
}

/// One member of a host.
struct HostMember {
    /// The member name, `host{h}-m{i}`.
    name: String,
    /// The metadata it was last given by the current process.
    info: MemberInfo,
    /// When `info` was last handed to the group.
    updated: Instant,
    /// The current process holds it (added, not removed, not left).
    held: bool,
    /// It left (removed, or its host left) while registered, and the call returned `Ok`.
    left_cleanly: bool,
}

/// A host's leave in progress.
struct HostLeaving {
    /// The process leaving.
    incarnation: Incarnation,
    /// Per member it held: its index, which leave of its name this is, and whether it was
    /// registered (so its record is its own to delete) when the leave was issued.
    members: Vec<(usize, usize, bool)>,
    /// Awaits the start if needed, then `WorkerGroup::leave`.
    task: JoinHandle<Result<(), String>>,
}

/// One host: its client, its process and its members.
struct HostSlot {
    /// The client every process of this host uses; faults target it.
    client: MemStore,
    /// The current process.
    process: HostProcess,
    /// Earlier processes still leaving.
    leaving: Vec<HostLeaving>,
    /// The faults on the client.
    link: Link,
    /// The incarnation of the latest process started.
    latest: Option<Incarnation>,
    /// Its members, by index.
    members: Vec<HostMember>,
    /// Members an operator evicted from a process of this host: (member index, eviction
    /// revision, the incarnation refused). While that process runs, its group must report
    /// the member `MemberStatus::Evicted` at that revision.
    evicted: Vec<(usize, Revision, Incarnation)>,
}

impl HostSlot {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_str())
    }
}

/// One master and its subscriber.
struct MasterSlot {
    /// The client of every life of this master.
    client: MemStore,
    /// The running master (taken out only while restarting).
    master: Option<Master>,
    /// Its one subscription, opened right after start.
    subscription: Subscription,
    /// What that subscription received.
    life: Life,
    /// Whether the client is partitioned.
    partitioned: bool,
    /// Whether the client is hung.
    hung: bool,
}

impl MasterSlot {
    /// Whether the invariants about the view apply: the master can reach the store.
    fn connected(&self) -> bool {
        !self.partitioned && !self.hung
    }
}

/// What the observer's watch delivered, stamped with the (simulated) time it arrived.
type Observed = Arc<Mutex<Vec<(Instant, Result<WatchBatch, String>)>>>;

struct Sim {
    /// The "etcd server".
    cluster: MemCluster,
    /// A client never faulted, for listing the truth.
    observer: MemStore,
    /// The key layout.
    keyspace: Keyspace,
    /// Per worker index.
    slots: Vec<Slot>,
    /// Per master index.
    masters: Vec<MasterSlot>,
    /// Per host index.
    hosts: Vec<HostSlot>,
    /// The generator's model, stepped again here to reject malformed schedules.
    reference: Reference,
    /// What licenses `Left` and `Suspect`.
    history: History,
    /// Filled by a task following the observer's watch of the whole history; drained into
    /// `history.key_log`.
    observed: Observed,
    /// Every process ever started, by incarnation.
    processes: BTreeMap<Incarnation, ProcessLife>,
    /// The next incarnation handed out (deterministic, unlike a real worker's).
    next_incarnation: u64,
    /// The current op number (0 while settling the start, ops + 1 in the finale).
    op: usize,
    /// When the run started, for the trace.
    start: Instant,
    /// The run so far.
    trace: Vec<String>,
}

fn master_config(m: usize, life: u32) -> MasterConfig {
    MasterConfig::new(PREFIX)
        .reap_after(Some(REAP_AFTER))
        .seed(1000 * (m as u64 + 1) + u64::from(life))
}

fn start_master(client: &MemStore, m: usize, life: u32, op: usize) -> (Master, Subscription, Life) {
    let master =
        Master::start(client.clone(), master_config(m, life)).expect("a valid master config");
    let subscription = master.subscribe();
    let life = Life::new(m, life, op, &subscription.snapshot);
    (master, subscription, life)
}

impl Sim {
    fn start(schedule: &Schedule) -> Self {
        let cluster = MemCluster::new();
        let observer = cluster.client();
        let now = Instant::now();
        let slots = (0..schedule.workers)
            .map(|w| Slot {
                name: worker_name(w),
                client: cluster
                    .client()
                    .with_request_timeout(WORKER_REQUEST_TIMEOUT),
                process: Process::Idle,
                leaving: Vec::new(),
                evicted: Vec::new(),
                link: Link::new(now),
                latest: None,
                left_cleanly: false,
            })
            .collect();
        let masters = (0..schedule.masters)
            .map(|m| {
                let client = cluster
                    .client()
                    .with_request_timeout(MASTER_REQUEST_TIMEOUT);
                let (master, subscription, life) = start_master(&client, m, 0, 0);
                MasterSlot {
                    client,
                    master: Some(master),
                    subscription,
                    life,
                    partitioned: false,
                    hung: false,
                }
            })
            .collect();
        let hosts = (0..schedule.hosts)
            .map(|h| HostSlot {
                client: cluster
                    .client()
                    .with_request_timeout(WORKER_REQUEST_TIMEOUT),
                process: HostProcess::Idle,
                leaving: Vec::new(),
                link: Link::new(now),
                latest: None,
                evicted: Vec::new(),
                members: (0..schedule.members)
                    .map(|i| {
                        let name = host_member_name(h, i);
                        HostMember {
                            info: info(&name, 0),
                            name,
                            updated: now,
                            held: false,
                            left_cleanly: false,
                        }
                    })
                    .collect(),
            })
            .collect();
        Self {
            cluster,
            observer,
            keyspace: Keyspace::new(PREFIX).expect("a valid prefix"),
            slots,
            masters,
            hosts,
            reference: Reference::new(
                schedule.masters,
                schedule.workers,
                schedule.hosts,
                schedule.members,
            ),
            history: History::default(),
            observed: Arc::default(),
            processes: BTreeMap::new(),
            next_incarnation: 1,
            op: 0,
            start: now,
            trace: Vec::new(),
        }
    }

    fn note(&mut self, line: impl fmt::Display) {
        let t = (Instant::now() - self.start).as_secs_f64();
        self.trace.push(format!("{t:>9.3}s {line}"));
    }

    async fn run(&mut self, schedule: &Schedule) -> Result<(), String> {
        let from = self.cluster.revision() + 1;
        let mut watch = self
            .observer
            .watch(PREFIX, from)
            .await
            .map_err(|e| format!("the observer cannot watch: {e}"))?;
        let observed = Arc::clone(&self.observed);
        tokio::spawn(async move {
            while let Some(item) = watch.next().await {
                let item = item.map_err(|e| e.to_string());
                observed
                    .lock()
                    .expect("not poisoned")
                    .push((Instant::now(), item));
            }
            let end = Err("the observer's watch ended".to_owned());
            observed
                .lock()
                .expect("not poisoned")
                .push((Instant::now(), end));
        });
        self.settle_and_check()
            .await
            .map_err(|e| format!("at the start: {e}"))?;
        for (i, op) in schedule.ops.iter().enumerate() {
            self.op = i + 1;
            if !self.reference.precondition(op) {
                return Err(format!(
                    "op {} ({op:?}) is not valid where it stands: the schedule is malformed",
                    self.op
                ));
            }
            self.reference.apply(op);
            self.history.record(self.op, Instant::now(), op);
            let number = self.op;
            self.note(format_args!("op {number}: {op:?}"));
            self.poll_processes().await?;
            self.apply(op)
                .await
                .map_err(|e| format!("during op {} ({op:?}): {e}", self.op))?;
            self.settle_and_check()
                .await
                .map_err(|e| format!("after op {} ({op:?}): {e}", self.op))?;
        }
        self.op = schedule.ops.len() + 1;
        self.finale()
            .await
            .map_err(|e| format!("in the finale (every fault healed, then {FINALE:?} passed): {e}"))
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Join { w } => self.spawn_process(w),
            Op::Update { w, v } => self.update(w, v).await,
            Op::Leave { w } => self.leave(w),
            Op::Crash { w } => self.crash(w).await,
            Op::Restart { w } => {
                self.crash(w).await?;
                self.spawn_process(w)
            }
            Op::Evict { w } => self.evict(w).await,
            Op::Hang { w } => {
                let slot = &mut self.slots[w];
                self.cluster.hang(slot.client.id());
                slot.link.set_faults(slot.link.partitioned, true);
                Ok(())
            }
            Op::Unhang { w } => {
                let slot = &mut self.slots[w];
                self.cluster.unhang(slot.client.id());
                slot.link.set_faults(slot.link.partitioned, false);
                Ok(())
            }
            Op::Partition { w } => {
                let slot = &mut self.slots[w];
                self.cluster.partition(slot.client.id());
                slot.link.set_faults(true, slot.link.hung);
                Ok(())
            }
            Op::Heal { w } => {
                let slot = &mut self.slots[w];
                self.cluster.heal(slot.client.id());
                slot.link.set_faults(false, slot.link.hung);
                Ok(())
            }
            Op::FailCalls { w, n } => {
                // One blip of at most three failed calls costs no lease: from a fresh
                // backoff the retries (at most 0.1 + 0.2 + 0.4 s) fit in a TTL after the
                // missed keep-alive. A blip that lands on a failure streak already under way
                // (the worker is not cleanly registered) may add up to an outage that does.
                let slot = &mut self.slots[w];
                let streak = matches!(
                    &slot.process,
                    Process::Running { worker, .. } if !worker.status().borrow().is_registered()
                );
                if streak {
                    self.history.lease_loss(&slot.name, self.op);
                }
                if slot.link.healthy() {
                    // The retries delay a registration too: count health from here.
                    slot.link.healthy_since = Instant::now();
                }
                self.cluster.fail_next(slot.client.id(), n);
                Ok(())
            }
            Op::PartitionMaster { m } => {
                self.cluster.partition(self.masters[m].client.id());
                self.masters[m].partitioned = true;
                Ok(())
            }
            Op::HealMaster { m } => {
                self.cluster.heal(self.masters[m].client.id());
                self.masters[m].partitioned = false;
                Ok(())
            }
            Op::HangMaster { m } => {
                self.cluster.hang(self.masters[m].client.id());
                self.masters[m].hung = true;
                Ok(())
            }
            Op::UnhangMaster { m } => {
                self.cluster.unhang(self.masters[m].client.id());
                self.masters[m].hung = false;
                Ok(())
            }
            Op::FailMasterCalls { m, n } => {
                self.cluster.fail_next(self.masters[m].client.id(), n);
                Ok(())
            }
            Op::DropWatch { m } => {
                let ended = self.cluster.drop_watches(self.masters[m].client.id());
                self.note(format_args!("  m{m}: {ended} watch(es) dropped"));
                Ok(())
            }
            Op::Compact => {
                let revision = self.cluster.revision();
                if revision > self.cluster.compacted_revision() {
                    self.cluster
                        .compact(revision)
                        .map_err(|e| format!("compacting at {revision}: {e}"))?;
                    self.note(format_args!("  compacted at revision {revision}"));
                }
                Ok(())
            }
            Op::RestartMaster { m } => self.restart_master(m).await,
            Op::Advance { millis } => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(())
            }
            Op::HostStart { h } => self.start_host(h),
            Op::HostCrash { h } => self.crash_host(h).await,
            Op::HostRestart { h } => {
                self.crash_host(h).await?;
                self.start_host(h)
            }
            Op::HostRemove { h, i } => self.remove_member(h, i).await,
            Op::HostEvict { h, i } => self.evict_member(h, i).await,
            Op::HostFailCalls { h, n } => {
                // As for a worker: a blip costs no lease, unless it lands on a failure
                // streak already under way (the group is not cleanly registered).
                let host = &mut self.hosts[h];
                let streak = matches!(
                    &host.process,
                    HostProcess::Running { group, .. } if !group.status().borrow().is_registered()
                );
                if streak {
                    for name in host.names() {
                        self.history.lease_loss(name, self.op);
                    }
                }
                if host.link.healthy() {
                    host.link.healthy_since = Instant::now();
                }
                self.cluster.fail_next(host.client.id(), n);
                Ok(())
            }
            Op::HostUpdate { h, i, v } => self.update_member(h, i, v).await,
            Op::HostLeave { h } => self.leave_host(h),
            Op::HostHang { h }
            | Op::HostUnhang { h }
            | Op::HostPartition { h }
            | Op::HostHeal { h } => {
                let host = &mut self.hosts[h];
                let (partitioned, hung) = match *op {
                    Op::HostHang { .. } => {
                        self.cluster.hang(host.client.id());
                        (host.link.partitioned, true)
                    }
                    Op::HostUnhang { .. } => {
                        self.cluster.unhang(host.client.id());
                        (host.link.partitioned, false)
                    }
                    Op::HostPartition { .. } => {
                        self.cluster.partition(host.client.id());
                        (true, host.link.hung)
                    }
                    _ => {
                        self.cluster.heal(host.client.id());
                        (false, host.link.hung)
                    }
                };
                host.link.set_faults(partitioned, hung);
                if matches!(op, Op::HostHang { .. } | Op::HostPartition { .. }) {
                    // The one lease may run out: every member may go Suspect.
                    for name in host.names() {
                        self.history.lease_loss(name, self.op);
                    }
                }
                Ok(())
            }
        }
    }

    /// Starts a new process for host `h`: a group, then every member added, in a task.
    fn start_host(&mut self, h: usize) -> Result<(), String> {
        let incarnation = Incarnation(self.next_incarnation);
        self.next_incarnation += 1;
        let host = &mut self.hosts[h];
        if !matches!(host.process, HostProcess::Idle) {
            return Err(format!("host{h} already has a process"));
        }
        let now = Instant::now();
        for member in &mut host.members {
            member.info = info(&member.name, 0);
            member.updated = now;
            member.held = true;
            member.left_cleanly = false;
        }
        let infos: Vec<MemberInfo> = host.members.iter().map(|m| m.info.clone()).collect();
        let config = WorkerConfig::new(PREFIX)
            .ttl(TTL)
            .register_timeout(Duration::from_secs(3600))
            .on_duplicate(OnDuplicate::Wait)
            .incarnation(incarnation);
        let client = host.client.clone();
        let task = tokio::spawn(async move {
            let group = WorkerGroup::start(client, config)
                .await
                .map_err(|e| format!("the group did not start: {e}"))?;
            let mut holding = Crashing(Some(group));
            let group = holding.0.as_ref().expect("just put there");
            let names: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
            for (name, result) in names.iter().zip(group.add_many(infos).await) {
                match result {
                    // An operator may evict a member before its `add` answers.
                    Ok(()) | Err(muster_worker::Error::Evicted { .. }) => {}
                    Err(e) => return Err(format!("adding {name} failed: {e}")),
                }
            }
            Ok(holding.0.take().expect("still there"))
        });
        host.process = HostProcess::Starting {
            incarnation,
            started: now,
            task,
        };
        host.latest = Some(incarnation);
        let names = host.names().map(str::to_owned).collect();
        self.processes
            .insert(incarnation, ProcessLife { names, ended: None });
        self.note(format_args!("  host{h}: process {} starts", incarnation.0));
        Ok(())
    }

    /// Host `h`'s process crashes: `abandon`, its lease runs out.
    async fn crash_host(&mut self, h: usize) -> Result<(), String> {
        let host = &mut self.hosts[h];
        let incarnation = match std::mem::replace(&mut host.process, HostProcess::Idle) {
            HostProcess::Idle => return Err(format!("host{h} has no process to crash")),
            HostProcess::Running {
                incarnation, group, ..
            } => {
                group.abandon();
                incarnation
            }
            HostProcess::Starting {
                incarnation, task, ..
            } => {
                // As for a worker: single-threaded, so the crash is instantaneous; an
                // aborted start abandons the group it holds (`Crashing`).
                if !task.is_finished() {
                    task.abort();
                }
                match task.await {
                    Ok(Ok(group)) => group.abandon(),
                    Ok(Err(_)) => {}
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => return Err(format!("the start task of host{h} failed: {e}")),
                }
                incarnation
            }
        };
        for member in &mut host.members {
            member.held = false;
        }
        for name in host.names() {
            self.history.lease_loss(name, self.op);
        }
        if let Some(p) = self.processes.get_mut(&incarnation) {
            p.ended = Some(Instant::now());
        }
        self.note(format_args!("  host{h}: process {} crashed", incarnation.0));
        Ok(())
    }

    /// Member `i` of host `h` leaves (`WorkerGroup::remove`, awaited with a deadline).
    async fn remove_member(&mut self, h: usize, i: usize) -> Result<(), String> {
        let host = &mut self.hosts[h];
        let name = host.members[i].name.clone();
        let outcome = match &host.process {
            HostProcess::Running { group, .. } => {
                if !host.members[i].held {
                    return Err(format!("host{h} does not hold {name}"));
                }
                // Registered by this process: the record is its own, the remove deletes it.
                let clean = matches!(
                    group.members().borrow().get(&name),
                    Some(MemberStatus::Registered { .. })
                );
                let index = self.history.leave(&name, self.op, Instant::now());
                let answer = tokio::time::timeout(CALL_DEADLINE, group.remove(&name))
                    .await
                    .map_err(|_| {
                        format!("the remove of {name} got no answer within {CALL_DEADLINE:?}")
                    })?;
                self.history
                    .leave_done(&name, index, self.op, Instant::now());
                match answer {
                    Ok(()) => {
                        let member = &mut host.members[i];
                        member.held = false;
                        member.left_cleanly = clean;
                        format!("removed (registered before: {clean})")
                    }
                    Err(muster_worker::Error::Stopped) => {
                        return Err(format!(
                            "the group of host{h} has stopped on its own (it should run until it leaves or crashes)"
                        ))
                    }
                    Err(e) => format!("failed, still held ({e})"),
                }
            }
            HostProcess::Starting { .. } => "skipped: still starting".to_owned(),
            HostProcess::Idle => {
                return Err(format!("host{h} has no process to remove {name} from"))
            }
        };
        self.note(format_args!("  {name}: remove: {outcome}"));
        Ok(())
    }

    /// An operator evicts member `i` of host `h`; if the eviction named the current process,
    /// the member is no longer held (its group must stop announcing it).
    async fn evict_member(&mut self, h: usize, i: usize) -> Result<(), String> {
        let name = self.hosts[h].members[i].name.clone();
        let evicted = tokio::time::timeout(
            CALL_DEADLINE,
            muster_master::evict(&self.observer, PREFIX, &name, EVICTION_HOLD),
        )
        .await
        .map_err(|_| format!("evicting {name} got no answer within {CALL_DEADLINE:?}"))?;
        let host = &mut self.hosts[h];
        let current = match &host.process {
            HostProcess::Running { incarnation, .. }
            | HostProcess::Starting { incarnation, .. } => Some(*incarnation),
            HostProcess::Idle => None,
        };
        let outcome = match evicted {
            Ok(eviction) => {
                self.history.evicted(
                    &name,
                    EvictionRecord {
                        op: self.op,
                        revision: eviction.revision,
                        blocked: eviction.blocked,
                    },
                );
                let named = Some(eviction.blocked) == current;
                if named {
                    host.members[i].held = false;
                    host.evicted.push((i, eviction.revision, eviction.blocked));
                }
                format!(
                    "evicted at revision {} (was {}), incarnation {} refused ({})",
                    eviction.revision,
                    eviction.was,
                    eviction.blocked.0,
                    if named {
                        "the host's current process"
                    } else {
                        "an older process"
                    }
                )
            }
            Err(e) => format!("eviction refused: {e}"),
        };
        self.note(format_args!("  {name}: {outcome}"));
        Ok(())
    }

    /// Every member evicted from a host's process that still runs is reported evicted, at
    /// its eviction's revision, by its group.
    fn check_evicted_members(&self) -> Result<(), String> {
        for host in &self.hosts {
            let HostProcess::Running {
                incarnation, group, ..
            } = &host.process
            else {
                continue;
            };
            let members = group.members().borrow().clone();
            for &(i, revision, blocked) in host.evicted.iter().filter(|e| e.2 == *incarnation) {
                let name = &host.members[i].name;
                let expected = MemberStatus::Evicted { revision };
                let status = members.get(name);
                if status != Some(&expected) {
                    return Err(format!(
                        "{name} of process {}, evicted at revision {revision}, is {status:?} in its group, not {expected:?}",
                        blocked.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rewrites member `i` of host `h` to version `v` ([`DRAIN_VERSION`]: a drain).
    async fn update_member(&mut self, h: usize, i: usize, v: u32) -> Result<(), String> {
        let host = &mut self.hosts[h];
        let name = host.members[i].name.clone();
        let outcome = match &host.process {
            HostProcess::Running { group, .. } => {
                let member = &mut host.members[i];
                let drain = v == DRAIN_VERSION;
                let new_info = if drain {
                    member.info.clone().draining(true)
                } else {
                    info(&name, v).draining(member.info.draining)
                };
                let call = async {
                    if drain {
                        group.drain(&name).await
                    } else {
                        group.update(new_info.clone()).await
                    }
                };
                let answer = tokio::time::timeout(CALL_DEADLINE, call)
                    .await
                    .map_err(|_| {
                        format!("the update of {name} got no answer within {CALL_DEADLINE:?}")
                    })?;
                match answer {
                    Err(muster_worker::Error::Stopped) => {
                        return Err(format!(
                            "the group of host{h} has stopped on its own (it should run until it leaves or crashes)"
                        ))
                    }
                    Err(e @ muster_worker::Error::NotInGroup { .. }) => {
                        return Err(format!("the group of host{h} lost {name}: {e}"))
                    }
                    _ => {}
                }
                member.info = new_info;
                member.updated = Instant::now();
                match answer {
                    Ok(()) => "written".to_owned(),
                    Err(e) => format!("kept for later ({e})"),
                }
            }
            HostProcess::Starting { .. } => "skipped: still starting".to_owned(),
            HostProcess::Idle => return Err(format!("host{h} has no process to update {name}")),
        };
        self.note(format_args!("  {name}: update to cpus {v}: {outcome}"));
        Ok(())
    }

    /// Host `h` leaves gracefully, in a task: every member it holds leaves, then the lease
    /// is revoked.
    fn leave_host(&mut self, h: usize) -> Result<(), String> {
        let host = &mut self.hosts[h];
        let process = std::mem::replace(&mut host.process, HostProcess::Idle);
        let statuses = match &process {
            HostProcess::Running { group, .. } => group.members().borrow().clone(),
            _ => Default::default(),
        };
        let now = Instant::now();
        let mut members = Vec::new();
        for (i, member) in host.members.iter_mut().enumerate() {
            if !std::mem::take(&mut member.held) {
                continue;
            }
            let clean = matches!(
                statuses.get(&member.name),
                Some(MemberStatus::Registered { .. })
            );
            members.push((i, self.history.leave(&member.name, self.op, now), clean));
        }
        let (incarnation, task) = match process {
            HostProcess::Running {
                incarnation, group, ..
            } => (
                incarnation,
                tokio::spawn(async move { group.leave().await.map_err(|e| e.to_string()) }),
            ),
            HostProcess::Starting {
                incarnation, task, ..
            } => (
                incarnation,
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(group)) => group.leave().await.map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(format!("its start failed: {e}")),
                        Err(e) => Err(format!("its start task failed: {e}")),
                    }
                }),
            ),
            HostProcess::Idle => return Err(format!("host{h} has no process to leave")),
        };
        host.leaving.push(HostLeaving {
            incarnation,
            members,
            task,
        });
        Ok(())
    }

    /// Starts a new process for worker `w`, registering in a task.
    fn spawn_process(&mut self, w: usize) -> Result<(), String> {
        let incarnation = Incarnation(self.next_incarnation);
        self.next_incarnation += 1;
        let slot = &mut self.slots[w];
        if !matches!(slot.process, Process::Idle) {
            return Err(format!("{} already has a process", slot.name));
        }
        let info = info(&slot.name, 0);
        let config = WorkerConfig::new(PREFIX)
            .ttl(TTL)
            .register_timeout(Duration::from_secs(3600))
            .on_duplicate(OnDuplicate::Wait)
            .incarnation(incarnation);
        let task = tokio::spawn(Worker::register(slot.client.clone(), info.clone(), config));
        slot.process = Process::Registering {
            incarnation,
            info,
            started: Instant::now(),
            task,
        };
        slot.latest = Some(incarnation);
        slot.left_cleanly = false;
        let name = slot.name.clone();
        self.processes.insert(
            incarnation,
            ProcessLife {
                names: [name.clone()].into(),
                ended: None,
            },
        );
        self.note(format_args!("  {name}: process {} starts", incarnation.0));
        Ok(())
    }

    /// Rewrites worker `w`'s metadata to version `v` ([`DRAIN_VERSION`]: a drain).
    async fn update(&mut self, w: usize, v: u32) -> Result<(), String> {
        let name = self.slots[w].name.clone();
        let drain = v == DRAIN_VERSION;
        let outcome = match &mut self.slots[w].process {
            Process::Running {
                worker,
                info,
                updated,
                ..
            } => {
                // A drain keeps the metadata and turns draining on; draining is one-way for
                // a process, so a later update keeps it.
                let new_info = if drain {
                    info.clone().draining(true)
                } else {
                    self::info(&name, v).draining(info.draining)
                };
                let call = async {
                    if drain {
                        worker.drain().await
                    } else {
                        worker.update(new_info.clone()).await
                    }
                };
                let answer = tokio::time::timeout(CALL_DEADLINE, call)
                    .await
                    .map_err(|_| {
                        format!("the update of {name} got no answer within {CALL_DEADLINE:?}")
                    })?;
                if let Err(muster_worker::Error::Stopped) = answer {
                    return Err(format!(
                        "the worker of {name} has stopped on its own (it should run until it leaves or crashes)"
                    ));
                }
                *info = new_info;
                *updated = Instant::now();
                match answer {
                    Ok(()) => "written".to_owned(),
                    Err(e) => format!("kept for later ({e})"),
                }
            }
            Process::Registering { .. } => "skipped: still registering".to_owned(),
            Process::Idle => return Err(format!("{name} has no process to update")),
        };
        self.note(format_args!("  {name}: update to cpus {v}: {outcome}"));
        Ok(())
    }

    fn leave(&mut self, w: usize) -> Result<(), String> {
        let slot = &mut self.slots[w];
        let index = self
            .history
            .leaves
            .get(&slot.name)
            .map_or(0, |l| l.len().saturating_sub(1));
        let (incarnation, task) = match std::mem::replace(&mut slot.process, Process::Idle) {
            Process::Running {
                incarnation,
                worker,
                ..
            } => (
                incarnation,
                tokio::spawn(async move { worker.leave().await.map_err(|e| e.to_string()) }),
            ),
            Process::Registering {
                incarnation, task, ..
            } => (
                incarnation,
                tokio::spawn(async move {
                    match task.await {
                        Ok(Ok(worker)) => worker.leave().await.map_err(|e| e.to_string()),
                        Ok(Err(e)) => Err(format!("its registration failed: {e}")),
                        Err(e) => Err(format!("its registration task failed: {e}")),
                    }
                }),
            ),
            Process::Idle => return Err(format!("{} has no process to leave", slot.name)),
        };
        slot.leaving.push(Leaving {
            index,
            incarnation,
            task,
        });
        Ok(())
    }

    async fn crash(&mut self, w: usize) -> Result<(), String> {
        let slot = &mut self.slots[w];
        let name = slot.name.clone();
        let incarnation = match std::mem::replace(&mut slot.process, Process::Idle) {
            Process::Idle => return Err(format!("{name} has no process to crash")),
            Process::Running {
                incarnation,
                worker,
                ..
            } => {
                worker.abandon();
                incarnation
            }
            Process::Registering {
                incarnation, task, ..
            } => {
                // Single-threaded: an unfinished task cannot make progress between this
                // check and the abort, so the crash is instantaneous either way.
                if !task.is_finished() {
                    task.abort();
                }
                match task.await {
                    Ok(Ok(worker)) => worker.abandon(),
                    Ok(Err(_)) => {}
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => return Err(format!("the registration task of {name} failed: {e}")),
                }
                incarnation
            }
        };
        if let Some(p) = self.processes.get_mut(&incarnation) {
            p.ended = Some(Instant::now());
        }
        self.note(format_args!("  {name}: process {} crashed", incarnation.0));
        Ok(())
    }

    /// An operator evicts `w`'s name; the current process is gone either way: it stops by
    /// itself if the eviction named it, else the operator kills it (a crash).
    async fn evict(&mut self, w: usize) -> Result<(), String> {
        let name = self.slots[w].name.clone();
        let evicted = tokio::time::timeout(
            CALL_DEADLINE,
            muster_master::evict(&self.observer, PREFIX, &name, EVICTION_HOLD),
        )
        .await
        .map_err(|_| format!("evicting {name} got no answer within {CALL_DEADLINE:?}"))?;
        let current = match &self.slots[w].process {
            Process::Running { incarnation, .. } | Process::Registering { incarnation, .. } => {
                Some(*incarnation)
            }
            Process::Idle => None,
        };
        match evicted {
            Ok(eviction) => {
                self.note(format_args!(
                    "  {name}: evicted at revision {} (was {}), incarnation {} refused",
                    eviction.revision, eviction.was, eviction.blocked.0
                ));
                self.history.evicted(
                    &name,
                    EvictionRecord {
                        op: self.op,
                        revision: eviction.revision,
                        blocked: eviction.blocked,
                    },
                );
                if Some(eviction.blocked) == current {
                    let slot = &mut self.slots[w];
                    let process = match std::mem::replace(&mut slot.process, Process::Idle) {
                        Process::Running { worker, .. } => Evicted::Worker(worker),
                        Process::Registering { task, .. } => Evicted::Registering(task),
                        Process::Idle => unreachable!("it has the evicted incarnation"),
                    };
                    slot.evicted
                        .push((eviction.blocked, eviction.revision, process));
                    if let Some(p) = self.processes.get_mut(&eviction.blocked) {
                        // Its liveness key went with the eviction.
                        p.ended = Some(Instant::now());
                    }
                    return Ok(());
                }
            }
            Err(e) => self.note(format_args!("  {name}: eviction refused: {e}")),
        }
        // The eviction did not name the current process: the operator kills it.
        self.history.lease_loss(&name, self.op);
        self.crash(w).await
    }

    /// Every evicted process must have stopped, reporting its eviction.
    async fn check_evicted_stopped(&mut self) -> Result<(), String> {
        for slot in &mut self.slots {
            for (incarnation, revision, process) in std::mem::take(&mut slot.evicted) {
                let name = &slot.name;
                let expected = muster_worker::Status::Evicted { revision };
                let status = match process {
                    Evicted::Worker(worker) => worker.status().borrow().clone(),
                    Evicted::Registering(task) if !task.is_finished() => {
                        return Err(format!(
                            "process {} of {name}, evicted at revision {revision}, is still registering",
                            incarnation.0
                        ))
                    }
                    Evicted::Registering(task) => match task.await {
                        Ok(Ok(worker)) => worker.status().borrow().clone(),
                        Ok(Err(muster_worker::Error::Evicted { revision: r, .. }))
                            if r == revision =>
                        {
                            expected.clone()
                        }
                        Ok(Err(e)) => {
                            return Err(format!(
                                "the registration of process {} of {name}, evicted at revision {revision}, failed otherwise: {e}",
                                incarnation.0
                            ))
                        }
                        Err(e) => return Err(format!("the registration task of {name} failed: {e}")),
                    },
                };
                if status != expected {
                    return Err(format!(
                        "process {} of {name}, evicted at revision {revision}, reports {status:?}, not {expected:?}",
                        incarnation.0
                    ));
                }
            }
        }
        Ok(())
    }

    async fn restart_master(&mut self, m: usize) -> Result<(), String> {
        self.drain()?;
        let ms = &mut self.masters[m];
        assertions::lefts_follow_leaves(&ms.life, &self.history)?;
        assertions::suspects_follow_lost_leases(&ms.life, &self.history)?;
        assertions::no_duplicate_deliveries(&ms.life)?;
        assertions::deliveries_in_revision_order(&ms.life)?;
        assertions::suspects_of_one_lease_together(&ms.life, &self.history)?;
        if let Some(malformed) = &ms.life.malformed {
            return Err(malformed.clone());
        }
        if let Some(master) = ms.master.take() {
            tokio::time::timeout(CALL_DEADLINE, master.shutdown())
                .await
                .map_err(|_| format!("m{m} did not shut down within {CALL_DEADLINE:?}"))?;
        }
        let number = ms.life.number + 1;
        let (master, subscription, life) = start_master(&ms.client, m, number, self.op);
        ms.master = Some(master);
        ms.subscription = subscription;
        ms.life = life;
        Ok(())
    }

    /// Moves finished registrations to `Running` and retires finished leaves.
    async fn poll_processes(&mut self) -> Result<(), String> {
        for w in 0..self.slots.len() {
            let finished = matches!(
                &self.slots[w].process,
                Process::Registering { task, .. } if task.is_finished()
            );
            if finished {
                let Process::Registering {
                    incarnation,
                    info,
                    started,
                    task,
                } = std::mem::replace(&mut self.slots[w].process, Process::Idle)
                else {
                    unreachable!("checked just above");
                };
                let name = self.slots[w].name.clone();
                match task.await {
                    Ok(Ok(worker)) => {
                        self.slots[w].process = Process::Running {
                            incarnation,
                            info,
                            started,
                            updated: started,
                            worker,
                        };
                        self.note(format_args!(
                            "  {name}: process {} registered",
                            incarnation.0
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(format!(
                            "the registration of {name} (incarnation {}) failed: {e}",
                            incarnation.0
                        ))
                    }
                    Err(e) => return Err(format!("the registration task of {name} failed: {e}")),
                }
            }
            for leaving in take_finished(&mut self.slots[w].leaving, |l| l.task.is_finished()) {
                let name = self.slots[w].name.clone();
                let result = leaving
                    .task
                    .await
                    .map_err(|e| format!("the leave task of {name} failed: {e}"))?;
                if let Some(p) = self.processes.get_mut(&leaving.incarnation) {
                    p.ended = Some(Instant::now());
                }
                self.history
                    .leave_done(&name, leaving.index, self.op, Instant::now());
                if result.is_ok() && self.slots[w].latest == Some(leaving.incarnation) {
                    self.slots[w].left_cleanly = true;
                }
                self.note(format_args!(
                    "  {name}: process {} leave returned {result:?}",
                    leaving.incarnation.0
                ));
            }
        }
        self.poll_hosts().await
    }

    /// Moves finished host starts to `Running` and retires finished host leaves.
    async fn poll_hosts(&mut self) -> Result<(), String> {
        for h in 0..self.hosts.len() {
            let host = &mut self.hosts[h];
            if matches!(&host.process, HostProcess::Starting { task, .. } if task.is_finished()) {
                let HostProcess::Starting {
                    incarnation,
                    started,
                    task,
                } = std::mem::replace(&mut host.process, HostProcess::Idle)
                else {
                    unreachable!("checked just above");
                };
                match task.await {
                    Ok(Ok(group)) => {
                        host.process = HostProcess::Running {
                            incarnation,
                            started,
                            group,
                        };
                        self.note(format_args!(
                            "  host{h}: process {} started, every member added",
                            incarnation.0
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(format!(
                            "the start of host{h} (incarnation {}) failed: {e}",
                            incarnation.0
                        ))
                    }
                    Err(e) => return Err(format!("the start task of host{h} failed: {e}")),
                }
            }
            for leaving in take_finished(&mut self.hosts[h].leaving, |l| l.task.is_finished()) {
                let result = leaving
                    .task
                    .await
                    .map_err(|e| format!("the leave task of host{h} failed: {e}"))?;
                if let Some(p) = self.processes.get_mut(&leaving.incarnation) {
                    p.ended = Some(Instant::now());
                }
                let host = &mut self.hosts[h];
                let latest = host.latest == Some(leaving.incarnation);
                for &(m, index, clean) in &leaving.members {
                    let member = &mut host.members[m];
                    self.history
                        .leave_done(&member.name, index, self.op, Instant::now());
                    if result.is_ok() && latest && clean {
                        member.left_cleanly = true;
                    }
                    if result.is_err() {
                        // `WorkerGroup::leave` retries a failed member leave for up to a TTL,
                        // as `Worker::leave` does; one that still failed goes with the lease,
                        // `Suspect`.
                        self.history.lease_loss(&member.name, self.op);
                    }
                }
                self.note(format_args!(
                    "  host{h}: process {} leave returned {result:?}",
                    leaving.incarnation.0
                ));
            }
        }
        Ok(())
    }

    /// Moves what the observer's watch has delivered so far into `history.key_log`.
    fn drain_history(&mut self) -> Result<(), String> {
        let observed = std::mem::take(&mut *self.observed.lock().expect("not poisoned"));
        for (at, item) in observed {
            let batch = item.map_err(|e| format!("the observer's watch broke: {e}"))?;
            // Per (revision, name): what happened to each of the two keys, and the lease of a
            // liveness key put.
            let mut changes: BTreeMap<(Revision, &str), (KeyChange, Option<LeaseId>)> =
                BTreeMap::new();
            for event in &batch.events {
                let Some((kind, name)) = self.keyspace.parse(&event.kv.key) else {
                    continue;
                };
                if kind == KeyKind::Evicted {
                    continue;
                }
                if event.kind == muster_core::EventKind::Put {
                    let incarnation = match kind {
                        KeyKind::Record => {
                            muster_core::Record::from_json(&event.kv.key, &event.kv.value)
                                .map(|r| r.incarnation)
                        }
                        _ => muster_core::Liveness::from_json(&event.kv.key, &event.kv.value)
                            .map(|l| l.incarnation),
                    }
                    .map_err(|e| format!("the observer saw an undecodable value: {e}"))?;
                    self.history
                        .incarnation_puts
                        .entry(name.to_owned())
                        .or_default()
                        .push((event.revision(), incarnation));
                }
                let (change, lease) =
                    changes.entry((event.revision(), name)).or_insert_with(|| {
                        let change = KeyChange {
                            revision: event.revision(),
                            at,
                            record: None,
                            liveness: None,
                        };
                        (change, None)
                    });
                match kind {
                    KeyKind::Record => change.record = Some(event.kind),
                    KeyKind::Liveness => {
                        change.liveness = Some(event.kind);
                        if event.kind == muster_core::EventKind::Put {
                            *lease = Some(event.kv.lease);
                        }
                    }
                    KeyKind::Evicted => unreachable!("skipped above"),
                }
            }
            // Revision by revision, so that the leases whose keys went at one are known.
            let mut by_revision: BTreeMap<Revision, Vec<(String, KeyChange, Option<LeaseId>)>> =
                BTreeMap::new();
            for ((revision, name), (change, lease)) in changes {
                by_revision
                    .entry(revision)
                    .or_default()
                    .push((name.to_owned(), change, lease));
            }
            for (revision, changes) in by_revision {
                self.history.revision(revision, changes);
            }
        }
        Ok(())
    }

    /// Takes every transition waiting in the subscriptions.
    fn drain(&mut self) -> Result<(), String> {
        self.drain_history()?;
        let mut lines = Vec::new();
        for ms in &mut self.masters {
            while let Some(t) = ms
                .subscription
                .try_next_transition()
                .expect("the subscriber lagged")
            {
                lines.push(format!(
                    "  {}: {} {} rev {} inc {} cpus {}",
                    ms.life.label(),
                    t.kind,
                    t.member.name(),
                    t.revision,
                    t.member.incarnation.0,
                    t.member.info.cpus,
                ));
                ms.life.deliver(self.op, t);
            }
        }
        for line in lines {
            self.note(line);
        }
        Ok(())
    }

    /// Lets time pass until every connected master has caught up with the store, then
    /// checks every invariant.
    async fn settle_and_check(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        loop {
            tokio::time::sleep(SETTLE_STEP).await;
            self.poll_processes().await?;
            self.drain()?;
            let listing = self
                .observer
                .list(PREFIX)
                .await
                .map_err(|e| format!("the observer cannot list: {e}"))?;
            let behind: Vec<String> = self
                .masters
                .iter()
                .filter(|ms| ms.connected())
                .filter_map(|ms| {
                    let master = ms.master.as_ref()?;
                    let view = master.view();
                    (!view.synced || view.revision != listing.revision).then(|| {
                        format!(
                            "{} (synced {}, at revision {}, health {:?})",
                            ms.life.label(),
                            view.synced,
                            view.revision,
                            master.health()
                        )
                    })
                })
                .collect();
            if behind.is_empty() {
                return self.check(&listing);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "connected masters did not catch up with the store (revision {}) within {SETTLE_DEADLINE:?}: {}",
                    listing.revision,
                    behind.join("; ")
                ));
            }
        }
    }

    /// The workers whose process runs on a healthy client, and for how long.
    fn healthy_workers(&self, now: Instant) -> Vec<HealthyWorker> {
        let mut healthy = Vec::new();
        for slot in self.slots.iter().filter(|s| s.link.healthy()) {
            let (incarnation, info, started, updated, registered) = match &slot.process {
                Process::Idle => continue,
                Process::Registering {
                    incarnation,
                    info,
                    started,
                    ..
                } => (incarnation, info, started, started, false),
                Process::Running {
                    incarnation,
                    info,
                    started,
                    updated,
                    ..
                } => (incarnation, info, started, updated, true),
            };
            let since = (*started).max(slot.link.healthy_since);
            healthy.push(HealthyWorker {
                name: slot.name.clone(),
                incarnation: *incarnation,
                info: info.clone(),
                healthy_for: now - since,
                info_age: now - *updated,
                registered,
            });
        }
        // Every member a host holds, as a worker of the host's process.
        for host in self.hosts.iter().filter(|h| h.link.healthy()) {
            let (incarnation, started, registered) = match &host.process {
                HostProcess::Idle => continue,
                HostProcess::Starting {
                    incarnation,
                    started,
                    ..
                } => (incarnation, started, false),
                HostProcess::Running {
                    incarnation,
                    started,
                    ..
                } => (incarnation, started, true),
            };
            let since = (*started).max(host.link.healthy_since);
            for member in host.members.iter().filter(|m| m.held) {
                healthy.push(HealthyWorker {
                    name: member.name.clone(),
                    incarnation: *incarnation,
                    info: member.info.clone(),
                    healthy_for: now - since,
                    info_age: now - member.updated,
                    registered,
                });
            }
        }
        healthy
    }

    fn check(&self, listing: &Listing) -> Result<(), String> {
        let truth = assertions::truth(listing, &self.keyspace);
        let now = Instant::now();
        let healthy = self.healthy_workers(now);
        for ms in &self.masters {
            let label = ms.life.label();
            assertions::lefts_follow_leaves(&ms.life, &self.history)?;
            assertions::suspects_follow_lost_leases(&ms.life, &self.history)?;
            assertions::no_duplicate_deliveries(&ms.life)?;
            assertions::deliveries_in_revision_order(&ms.life)?;
            assertions::suspects_of_one_lease_together(&ms.life, &self.history)?;
            let Some(master) = &ms.master else { continue };
            let view = master.view();
            assertions::stream_replays_to_view(&ms.life, &view)?;
            if !ms.connected() {
                continue;
            }
            assertions::no_ghosts(&label, &view, listing, &self.keyspace)?;
            assertions::view_matches_store(&label, &view, &truth, listing.revision)?;
            assertions::healthy_workers_alive(&label, &view, &healthy, HEALTHY_AFTER)?;
        }
        assertions::no_ghost_liveness(listing, &self.keyspace, &self.processes, now, TTL)?;
        assertions::no_early_reaps(&self.history, REAP_AFTER)?;
        assertions::evicted_never_reappear(&self.history)?;
        assertions::one_lease_per_process(listing, &self.keyspace)?;
        assertions::leases_expire_in_one_revision(&self.history)?;
        let mut cut_off: Vec<(String, Duration)> = self
            .slots
            .iter()
            .filter_map(|s| Some((s.name.clone(), now - s.link.cut_off_since?)))
            .collect();
        for host in &self.hosts {
            if let Some(since) = host.link.cut_off_since {
                cut_off.extend(host.names().map(|name| (name.to_owned(), now - since)));
            }
        }
        assertions::cut_off_workers_lose_liveness(listing, &self.keyspace, &cut_off, TTL)?;
        let mut left_cleanly: Vec<String> = self
            .slots
            .iter()
            .filter(|s| {
                s.left_cleanly && matches!(s.process, Process::Idle) && s.leaving.is_empty()
            })
            .map(|s| s.name.clone())
            .collect();
        for host in self.hosts.iter().filter(|h| h.leaving.is_empty()) {
            left_cleanly.extend(
                host.members
                    .iter()
                    .filter(|m| m.left_cleanly && !m.held)
                    .map(|m| m.name.clone()),
            );
        }
        assertions::left_members_have_no_record(listing, &self.keyspace, &left_cleanly)
    }

    /// Heals every fault, lets time pass, and checks once more: now every process must be
    /// registered and `Alive` everywhere.
    async fn finale(&mut self) -> Result<(), String> {
        self.note("finale: heal everything");
        for slot in &mut self.slots {
            self.cluster.heal(slot.client.id());
            self.cluster.unhang(slot.client.id());
            slot.link.set_faults(false, false);
        }
        for host in &mut self.hosts {
            self.cluster.heal(host.client.id());
            self.cluster.unhang(host.client.id());
            host.link.set_faults(false, false);
        }
        for ms in &mut self.masters {
            self.cluster.heal(ms.client.id());
            self.cluster.unhang(ms.client.id());
            ms.partitioned = false;
            ms.hung = false;
        }
        tokio::time::sleep(FINALE).await;
        self.settle_and_check().await?;
        self.check_evicted_members()?;
        self.check_evicted_stopped().await
    }
}

/// Takes the entries whose task has finished out of `pending`, in order, leaving the rest.
fn take_finished<T>(pending: &mut Vec<T>, finished: impl Fn(&T) -> bool) -> Vec<T> {
    let (done, rest) = std::mem::take(pending)
        .into_iter()
        .partition(|t| finished(t));
    *pending = rest;
    done
}
