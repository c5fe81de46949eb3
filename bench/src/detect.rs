//! Section 2: failure detection.
//!
//! A worker (TTL 2 s, renewing every TTL/3) is abandoned as a crash would leave it: its task
//! stops, nothing is revoked. muster's figure runs from the abandon to the master's
//! subscriber receiving `Suspect`. The floor is physics, per sample: the lease's remaining
//! TTL at the abandon (from the last keep-alive sent) plus etcd's expiry tick (~500 ms; a key
//! vanishes 0–0.5 s after its TTL ran out). So `detection ≤ floor` means muster added nothing
//! measurable on top of etcd; the goal is a bound on the worst case, `max ≤ TTL + 0.6 s`.
//!
//! Samples overlap (staggered starts) and each waits a random 1–2 s before the abandon, so
//! the abandons fall at random points of the keep-alive period and of etcd's tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use muster_core::TransitionKind;
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig};
use muster_worker::{Status, Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::Notify;

use crate::args::Args;
use crate::etcd::Node;
use crate::instrumented::Instrumented;
use crate::join::info;
use crate::report::{human, ms, Headline, Report, Stats};

const PREFIX: &str = "/bench/detect/";
const TTL: Duration = Duration::from_secs(2);
/// etcd checks lease expiry on a ~500 ms tick.
const TICK: Duration = Duration::from_millis(500);
/// Time between sample starts.
const STAGGER: Duration = Duration::from_millis(450);

/// A small deterministic-enough random source (xorshift), seeded from the clock.
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When the master reported each name `Suspect`.
#[derive(Default)]
struct Suspects {
    at: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Suspects {
    async fn wait(&self, name: &str, limit: Duration) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self.at.lock().expect("lock").get(name) {
                return Ok(*at);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("the master did not report {name} Suspect within {limit:?}");
            }
        }
    }
}

/// One sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Abandon → Suspect at the master's subscriber.
    detection: Duration,
    /// The lease's remaining TTL at the abandon.
    remaining: Duration,
}

impl Sample {
    fn floor(&self) -> Duration {
        self.remaining + TICK
    }
}

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    println!(
        "== 2. failure detection: {} abandoned leases at TTL {TTL:?} -> master Suspect ==",
        args.samples
    );
    let node = Node::start().await?;
    let master = Master::start(
        EtcdStore::connect(node.config()).await?,
        MasterConfig::new(PREFIX).reap_after(None),
    )?;
    master.ready().await?;
    let suspects = Arc::new(Suspects::default());
    let mut subscription = master.subscribe();
    let subscriber = {
        let suspects = suspects.clone();
        tokio::spawn(async move {
            while let Ok(Some(t)) = subscription.next_transition().await {
                if t.kind == TransitionKind::Suspect {
                    let at = Instant::now();
                    suspects
                        .at
                        .lock()
                        .expect("lock")
                        .insert(t.member.info.name.clone(), at);
                    suspects.changed.notify_waiters();
                }
            }
        })
    };

    let store = Arc::new(Instrumented::new(EtcdStore::connect(node.config()).await?));
    let mut rng = Rng::from_clock();
    let mut tasks = Vec::new();
    for i in 0..args.samples {
        let store = store.clone();
        let suspects = suspects.clone();
        let start = STAGGER * i as u32;
        let wait = Duration::from_secs_f64(1.0 + rng.unit());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let info = info(i);
            let name = info.name.clone();
            let worker =
                Worker::register(store.clone(), info, WorkerConfig::new(PREFIX).ttl(TTL)).await?;
            let lease = match &*worker.status().borrow() {
                Status::Registered { lease, .. } => *lease,
                other => bail!("worker {name} is {other:?} right after registering"),
            };
            tokio::time::sleep(wait).await;
            worker.abandon();
            let abandoned = Instant::now();
            let renewed = store
                .renewed(lease)
                .context("no grant or keep-alive seen for the lease")?;
            let remaining = (renewed + TTL).saturating_duration_since(abandoned);
            let suspect = suspects.wait(&name, TTL * 5).await?;
            Ok::<_, anyhow::Error>(Sample {
                detection: suspect - abandoned,
                remaining,
            })
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.push(task.await??);
    }
    subscriber.abort();
    drop(master);

    let detection: Vec<Duration> = samples.iter().map(|s| s.detection).collect();
    let floors: Vec<Duration> = samples.iter().map(Sample::floor).collect();
    let stats = Stats::of(&detection).expect("samples");
    let floor_stats = Stats::of(&floors).expect("samples");
    // How far past its floor each sample came (0 when at or under it).
    let excess: Vec<Duration> = samples
        .iter()
        .map(|s| s.detection.saturating_sub(s.floor()))
        .collect();
    let worst = samples
        .iter()
        .copied()
        .max_by_key(|s| s.detection)
        .expect("samples");
    println!("   sample  remaining TTL  floor (+0.5 s)  detection   ratio");
    for (i, s) in samples.iter().enumerate() {
        println!(
            "   {i:>6}  {:>13}  {:>14}  {:>9}  {:>5.2}x",
            human(s.remaining),
            human(s.floor()),
            human(s.detection),
            s.detection.as_secs_f64() / s.floor().as_secs_f64()
        );
    }
    println!(
        "   detection min / median / max: {} / {} / {}; floor min / median / max: {} / {} / {}",
        human(stats.min),
        human(stats.p50),
        human(stats.max),
        human(floor_stats.min),
        human(floor_stats.p50),
        human(floor_stats.max),
    );
    let goal = TTL + Duration::from_millis(600);
    report.section(
        "detect",
        json!({
            "ttl_s": TTL.as_secs_f64(),
            "samples": samples.iter().map(|s| json!({
                "remaining_ms": ms(s.remaining),
                "floor_ms": ms(s.floor()),
                "detection_ms": ms(s.detection),
            })).collect::<Vec<_>>(),
            "detection": stats.json(),
            "floor": floor_stats.json(),
            "max_excess_over_floor_ms": excess.iter().map(|d| ms(*d)).fold(0.0, f64::max),
            "note": "abandon = the worker's task stops, as in a crash; floor = remaining TTL (from the last keep-alive sent) + etcd's 500 ms expiry tick",
        }),
    );
    report.headline(Headline {
        id: "detect.median_ms".into(),
        section: "2. detect",
        metric: format!(
            "failure detection median ({} samples, TTL 2 s)",
            args.samples
        ),
        value: ms(stats.p50),
        shown: human(stats.p50),
        unit: "ms",
        floor: Some((ms(floor_stats.p50), human(floor_stats.p50))),
        goal: "—".into(),
        met: None,
    });
    report.headline(Headline {
        id: "detect.max_ms".into(),
        section: "2. detect",
        metric: "failure detection max (floor: that sample's)".into(),
        value: ms(stats.max),
        shown: human(stats.max),
        unit: "ms",
        floor: Some((ms(worst.floor()), human(worst.floor()))),
        goal: format!("≤ TTL + 0.6 s = {}", human(goal)),
        met: Some(stats.max <= goal),
    });
    Ok(())
}
