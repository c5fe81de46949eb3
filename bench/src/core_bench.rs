//! Section 5: the core, without etcd.
//!
//! - **Observations per second**: `Membership::apply` alone, one thread, no runtime. An
//!   observation is one watch event (one key changed). The events are a realistic life cycle
//!   over a view of thousands of members, one revision per batch as a live watch delivers
//!   them: join (record + liveness in one revision), update (record), suspect (liveness
//!   deleted), recover (liveness back), leave (both deleted) — 7 events, 5 transitions per
//!   member and round. Batches are built before each round is timed. For scale, the same
//!   values decoded alone (the JSON work any master must do) and a full `resync`.
//! - **The whole system on the in-memory backend**: N real `Worker`s (each with its own
//!   client of one `MemCluster`, so faults can target them) and a real `Master`, on tokio's
//!   paused clock, through a wave: a fifth crash (a quarter of those restarted by a new
//!   process before the reap), a tenth partitioned past their TTL then healed, a tenth update
//!   their metadata, a tenth leave. Every expected transition must arrive, exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures::future::join_all;
use muster_core::{
    Event, EventKind, Incarnation, KeyValue, Keyspace, Listing, Liveness, Membership, Record,
    TransitionKind, WatchBatch,
};
use muster_master::{Master, MasterConfig};
use muster_mem_backend::MemCluster;
use muster_worker::{Worker, WorkerConfig};
use serde_json::json;

use crate::args::Args;
use crate::join::info;
use crate::report::{count, human, sig3, Headline, Report};

const PREFIX: &str = "/bench/core/";

pub fn run(args: &Args, report: &mut Report) -> Result<()> {
    println!(
        "== 5. core: the state machine alone, and the whole system on the in-memory backend =="
    );
    observations(args, report)?;
    simulation(args, report)
}

/// The keys and values of one member, encoded once.
struct Encoded {
    record_key: String,
    live_key: String,
    record: Vec<u8>,
    updated: Vec<u8>,
    live: Vec<u8>,
}

fn kv(key: &str, value: &[u8], create: i64, modified: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modified,
        version: 1,
        lease,
    }
}

fn put(key: &str, value: &[u8], create: i64, modified: i64, lease: i64) -> Event {
    Event {
        kind: EventKind::Put,
        kv: kv(key, value, create, modified, lease),
    }
}

fn delete(key: &str, revision: i64) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: kv(key, b"", 0, revision, 0),
    }
}

/// One round of the life cycle for every member, from revision `base + 1`, phase by phase.
fn round(members: &[Encoded], base: i64) -> Vec<WatchBatch> {
    let n = members.len() as i64;
    let mut batches = Vec::with_capacity(members.len() * 5);
    let single = |revision: i64, events: Vec<Event>| WatchBatch { revision, events };
    for (i, m) in members.iter().enumerate() {
        let r = base + 1 + i as i64;
        batches.push(single(
            r,
            vec![
                put(&m.record_key, &m.record, r, r, 0),
                put(&m.live_key, &m.live, r, r, 7),
            ],
        ));
    }
    for (i, m) in members.iter().enumerate() {
        let r = base + n + 1 + i as i64;
        let created = base + 1 + i as i64;
        batches.push(single(
            r,
            vec![put(&m.record_key, &m.updated, created, r, 0)],
        ));
    }
    for (i, m) in members.iter().enumerate() {
        let r = base + 2 * n + 1 + i as i64;
        batches.push(single(r, vec![delete(&m.live_key, r)]));
    }
    for (i, m) in members.iter().enumerate() {
        let r = base + 3 * n + 1 + i as i64;
        batches.push(single(r, vec![put(&m.live_key, &m.live, r, r, 8)]));
    }
    for (i, m) in members.iter().enumerate() {
        let r = base + 4 * n + 1 + i as i64;
        batches.push(single(
            r,
            vec![delete(&m.record_key, r), delete(&m.live_key, r)],
        ));
    }
    batches
}

