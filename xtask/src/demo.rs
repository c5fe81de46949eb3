//! `cargo xtask demo`: one master and five workers telling the whole membership story.
//!
//! It runs on the embedded in-memory backend under a simulated clock, so the minutes of the
//! story (TTLs, an outage, a reap) pass in well under a second and the output is the same on
//! every run. Each step says what it does, then shows the transitions the master emitted,
//! stamped with simulated time and the store revision that caused them.

use std::time::Duration;

use anyhow::{bail, Context};
use muster_core::{MemberInfo, MemberState, Transition, TransitionKind};
use muster_master::{Master, MasterConfig, Subscription};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{Worker, WorkerConfig};
use tokio::time::Instant;

/// The group's key prefix.
const PREFIX: &str = "/muster/demo/";
/// The workers' lease TTL (etcd's minimum).
const TTL: Duration = Duration::from_secs(2);
/// How long the master lets a member stay `Suspect` before reaping it.
const REAP_AFTER: Duration = Duration::from_secs(20);

/// Runs the demo with the arguments that follow `demo`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(arg) = args.first() {
        bail!("unknown demo argument {arg:?}; `cargo xtask demo` takes none yet");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("building the demo's runtime")?;
    runtime.block_on(story())
}

/// The story, step by step.
async fn story() -> anyhow::Result<()> {
    let cluster = MemCluster::new();
    let mut demo = Demo {
        start: Instant::now(),
        cluster: cluster.clone(),
        seen: Vec::new(),
        events: None,
    };
    println!("muster demo: one master, five workers, in-memory etcd, simulated clock");
    println!("prefix {PREFIX}, worker TTL {TTL:?}, master reaps after {REAP_AFTER:?}\n");

    let master = Master::start(
        cluster.client(),
        MasterConfig::new(PREFIX)
            .reap_after(Some(REAP_AFTER))
            .seed(1),
    )?;
    demo.events = Some(master.subscribe());
    master.ready().await;

    demo.say("five workers start and register");
    let mut workers = Vec::new();
    for i in 1..=5u32 {
        let store = cluster.client();
        let info = MemberInfo::new(format!("api-{i}"), format!("10.0.0.{i}:8080"))
            .cpus(2 * i)
            .label("zone", if i % 2 == 0 { "b" } else { "a" })
            .label("version", "1");
        let worker = Worker::register(store.clone(), info, worker_config(i as u64)).await?;
        workers.push(Some((worker, store)));
    }
    for i in 1..=5 {
        demo.expect(TransitionKind::Joined, &format!("api-{i}"), TTL)
            .await?;
    }
    demo.table(&master);

    demo.say("api-2 publishes new metadata (version=2)");
    let (api2, _) = workers[1].as_ref().context("api-2")?;
    api2.update(
        MemberInfo::new("api-2", "10.0.0.2:8080")
            .cpus(4)
            .label("zone", "b")
            .label("version", "2"),
    )
    .await?;
    demo.expect(TransitionKind::Updated, "api-2", TTL).await?;

    demo.say("api-3 crashes: its process dies and nobody renews its lease");
    let (api3, _) = workers[2].take().context("api-3")?;
    api3.abandon();
    demo.expect(TransitionKind::Suspect, "api-3", 2 * TTL)
        .await?;

    demo.say("api-4 is cut off from etcd for longer than its TTL");
    let api4_store = workers[3].as_ref().context("api-4")?.1.clone();
    demo.cluster.partition(api4_store.id());
    demo.expect(TransitionKind::Suspect, "api-4", 2 * TTL)
        .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    demo.say("the network heals: api-4 finds its lease gone and registers again");
    demo.cluster.heal(api4_store.id());
    demo.expect(TransitionKind::Recovered, "api-4", 2 * TTL)
        .await?;

    demo.say("api-3 is restarted: a new process under the same name");
    let store = cluster.client();
    let info = MemberInfo::new("api-3", "10.0.0.3:8080")
        .cpus(6)
        .label("zone", "a")
        .label("version", "1");
    let api3 = Worker::register(store.clone(), info, worker_config(33)).await?;
    workers[2] = Some((api3, store));
    demo.expect(TransitionKind::Restarted, "api-3", TTL).await?;
    demo.table(&master);

    demo.say("api-5 leaves gracefully");
    let (api5, _) = workers[4].take().context("api-5")?;
    api5.leave().await?;
    demo.expect(TransitionKind::Left, "api-5", TTL).await?;

    demo.say(&format!(
        "api-1 crashes and stays down; after {REAP_AFTER:?} suspect the master reaps it"
    ));
    let (api1, _) = workers[0].take().context("api-1")?;
    api1.abandon();
    demo.expect(TransitionKind::Suspect, "api-1", 2 * TTL)
        .await?;
    demo.expect(TransitionKind::Failed, "api-1", REAP_AFTER + 2 * TTL)
        .await?;
    demo.table(&master);

    let missing: Vec<_> = TransitionKind::ALL
        .iter()
        .filter(|k| !demo.seen.contains(k))
        .collect();
    if !missing.is_empty() {
        bail!("the demo did not show {missing:?}");
    }
    println!(
        "every transition kind shown: {}",
        TransitionKind::ALL.map(|k| k.to_string()).join(", ")
    );
    println!(
        "simulated time {:.1} s; store at revision {}",
        demo.start.elapsed().as_secs_f64(),
        cluster.revision()
    );
    for (worker, _) in workers.into_iter().flatten() {
        worker.leave().await?;
    }
    master.shutdown().await;
    Ok(())
}

