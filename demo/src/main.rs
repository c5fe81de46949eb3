//! `muster-demo` (run it with `cargo xtask demo [--etcd]`): one master and five workers
//! telling the whole membership story.
//!
//! By default it runs on the embedded in-memory backend under a simulated clock, so the
//! minutes of the story (TTLs, an outage, a reap) pass in well under a second and the output
//! is the same on every run. With `--etcd` the same story runs on a real etcd (a container
//! it starts and removes, or `MUSTER_ENDPOINTS`) in real time; each worker reaches etcd
//! through its own TCP proxy, which is how "cut off from etcd" is done there. Each step says what it does, then shows the transitions the master emitted,
//! stamped with simulated time and the store revision that caused them.
//!
//! # Layout
//!
//! - `main.rs`: the story in the library, on either store (the default, and
//!   `--etcd --in-process`).
//! - `processes`: the story told by the real programs as processes (`--etcd`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use muster_core::{MemberInfo, MemberState, Store, Transition, TransitionKind};
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_master::{Master, MasterConfig, Subscription};
use muster_mem_backend::{MemCluster, MemStore};
use muster_testkit::etcd::Etcd;
use muster_testkit::proxy::Proxy;
use muster_worker::{Worker, WorkerConfig};
use tokio::time::Instant;

mod processes;

