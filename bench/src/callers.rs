//! Section 6: the callers, through `muster_tonic::balanced_channel`.
//!
//! Why: membership is for the callers. The other sections time the master's view; this one
//! times what a gRPC client sees while servers restart, crash and join: whether its
//! requests fail, and how long a server stays in its set. Everything is real: etcd (a
//! container), the test kit's `Who` gRPC servers on loopback (`muster_testkit::grpc`),
//! `muster_worker::Worker`s on one shared `EtcdStore`, a `Master` on its own store feeding the
//! channel, and tonic's client. The client sends continuously (`--rate` requests per second
//! over a few tokio tasks, each call bounded by [`REQUEST_TIMEOUT`]); a failed request is a
//! `who()` error or a timeout, counted per phase by the time it was sent.
//!
//! 1. **Rolling restart**: each of the 3 servers in turn is stopped the way `muster-worker`
//!    stops on SIGTERM (`drain()`, the drain grace, stop the server, `leave()`), then a new
//!    server and a new worker (a new incarnation) start under the same name. Goal: 0 failed
//!    requests. Per server: drain → removal from the client's set (`Follower::members()`),
//!    beside a bare etcd put → watch event taken just before it (the floor of any change
//!    reaching a watcher). The reference, right after: the same three restarts without a
//!    drain (`muster-worker --drain-grace 0s`: leave and stop the server at once), which
//!    shows what the drain buys.
//! 2. **Crash**: one server is dropped and its worker abandoned (the lease lapses at TTL 2 s).
//!    Failures are expected until the client's set drops it (≤ TTL + 0.6 s, beside the
//!    lease's remaining TTL + etcd's 500 ms tick, as in section 2) and should be 0 after.
//!    The reference, in the same seconds: a second client on a static list of the same 3
//!    endpoints (`Channel::balance_list`), which keeps picking the dead one.
//! 3. **Join**: a fourth server, from its registration transaction being sent to the first
//!    request it serves; the floor, in the same seconds, is a bare balanced channel told of
//!    the new endpoint directly (tonic's own connect and pick), under the same load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, WatchOptions};
use muster_core::{Keyspace, MemberInfo, TransitionKind};
use muster_etcd_backend::EtcdStore;
use muster_master::{Filter, Master, MasterConfig};
use muster_testkit::grpc::{serve, who, Server};
use muster_tonic::{balanced_channel, http_endpoint};
use muster_worker::{Status, Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::args::Args;
use crate::etcd::Node;
use crate::instrumented::Instrumented;
use crate::report::{count, human, ms, Headline, Report, Stats};

const PREFIX: &str = "/bench/callers/";
const FLOOR_PREFIX: &str = "/bench/callers-floor/";
/// The workers' lease TTL (as in section 2).
const TTL: Duration = Duration::from_secs(2);
/// etcd checks lease expiry on a ~500 ms tick.
const TICK: Duration = Duration::from_millis(500);
/// One request's bound: a call that takes longer counts as failed, and its task goes on.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest anything awaited here may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(20);
/// Concurrent request loops per client.
const LOOPS: usize = 8;
/// The names of the three servers.
const NAMES: [&str; 3] = ["s1", "s2", "s3"];

/// One request: when it was sent, how long it took, and who answered (or why not).
struct Call {
    sent: Instant,
    took: Duration,
    answer: Result<String, String>,
}

impl Call {
    fn done(&self) -> Instant {
        self.sent + self.took
    }
}

/// A client sending at a steady rate over a few tokio tasks.
struct Load {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Vec<Call>>>,
    started: Instant,
}

impl Load {
    fn start(channel: Channel, rate: u32) -> Load {
        let (stop, stopped) = watch::channel(false);
        let period = Duration::from_secs_f64(LOOPS as f64 / f64::from(rate.max(1)));
        let now = tokio::time::Instant::now();
        let tasks = (0..LOOPS)
            .map(|i| {
                let channel = channel.clone();
                let mut stopped = stopped.clone();
                // Spread the loops over the period so the requests come evenly.
                let first = now + period.mul_f64(i as f64 / LOOPS as f64);
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    let mut tick = tokio::time::interval_at(first, period);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stopped.changed() => break,
                        }
                        let sent = Instant::now();
                        let answer =
                            match tokio::time::timeout(REQUEST_TIMEOUT, who(&channel)).await {
                                Ok(Ok(name)) => Ok(name),
                                Ok(Err(status)) => {
                                    Err(format!("{:?}: {}", status.code(), status.message()))
                                }
                                Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
                            };
                        calls.push(Call {
                            sent,
                            took: sent.elapsed(),
                            answer,
                        });
                    }
                    calls
                })
            })
            .collect();
        Load {
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    async fn finish(self) -> Result<Calls> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await?);
        }
        all.sort_by_key(|c| c.sent);
        Ok(Calls {
            calls: all,
            started: self.started,
            ended: Instant::now(),
        })
    }
}

