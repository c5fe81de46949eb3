//! Scenario 7: a churn soak against the three-member cluster, with a leader kill in the
//! middle.
//!
//! Two hundred worker names, driven by eight seeded drivers, join, update, leave, crash and
//! come back at random, all on one shared client, for three bounded phases. Two masters
//! watch the group and both reap. The leader — made, first, the member serving a master's
//! watch — is killed in the middle of the second phase (and started again a few seconds
//! later). After each phase the churn pauses and every
//! master's view must equal a fresh listing of etcd; at the end every transition each master
//! emitted must be exactly what etcd's history implies, revision by revision.

use std::time::{Duration, Instant};

use muster_core::TransitionKind;
use muster_etcd_backend::EtcdStore;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_worker::{Error as WorkerError, Worker, WorkerConfig};

use crate::support::{
    assert_view_is_truth, connect, count, info, master_config, ms, report, History, Outcome,
    Recorder, Rng,
};

const PREFIX: &str = "/faults/soak/";
/// The run's seed: the same seed gives the same schedule of operations.
const SEED: u64 = 0x5eed_0007;
const DRIVERS: usize = 8;
const NAMES_PER_DRIVER: usize = 25;
const TTL: Duration = Duration::from_secs(3);
const REAP_AFTER: Duration = Duration::from_secs(3);
/// The three phases of churn (together well under a minute).
const PHASES: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(14),
    Duration::from_secs(8),
];
/// When, into the second phase, the leader is killed, and how long it stays down.
const KILL_AFTER: Duration = Duration::from_secs(4);
const KILLED_FOR: Duration = Duration::from_secs(5);

/// One name a driver owns.
enum Slot {
    /// No process holds it.
    Empty,
    /// A live worker.
    Running(Worker),
    /// Its process crashed; its liveness may still be held until the lease expires.
    Crashed,
}

/// What the drivers did.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    joins: u64,
    updates: u64,
    leaves: u64,
    crashes: u64,
    /// Registrations refused because the crashed process's lease had not expired yet.
    still_held: u64,
    /// Calls that failed (the store was unreachable or slow); each is retried or left.
    failed: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.joins += o.joins;
        self.updates += o.updates;
        self.leaves += o.leaves;
        self.crashes += o.crashes;
        self.still_held += o.still_held;
        self.failed += o.failed;
    }
}

/// A seeded driver of a few names.
struct Driver {
    rng: Rng,
    names: Vec<String>,
    slots: Vec<Slot>,
    stats: Stats,
}

impl Driver {
    fn new(index: usize) -> Self {
        let names: Vec<String> = (0..NAMES_PER_DRIVER)
            .map(|i| format!("d{index}-w{i:02}"))
            .collect();
        Driver {
            rng: Rng::new(SEED ^ (index as u64 + 1)),
            slots: names.iter().map(|_| Slot::Empty).collect(),
            names,
            stats: Stats::default(),
        }
    }

    fn config() -> WorkerConfig {
        WorkerConfig::new(PREFIX)
            .ttl(TTL)
            .register_timeout(Duration::from_secs(20))
    }

    /// Acts at random until `until`, then returns itself (its workers still running).
    async fn churn(mut self, store: EtcdStore, until: Instant) -> Self {
        while Instant::now() < until {
            self.step(&store).await;
            // Pacing: think time between operations, not a synchronisation.
            let think = Duration::from_millis(self.rng.below(40));
            tokio::time::sleep(think).await;
        }
        self
    }

    async fn step(&mut self, store: &EtcdStore) {
        let i = self.rng.below(self.slots.len() as u64) as usize;
        let name = self.names[i].clone();
        let cpus = self.rng.below(64) as u32;
        self.slots[i] = match std::mem::replace(&mut self.slots[i], Slot::Empty) {
            before @ (Slot::Empty | Slot::Crashed) => {
                match Worker::register(store.clone(), info(&name).cpus(cpus), Self::config()).await
                {
                    Ok(worker) => {
                        self.stats.joins += 1;
                        Slot::Running(worker)
                    }
                    Err(WorkerError::DuplicateName { .. }) => {
                        self.stats.still_held += 1;
                        before
                    }
                    Err(_) => {
                        self.stats.failed += 1;
                        before
                    }
                }
            }
            Slot::Running(worker) => match self.rng.below(100) {
                0..=59 => {
                    self.stats.updates += 1;
                    if worker.update(info(&name).cpus(cpus)).await.is_err() {
                        // Kept by the worker and written again by itself.
                        self.stats.failed += 1;
                    }
                    Slot::Running(worker)
                }
                60..=79 => {
                    self.stats.leaves += 1;
                    if worker.leave().await.is_err() {
                        // Its lease expires instead: Suspect, then reaped.
                        self.stats.failed += 1;
                    }
                    Slot::Empty
                }
                _ => {
                    self.stats.crashes += 1;
                    worker.abandon();
                    Slot::Crashed
                }
            },
        };
    }

    fn running(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Running(_)))
            .count()
    }
}