fn observations(args: &Args, report: &mut Report) -> Result<()> {
    let keyspace = Keyspace::new(PREFIX)?;
    let members_n = (args.observations / 7).clamp(100, 10_000);
    let members: Vec<Encoded> = (0..members_n)
        .map(|i| {
            let info = info(i);
            let incarnation = Incarnation(0x5eed_0000 + i as u64);
            Encoded {
                record_key: keyspace.record_key(&info.name),
                live_key: keyspace.liveness_key(&info.name),
                record: Record {
                    info: info.clone(),
                    incarnation,
                }
                .to_json(),
                updated: Record {
                    info: info.cpus(16),
                    incarnation,
                }
                .to_json(),
                live: Liveness {
                    incarnation,
                    shared: false,
                }
                .to_json(),
            }
        })
        .collect();
    let per_round = members_n * 7;
    let rounds = args.observations.div_ceil(per_round).max(1);
    let mut machine = Membership::new(keyspace.clone(), None);
    let mut applied = 0usize;
    let mut transitions = 0usize;
    let mut busy = Duration::ZERO;
    let mut base = 1;
    for _ in 0..rounds {
        let batches = round(&members, base);
        base += members_n as i64 * 5;
        let now = Instant::now();
        let started = Instant::now();
        for batch in &batches {
            let step = machine.apply(batch, now);
            transitions += step.transitions.len();
            applied += batch.events.len();
        }
        busy += started.elapsed();
    }
    if transitions != rounds * members_n * 5 {
        bail!(
            "the state machine emitted {transitions} transitions, expected {}",
            rounds * members_n * 5
        );
    }
    let rate = applied as f64 / busy.as_secs_f64();

    // The JSON any master decodes for these events (the four puts of seven), alone.
    let started = Instant::now();
    let mut decoded = 0usize;
    for _ in 0..rounds {
        for m in &members {
            for value in [&m.record, &m.updated] {
                decoded += Record::from_json(&m.record_key, value)?.info.cpus as usize;
            }
            for _ in 0..2 {
                decoded += Liveness::from_json(&m.live_key, &m.live)?.incarnation.0 as usize & 1;
            }
        }
    }
    let decode = started.elapsed();
    std::hint::black_box(decoded);
    let decode_rate = applied as f64 / decode.as_secs_f64();

    // A full resync from a listing of every member (what a master's cold start applies).
    let mut kvs = Vec::with_capacity(members_n * 2);
    for (i, m) in members.iter().enumerate() {
        let r = 2 + i as i64;
        kvs.push(kv(&m.live_key, &m.live, r, r, 9));
        kvs.push(kv(&m.record_key, &m.record, r, r, 0));
    }
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    let listing = Listing {
        revision: members_n as i64 + 2,
        kvs,
    };
    let mut fresh = Membership::new(keyspace.clone(), None);
    let started = Instant::now();
    let step = fresh.resync(&listing, Instant::now());
    let resync = started.elapsed();
    if step.transitions.len() != members_n {
        bail!(
            "resync emitted {} joins, expected {members_n}",
            step.transitions.len()
        );
    }
    // The same resync in its two halves: decoding the listing (which a master overlaps with
    // reading the next page) and replacing the view with it (which it cannot).
    let mut halves = Membership::new(keyspace, None);
    let started = Instant::now();
    let mut relisting = halves.relisting();
    relisting.add(&listing);
    let resync_decode = started.elapsed();
    let started = Instant::now();
    let step = halves.finish_resync(relisting, Instant::now());
    let resync_settle = started.elapsed();
    std::hint::black_box(step);

    println!(
        "   Membership::apply: {} observations ({} rounds over {} members) in {} = {} observations/s on one thread",
        count(applied as f64),
        rounds,
        count(members_n as f64),
        human(busy),
        count(rate)
    );
    println!(
        "   (decoding the same JSON values alone: {} observations/s; resync of a {}-member listing: {}; in halves: decoding the listing {}, replacing the view {})",
        count(decode_rate),
        count(members_n as f64),
        human(resync),
        human(resync_decode),
        human(resync_settle)
    );
    report.section(
        "core_observations",
        json!({
            "observations": applied,
            "members": members_n,
            "rounds": rounds,
            "seconds": busy.as_secs_f64(),
            "observations_per_s": rate,
            "ns_per_observation": busy.as_secs_f64() * 1e9 / applied as f64,
            "transitions": transitions,
            "json_decode_only_observations_per_s": decode_rate,
            "resync_members": members_n,
            "resync_ms": resync.as_secs_f64() * 1e3,
            "resync_decode_ms": resync_decode.as_secs_f64() * 1e3,
            "resync_replace_ms": resync_settle.as_secs_f64() * 1e3,
            "note": "one thread, no runtime; one revision per batch; events without prev_kv (the machine does not read it)",
        }),
    );
    report.headline(Headline {
        id: "core.observations_per_s".into(),
        section: "5. core",
        metric: "Membership observations per second (one thread)".into(),
        value: rate,
        shown: count(rate),
        unit: "/s",
        floor: None,
        goal: "≥ 1,000,000/s".into(),
        met: Some(rate >= 1_000_000.0),
    });
    Ok(())
}

