//! The master probe: this binary run as a child process (`muster-bench master-probe
//! ENDPOINT PREFIX MEMBERS`), so that a master's memory is measured on its own.
//!
//! It connects an `EtcdStore`, notes its resident memory, starts a `Master` and times the
//! cold start: from `Master::start` until `ready()` returns a view holding every member.
//! It notes its resident memory again, then takes the floor for the cold start: one bare
//! etcd-client range read of the whole prefix (and, for reference, muster's paged
//! `Store::list`). Each timing is taken three times, interleaved, and the median reported.
//! It prints one JSON line.
//!
//! Memory per member is the growth of the process's resident set (VmRSS) from just before
//! the master starts (after a warm-up master on an empty prefix has paid the process's
//! fixed costs: runtime threads, connection, watch stream) to a second after its view is
//! complete, minus a master's own fixed cost (a second master on an empty prefix, measured
//! while it runs: mostly the subscribers' ring of 16,384 slots, allocated whole at start),
//! divided by the members: the master's view, its state machine, and whatever the
//! allocator kept from the listing. The plain growth is reported too. Beside it, the probe
//! counts the bytes the program holds on the heap (this binary's global allocator counts
//! them) at the same moments: RSS growth minus live-heap growth is what the allocator kept
//! of memory that was freed (the listing, decoded pages).

use std::alloc::System;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, GetOptions};
use muster_core::Store;
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_master::{Master, MasterConfig};
use serde_json::{json, Value};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use crate::etcd::process_rss;

pub const SUBCOMMAND: &str = "master-probe";

/// The probe's memory figures in words, for the sections that run it: what each member adds
/// to a master's resident memory (the headline), the fixed cost it is counted beyond, the
/// plain growth, and the live heap per member.
pub fn memory_line(probe: &Value) -> String {
    let figure = |name: &str| probe[name].as_f64().unwrap_or(f64::NAN);
    format!(
        "resident memory {} B per member beyond the master's fixed {:.1} MB (plain growth {} B per member; live heap {} B per member)",
        crate::report::count(figure("rss_per_member_bytes")),
        figure("master_fixed_rss_bytes") / 1e6,
        crate::report::count(figure("rss_growth_per_member_bytes")),
        crate::report::count(figure("heap_per_member_bytes")),
    )
}

/// This binary's allocator: the system's, counting the bytes allocated and freed, so that
/// the probe can tell the heap it holds from the resident memory the allocator kept.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes the program holds on the heap now.
fn heap_live() -> usize {
    let stats = ALLOCATOR.stats();
    stats
        .bytes_allocated
        .saturating_sub(stats.bytes_deallocated)
}

/// How many times each timing is taken.
const REPEATS: usize = 3;

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// Runs the probe as a child of this process and returns what it printed.
pub async fn run_child(endpoint: &str, prefix: &str, members: usize) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .args([SUBCOMMAND, endpoint, prefix, &members.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "the master probe failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .last()
        .context("the master probe printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the master probe printed {line:?}"))
}

pub fn main(args: &[String]) -> Result<()> {
    let [endpoint, prefix, members] = args else {
        bail!("usage: muster-bench {SUBCOMMAND} ENDPOINT PREFIX MEMBERS");
    };
    let members: usize = members.parse().context("MEMBERS must be a number")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(probe(endpoint, prefix, members))?;
    println!("{result}");
    Ok(())
}