/// Runs every driver for `phase`; returns them when they have all stopped.
async fn churn(drivers: Vec<Driver>, store: &EtcdStore, phase: Duration) -> Vec<Driver> {
    let until = Instant::now() + phase;
    let tasks: Vec<_> = drivers
        .into_iter()
        .map(|d| tokio::spawn(d.churn(store.clone(), until)))
        .collect();
    let mut drivers = Vec::new();
    for task in tasks {
        drivers.push(task.await.expect("a driver"));
    }
    drivers
}

#[tokio::test]
async fn churn_with_a_leader_kill_leaves_every_master_exact() -> Outcome {
    let cluster = Cluster::start().await?;
    let store = connect(cluster.config()).await;
    let masters: Vec<Master> = vec![
        Master::start(
            connect(cluster.config()).await,
            master_config(PREFIX).reap_after(Some(REAP_AFTER)).seed(1),
        )?,
        Master::start(
            connect(cluster.config()).await,
            master_config(PREFIX).reap_after(Some(REAP_AFTER)).seed(2),
        )?,
    ];
    for master in &masters {
        master.ready().await.expect("the master stopped");
    }
    let mut logs: Vec<Recorder> = masters.iter().map(Recorder::attach).collect();
    // Every worker on one shared client.
    let workers = connect(cluster.config()).await;
    let mut drivers: Vec<Driver> = (0..DRIVERS).map(Driver::new).collect();
    let mut checkpoints = Vec::new();
    let started = Instant::now();
    let mut election = Duration::ZERO;

    for (phase, length) in PHASES.into_iter().enumerate() {
        drivers = if phase == 1 {
            // The leader dies in the middle of this phase, and comes back later.
            let fault = async {
                tokio::time::sleep(KILL_AFTER).await;
                // Make it the member serving a master's watch, so that a watch has to move.
                for node in cluster.nodes() {
                    if cluster.watchers(node).await? > 0 {
                        cluster.move_leader(node).await?;
                        break;
                    }
                }
                let leader = cluster.leader().await?;
                let killed_at = Instant::now();
                cluster.kill(leader).await?;
                cluster.leader().await?;
                let elected = killed_at.elapsed();
                tokio::time::sleep(KILLED_FOR.saturating_sub(killed_at.elapsed())).await;
                cluster.restart(leader).await?;
                Ok::<_, muster_testkit::Error>(elected)
            };
            let (drivers, elected) = tokio::join!(churn(drivers, &workers, length), fault);
            election = elected?;
            drivers
        } else {
            churn(drivers, &workers, length).await
        };
        // Checkpoint: the churn is paused; every master's view must equal a fresh listing.
        let paused_at = Instant::now();
        let running: usize = drivers.iter().map(Driver::running).sum();
        let mut revision = 0;
        for (i, master) in masters.iter().enumerate() {
            revision = assert_view_is_truth(&format!("master {i}"), master, &store, PREFIX).await?;
        }
        checkpoints.push((phase + 1, running, revision, paused_at.elapsed()));
    }
    let churned_for = started.elapsed();

    // Every transition each master emitted is exactly what etcd's history implies.
    let history = History::read(&store, PREFIX).await?;
    let mut compared = Vec::new();
    for (i, (master, log)) in masters.iter().zip(&mut logs).enumerate() {
        let emitted = log.up_to(master, history.end).await.to_vec();
        compared.push(history.assert_explains(&format!("master {i}"), &emitted));
    }
    let emitted = &logs[0].log;
    let mut stats = Stats::default();
    for driver in &drivers {
        stats += driver.stats;
    }
    let reconnects: Vec<u64> = masters.iter().map(|m| m.health().reconnects).collect();
    assert!(
        reconnects.iter().any(|n| *n > 0),
        "a master's watch was on the killed leader and moved"
    );
    let reaps: u64 = masters.iter().map(|m| m.health().reaps).sum();
    assert_eq!(
        reaps as usize,
        count(emitted, TransitionKind::Failed, None),
        "every Failed is one reap, won by exactly one master"
    );

    let mut measures = vec![
        ("seed", format!("{SEED:#x}")),
        (
            "names / drivers / shared clients",
            format!("{} / {DRIVERS} / 1", DRIVERS * NAMES_PER_DRIVER),
        ),
        ("churn and checkpoints took", ms(churned_for)),
        ("operations", format!("{stats:?}")),
        ("leader killed: new leader elected after", ms(election)),
        (
            "etcd events in the group's history / transitions per master",
            format!("{} / {compared:?}", history.events),
        ),
        (
            "transitions by kind (master 0)",
            TransitionKind::ALL
                .iter()
                .map(|k| format!("{k} {}", count(emitted, *k, None)))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "reaps won (by master)",
            format!(
                "{:?}",
                masters.iter().map(|m| m.health().reaps).collect::<Vec<_>>()
            ),
        ),
        (
            "master watch re-opens (by master)",
            format!("{reconnects:?}"),
        ),
        ("events lost / transitions unexplained", "0 / 0".into()),
    ];
    for (phase, running, revision, took) in &checkpoints {
        measures.push((
            "checkpoint",
            format!(
                "after phase {phase}: {running} workers running, both views = listing at revision {revision}, converged {}",
                ms(*took)
            ),
        ));
    }
    report("S7 churn soak", &measures);
    Ok(())
}