/// Transition counts, by kind, in `TransitionKind::ALL` order (sized by it, so a new kind
/// cannot index past the end).
#[derive(Default)]
struct Counts([AtomicU64; TransitionKind::ALL.len()]);

impl Counts {
    fn add(&self, kind: TransitionKind) {
        self.0[index(kind)].fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self, kind: TransitionKind) -> u64 {
        self.0[index(kind)].load(Ordering::Relaxed)
    }
}

fn index(kind: TransitionKind) -> usize {
    TransitionKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is listed")
}

fn simulation(args: &Args, report: &mut Report) -> Result<()> {
    let n = args.sim;
    let runtime = muster_testkit::clock::paused_runtime()?;
    let wall = Instant::now();
    let (simulated, counts, expected) = runtime.block_on(simulate(n))?;
    let wall = wall.elapsed();
    drop(runtime);
    let total: u64 = expected.iter().map(|(_, e)| e).sum();
    let all = expected.iter().all(|(kind, e)| counts.get(*kind) == *e);
    let table: Vec<String> = expected
        .iter()
        .map(|(kind, e)| format!("{kind} {}/{}", counts.get(*kind), e))
        .collect();
    println!(
        "   simulation: {} workers through a crash wave: {} transitions ({}) in {} simulated, {} wall",
        count(n as f64),
        count(total as f64),
        table.join(", "),
        human(simulated),
        human(wall)
    );
    report.section(
        "core_simulation",
        json!({
            "workers": n,
            "expected": expected.iter().map(|(k, e)| (k.to_string(), json!(e))).collect::<serde_json::Map<_, _>>(),
            "emitted": expected.iter().map(|(k, _)| (k.to_string(), json!(counts.get(*k)))).collect::<serde_json::Map<_, _>>(),
            "all_emitted": all,
            "simulated_s": simulated.as_secs_f64(),
            "wall_s": wall.as_secs_f64(),
            "transitions_per_wall_s": total as f64 / wall.as_secs_f64(),
            "note": "real Master and Workers on MemCluster under tokio's paused clock (one thread); each worker has its own client",
        }),
    );
    report.headline(Headline {
        id: "core.simulation_wall_ms".into(),
        section: "5. core",
        metric: format!(
            "mem-backend system, {} workers through a crash wave ({} simulated)",
            count(n as f64),
            human(simulated)
        ),
        value: wall.as_secs_f64() * 1e3,
        shown: format!(
            "{} wall, {}/{} transitions",
            human(wall),
            count(expected.iter().map(|(k, _)| counts.get(*k)).sum::<u64>() as f64),
            count(total as f64)
        ),
        unit: "ms",
        floor: None,
        goal: "all transitions emitted".into(),
        met: Some(all),
    });
    if !all {
        bail!("the simulation did not emit every expected transition: {table:?}");
    }
    println!(
        "   ({} simulated seconds per wall second)",
        sig3(simulated.as_secs_f64() / wall.as_secs_f64())
    );
    Ok(())
}

type Expected = Vec<(TransitionKind, u64)>;

