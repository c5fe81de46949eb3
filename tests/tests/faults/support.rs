//! What the fault scenarios share: connecting, waiting on what the system reports (with
//! deadlines), recording a master's transitions, replaying etcd's history, comparing a
//! master's view with a fresh listing, and printing what was measured.
//!
//! Real time throughout. Every wait is on something the system reports (a view, a health
//! report, a worker's status, a transition) and has a deadline; a sleep only ever stands for
//! the passage of time a scenario is about.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use muster_core::{
    Incarnation, Keyspace, MemberInfo, MemberState, Membership, Revision, Store, Transition,
    TransitionKind, Txn,
};
use muster_etcd_backend::EtcdStore;
use muster_master::{Health, Master, MasterConfig, Subscription, View};
use muster_worker::{Status, Worker, WorkerConfig};

pub use muster_testkit::etcd::connect;
pub use muster_testkit::info;
pub use muster_testkit::wait::{lease_of, summary};
use tokio::sync::watch;

/// What a scenario returns: harness and store failures end it through `?`.
pub type Outcome = Result<(), Box<dyn std::error::Error>>;

/// How long any single wait may take before the scenario fails: far above anything
/// expected, so that a slow, shared machine does not make the tests flaky.
pub const DEADLINE: Duration = Duration::from_secs(45);

/// Master settings for `prefix`: no reaping unless asked, short retries.
pub fn master_config(prefix: &str) -> MasterConfig {
    MasterConfig::new(prefix).reap_after(None)
}

/// Worker settings for `prefix` with lease TTL `ttl`.
pub fn worker_config(prefix: &str, ttl: Duration) -> WorkerConfig {
    WorkerConfig::new(prefix).ttl(ttl)
}

/// Registers `info` on `store`.
pub async fn join<S: Store>(store: S, info: MemberInfo, config: WorkerConfig) -> Worker {
    let name = info.name.clone();
    Worker::register(store, info, config)
        .await
        .unwrap_or_else(|err| panic!("register {name}: {err}"))
}

/// Waits (with [`DEADLINE`]) until the master's view satisfies `pred`; returns that view.
pub async fn view_until(master: &Master, what: &str, pred: impl FnMut(&View) -> bool) -> View {
    muster_testkit::wait::view_until(master, DEADLINE, what, pred).await
}

/// Waits (with [`DEADLINE`]) until the master's health report satisfies `pred`.
pub async fn health_until(
    master: &Master,
    what: &str,
    pred: impl FnMut(&Health) -> bool,
) -> Health {
    muster_testkit::wait::health_until(master, DEADLINE, what, pred).await
}

/// Waits (with [`DEADLINE`]) until the worker's status satisfies `pred`; returns it.
pub async fn status_until(
    worker: &Worker,
    what: &str,
    pred: impl FnMut(&Status) -> bool,
) -> Status {
    muster_testkit::wait::status_until(worker, what, DEADLINE, pred).await
}

/// Every transition a master emitted since it was attached, kept in order.
pub struct Recorder {
    /// The master's stream.
    events: Subscription,
    /// Everything received so far.
    pub log: Vec<Transition>,
}

impl Recorder {
    /// Starts recording: the master's current view plus every transition after it.
    pub fn attach(master: &Master) -> Self {
        Recorder {
            events: master.subscribe(),
            log: Vec::new(),
        }
    }

    /// Receives transitions until one satisfies `pred`; returns it (all are logged).
    pub async fn until(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&Transition) -> bool,
    ) -> Transition {
        let started = self.log.len();
        loop {
            match tokio::time::timeout(DEADLINE, self.events.next_transition()).await {
                Ok(Ok(Some(t))) => {
                    self.log.push(t.clone());
                    if pred(&t) {
                        return t;
                    }
                }
                Ok(Err(lagged)) => panic!("{lagged} (waiting for {what})"),
                Ok(Ok(None)) => panic!(
                    "the master stopped before {what}; got {:?}",
                    summary(&self.log[started..])
                ),
                Err(_) => panic!(
                    "no {what} within {DEADLINE:?}; got {:?}",
                    summary(&self.log[started..])
                ),
            }
        }
    }

    /// Receives transitions until `kind` for `name`.
    pub async fn until_kind(&mut self, kind: TransitionKind, name: &str) -> Transition {
        self.until(&format!("{kind} for {name}"), |t| {
            t.kind == kind && t.member.name() == name
        })
        .await
    }

    /// Waits until the master's view reached `revision`, then takes every transition
    /// published up to there.
    pub async fn up_to(&mut self, master: &Master, revision: Revision) -> &[Transition] {
        view_until(master, &format!("revision {revision}"), |v| {
            v.revision >= revision
        })
        .await;
        self.drain()
    }

    /// Takes every transition already published (call after the view reached a revision,
    /// to have every transition up to it).
    pub fn drain(&mut self) -> &[Transition] {
        while let Some(t) = self
            .events
            .try_next_transition()
            .expect("the subscriber lagged")
        {
            self.log.push(t);
        }
        &self.log
    }
}

