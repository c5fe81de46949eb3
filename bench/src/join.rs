//! Section 1: join propagation.
//!
//! muster: from the moment a worker's registration transaction is sent to the moment the
//! master's subscriber receives `Joined`. The floor, in the same run and interleaved sample by
//! sample: a bare etcd-client put, from the moment it is sent to the moment a bare prefix
//! watch delivers its event. A second reference, a bare transaction with the same compare
//! and two puts as muster's registration, separates etcd's extra cost for a guarded
//! two-key transaction from muster's own.
//!
//! The master has its own `EtcdStore` (a master is normally another process); all workers
//! share one `EtcdStore`; the floor has its own etcd-client `Client`. Joins are sequential,
//! so the figures are latencies, not queueing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, WatchOptions};
use muster_core::{Keyspace, MemberInfo, TransitionKind};
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig};
use muster_worker::{Worker, WorkerConfig};
use serde_json::json;
use tokio::sync::mpsc;

use crate::args::Args;
use crate::etcd::Node;
use crate::instrumented::Instrumented;
use crate::report::{human, ms, Headline, Report, Stats};

const PREFIX: &str = "/bench/join/";
const FLOOR_PREFIX: &str = "/bench/floor/";
/// The longest one sample may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(10);

/// The metadata of worker `i`: a realistic record (~120 bytes of JSON).
pub fn info(i: usize) -> MemberInfo {
    MemberInfo::new(
        format!("worker-{i:05}"),
        format!("10.{}.{}.{}:8080", i >> 16 & 255, i >> 8 & 255, i & 255),
    )
    .cpus(8)
    .label("zone", ["a", "b", "c"][i % 3])
    .label("version", "1.4.2")
}

pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    println!(
        "== 1. join propagation: {} joins, registration commit -> master Joined ==",
        args.joins
    );
    let node = Node::start().await?;
    if let Ok(metrics) = node.metrics().await {
        report.meta(
            "etcd_version",
            json!(metrics.label("etcd_server_version", "server_version")),
        );
    }
    let keyspace = Keyspace::new(PREFIX)?;

    // The master and its subscriber: note when each Joined arrives.
    let master_store = EtcdStore::connect(node.config()).await?;
    let master = Master::start(master_store, MasterConfig::new(PREFIX).reap_after(None))?;
    master.ready().await?;
    let mut subscription = master.subscribe();
    let (joined_tx, mut joined) = mpsc::unbounded_channel::<(String, Instant)>();
    let subscriber = tokio::spawn(async move {
        while let Ok(Some(t)) = subscription.next_transition().await {
            if t.kind == TransitionKind::Joined {
                let _ = joined_tx.send((t.member.info.name.clone(), Instant::now()));
            }
        }
    });

    // The floor: a bare client and a bare prefix watch.
    let mut client = Client::connect([node.endpoint()], None).await?;
    let mut watch = client
        .watch(FLOOR_PREFIX, Some(WatchOptions::new().with_prefix()))
        .await?;
    let (event_tx, mut events) = mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(response)) = watch.message().await {
            let at = Instant::now();
            for event in response.events() {
                if let Some(kv) = event.kv() {
                    let _ = event_tx.send((kv.key().to_vec(), at));
                }
            }
        }
    });

    let store = Arc::new(Instrumented::new(EtcdStore::connect(node.config()).await?));
    let mut workers = Vec::with_capacity(args.joins);
    let mut floor_put = Vec::with_capacity(args.joins);
    let mut floor_txn = Vec::with_capacity(args.joins);
    let mut muster = Vec::with_capacity(args.joins);
    let mut muster_ack = Vec::with_capacity(args.joins);
    for i in 0..args.joins {
        let info = info(i);
        // Rotate the order so that no kind of sample always runs right after another.
        for turn in 0..3 {
            match (i + turn) % 3 {
                0 => {
                    let key = format!("{FLOOR_PREFIX}put/{}", info.name);
                    let sent = Instant::now();
                    client.put(key.clone(), info.to_json(), None).await?;
                    floor_put.push(wait_key(&mut events, key.as_bytes()).await? - sent);
                }
                1 => {
                    let live = format!("{FLOOR_PREFIX}alive/{}", info.name);
                    let record = format!("{FLOOR_PREFIX}members/{}", info.name);
                    let txn = Txn::new()
                        .when([Compare::create_revision(live.clone(), CompareOp::Equal, 0)])
                        .and_then([
                            TxnOp::put(live, br#"{"incarnation":1234567890123}"#.to_vec(), None),
                            TxnOp::put(record.clone(), info.to_json(), None),
                        ]);
                    let sent = Instant::now();
                    client.txn(txn).await?;
                    floor_txn.push(wait_key(&mut events, record.as_bytes()).await? - sent);
                }
                _ => {
                    let name = info.name.clone();
                    let worker =
                        Worker::register(store.clone(), info.clone(), WorkerConfig::new(PREFIX))
                            .await?;
                    let acked = Instant::now();
                    let at = wait_name(&mut joined, &name).await?;
                    let sent = store
                        .txn_sent(&keyspace.record_key(&name))
                        .context("the registration transaction was not seen")?;
                    muster.push(at - sent);
                    muster_ack.push(acked - sent);
                    workers.push(worker);
                }
            }
        }
    }
    subscriber.abort();
    watcher.abort();
    for worker in workers {
        worker.abandon();
    }
    drop(master);

    let put = Stats::of(&floor_put).expect("samples");
    let txn = Stats::of(&floor_txn).expect("samples");
    let ours = Stats::of(&muster).expect("samples");
    let ack = Stats::of(&muster_ack).expect("samples");
    println!("                               p50        p99        max");
    for (label, s) in [
        ("floor: bare put -> watch", &put),
        ("ref: bare 2-key txn -> watch", &txn),
        ("muster: register -> Joined", &ours),
        ("(muster: register txn ack)", &ack),
    ] {
        println!(
            "   {label:<29} {:>9}  {:>9}  {:>9}",
            human(s.p50),
            human(s.p99),
            human(s.max)
        );
    }
    report.section(
        "join",
        json!({
            "joins": args.joins,
            "floor_put_to_watch": put.json(),
            "ref_txn_to_watch": txn.json(),
            "muster_register_to_joined": ours.json(),
            "muster_register_txn_ack": ack.json(),
            "ratio_p50": ms(ours.p50) / ms(put.p50),
            "ratio_p99": ms(ours.p99) / ms(put.p99),
            "ratio_p50_vs_txn": ms(ours.p50) / ms(txn.p50),
            "ratio_p99_vs_txn": ms(ours.p99) / ms(txn.p99),
            "note": "all workers share one EtcdStore; the master has its own; samples interleaved with the floor's",
        }),
    );
    for (id, label, value, floor, goal) in [
        (
            "join.p50_ms",
            "join propagation p50",
            ours.p50,
            put.p50,
            Some(1.25),
        ),
        (
            "join.p99_ms",
            "join propagation p99",
            ours.p99,
            put.p99,
            Some(1.5),
        ),
        (
            "join.max_ms",
            "join propagation max",
            ours.max,
            put.max,
            None,
        ),
    ] {
        let ratio = ms(value) / ms(floor);
        report.headline(Headline {
            id: id.into(),
            section: "1. join",
            metric: format!("{label} ({} joins)", args.joins),
            value: ms(value),
            shown: human(value),
            unit: "ms",
            floor: Some((ms(floor), human(floor))),
            goal: goal.map_or("—".into(), |g| format!("≤ {g}x floor")),
            met: goal.map(|g| ratio <= g),
        });
    }
    Ok(())
}

/// Waits for the floor watch to deliver `key`; returns when it arrived.
async fn wait_key(
    events: &mut mpsc::UnboundedReceiver<(Vec<u8>, Instant)>,
    key: &[u8],
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some((k, at))) if k == key => return Ok(at),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the floor watch ended"),
            Err(_) => bail!("the floor watch did not deliver {key:?} within {WAIT:?}"),
        }
    }
}

/// Waits for the master to report `name` Joined; returns when the subscriber got it.
async fn wait_name(
    joined: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
) -> Result<Instant> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, joined.recv()).await {
            Ok(Some((n, at))) if n == name => return Ok(at),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("the master's subscription ended"),
            Err(_) => bail!("the master did not report {name} Joined within {WAIT:?}"),
        }
    }
}