/// Runs the wave; returns the simulated time it took, the counts, and what was expected.
async fn simulate(n: usize) -> Result<(Duration, Arc<Counts>, Expected)> {
    let ttl = Duration::from_secs(10);
    let reap_after = Duration::from_secs(60);
    let start = tokio::time::Instant::now();
    let cluster = MemCluster::new();
    let master = Master::start(
        cluster.client(),
        MasterConfig::new(PREFIX)
            .reap_after(Some(reap_after))
            .seed(7),
    )?;
    master.ready().await?;
    let counts = Arc::new(Counts::default());
    let mut subscription = master.subscribe();
    let subscriber = {
        let counts = counts.clone();
        tokio::spawn(async move {
            while let Ok(Some(t)) = subscription.next_transition().await {
                counts.add(t.kind);
            }
        })
    };
    let config = |i: usize| {
        WorkerConfig::new(PREFIX)
            .ttl(ttl)
            .incarnation(Incarnation(i as u64 + 1))
    };
    let clients: Vec<_> = (0..n).map(|_| cluster.client()).collect();
    let workers = join_all(
        clients
            .iter()
            .enumerate()
            .map(|(i, c)| Worker::register(c.clone(), info(i), config(i))),
    )
    .await;
    let mut workers: Vec<Option<Worker>> = workers
        .into_iter()
        .map(|w| w.map(Some))
        .collect::<Result<_, _>>()?;
    wait(&counts, TransitionKind::Joined, n as u64).await?;

    let crashed = n / 5;
    let restarted = crashed / 4;
    let partitioned = n / 10;
    let updated = n / 10;
    let left = n / 10;
    let partition = crashed..crashed + partitioned;
    let update = partition.end..partition.end + updated;
    let leave = update.end..update.end + left;
    for worker in workers.iter_mut().take(crashed) {
        worker.take().expect("registered").abandon();
    }
    for client in &clients[partition.clone()] {
        cluster.partition(client.id());
    }
    let updates = join_all(workers[update.clone()].iter().enumerate().map(|(k, w)| {
        let w = w.as_ref().expect("registered");
        w.update(info(update.start + k).cpus(32))
    }))
    .await;
    for result in updates {
        result?;
    }
    let leaves = join_all(
        workers[leave.clone()]
            .iter_mut()
            .map(|w| w.take().expect("registered").leave()),
    )
    .await;
    for result in leaves {
        result?;
    }
    wait(
        &counts,
        TransitionKind::Suspect,
        (crashed + partitioned) as u64,
    )
    .await?;
    // A new process takes over a quarter of the crashed names before they are reaped.
    let newcomers = join_all((0..restarted).map(|i| {
        let c = cluster.client();
        Worker::register(c, info(i), config(n + i))
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    // Heal the partition well after the leases expired, well before the reap.
    tokio::time::sleep_until(start + Duration::from_secs(30)).await;
    for client in &clients[partition] {
        cluster.heal(client.id());
    }
    let expected = vec![
        (TransitionKind::Joined, n as u64),
        (TransitionKind::Updated, updated as u64),
        (TransitionKind::Suspect, (crashed + partitioned) as u64),
        (TransitionKind::Recovered, partitioned as u64),
        (TransitionKind::Restarted, restarted as u64),
        (TransitionKind::Left, left as u64),
        (TransitionKind::Failed, (crashed - restarted) as u64),
    ];
    for (kind, e) in &expected {
        wait(&counts, *kind, *e).await?;
    }
    let simulated = start.elapsed();
    // Nothing more may come: let a few keep-alive periods pass.
    tokio::time::sleep(ttl).await;
    subscriber.abort();
    for worker in workers.into_iter().flatten().chain(newcomers) {
        worker.abandon();
    }
    drop(master);
    Ok((simulated, counts, expected))
}

/// Waits (in simulated time) until `kind` has been counted `expected` times.
async fn wait(counts: &Counts, kind: TransitionKind, expected: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while counts.get(kind) < expected {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the simulated master reported {} {kind} of {expected} within 600 simulated seconds",
                counts.get(kind)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