/// Every request of one client.
struct Calls {
    calls: Vec<Call>,
    started: Instant,
    ended: Instant,
}

/// Requests sent in a window, and the failures among them.
#[derive(Debug, Clone, Default)]
struct Tally {
    sent: usize,
    failed: usize,
    /// Failures by error, for the report (what went wrong, not only how often).
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn json(&self) -> Value {
        json!({ "sent": self.sent, "failed": self.failed, "errors": self.errors })
    }
}

impl Calls {
    /// The requests sent in `[from, to)`.
    fn tally(&self, from: Instant, to: Instant) -> Tally {
        let mut tally = Tally::default();
        for call in self.calls.iter().filter(|c| c.sent >= from && c.sent < to) {
            tally.sent += 1;
            if let Err(e) = &call.answer {
                tally.failed += 1;
                let mut e = e.clone();
                e.truncate(160);
                *tally.errors.entry(e).or_default() += 1;
            }
        }
        tally
    }

    /// When the first request answered by `server` (a `Who` name) came back, of those
    /// sent at or after `after`.
    fn first_answer(&self, server: &str, after: Instant) -> Option<Instant> {
        self.calls
            .iter()
            .filter(|c| c.sent >= after && c.answer.as_deref() == Ok(server))
            .map(Call::done)
            .min()
    }

    fn rate(&self) -> f64 {
        self.calls.len() as f64 / (self.ended - self.started).as_secs_f64()
    }

    fn latency(&self) -> Option<Stats> {
        let ok: Vec<Duration> = self
            .calls
            .iter()
            .filter(|c| c.answer.is_ok())
            .map(|c| c.took)
            .collect();
        Stats::of(&ok)
    }
}

/// The names handed to tonic as of a moment.
type Snapshot = (Instant, BTreeSet<String>);

/// Every change of the names handed to tonic, with when it was seen.
struct SetLog {
    log: Arc<Mutex<Vec<Snapshot>>>,
    task: JoinHandle<()>,
}

impl SetLog {
    fn start(mut members: watch::Receiver<BTreeSet<String>>) -> SetLog {
        let log = Arc::new(Mutex::new(vec![(
            Instant::now(),
            members.borrow_and_update().clone(),
        )]));
        let task = {
            let log = log.clone();
            tokio::spawn(async move {
                while members.changed().await.is_ok() {
                    let at = Instant::now();
                    let set = members.borrow_and_update().clone();
                    log.lock().expect("lock").push((at, set));
                }
            })
        };
        SetLog { log, task }
    }