/// What a transition says, without the master-local parts (observation time, suspicion
/// start): what etcd's history must explain exactly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Said {
    /// The revision that caused it.
    pub revision: Revision,
    /// The member.
    pub name: String,
    /// What happened.
    pub kind: TransitionKind,
    /// The member's state after it.
    pub state: MemberState,
    /// The process it names.
    pub incarnation: Incarnation,
    /// The metadata it carries (as JSON, to compare and print).
    pub info: String,
}

impl From<&Transition> for Said {
    fn from(t: &Transition) -> Self {
        Said {
            revision: t.revision,
            name: t.member.name().to_owned(),
            kind: t.kind,
            state: t.member.state,
            incarnation: t.member.incarnation,
            info: String::from_utf8_lossy(&t.member.info.to_json()).into_owned(),
        }
    }
}

/// Runs the test's own store call `call` again while it fails with `Unavailable` (the
/// test's observer is a client too: with a member of the cluster down, a call can meet it),
/// for up to [`DEADLINE`].
pub async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, muster_core::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, muster_core::Error>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match call().await {
            Err(muster_core::Error::Unavailable { message, .. }) if Instant::now() < deadline => {
                eprintln!("[faults] {what}: retrying after: {message}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// etcd's history of a group, read back with a fresh watch from revision 1.
pub struct History {
    /// The revision of the marker written to close the history: everything up to it is read.
    pub end: Revision,
    /// The transitions a master that never missed anything would have emitted, replaying
    /// every event of the group in order through a fresh state machine.
    pub transitions: Vec<Transition>,
    /// How many events the group's history holds.
    pub events: usize,
}

impl History {
    /// Writes a marker under `prefix` (a key no member uses) and reads the group's history
    /// up to it. Needs the history uncompacted.
    pub async fn read(store: &EtcdStore, prefix: &str) -> Result<History, muster_core::Error> {
        let marker = format!("{prefix}history/end");
        let end = retrying("writing the history marker", || {
            store.txn(Txn::new().put(marker.clone(), b"end".to_vec(), 0))
        })
        .await?
        .revision;
        let mut watch = retrying("watching the history", || store.watch(prefix, 1)).await?;
        let mut machine = Membership::new(Keyspace::new(prefix).expect("a valid prefix"), None);
        let mut transitions = Vec::new();
        let mut events = 0;
        loop {
            let batch = match tokio::time::timeout(DEADLINE, watch.next()).await {
                Ok(Some(batch)) => batch?,
                Ok(None) => panic!("the history watch ended before revision {end}"),
                Err(_) => panic!("the history watch did not reach revision {end} in {DEADLINE:?}"),
            };
            events += batch.events.len();
            transitions.extend(machine.apply(&batch, Instant::now()).transitions);
            if batch.events.last().is_some_and(|e| e.revision() >= end) {
                return Ok(History {
                    end,
                    transitions,
                    events,
                });
            }
        }
    }

    /// Checks that `log` (every transition a master emitted, from an empty view on) is
    /// exactly what the history implies: none lost, none duplicated, none invented.
    /// Returns how many transitions were compared.
    pub fn assert_explains(&self, who: &str, log: &[Transition]) -> usize {
        let got: Vec<Said> = log.iter().map(Said::from).collect();
        let want: Vec<Said> = self.transitions.iter().map(Said::from).collect();
        if got != want {
            let first = got
                .iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .unwrap_or(got.len().min(want.len()));
            let around = |list: &[Said]| -> Vec<String> {
                list.iter()
                    .skip(first.saturating_sub(2))
                    .take(6)
                    .map(|s| format!("{} {} {} ({:?})", s.revision, s.name, s.kind, s.state))
                    .collect()
            };
            panic!(
                "{who}'s transitions are not what etcd's history implies: {} emitted, {} implied; \
                 first difference at #{first}:\n  emitted: {:#?}\n  implied: {:#?}",
                got.len(),
                want.len(),
                around(&got),
                around(&want),
            );
        }
        got.len()
    }
}

/// A member as a fresh listing and a master must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// Its state.
    pub state: MemberState,
    /// The process that last wrote its record.
    pub incarnation: Incarnation,
    /// Its metadata.
    pub info: MemberInfo,
    /// The revision of the last write to its record.
    pub record_revision: Revision,
}

/// Members by name, as a master and a fresh listing must agree on them.
pub fn agreed<'m>(
    members: impl IntoIterator<Item = &'m muster_core::Member>,
) -> BTreeMap<String, Agreed> {
    members
        .into_iter()
        .map(|m| {
            (
                m.name().to_owned(),
                Agreed {
                    state: m.state,
                    incarnation: m.incarnation,
                    info: (*m.info).clone(),
                    record_revision: m.record_revision,
                },
            )
        })
        .collect()
}

/// The view a fresh listing of etcd implies, and the listing's revision: what any master
/// starting now would rebuild.
pub async fn truth(
    store: &EtcdStore,
    prefix: &str,
) -> Result<(Revision, BTreeMap<String, Agreed>), muster_core::Error> {
    let listing = retrying("listing the group", || store.list(prefix)).await?;
    let mut machine = Membership::new(Keyspace::new(prefix).expect("a valid prefix"), None);
    machine.resync(&listing, Instant::now());
    Ok((listing.revision, agreed(machine.members())))
}

/// Waits until the master's view equals a fresh listing taken at the very revision the view
/// is at (listing again while the group still changes). Returns that revision.
pub async fn assert_view_is_truth(
    who: &str,
    master: &Master,
    store: &EtcdStore,
    prefix: &str,
) -> Result<Revision, muster_core::Error> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (revision, truth) = truth(store, prefix).await?;
        let view = view_until(master, &format!("revision {revision}"), |v| {
            v.synced && v.revision >= revision
        })
        .await;
        if view.revision == revision {
            let seen = agreed(view.members.values());
            assert_eq!(
                seen, truth,
                "{who}'s view at revision {revision} differs from a fresh listing"
            );
            return Ok(revision);
        }
        // The group changed after the listing: list again.
        assert!(
            Instant::now() < deadline,
            "{who}: the group never stood still long enough to compare (view at {}, listing at {revision})",
            view.revision
        );
    }
}

