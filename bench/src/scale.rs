//! Sections 3 and 4: write cost, and scale.
//!
//! A *population* is N workers in this process, all on **one shared `EtcdStore`** (one
//! etcd-client `Client`: one HTTP/2 connection to the single etcd node; each worker's lease
//! has its own keep-alive stream on it, as the etcd backend does for every lease), plus one
//! in-process master on a store of its own that counts the transitions it reports.
//!
//! - Section 3 runs a population for a window and reads etcd's
//!   `etcd_server_proposals_committed_total` before and after: raft writes per worker per
//!   minute in steady state. Then, on a fresh etcd, the v2-style loop: one key per worker,
//!   each re-put every 3 s, as the original design's TTL refresh was one raft write.
//! - Section 4, per size: registration of all workers (beside the floor: the same grant +
//!   guarded transaction with bare etcd-client at the same concurrency), the master's cold
//!   start and memory (a separate process, `probe`), and a keep-alive soak counting every
//!   worker status change to `Reconnecting` or `Reregistered`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use muster_core::TransitionKind;
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig};
use muster_worker::{Status, Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::etcd::{self, own_cpu_meter, process_rss, Node};
use crate::instrumented::{Instrumented, Writes};
use crate::join::info;
use crate::probe;
use crate::report::{count, human, ms, sig3, Headline, Report, Stats};

/// The lease TTL of every worker here: muster's default.
const TTL: Duration = Duration::from_secs(10);
/// The v2 design's refresh period.
const V2_PERIOD: Duration = Duration::from_secs(3);

type SharedStore = Arc<Instrumented<EtcdStore>>;

/// CPU used over a phase, in cores: (etcd, this process).
type Cpu = (Option<f64>, Option<f64>);

fn show_writes(writes: &Writes) -> String {
    let show = |name: &str, samples: &[Duration]| match Stats::of(samples) {
        Some(s) => format!(
            "{name} p50 {} p99 {} max {}",
            human(s.p50),
            human(s.p99),
            human(s.max)
        ),
        None => format!("no {name}s"),
    };
    let mut text = format!(
        "{}, {}",
        show("grant", &writes.grants),
        show("txn", &writes.txns)
    );
    if writes.abandoned() > 0 || !writes.errors.is_empty() {
        text.push_str(&format!(
            "; {} calls cut off by the worker's timeout, failed: {:?}",
            writes.abandoned(),
            writes.errors
        ));
    }
    text
}

fn show_cpu((etcd, own): Cpu) -> String {
    format!(
        "etcd {} cores, this process {} cores",
        etcd.map_or("?".into(), sig3),
        own.map_or("?".into(), sig3)
    )
}

/// Worker status changes seen, by kind.
#[derive(Default)]
struct StatusCounts {
    reconnecting: AtomicU64,
    reregistered: AtomicU64,
    failed: AtomicU64,
    other: AtomicU64,
}

impl StatusCounts {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.reconnecting.load(Ordering::Relaxed),
            self.reregistered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

/// Transitions the in-process master reported, by kind (in `TransitionKind::ALL` order).
#[derive(Default)]
struct Transitions([AtomicU64; 7]);

impl Transitions {
    fn add(&self, kind: TransitionKind) {
        let i = TransitionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, kind: TransitionKind) -> u64 {
        let i = TransitionKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        self.0[i].load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> [u64; 7] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Counts every status change of `worker` from now on.
fn watch_status(worker: &Worker, statuses: Arc<StatusCounts>) -> JoinHandle<()> {
    let mut status = worker.status();
    status.borrow_and_update();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let counter = match &*status.borrow_and_update() {
                Status::Reconnecting { .. } => &statuses.reconnecting,
                Status::Reregistered { .. } => &statuses.reregistered,
                Status::Failed { .. } => &statuses.failed,
                _ => &statuses.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// N registered workers and a master watching them.
struct Population {
    store: SharedStore,
    workers: Vec<Worker>,
    statuses: Arc<StatusCounts>,
    watchers: Vec<JoinHandle<()>>,
    master: Master,
    transitions: Arc<Transitions>,
    subscriber: JoinHandle<()>,
    /// From the first registration started to the last one returned.
    register: Duration,
    /// CPU used while registering.
    register_cpu: Cpu,
    /// The floor's registration time and calls, if one was taken.
    floor: Option<(Duration, Writes)>,
    /// From the last registration returned until the master had reported every `Joined`.
    visible: Duration,
    /// How much this process's resident memory grew with the workers.
    client_rss_growth: u64,
}

impl Population {
    /// Registers `n` workers, `concurrency` at a time; with `floor`, interleaved with the
    /// floor's bare registrations on that client.
    async fn start(
        node: &Node,
        n: usize,
        concurrency: usize,
        prefix: &str,
        floor: Option<&Client>,
    ) -> Result<Population> {
        let master = Master::start(
            EtcdStore::connect(node.config()).await?,
            MasterConfig::new(prefix).reap_after(None),
        )?;
        master.ready().await?;
        let transitions = Arc::new(Transitions::default());
        let mut subscription = master.subscribe();
        let subscriber = {
            let transitions = transitions.clone();
            tokio::spawn(async move {
                while let Ok(Some(t)) = subscription.next_transition().await {
                    transitions.add(t.kind);
                }
            })
        };

        let rss_before = process_rss(std::process::id()).unwrap_or(0);
        let store: SharedStore =
            Arc::new(Instrumented::new(EtcdStore::connect(node.config()).await?));
        // With a floor, registration alternates between chunks of bare registrations and
        // chunks of muster's, so that both meet the same noise on this shared machine.
        let mut floor = match floor {
            Some(client) => Some(Floor::start(client, concurrency).await?),
            None => None,
        };
        let chunk = match floor {
            Some(_) => (n / 10).max(concurrency).min(n),
            None => n,
        };
        // Each worker's status is watched from the moment it registered, so that no
        // `Reconnecting` of an early worker's first keep-alive goes uncounted.
        let statuses = Arc::new(StatusCounts::default());
        let etcd_cpu = node.cpu_meter();
        let own_cpu = own_cpu_meter();
        let mut register = Duration::ZERO;
        let mut workers = Vec::with_capacity(n);
        let mut watchers = Vec::with_capacity(n);
        for start in (0..n).step_by(chunk) {
            let range = start..(start + chunk).min(n);
            if let Some(floor) = &mut floor {
                floor.register(range.clone()).await?;
            }
            let started = Instant::now();
            let permits = Arc::new(Semaphore::new(concurrency));
            let mut tasks = Vec::with_capacity(range.len());
            for i in range {
                let store = store.clone();
                let permits = permits.clone();
                let prefix = prefix.to_string();
                let statuses = statuses.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await.expect("never closed");
                    let worker =
                        Worker::register(store, info(i), WorkerConfig::new(prefix).ttl(TTL))
                            .await?;
                    Ok::<_, muster_worker::Error>((watch_status(&worker, statuses), worker))
                }));
            }
            for task in tasks {
                let (watcher, worker) = task.await?.context("registering a worker")?;
                watchers.push(watcher);
                workers.push(worker);
            }
            register += started.elapsed();
        }
        let registered = Instant::now();
        let register_cpu = (etcd_cpu.cores(), own_cpu.cores());
        let floor = match floor {
            Some(floor) => Some(floor.finish().await?),
            None => None,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while transitions.get(TransitionKind::Joined) < n as u64 {
            if Instant::now() > deadline {
                bail!(
                    "the master reported {} of {n} joins within 120 s",
                    transitions.get(TransitionKind::Joined)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let visible = registered.elapsed();

        let client_rss_growth = process_rss(std::process::id())
            .unwrap_or(0)
            .saturating_sub(rss_before);
        if let Some((took, writes)) = &floor {
            println!(
                "   floor: bare grant + 2-key txn for {} members, {concurrency} in flight: {} ({})",
                count(n as f64),
                human(*took),
                show_writes(writes)
            );
        }
        println!(
            "   {} workers registered in {} ({} in flight at most; {} while registering); the master had every Joined {} after the last registration returned",
            count(n as f64),
            human(register),
            concurrency,
            show_cpu(register_cpu),
            human(visible)
        );
        Ok(Population {
            store,
            workers,
            statuses,
            watchers,
            master,
            transitions,
            subscriber,
            register,
            register_cpu,
            floor,
            visible,
            client_rss_growth,
        })
    }

    /// Stops everything as a crash would (no leave: the etcd container goes next anyway).
    fn stop(self) {
        self.subscriber.abort();
        for watcher in self.watchers {
            watcher.abort();
        }
        for worker in self.workers {
            worker.abandon();
        }
        drop(self.master);
        drop(self.store);
    }
}

/// What happened during a soak window.
struct Soak {
    window: Duration,
    proposals: f64,
    renewals: f64,
    revoked: f64,
    round_trips: Option<Stats>,
    /// A bare etcd-client keep-alive's round trips over the same window.
    floor_round_trips: Option<Stats>,
    keep_alive_calls: usize,
    failed_calls: u64,
    /// Keep-alives the worker's request timeout dropped mid-flight.
    abandoned_calls: u64,
    /// Keep-alives answered in under 50 µs: a stale reply already waiting on the stream.
    instant_answers: usize,
    failed_by_kind: Value,
    reconnecting: u64,
    reregistered: u64,
    failed_workers: u64,
    suspects: u64,
    transitions: u64,
    etcd_cores: Option<f64>,
    bench_cores: Option<f64>,
    etcd_rss: Option<u64>,
    bench_rss: Option<u64>,
}

impl Soak {
    /// Keep-alive failures as the issue counts them: worker status changes to
    /// `Reconnecting` or `Reregistered`.
    fn failures(&self) -> u64 {
        self.reconnecting + self.reregistered
    }

    fn json(&self) -> Value {
        json!({
            "window_s": self.window.as_secs_f64(),
            "raft_proposals": self.proposals,
            "lease_renewals_seen_by_etcd": self.renewals,
            "leases_revoked_or_expired": self.revoked,
            "keep_alive_calls": self.keep_alive_calls,
            "keep_alive_round_trip": self.round_trips.map(|s| s.json()),
            "floor_keep_alive_round_trip": self.floor_round_trips.map(|s| s.json()),
            "keep_alive_failed_calls": self.failed_calls,
            "keep_alive_abandoned_calls": self.abandoned_calls,
            "keep_alive_instant_answers": self.instant_answers,
            "keep_alive_failed_calls_by_kind": self.failed_by_kind,
            "status_reconnecting": self.reconnecting,
            "status_reregistered": self.reregistered,
            "status_failed": self.failed_workers,
            "master_suspect": self.suspects,
            "master_transitions": self.transitions,
            "etcd_cpu_cores": self.etcd_cores,
            "bench_process_cpu_cores": self.bench_cores,
            "etcd_rss_bytes": self.etcd_rss,
            "bench_process_rss_bytes": self.bench_rss,
        })
    }

    fn print(&self, n: usize) {
        let show = |stats: Option<Stats>| {
            stats
                .map(|s| {
                    format!(
                        "p50 {} p99 {} max {}",
                        human(s.p50),
                        human(s.p99),
                        human(s.max)
                    )
                })
                .unwrap_or_else(|| "none".into())
        };
        let rt = format!(
            "{}; floor, a bare keeper: {}",
            show(self.round_trips),
            show(self.floor_round_trips)
        );
        println!(
            "   soak {}: {} keep-alives ({rt}), {} failed calls, {} cut off by the worker's timeout, {} answered in < 50 µs, {} reconnecting, {} re-registered, {} suspect at the master; {} raft proposals; etcd {} cores, this process {} cores",
            human(self.window),
            count(self.keep_alive_calls as f64),
            self.failed_calls,
            self.abandoned_calls,
            self.instant_answers,
            self.reconnecting,
            self.reregistered,
            self.suspects,
            count(self.proposals),
            self.etcd_cores.map_or("?".into(), sig3),
            self.bench_cores.map_or("?".into(), sig3),
        );
        if self.keep_alive_calls > 0 {
            let per_worker = self.keep_alive_calls as f64 / n as f64 / self.window.as_secs_f64();
            println!(
                "   ({} keep-alives per worker per second; expected {:.3} at TTL/3)",
                sig3(per_worker),
                3.0 / TTL.as_secs_f64()
            );
        }
    }
}

/// The floor for a keep-alive round trip: a bare etcd-client keeper on a lease of its own,
/// on a connection of its own, renewing every 100 ms until stopped. Runs in this process
/// beside the workers, so it sees the same etcd and the same scheduling. Its lease is
/// granted before this returns (a grant is a raft write: it must not fall in the window).
async fn keep_alive_floor(
    node: &Node,
    stop: Arc<tokio::sync::Notify>,
) -> Result<JoinHandle<Result<Vec<Duration>>>> {
    let mut client = Client::connect([node.endpoint()], None).await?;
    let lease = client.lease_grant(TTL.as_secs() as i64, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let mut round_trips = Vec::new();
        let stopped = stop.notified();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {
                    let sent = Instant::now();
                    keeper.keep_alive().await?;
                    match responses.message().await? {
                        Some(answer) if answer.ttl() > 0 => round_trips.push(sent.elapsed()),
                        other => bail!("the floor's keep-alive got {other:?}"),
                    }
                }
            }
        }
        // Left to expire with the container: a revoke here could land in a later window.
        drop(client);
        Ok(round_trips)
    }))
}

/// Runs `population` for `window` and reports what etcd, the workers and the master saw.
async fn soak(node: &Node, population: &Population, window: Duration) -> Result<Soak> {
    let stop_floor = Arc::new(tokio::sync::Notify::new());
    let floor = keep_alive_floor(node, stop_floor.clone()).await?;
    let metrics_before = node.metrics().await?;
    let statuses_before = population.statuses.snapshot();
    let transitions_before = population.transitions.snapshot();
    let etcd_cpu = node.cpu_meter();
    let bench_cpu = own_cpu_meter();
    population.store.take_keep_alives();
    let started = Instant::now();
    let report_every = Duration::from_secs(60);
    while started.elapsed() < window {
        let left = window.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(report_every)).await;
        if started.elapsed() < window {
            let s = population.statuses.snapshot();
            println!(
                "   ... {} s: {} reconnecting, {} re-registered so far",
                started.elapsed().as_secs(),
                s[0] - statuses_before[0],
                s[1] - statuses_before[1]
            );
        }
    }
    let window = started.elapsed();
    let keep_alives = population.store.take_keep_alives();
    let metrics_after = node.metrics().await?;
    stop_floor.notify_one();
    let floor = floor.await??;
    let statuses = population.statuses.snapshot();
    let transitions = population.transitions.snapshot();
    let delta = |name: &str| metrics_after.get(name) - metrics_before.get(name);
    let suspect_index = TransitionKind::ALL
        .iter()
        .position(|k| *k == TransitionKind::Suspect)
        .expect("listed");
    Ok(Soak {
        window,
        proposals: delta(etcd::PROPOSALS),
        renewals: delta(etcd::RENEWED),
        revoked: delta(etcd::REVOKED),
        round_trips: Stats::of(&keep_alives.round_trips),
        floor_round_trips: Stats::of(&floor),
        keep_alive_calls: keep_alives.started as usize,
        failed_calls: keep_alives.errors.values().sum(),
        abandoned_calls: keep_alives.abandoned(),
        instant_answers: keep_alives.instant(),
        failed_by_kind: json!(keep_alives.errors),
        reconnecting: statuses[0] - statuses_before[0],
        reregistered: statuses[1] - statuses_before[1],
        failed_workers: statuses[2] - statuses_before[2],
        suspects: transitions[suspect_index] - transitions_before[suspect_index],
        transitions: transitions
            .iter()
            .zip(transitions_before)
            .map(|(a, b)| a - b)
            .sum(),
        etcd_cores: etcd_cpu.cores(),
        bench_cores: bench_cpu.cores(),
        etcd_rss: node.pid().and_then(process_rss),
        bench_rss: process_rss(std::process::id()),
    })
}

/// Section 3: raft proposals per worker per minute, and the v2-style loop's.
pub async fn run_write(args: &Args, report: &mut Report) -> Result<()> {
    let n = args.write_workers;
    println!(
        "== 3. write cost: raft proposals per worker per minute, {} workers over {} ==",
        count(n as f64),
        human(args.window)
    );
    let node = Node::start().await?;
    let population =
        Population::start(&node, n, args.register_concurrency, "/bench/write/", None).await?;
    // Let registration settle: every worker's first keep-alive has gone out.
    tokio::time::sleep(TTL / 3 + Duration::from_secs(1)).await;
    let muster = soak(&node, &population, args.window).await?;
    muster.print(n);
    population.stop();
    drop(node);
    let muster_rate = muster.proposals / n as f64 / (muster.window.as_secs_f64() / 60.0);

    let node = Node::start().await?;
    let (v2, rewrites) = v2_loop(&node, n, args.window).await?;
    drop(node);
    let v2_rate = v2.0 / n as f64 / (v2.1.as_secs_f64() / 60.0);
    println!(
        "   muster: {} proposals in {} = {} per worker per minute",
        count(muster.proposals),
        human(muster.window),
        sig3(muster_rate)
    );
    println!(
        "   v2-style rewrite loop: {} proposals in {} = {} per key per minute ({} rewrites sent)",
        count(v2.0),
        human(v2.1),
        sig3(v2_rate),
        count(rewrites as f64)
    );
    report.section(
        "write",
        json!({
            "workers": n,
            "muster": muster.json(),
            "muster_proposals_per_worker_per_minute": muster_rate,
            "v2_loop": {
                "keys": n,
                "period_s": V2_PERIOD.as_secs_f64(),
                "window_s": v2.1.as_secs_f64(),
                "raft_proposals": v2.0,
                "rewrites_sent": rewrites,
                "proposals_per_key_per_minute": v2_rate,
            },
            "note": "proposals from etcd_server_proposals_committed_total; the v2 loop re-puts each key every 3 s (one raft write per refresh, as v2's TTL refresh was)",
        }),
    );
    report.headline(Headline {
        id: "write.proposals_per_worker_min".into(),
        section: "3. write",
        metric: format!(
            "raft proposals per worker per minute, steady state ({} workers, {} s)",
            count(n as f64),
            muster.window.as_secs()
        ),
        value: muster_rate,
        shown: sig3(muster_rate),
        unit: "/worker/min",
        floor: None,
        goal: "0".into(),
        met: Some(muster.proposals == 0.0),
    });
    report.headline(Headline {
        id: "write.v2_proposals_per_key_min".into(),
        section: "3. write",
        metric: "the same for the v2-style rewrite loop (every 3 s)".into(),
        value: v2_rate,
        shown: sig3(v2_rate),
        unit: "/key/min",
        floor: None,
        goal: "comparison (v2 design: 20)".into(),
        met: None,
    });
    Ok(())
}

/// The v2-style loop: `keys` keys, each re-put every 3 s, for `window`. Returns (proposals,
/// measured window) and how many rewrites were sent.
async fn v2_loop(node: &Node, keys: usize, window: Duration) -> Result<((f64, Duration), u64)> {
    const TASKS: usize = 8;
    let client = Client::connect([node.endpoint()], None).await?;
    let value = info(0).to_json();
    // Every key exists first; the window counts refreshes only.
    for i in 0..keys {
        client
            .kv_client()
            .put(
                format!("/bench/v2/{i:05}"),
                value.clone(),
                None::<PutOptions>,
            )
            .await?;
    }
    let before = node.metrics().await?;
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mine: Vec<usize> = (t..keys).step_by(TASKS).collect();
        if mine.is_empty() {
            continue;
        }
        let mut kv = client.kv_client();
        let value = value.clone();
        let sent = sent.clone();
        let step = V2_PERIOD / mine.len() as u32;
        let offset = V2_PERIOD / keys as u32 * t as u32;
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, step);
            for i in mine.iter().cycle() {
                ticks.tick().await;
                if started.elapsed() >= window {
                    return Ok::<_, etcd_client::Error>(());
                }
                kv.put(format!("/bench/v2/{i:05}"), value.clone(), None)
                    .await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let measured = started.elapsed();
    let after = node.metrics().await?;
    Ok((
        (
            after.get(etcd::PROPOSALS) - before.get(etcd::PROPOSALS),
            measured,
        ),
        sent.load(Ordering::Relaxed),
    ))
}

/// The floor for registering workers: bare etcd-client grant + guarded two-key
/// transaction, `concurrency` at a time, with a bare prefix watch open (muster's run has its
/// master watching). Its leases are revoked after each chunk (not timed).
struct Floor {
    client: Client,
    concurrency: usize,
    took: Duration,
    writes: Writes,
    watcher: JoinHandle<()>,
}

impl Floor {
    async fn start(client: &Client, concurrency: usize) -> Result<Floor> {
        let client = client.clone();
        // Warm etcd and the connection up first (untimed), as muster's run finds them.
        let (leases, _) =
            register_bare(&client, 0..concurrency, concurrency, "/bench/warm-up/").await?;
        revoke_all(&client, leases).await?;
        let mut watch = client
            .watch_client()
            .watch(
                "/bench/floor/",
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        let watcher = tokio::spawn(async move { while let Ok(Some(_)) = watch.message().await {} });
        Ok(Floor {
            client,
            concurrency,
            took: Duration::ZERO,
            writes: Writes::default(),
            watcher,
        })
    }

    async fn register(&mut self, range: std::ops::Range<usize>) -> Result<()> {
        let started = Instant::now();
        let (leases, writes) =
            register_bare(&self.client, range, self.concurrency, "/bench/floor/").await?;
        self.took += started.elapsed();
        self.writes.grants.extend(writes.grants);
        self.writes.txns.extend(writes.txns);
        revoke_all(&self.client, leases).await
    }

    async fn finish(self) -> Result<(Duration, Writes)> {
        self.watcher.abort();
        for prefix in ["/bench/floor/", "/bench/warm-up/"] {
            self.client
                .clone()
                .delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await?;
        }
        Ok((self.took, self.writes))
    }
}

async fn revoke_all(client: &Client, leases: Vec<i64>) -> Result<()> {
    let mut revokes = Vec::new();
    for chunk in leases.chunks(leases.len().div_ceil(16).max(1)) {
        let mut client = client.clone();
        let chunk = chunk.to_vec();
        revokes.push(tokio::spawn(async move {
            for lease in chunk {
                client.lease_revoke(lease).await?;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for task in revokes {
        task.await??;
    }
    Ok(())
}

/// Registers members `range` with bare etcd-client calls, `concurrency` at a time: grant,
/// then the guarded two-key transaction. Returns the leases.
async fn register_bare(
    client: &Client,
    range: std::ops::Range<usize>,
    concurrency: usize,
    prefix: &'static str,
) -> Result<(Vec<i64>, Writes)> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(range.len());
    for i in range {
        let mut client = client.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let info = info(i);
            let sent = Instant::now();
            let lease = client.lease_grant(TTL.as_secs() as i64, None).await?.id();
            let granted = sent.elapsed();
            let live = format!("{prefix}alive/{}", info.name);
            let txn = Txn::new()
                .when([Compare::create_revision(live.clone(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(
                        live,
                        br#"{"incarnation":1234567890123}"#.to_vec(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::put(
                        format!("{prefix}members/{}", info.name),
                        info.to_json(),
                        None,
                    ),
                ]);
            let sent = Instant::now();
            client.txn(txn).await?;
            Ok::<_, etcd_client::Error>((lease, granted, sent.elapsed()))
        }));
    }
    let mut leases = Vec::with_capacity(tasks.len());
    let mut writes = Writes::default();
    for task in tasks {
        let (lease, grant, txn) = task.await??;
        leases.push(lease);
        writes.grants.push(grant);
        writes.txns.push(txn);
    }
    Ok((leases, writes))
}

/// Section 4: every size.
pub async fn run_scale(args: &Args, report: &mut Report) -> Result<()> {
    let mut grown = Vec::new();
    for &n in &args.sizes {
        grown.push((n, scale_one(args, n, report).await?));
    }
    // The master's memory per member between two sizes: what one more member costs, with
    // whatever the smaller size's fixed costs were taken out.
    if let (Some(&(small, at_small)), Some(&(large, at_large))) = (
        grown.iter().min_by_key(|(n, _)| *n),
        grown.iter().max_by_key(|(n, _)| *n),
    ) {
        if large > small {
            let marginal = (at_large - at_small) / (large - small) as f64;
            println!(
                "   master memory per additional member between {} and {} members: {} bytes",
                count(small as f64),
                count(large as f64),
                count(marginal)
            );
            report.section(
                "scale_marginal_memory",
                json!({
                    "from_members": small,
                    "to_members": large,
                    "bytes_per_additional_member": marginal,
                }),
            );
        }
    }
    Ok(())
}

/// Runs one size; returns the master probe's resident-memory growth in bytes.
async fn scale_one(args: &Args, n: usize, report: &mut Report) -> Result<f64> {
    println!(
        "== 4. scale: {} workers in this process on ONE shared EtcdStore (one connection), one etcd node, TTL {TTL:?} ==",
        count(n as f64)
    );
    let node = Node::start().await?;
    let concurrency = args.register_concurrency;
    let prefix = format!("/bench/scale-{n}/");
    let etcd_rss_before = node.pid().and_then(process_rss);
    let floor_client = Client::connect([node.endpoint()], None).await?;
    let population = Population::start(&node, n, concurrency, &prefix, Some(&floor_client)).await?;
    let (floor, floor_writes) = population.floor.clone().expect("a floor was taken");
    let register_writes = population.store.take_writes();
    println!(
        "   muster's registration calls: {}",
        show_writes(&register_writes)
    );
    // The first keep-alive round: every worker opens its lease's keep-alive stream TTL/3
    // after it registered, so the N streams open in a burst as long as the registration.
    population.store.take_keep_alives();
    let first_round_started = Instant::now();
    tokio::time::sleep(TTL / 3 + population.register + Duration::from_secs(1)).await;
    let first = population.store.take_keep_alives();
    let first_statuses = population.statuses.snapshot();
    let first_round = json!({
        "window_s": first_round_started.elapsed().as_secs_f64(),
        "keep_alive_calls": first.started,
        "keep_alive_round_trip": Stats::of(&first.round_trips).map(|s| s.json()),
        "keep_alive_failed_calls": first.errors.values().sum::<u64>(),
        "keep_alive_failed_calls_by_kind": first.errors,
        "keep_alive_abandoned_calls": first.abandoned(),
        "keep_alive_instant_answers": first.instant(),
        "status_reconnecting": first_statuses[0],
        "status_reregistered": first_statuses[1],
        "status_failed": first_statuses[2],
    });
    let first_failures = first_statuses[0] + first_statuses[1];
    println!(
        "   first keep-alive round ({}: every worker opens its keep-alive stream and renews once): {} keep-alives ({}), {} failed, {} cut off by the worker's renewal timeout; {} workers went Reconnecting, {} Reregistered",
        human(first_round_started.elapsed()),
        count(first.started as f64),
        Stats::of(&first.round_trips)
            .map(|s| format!("p50 {} p99 {} max {}", human(s.p50), human(s.p99), human(s.max)))
            .unwrap_or_else(|| "none answered".into()),
        first.errors.values().sum::<u64>(),
        first.abandoned(),
        first_statuses[0],
        first_statuses[1],
    );
    let not_alive: Vec<String> = population
        .master
        .view()
        .members
        .values()
        .filter(|m| !m.state.in_group())
        .map(|m| format!("{} ({})", m.name(), m.state))
        .collect();
    if !not_alive.is_empty() {
        println!(
            "   !! {} of {n} members are not alive right after registration: {:?}; worker status changes so far: {:?}",
            not_alive.len(),
            &not_alive[..not_alive.len().min(10)],
            population.statuses.snapshot()
        );
    }
    // A probe that cannot finish is a finding, not a reason to lose the rest of the run.
    let probe = match probe::run_child(&node.endpoint(), &prefix, n).await {
        Ok(probe) => probe,
        Err(err) => {
            println!("   !! {err:#}");
            json!({ "error": format!("{err:#}"), "cold_start_ms": 120_000.0 })
        }
    };
    if probe["alive"].as_u64() != Some(n as u64) {
        println!(
            "   !! the probe's master saw {} of {n} members alive",
            probe["alive"]
        );
    }
    let cold_start = Duration::from_secs_f64(probe["cold_start_ms"].as_f64().unwrap_or(0.0) / 1e3);
    let bare_list = Duration::from_secs_f64(probe["bare_list_ms"].as_f64().unwrap_or(0.0) / 1e3);
    let per_member = probe["rss_per_member_bytes"].as_f64().unwrap_or(f64::NAN);
    println!(
        "   master (separate process): cold start to a complete view of {} members in {} (floor: one bare range read of the prefix, {}; muster's paged list {}); {}",
        count(n as f64),
        human(cold_start),
        human(bare_list),
        human(Duration::from_secs_f64(probe["store_list_ms"].as_f64().unwrap_or(0.0) / 1e3)),
        probe::memory_line(&probe),
    );
    let before_soak = population.statuses.snapshot();
    if before_soak[..3] != first_statuses[..3] {
        println!(
            "   !! worker status changes between the first keep-alive round and the soak: {:?} -> {:?}",
            &first_statuses[..3],
            &before_soak[..3]
        );
    }
    let soak = soak(&node, &population, args.soak).await?;
    soak.print(n);
    if let (Some(before), Some(after), Some(bench)) =
        (etcd_rss_before, soak.etcd_rss, soak.bench_rss)
    {
        println!(
            "   memory per worker: etcd +{} bytes (its leases and keep-alive streams); this process {} bytes in all ({} bytes right after registration)",
            count(after.saturating_sub(before) as f64 / n as f64),
            count(bench as f64 / n as f64),
            count(population.client_rss_growth as f64 / n as f64),
        );
    }
    let view = population.master.view();
    let alive = view.alive().count();
    drop(view);
    if alive != n {
        println!("   !! the in-process master sees {alive} of {n} alive after the soak");
    }
    let register = population.register;
    let register_cpu = population.register_cpu;
    let visible = population.visible;
    let client_rss = population.client_rss_growth;
    population.stop();
    drop(node);

    report.section(
        &format!("scale_{n}"),
        json!({
            "workers": n,
            "how": "all workers in this process share one EtcdStore (one etcd-client Client, one HTTP/2 connection); one keep-alive stream per lease on it; the master is a separate process for cold start and memory, and another master in this process counts transitions",
            "register_concurrency": concurrency,
            "register_all_ms": ms(register),
            "register_floor_ms": ms(floor),
            "register_grant_round_trip": Stats::of(&register_writes.grants).map(|s| s.json()),
            "register_txn_round_trip": Stats::of(&register_writes.txns).map(|s| s.json()),
            "register_floor_grant_round_trip": Stats::of(&floor_writes.grants).map(|s| s.json()),
            "register_floor_txn_round_trip": Stats::of(&floor_writes.txns).map(|s| s.json()),
            "register_calls_abandoned": register_writes.abandoned(),
            "register_calls_failed": register_writes.errors,
            "register_cpu_cores_floor_and_muster": {"etcd": register_cpu.0, "bench_process": register_cpu.1},
            "register_note": "floor and muster registrations alternate in chunks of a tenth (at least the concurrency); each figure is the sum of its chunks",
            "all_joined_at_master_after_last_registration_ms": ms(visible),
            "client_rss_growth_bytes": client_rss,
            "client_rss_per_worker_bytes": client_rss as f64 / n as f64,
            "etcd_rss_before_bytes": etcd_rss_before,
            "etcd_rss_growth_per_worker_bytes": etcd_rss_before
                .zip(soak.etcd_rss)
                .map(|(before, after)| after.saturating_sub(before) as f64 / n as f64),
            "master_probe": probe,
            "soak": soak.json(),
            "first_keep_alive_round": first_round,
            "status_changes_before_soak": {
                "reconnecting": before_soak[0],
                "reregistered": before_soak[1],
                "failed": before_soak[2],
            },
            "alive_at_end": alive,
        }),
    );
    let size = count(n as f64);
    report.headline(Headline {
        id: format!("scale{n}.register_ms"),
        section: "4. scale",
        metric: format!("register {size} workers ({concurrency} in flight)"),
        value: ms(register),
        shown: human(register),
        unit: "ms",
        floor: Some((ms(floor), human(floor))),
        goal: "—".into(),
        met: None,
    });
    report.headline(Headline {
        id: format!("scale{n}.cold_start_ms"),
        section: "4. scale",
        metric: format!("master cold start to a complete view, {size} members"),
        value: ms(cold_start),
        shown: human(cold_start),
        unit: "ms",
        floor: (bare_list > Duration::ZERO).then(|| (ms(bare_list), human(bare_list))),
        goal: "≤ 1 s".into(),
        met: Some(cold_start <= Duration::from_secs(1)),
    });
    report.headline(Headline {
        id: format!("scale{n}.master_bytes_per_member"),
        section: "4. scale",
        metric: format!(
            "master resident memory per member, {size} members (RSS growth beyond the fixed cost)"
        ),
        value: per_member,
        shown: format!("{} B", count(per_member)),
        unit: "B",
        floor: None,
        goal: "≤ 2 KiB".into(),
        met: Some(per_member <= 2048.0),
    });
    report.headline(Headline {
        id: format!("scale{n}.keep_alive_failures"),
        section: "4. scale",
        metric: format!(
            "keep-alive failures, {size} workers at TTL 10 s: first keep-alive round + {} soak (Reconnecting + Reregistered)",
            human(soak.window)
        ),
        value: (first_failures + soak.failures()) as f64,
        shown: format!(
            "{} + {} ({} failed calls, {} suspect in the soak)",
            first_failures,
            soak.failures(),
            soak.failed_calls,
            soak.suspects
        ),
        unit: "",
        floor: None,
        goal: "0".into(),
        met: Some(
            first_failures == 0
                && soak.failures() == 0
                && soak.failed_calls == 0
                && soak.suspects == 0,
        ),
    });
    Ok(probe["rss_settled_bytes"].as_f64().unwrap_or(0.0)
        - probe["rss_before_bytes"].as_f64().unwrap_or(0.0))
}