    /// The first time at or after `after` that the set satisfied `holds` (the set in force
    /// at `after` counts as of `after`).
    async fn wait(
        &self,
        what: &str,
        after: Instant,
        holds: impl Fn(&BTreeSet<String>) -> bool,
    ) -> Result<Instant> {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let log = self.log.lock().expect("lock");
                let start = log.iter().rposition(|(at, _)| *at <= after).unwrap_or(0);
                if let Some((at, _)) = log[start..].iter().find(|(_, set)| holds(set)) {
                    return Ok((*at).max(after));
                }
                if Instant::now() > deadline {
                    let now = log.last().map(|(_, s)| s.clone()).unwrap_or_default();
                    bail!("the client's set never {what} within {WAIT:?} (it holds {now:?})");
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// When the master reported each member `Suspect`.
struct Suspects {
    at: Arc<Mutex<HashMap<String, Instant>>>,
    task: JoinHandle<()>,
}

impl Suspects {
    fn start(master: &Master) -> Suspects {
        let mut subscription = master.subscribe();
        let at = Arc::new(Mutex::new(HashMap::new()));
        let task = {
            let at = at.clone();
            tokio::spawn(async move {
                while let Ok(Some(t)) = subscription.next_transition().await {
                    if t.kind == TransitionKind::Suspect {
                        let now = Instant::now();
                        at.lock()
                            .expect("lock")
                            .insert(t.member.info.name.clone(), now);
                    }
                }
            })
        };
        Suspects { at, task }
    }

    async fn wait(&self, name: &str) -> Result<Instant> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.at.lock().expect("lock").get(name) {
                return Ok(*at);
            }
            if Instant::now() > deadline {
                bail!("the master did not report {name} Suspect within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The floor of any change reaching a watcher: a bare etcd-client put → prefix-watch event.
struct PutWatch {
    client: Client,
    events: mpsc::UnboundedReceiver<(Vec<u8>, Instant)>,
    task: JoinHandle<()>,
    n: usize,
}

impl PutWatch {
    async fn start(endpoint: String) -> Result<PutWatch> {
        let mut client = Client::connect([endpoint], None).await?;
        let mut watch = client
            .watch(FLOOR_PREFIX, Some(WatchOptions::new().with_prefix()))
            .await?;
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = watch.message().await {
                let at = Instant::now();
                for event in response.events() {
                    if let Some(kv) = event.kv() {
                        let _ = tx.send((kv.key().to_vec(), at));
                    }
                }
            }
        });
        Ok(PutWatch {
            client,
            events,
            task,
            n: 0,
        })
    }

    async fn sample(&mut self) -> Result<Duration> {
        self.n += 1;
        let key = format!("{FLOOR_PREFIX}{}", self.n);
        let sent = Instant::now();
        self.client.put(key.clone(), "x", None).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((k, at))) if k == key.as_bytes() => return Ok(at - sent),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("the floor watch ended"),
                Err(_) => bail!("the floor watch did not deliver {key} within {WAIT:?}"),
            }
        }
    }
}

/// One server and the worker that announces it.
struct Slot {
    name: &'static str,
    server: Server,
    worker: Worker,
}

async fn start_slot(
    store: &Arc<Instrumented<EtcdStore>>,
    name: &'static str,
    generation: u32,
) -> Result<Slot> {
    // The `Who` name it answers is `{name}#{generation}`, so a restarted server's answers
    // are told from its predecessor's.
    let server = serve(&format!("{name}#{generation}")).await;
    let worker = Worker::register(
        store.clone(),
        MemberInfo::new(name, server.addr.to_string()),
        WorkerConfig::new(PREFIX).ttl(TTL),
    )
    .await
    .with_context(|| format!("registering {name}"))?;
    Ok(Slot {
        name,
        server,
        worker,
    })
}

fn endpoint(server: &Server) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{}", server.addr))?)
}