fn worker_config(seed: u64) -> WorkerConfig {
    WorkerConfig::new(PREFIX)
        .ttl(TTL)
        .request_timeout(Duration::from_millis(500))
        .incarnation(muster_core::Incarnation(0x1000 + seed))
}

/// The demo's narrator: prints steps, transitions and tables.
struct Demo {
    /// When the story started (simulated).
    start: Instant,
    /// The in-memory etcd, for fault injection.
    cluster: MemCluster,
    /// Every transition kind shown so far.
    seen: Vec<TransitionKind>,
    /// The master's transitions.
    events: Option<Subscription>,
}

impl Demo {
    fn say(&self, what: &str) {
        println!("\n[{:>6.1}s] == {what}", self.start.elapsed().as_secs_f64());
    }

    /// Prints transitions as they come until `name` has gone through `kind`.
    async fn expect(
        &mut self,
        kind: TransitionKind,
        name: &str,
        within: Duration,
    ) -> anyhow::Result<Transition> {
        let events = self.events.as_mut().context("not subscribed")?;
        let deadline = Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, events.next()).await;
            let Ok(Some(t)) = next else {
                bail!("expected {name} to be {kind} within {within:?}, but it was not");
            };
            println!("{}", line(self.start, &t));
            if !self.seen.contains(&t.kind) {
                self.seen.push(t.kind);
            }
            if t.kind == kind && t.member.name() == name {
                return Ok(t);
            }
        }
    }
}

/// One transition as a log line, stamped with simulated time since `start`.
fn line(start: Instant, t: &Transition) -> String {
    {
        let at = t.at.saturating_duration_since(start.into_std());
        format!(
            "[{:>6.1}s] rev {:>3}  {:<9}  {:<6} -> {:<7}  {}",
            at.as_secs_f64(),
            t.revision,
            t.kind.to_string(),
            t.member.name(),
            t.member.state.to_string(),
            describe(&t.member.info),
        )
    }
}

impl Demo {
    fn table(&self, master: &Master<MemStore>) {
        let view = master.view();
        println!(
            "\n  {:<6}  {:<7}  {:<13}  {:>4}  {:<16}  {:<18}  since",
            "NAME", "STATE", "ADDR", "CPUS", "LABELS", "INCARNATION"
        );
        for m in view.members.values() {
            println!(
                "  {:<6}  {:<7}  {:<13}  {:>4}  {:<16}  {:<18}  rev {}",
                m.name(),
                m.state.to_string(),
                m.info.addr,
                m.info.cpus,
                labels(&m.info),
                m.incarnation.to_string(),
                m.since
            );
        }
        let alive = view.in_state(MemberState::Alive).count();
        let suspect = view.in_state(MemberState::Suspect).count();
        println!(
            "  ({alive} alive, {suspect} suspect, at revision {})",
            view.revision
        );
    }
}

fn labels(info: &MemberInfo) -> String {
    info.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(info: &MemberInfo) -> String {
    format!("{} cpus={} {}", info.addr, info.cpus, labels(info))
}