/// Prints what a scenario measured, one line per measure, for the closing note.
pub fn report(scenario: &str, measures: &[(&str, String)]) {
    for (what, value) in measures {
        eprintln!("[faults] {scenario}: {what}: {value}");
    }
}

/// A duration as milliseconds, for reports.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Counts transitions of `kind` (for `name`, or anyone's with `None`).
pub fn count(log: &[Transition], kind: TransitionKind, name: Option<&str>) -> usize {
    log.iter()
        .filter(|t| t.kind == kind && name.map_or(true, |n| t.member.name() == n))
        .count()
}

/// A small seeded generator (xorshift64*): the same seed gives the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Waits until `key` is absent from etcd, watching it (a lease expiry takes up to the TTL
/// plus etcd's 500 ms expiry tick).
pub async fn until_gone(store: &EtcdStore, key: &str) -> Result<Revision, muster_core::Error> {
    let Some(kv) = store.get(key).await? else {
        return Ok(store.status().await?.revision);
    };
    let mut watch = store.watch(key, kv.mod_revision + 1).await?;
    loop {
        match tokio::time::timeout(DEADLINE, watch.next()).await {
            Ok(Some(batch)) => {
                let batch = batch?;
                if let Some(gone) = batch
                    .events
                    .iter()
                    .find(|e| e.kv.key == key && e.kind == muster_core::EventKind::Delete)
                {
                    return Ok(gone.revision());
                }
            }
            Ok(None) => panic!("the watch on {key} ended before it was deleted"),
            Err(_) => panic!("{key} was not deleted within {DEADLINE:?}"),
        }
    }
}

/// A worker that keeps updating its metadata (`cpus` = 1, 2, 3, ...) in the background, so
/// that a fault always falls between writes. Updates refused during an outage are kept by
/// the worker and written again by itself.
pub struct Updater {
    /// The worker, shared with the task.
    worker: Arc<Worker>,
    /// Tells the task to stop.
    stop: Arc<AtomicBool>,
    /// Updates written and refused (the store was unreachable) so far.
    counts: watch::Receiver<(u32, u32)>,
    /// The task; returns the last `cpus` it wrote.
    task: tokio::task::JoinHandle<u32>,
}

impl Updater {
    /// Starts updating `worker` every `pace`.
    pub fn start(worker: Worker, pace: Duration) -> Self {
        let worker = Arc::new(worker);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, counts) = watch::channel((0, 0));
        let task = tokio::spawn({
            let (worker, stop) = (worker.clone(), stop.clone());
            async move {
                let mut cpus = 0;
                let name = worker.name().to_owned();
                while !stop.load(Ordering::Relaxed) {
                    cpus += 1;
                    let ok = worker.update(info(&name).cpus(cpus)).await.is_ok();
                    tx.send_modify(|(written, refused)| {
                        *(if ok { written } else { refused }) += 1;
                    });
                    // Pacing: a steady trickle of writes, not a synchronisation.
                    tokio::time::sleep(pace).await;
                }
                cpus
            }
        });
        Updater {
            worker,
            stop,
            counts,
            task,
        }
    }

    /// Updates written / refused so far.
    pub fn counts(&self) -> (u32, u32) {
        *self.counts.borrow()
    }

    /// Waits until `n` more updates than now have been written.
    pub async fn writes_more(&self, n: u32) {
        let target = self.counts().0 + n;
        let mut counts = self.counts.clone();
        let more = counts.wait_for(|(written, _)| *written >= target);
        let reached = matches!(tokio::time::timeout(DEADLINE, more).await, Ok(Ok(_)));
        if !reached {
            panic!(
                "{} wrote fewer than {n} more updates in {DEADLINE:?}; status {:?}",
                self.worker.name(),
                self.worker.status().borrow()
            );
        }
    }

    /// Stops updating; returns the worker and the last `cpus` it was given.
    pub async fn stop(self) -> (Worker, u32) {
        self.stop.store(true, Ordering::Relaxed);
        let last = self.task.await.expect("the updater task");
        let worker = Arc::into_inner(self.worker).expect("the task is done");
        (worker, last)
    }
}