/// Waits until `server` has answered at least one call more than `before`.
async fn served(server: &Server, before: u64) -> Result<Instant> {
    let deadline = Instant::now() + WAIT;
    while server.answered() <= before {
        if Instant::now() > deadline {
            bail!("server at {} took no call within {WAIT:?}", server.addr);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Instant::now())
}

/// One server's restart.
struct Restart {
    name: &'static str,
    /// A bare put → watch event just before the drain.
    floor: Duration,
    /// `drain()` called → it returned.
    drain_ack: Duration,
    /// `drain()` called → gone from the client's set.
    drain_to_removal: Duration,
    /// Calls the old server answered after its removal from the set (in flight then).
    answered_after_removal: u64,
    /// The new worker's registration sent → in the client's set again.
    register_to_insert: Duration,
    /// The new worker's registration sent → the new server's first call.
    register_to_served: Duration,
}

/// Runs section 6 on a fresh etcd and adds its rows to `report`. Fails only when a
/// measurement cannot be taken (a server never served, a change never reached the client).
pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    println!(
        "== 6. callers: {} requests/s through muster-tonic to 3 servers: rolling restart (drain grace {}), crash (TTL {}), join ==",
        args.rate,
        human(args.drain_grace),
        human(TTL)
    );
    let node = Node::start().await?;
    let keyspace = Keyspace::new(PREFIX)?;
    let store = Arc::new(Instrumented::new(EtcdStore::connect(node.config()).await?));
    let mut slots = Vec::new();
    for name in NAMES {
        slots.push(start_slot(&store, name, 1).await?);
    }
    let master = Master::start(
        EtcdStore::connect(node.config()).await?,
        MasterConfig::new(PREFIX),
    )?;
    master.ready().await?;
    let suspects = Suspects::start(&master);
    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    let set = SetLog::start(follower.members());
    let all: BTreeSet<String> = NAMES.iter().map(|n| n.to_string()).collect();
    set.wait("held all three", Instant::now(), |s| *s == all)
        .await?;
    let mut floor = PutWatch::start(node.endpoint()).await?;

    let load = Load::start(channel.clone(), args.rate);
    let settle = if args.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    };
    tokio::time::sleep(settle).await;

    // 1. Rolling restart.
    let rolling_from = Instant::now();
    let mut restarts = Vec::new();
    for i in 0..slots.len() {
        let floor = floor.sample().await?;
        let old = slots.remove(i);
        let name = old.name;
        let drained = Instant::now();
        old.worker.drain().await?;
        let drain_ack = drained.elapsed();
        let removed = set
            .wait("dropped the draining member", drained, |s| {
                !s.contains(name)
            })
            .await?;
        let at_removal = old.server.answered();
        // muster-worker: the grace starts once the drain is written.
        tokio::time::sleep(args.drain_grace).await;
        let answered_after_removal = old.server.answered() - at_removal;
        drop(old.server);
        old.worker.leave().await?;
        let new = start_slot(&store, name, 2).await?;
        let sent = store
            .txn_sent(&keyspace.record_key(name))
            .context("the registration transaction was not seen")?;
        let inserted = set
            .wait("took the restarted member", sent, |s| s.contains(name))
            .await?;
        let first = served(&new.server, 0).await?;
        restarts.push(Restart {
            name,
            floor,
            drain_ack,
            drain_to_removal: removed - drained,
            answered_after_removal,
            register_to_insert: inserted - sent,
            register_to_served: first - sent,
        });
        slots.insert(i, new);
        tokio::time::sleep(settle).await;
    }
    let rolling_to = Instant::now();

    // The reference for the rolling restart: the same restarts without a drain, as
    // `muster-worker --drain-grace 0s` does it (leave and stop the server at once).
    let mut undrained = Vec::new();
    for i in 0..slots.len() {
        let old = slots.remove(i);
        let name = old.name;
        let stopped = Instant::now();
        let leaving = tokio::spawn(old.worker.leave());
        drop(old.server);
        leaving.await??;
        let removed = set
            .wait("dropped the leaving member", stopped, |s| !s.contains(name))
            .await?;
        let new = start_slot(&store, name, 3).await?;
        served(&new.server, 0).await?;
        undrained.push(removed - stopped);
        slots.insert(i, new);
        tokio::time::sleep(settle).await;
    }
    let undrained_to = Instant::now();

    // 2. Crash, beside a static list of the same endpoints.
    let reference = Load::start(
        Channel::balance_list(
            slots
                .iter()
                .map(|s| endpoint(&s.server))
                .collect::<Result<Vec<_>>>()?
                .into_iter(),
        ),
        args.rate,
    );
    for slot in &slots {
        served(&slot.server, slot.server.answered()).await?;
    }
    tokio::time::sleep(settle).await;
    let victim = slots.remove(1);
    let lease = match &*victim.worker.status().borrow() {
        Status::Registered { lease, .. } => *lease,
        other => bail!("{} is {other:?} before the crash", victim.name),
    };
    let crashed = Instant::now();
    drop(victim.server);
    victim.worker.abandon();
    let renewed = store
        .renewed(lease)
        .context("no grant or keep-alive seen for the crashed server's lease")?;
    let detect_floor = (renewed + TTL).saturating_duration_since(crashed) + TICK;
    let suspect = suspects.wait(victim.name).await?;
    let removed = set
        .wait("dropped the crashed member", crashed, |s| {
            !s.contains(victim.name)
        })
        .await?;
    let after = args.crash_after;
    tokio::time::sleep(after).await;
    let crash_to = Instant::now();
    let reference = reference.finish().await?;

    // 3. Join, beside a bare balanced channel told of the new endpoint directly.
    let (bare, bare_changes) = Channel::balance_channel::<String>(16);
    for slot in &slots {
        bare_changes
            .send(Change::Insert(
                slot.name.to_string(),
                endpoint(&slot.server)?,
            ))
            .await?;
    }
    let bare_load = Load::start(bare, args.rate);
    for slot in &slots {
        served(&slot.server, slot.server.answered()).await?;
    }
    tokio::time::sleep(settle).await;
    let join_name = "s4";
    let join_server = serve(&format!("{join_name}#1")).await;
    let told = Instant::now();
    bare_changes
        .send(Change::Insert(join_name.into(), endpoint(&join_server)?))
        .await?;
    let join_worker = Worker::register(
        store.clone(),
        MemberInfo::new(join_name, join_server.addr.to_string()),
        WorkerConfig::new(PREFIX).ttl(TTL),
    )
    .await?;
    let join_sent = store
        .txn_sent(&keyspace.record_key(join_name))
        .context("the registration transaction was not seen")?;
    let join_inserted = set
        .wait("took the new member", join_sent, |s| s.contains(join_name))
        .await?;
    served(&join_server, 0).await?;
    tokio::time::sleep(settle).await;
    let bare_calls = bare_load.finish().await?;
    let calls = load.finish().await?;
    let join_to = Instant::now();
    let answers = format!("{join_name}#1");
    let join_muster = calls
        .first_answer(&answers, join_sent)
        .context("the muster client never reached the new server")?
        - join_sent;
    let join_floor = bare_calls
        .first_answer(&answers, told)
        .context("the bare client never reached the new server")?
        - told;

    suspects.task.abort();
    set.task.abort();
    floor.task.abort();
    follower.stop();
    let _ = join_worker.leave().await;
    for slot in slots {
        let _ = slot.worker.leave().await;
    }
    drop(master);

    // The phases, by the time each request was sent.
    let warmup = calls.tally(calls.started, rolling_from);
    let rolling = calls.tally(rolling_from, rolling_to);
    let no_drain = calls.tally(rolling_to, undrained_to);
    let between = calls.tally(undrained_to, crashed);
    let crash_before = calls.tally(crashed, removed);
    let crash_after = calls.tally(removed, crash_to);
    let join = calls.tally(crash_to, join_to);
    let ref_before = reference.tally(crashed, removed);
    let ref_after = reference.tally(removed, crash_to);
    let window = removed - crashed;
    let latency = calls.latency().context("no request succeeded")?;

    println!(
        "   muster client: {} requests at {:.0}/s, {} failed; latency p50 {}, p99 {}, max {}",
        count(calls.calls.len() as f64),
        calls.rate(),
        count(calls.calls.iter().filter(|c| c.answer.is_err()).count() as f64),
        human(latency.p50),
        human(latency.p99),
        human(latency.max),
    );
    println!("   phase                          sent   failed");
    for (label, t) in [
        ("warm-up", &warmup),
        ("rolling restart", &rolling),
        ("(restart without drain)", &no_drain),
        ("between", &between),
        ("crash, until removal", &crash_before),
        ("crash, after removal", &crash_after),
        ("join", &join),
        ("(static list: until removal)", &ref_before),
        ("(static list: after removal)", &ref_after),
    ] {
        println!("   {label:<30} {:>6}  {:>6}", t.sent, t.failed);
        for (error, n) in &t.errors {
            println!("      {n} x {error}");
        }
    }
    println!("   restart  drain ack  drain -> removal  floor: put -> watch  answered after removal  register -> in set  -> first served");
    for r in &restarts {
        println!(
            "   {:<7}  {:>9}  {:>16}  {:>19}  {:>22}  {:>18}  {:>15}",
            r.name,
            human(r.drain_ack),
            human(r.drain_to_removal),
            human(r.floor),
            r.answered_after_removal,
            human(r.register_to_insert),
            human(r.register_to_served),
        );
    }
    println!(
        "   restarts without a drain: leave + stop -> removal from the set {}",
        undrained
            .iter()
            .map(|d| human(*d))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "   crash: -> master Suspect {}, -> removed from the set {} (floor: remaining TTL + 0.5 s = {}); static list {} requests at {:.0}/s",
        human(suspect - crashed),
        human(window),
        human(detect_floor),
        count(reference.calls.len() as f64),
        reference.rate(),
    );
    println!(
        "   join: registration sent -> in the set {}, -> first request served {} (floor: tonic told directly -> first served {})",
        human(join_inserted - join_sent),
        human(join_muster),
        human(join_floor),
    );

    let worst = restarts
        .iter()
        .max_by_key(|r| r.drain_to_removal)
        .context("no restarts")?;
    report.section(
        "callers",
        json!({
            "rate_target": args.rate,
            "rate": calls.rate(),
            "requests": calls.calls.len(),
            "loops": LOOPS,
            "request_timeout_ms": ms(REQUEST_TIMEOUT),
            "drain_grace_ms": ms(args.drain_grace),
            "ttl_s": TTL.as_secs_f64(),
            "latency": latency.json(),
            "phases": {
                "warmup": warmup.json(),
                "rolling_restart": rolling.json(),
                "restart_without_drain": no_drain.json(),
                "between": between.json(),
                "crash_until_removal": crash_before.json(),
                "crash_after_removal": crash_after.json(),
                "join": join.json(),
            },
            "without_drain_stop_to_removal_ms": undrained.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "restarts": restarts.iter().map(|r| json!({
                "name": r.name,
                "floor_put_to_watch_ms": ms(r.floor),
                "drain_ack_ms": ms(r.drain_ack),
                "drain_to_removal_ms": ms(r.drain_to_removal),
                "answered_after_removal": r.answered_after_removal,
                "register_to_insert_ms": ms(r.register_to_insert),
                "register_to_served_ms": ms(r.register_to_served),
            })).collect::<Vec<_>>(),
            "crash": {
                "to_suspect_ms": ms(suspect - crashed),
                "to_removal_ms": ms(window),
                "floor_ms": ms(detect_floor),
                "after_removal_window_ms": ms(crash_to - removed),
                "static_list": {
                    "rate": reference.rate(),
                    "until_removal": ref_before.json(),
                    "after_removal": ref_after.json(),
                },
            },
            "join": {
                "register_to_insert_ms": ms(join_inserted - join_sent),
                "register_to_first_served_ms": ms(join_muster),
                "floor_told_to_first_served_ms": ms(join_floor),
            },
            "note": "servers: muster_testkit::grpc on loopback; workers share one EtcdStore, the master has its own; a crash drops the server (tonic's graceful stop) and abandons the worker",
        }),
    );
    report.headline(Headline {
        id: "callers.rolling_failed".into(),
        section: "6. callers",
        metric: format!(
            "rolling restart of 3 servers: failed requests (of {}, drain grace {}; the same without a drain: {} of {})",
            count(rolling.sent as f64),
            human(args.drain_grace),
            count(no_drain.failed as f64),
            count(no_drain.sent as f64),
        ),
        value: rolling.failed as f64,
        shown: count(rolling.failed as f64),
        unit: "requests",
        floor: None,
        goal: "0".into(),
        met: Some(rolling.failed == 0),
    });
    report.headline(Headline {
        id: "callers.drain_to_removal_max_ms".into(),
        section: "6. callers",
        metric: "rolling restart: drain → removal from the client's set, slowest of 3 (floor: bare put → watch before it)".into(),
        value: ms(worst.drain_to_removal),
        shown: human(worst.drain_to_removal),
        unit: "ms",
        floor: Some((ms(worst.floor), human(worst.floor))),
        goal: "—".into(),
        met: None,
    });
    let goal = TTL + Duration::from_millis(600);
    report.headline(Headline {
        id: "callers.crash_window_ms".into(),
        section: "6. callers",
        metric:
            "crash: server dropped → removal from the client's set (floor: remaining TTL + 0.5 s)"
                .into(),
        value: ms(window),
        shown: human(window),
        unit: "ms",
        floor: Some((ms(detect_floor), human(detect_floor))),
        goal: format!("≤ TTL + 0.6 s = {}", human(goal)),
        met: Some(window <= goal),
    });
    report.headline(Headline {
        id: "callers.crash_failed_until_removal".into(),
        section: "6. callers",
        metric: format!(
            "crash: failed requests until removal, muster (static list in the same window: {} of {})",
            count(ref_before.failed as f64),
            count(ref_before.sent as f64)
        ),
        value: crash_before.failed as f64,
        shown: format!(
            "{} of {}",
            count(crash_before.failed as f64),
            count(crash_before.sent as f64)
        ),
        unit: "requests",
        floor: None,
        goal: "expected (confined to the window)".into(),
        met: None,
    });
    report.headline(Headline {
        id: "callers.crash_failed_after_removal".into(),
        section: "6. callers",
        metric: format!(
            "crash: failed requests in the {} after removal (static list: {} of {})",
            human(crash_to - removed),
            count(ref_after.failed as f64),
            count(ref_after.sent as f64)
        ),
        value: crash_after.failed as f64,
        shown: format!(
            "{} of {}",
            count(crash_after.failed as f64),
            count(crash_after.sent as f64)
        ),
        unit: "requests",
        floor: None,
        goal: "0".into(),
        met: Some(crash_after.failed == 0),
    });
    report.headline(Headline {
        id: "callers.join_first_served_ms".into(),
        section: "6. callers",
        metric: "join: registration sent → the new server's first request served (floor: tonic told directly)".into(),
        value: ms(join_muster),
        shown: human(join_muster),
        unit: "ms",
        floor: Some((ms(join_floor), human(join_floor))),
        goal: "—".into(),
        met: None,
    });
    Ok(())
}