/// The workers' lease TTL (etcd's minimum).
const TTL: Duration = Duration::from_secs(2);

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("muster-demo: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the demo with its arguments.
fn run(args: &[String]) -> anyhow::Result<()> {
    match args {
        [] => {
            let runtime =
                muster_testkit::clock::paused_runtime().context("building the demo's runtime")?;
            let stage = MemStage {
                cluster: MemCluster::new(),
                clients: BTreeMap::new(),
            };
            runtime.block_on(story(stage))
        }
        [flag, rest @ ..]
            if flag == "--etcd" && (rest.is_empty() || rest == ["--in-process"]) =>
        {
            let in_process = !rest.is_empty();
            let (etcd, endpoints) = match std::env::var_os(muster_etcd_backend::ENDPOINTS_VAR) {
                // Set (even blank, which is an error rather than "start a container").
                Some(_) => (None, EtcdConfig::from_env()?.endpoints),
                None => {
                    println!("starting etcd in a container (image {}) ...", muster_testkit::etcd::image());
                    let etcd = Etcd::start().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let endpoint = etcd.endpoint();
                    (Some(etcd), vec![endpoint])
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("building the demo's runtime")?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let prefix = format!("/muster/demo-{stamp}/");
            let result = if in_process {
                let stage = EtcdStage {
                    endpoints,
                    prefix,
                    proxies: BTreeMap::new(),
                };
                runtime.block_on(story(stage))
            } else {
                let bin_dir = std::env::var_os("MUSTER_BIN_DIR")
                    .map(std::path::PathBuf::from)
                    .context("MUSTER_BIN_DIR is not set: run `cargo xtask demo --etcd`, which builds muster-worker and muster-master and says where they are")?;
                runtime.block_on(processes::story(endpoints, &bin_dir, prefix))
            };
            drop(etcd); // removes the container
            result
        }
        _ => bail!("usage: cargo xtask demo [--etcd [--in-process]]  (with --etcd, MUSTER_ENDPOINTS picks an existing etcd; otherwise a container is started and removed; --in-process runs the library in this process instead of the programs)"),
    }
}

/// Where the story runs: the store clients it hands out and how it cuts one off.
trait Stage {
    /// The store type.
    type Store: Store + Clone;
    /// One line saying where this is.
    fn describe(&self) -> String;
    /// The group's prefix.
    fn prefix(&self) -> String;
    /// How long the master waits before reaping a suspect member.
    fn reap_after(&self) -> Duration;
    /// What kind of time the story's clock shows.
    fn clock(&self) -> &'static str;
    /// A store client for the master.
    async fn master_client(&mut self) -> anyhow::Result<Self::Store>;
    /// A store client for the worker `name`, on a link of its own that can be cut.
    async fn worker_client(&mut self, name: &str) -> anyhow::Result<Self::Store>;
    /// Cuts `name`'s link to the store.
    fn cut(&self, name: &str);
    /// Heals `name`'s link to the store.
    fn heal(&self, name: &str);
}

/// The kinds the story shows: every kind a master that watches all along reports. Not
/// `Removed`: that needs a master that missed the deletes (compaction, a replaced store).
pub(crate) fn watched() -> Vec<TransitionKind> {
    TransitionKind::ALL
        .into_iter()
        .filter(|&k| k != TransitionKind::Removed)
        .collect()
}

/// The embedded in-memory etcd, on a simulated clock.
struct MemStage {
    /// The in-memory etcd.
    cluster: MemCluster,
    /// Each worker's client, for fault injection.
    clients: BTreeMap<String, MemStore>,
}

impl Stage for MemStage {
    type Store = MemStore;
    fn describe(&self) -> String {
        "in-memory etcd, simulated clock".into()
    }
    fn prefix(&self) -> String {
        "/muster/demo/".into()
    }
    fn reap_after(&self) -> Duration {
        Duration::from_secs(20)
    }
    fn clock(&self) -> &'static str {
        "simulated time"
    }
    async fn master_client(&mut self) -> anyhow::Result<MemStore> {
        Ok(self.cluster.client())
    }
    async fn worker_client(&mut self, name: &str) -> anyhow::Result<MemStore> {
        let client = self.cluster.client();
        self.clients.insert(name.to_owned(), client.clone());
        Ok(client)
    }
    fn cut(&self, name: &str) {
        if let Some(client) = self.clients.get(name) {
            self.cluster.partition(client.id());
        }
    }
    fn heal(&self, name: &str) {
        if let Some(client) = self.clients.get(name) {
            self.cluster.heal(client.id());
        }
    }
}

/// A real etcd; each worker reaches it through a TCP proxy that can be cut.
struct EtcdStage {
    /// etcd's client URLs.
    endpoints: Vec<String>,
    /// A fresh prefix per run, so a shared etcd is left as it was found.
    prefix: String,
    /// Each worker's proxy.
    proxies: BTreeMap<String, Proxy>,
}

impl EtcdStage {
    fn config(endpoints: Vec<String>) -> EtcdConfig {
        let mut config = EtcdConfig::new(endpoints);
        config.connect_timeout = Duration::from_secs(1);
        config.request_timeout = Duration::from_secs(1);
        config
    }
}

impl Stage for EtcdStage {
    type Store = EtcdStore;
    fn describe(&self) -> String {
        format!("real etcd at {}, real time", self.endpoints.join(","))
    }
    fn prefix(&self) -> String {
        self.prefix.clone()
    }
    fn reap_after(&self) -> Duration {
        Duration::from_secs(6)
    }
    fn clock(&self) -> &'static str {
        "elapsed"
    }
    async fn master_client(&mut self) -> anyhow::Result<EtcdStore> {
        Ok(EtcdStore::connect(Self::config(self.endpoints.clone())).await?)
    }
    async fn worker_client(&mut self, name: &str) -> anyhow::Result<EtcdStore> {
        let proxy = Proxy::start(&self.endpoints[0]).await?;
        let store = EtcdStore::connect(Self::config(vec![proxy.endpoint()])).await?;
        self.proxies.insert(name.to_owned(), proxy);
        Ok(store)
    }
    fn cut(&self, name: &str) {
        if let Some(proxy) = self.proxies.get(name) {
            proxy.cut();
        }
    }
    fn heal(&self, name: &str) {
        if let Some(proxy) = self.proxies.get(name) {
            proxy.heal();
        }
    }
}

/// The story, step by step.
async fn story<G: Stage>(mut stage: G) -> anyhow::Result<()> {
    let prefix = stage.prefix();
    let reap_after = stage.reap_after();
    let mut demo = Demo {
        start: Instant::now(),
        seen: Vec::new(),
        events: None,
    };
    println!(
        "muster demo: one master, five workers, {}",
        stage.describe()
    );
    println!("prefix {prefix}, worker TTL {TTL:?}, master reaps after {reap_after:?}\n");

    let master = Master::start(
        stage.master_client().await?,
        MasterConfig::new(prefix.clone())
            .reap_after(Some(reap_after))
            .seed(1),
    )?;
    demo.events = Some(master.subscribe());
    master.ready().await?;

    demo.say("five workers start and register");
    let mut workers = Vec::new();
    for i in 1..=5u32 {
        let name = format!("api-{i}");
        let store = stage.worker_client(&name).await?;
        let info = MemberInfo::new(name, format!("10.0.0.{i}:8080"))
            .cpus(2 * i)
            .label("zone", if i % 2 == 0 { "b" } else { "a" })
            .label("version", "1");
        let worker = Worker::register(store, info, worker_config(&prefix, i as u64)).await?;
        workers.push(Some(worker));
    }
    for i in 1..=5 {
        demo.expect(TransitionKind::Joined, &format!("api-{i}"), TTL)
            .await?;
    }
    demo.table(&master);

    demo.say("api-2 publishes new metadata (version=2)");
    let api2 = workers[1].as_ref().context("api-2")?;
    api2.update(
        MemberInfo::new("api-2", "10.0.0.2:8080")
            .cpus(4)
            .label("zone", "b")
            .label("version", "2"),
    )
    .await?;
    demo.expect(TransitionKind::Updated, "api-2", TTL).await?;

    demo.say("api-3 crashes: its process dies and nobody renews its lease");
    workers[2].take().context("api-3")?.abandon();
    demo.expect(TransitionKind::Suspect, "api-3", 3 * TTL)
        .await?;

    demo.say("api-4 is cut off from etcd for longer than its TTL");
    stage.cut("api-4");
    demo.expect(TransitionKind::Suspect, "api-4", 3 * TTL)
        .await?;
    demo.say("the network heals: api-4 finds its lease gone and registers again");
    stage.heal("api-4");
    demo.expect(TransitionKind::Recovered, "api-4", 5 * TTL)
        .await?;

    demo.say("api-3 is restarted: a new process under the same name");
    let store = stage.worker_client("api-3").await?;
    let info = MemberInfo::new("api-3", "10.0.0.3:8080")
        .cpus(6)
        .label("zone", "a")
        .label("version", "1");
    workers[2] = Some(Worker::register(store, info, worker_config(&prefix, 33)).await?);
    demo.expect(TransitionKind::Restarted, "api-3", TTL).await?;
    demo.table(&master);

    demo.say("api-5 drains (callers stop sending it new work), then leaves gracefully");
    let api5 = workers[4].take().context("api-5")?;
    api5.drain().await?;
    demo.expect(TransitionKind::Draining, "api-5", TTL).await?;
    api5.leave().await?;
    demo.expect(TransitionKind::Left, "api-5", TTL).await?;

    demo.say(&format!(
        "api-1 crashes and stays down; after {reap_after:?} suspect the master reaps it"
    ));
    workers[0].take().context("api-1")?.abandon();
    demo.expect(TransitionKind::Suspect, "api-1", 3 * TTL)
        .await?;
    demo.expect(TransitionKind::Failed, "api-1", reap_after + 3 * TTL)
        .await?;
    demo.table(&master);

    let missing: Vec<_> = watched()
        .into_iter()
        .filter(|k| !demo.seen.contains(k))
        .collect();
    if !missing.is_empty() {
        bail!("the demo did not show {missing:?}");
    }
    println!(
        "\nevery transition kind shown: {} \
         (`removed`, a relist finding a member gone without seeing why, is the fault tests')",
        watched()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} {:.1} s, store at revision {}",
        stage.clock(),
        demo.start.elapsed().as_secs_f64(),
        master.view().revision
    );
    for worker in workers.into_iter().flatten() {
        worker.leave().await?;
    }
    master.shutdown().await;
    Ok(())
}

fn worker_config(prefix: &str, seed: u64) -> WorkerConfig {
    WorkerConfig::new(prefix)
        .ttl(TTL)
        .incarnation(muster_core::Incarnation(0x1000 + seed))
}

/// The demo's narrator: prints steps, transitions and tables.
struct Demo {
    /// When the story started.
    start: Instant,
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
            let next = tokio::time::timeout_at(deadline, events.next_transition()).await;
            let Ok(next) = next else {
                bail!("expected {name} to be {kind} within {within:?}, but it was not");
            };
            let Some(t) = next? else {
                bail!("the master stopped before {name} was {kind}");
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
    fn table(&self, master: &Master) {
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