async fn probe(endpoint: &str, prefix: &str, members: usize) -> Result<Value> {
    let pid = std::process::id();
    let connected = Instant::now();
    let store = EtcdStore::connect(EtcdConfig::new([endpoint])).await?;
    let connect = connected.elapsed();
    // Pay the fixed costs first (runtime threads, the connection, a watch stream, the
    // master's task) with a master on an empty prefix, so that the growth measured next is
    // the members'.
    let warm_up = Master::start(
        store.clone(),
        MasterConfig::new("/bench/probe-warm-up/").reap_after(None),
    )?;
    warm_up.ready().await?;
    warm_up.shutdown().await;
    // A master's own fixed cost, whatever the group's size (its task, and the subscribers'
    // ring, allocated whole at start): a second master on an empty prefix, measured while it
    // runs. It is subtracted from the growth below, so that "per member" is what each member
    // adds, not a fixed cost shared out (which would make small groups look expensive).
    let rss_empty = process_rss(pid).unwrap_or(0);
    let heap_empty = heap_live();
    let empty = Master::start(
        store.clone(),
        MasterConfig::new("/bench/probe-warm-up/").reap_after(None),
    )?;
    empty.ready().await?;
    let fixed_rss = process_rss(pid).unwrap_or(0).saturating_sub(rss_empty);
    let fixed_heap = heap_live().saturating_sub(heap_empty);
    empty.shutdown().await;
    // What one listing of the prefix leaves on the heap once it is dropped: a check that
    // neither the client nor the store keeps buffers (0 B per member in the runs recorded in
    // BENCHMARKS.md since the count stopped adding reallocations twice).
    let heap_unlisted = heap_live();
    drop(store.list(prefix).await?);
    let heap_listed = heap_live();

    let rss_before = process_rss(pid).unwrap_or(0);
    let heap_before = heap_live();

    let started = Instant::now();
    let master = Master::start(store, MasterConfig::new(prefix).reap_after(None))?;
    let view = match tokio::time::timeout(Duration::from_secs(120), master.ready()).await {
        Ok(view) => view?,
        Err(_) => bail!(
            "the master did not finish its first listing within 120 s; its health: {:?}",
            master.health()
        ),
    };
    let cold_start = started.elapsed();
    let alive = view.alive().count();
    let listed = view.members.len();
    drop(view);
    if listed != members {
        bail!("the master's first view holds {listed} members, expected {members}");
    }
    let rss_after = process_rss(pid).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_settled = process_rss(pid).unwrap_or(0);
    let heap_settled = heap_live();
    drop(master);

    // This machine is shared and noisy: take each figure REPEATS times, interleaved (a cold
    // start, the floor, muster's own listing), and use the medians. The first cold start
    // above counts as one.
    let client = Client::connect([endpoint], None).await?;
    let mut kv = client.kv_client().max_decoding_message_size(256 << 20);
    let lister = EtcdStore::connect(EtcdConfig::new([endpoint])).await?;
    let mut cold_starts = vec![cold_start];
    let mut bare_lists = Vec::new();
    let mut bare_paged_lists = Vec::new();
    let mut store_lists = Vec::new();
    let mut keys = 0;
    for round in 0..REPEATS {
        if round > 0 {
            let store = EtcdStore::connect(EtcdConfig::new([endpoint])).await?;
            let started = Instant::now();
            let master = Master::start(store, MasterConfig::new(prefix).reap_after(None))?;
            let view = master.ready().await?;
            cold_starts.push(started.elapsed());
            if view.members.len() != members {
                bail!(
                    "a later master's first view holds {} members, expected {members}",
                    view.members.len()
                );
            }
            drop(view);
            master.shutdown().await;
        }
        // The floor: one bare range read of the prefix.
        let read = Instant::now();
        let response = kv
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        bare_lists.push(read.elapsed());
        keys = response.kvs().len();
        drop(response);
        // The floor the issue names: the same keys read bare in pages of muster's size
        // (etcd counts the rest of the range for every page, which one read does not).
        let read = Instant::now();
        bare_paged(&mut kv, prefix).await?;
        bare_paged_lists.push(read.elapsed());
        // muster's own paged listing, for reference.
        let read = Instant::now();
        let listing = lister.list(prefix).await?;
        store_lists.push(read.elapsed());
        drop(listing);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let all = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>();

    Ok(json!({
        "members": members,
        "alive": alive,
        "keys": keys,
        "connect_ms": connect.as_secs_f64() * 1e3,
        "cold_start_ms": ms(median(&cold_starts)),
        "bare_list_ms": ms(median(&bare_lists)),
        "bare_paged_list_ms": ms(median(&bare_paged_lists)),
        "store_list_ms": ms(median(&store_lists)),
        "cold_start_all_ms": all(&cold_starts),
        "bare_list_all_ms": all(&bare_lists),
        "bare_paged_list_all_ms": all(&bare_paged_lists),
        "store_list_all_ms": all(&store_lists),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_settled_bytes": rss_settled,
        "master_fixed_rss_bytes": fixed_rss,
        "master_fixed_heap_bytes": fixed_heap,
        "rss_growth_per_member_bytes": rss_settled.saturating_sub(rss_before) as f64 / members.max(1) as f64,
        "rss_per_member_bytes": rss_settled.saturating_sub(rss_before).saturating_sub(fixed_rss) as f64 / members.max(1) as f64,
        "heap_before_bytes": heap_before,
        "heap_settled_bytes": heap_settled,
        "heap_kept_after_a_listing_per_member_bytes": heap_listed.saturating_sub(heap_unlisted) as f64 / members.max(1) as f64,
        "heap_per_member_bytes": heap_settled.saturating_sub(heap_before).saturating_sub(fixed_heap) as f64 / members.max(1) as f64,
    }))
}

/// Reads every key under `prefix` with bare etcd-client range reads in pages of
/// `EtcdConfig::list_page` keys, each after the last key of the one before, all at the first
/// page's revision; returns the number of keys.
async fn bare_paged(kv: &mut etcd_client::KvClient, prefix: &str) -> Result<usize> {
    let page = i64::from(EtcdConfig::default().list_page);
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut keys = 0;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = kv.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        keys += response.kvs().len();
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(keys),
        }
    }
}
