//! Section 4b: scale on shared leases. N members in this process, hosted by
//! `WorkerGroup`s of up to 10,000 members each (one lease and one keep-alive per group), on
//! one etcd node:
//!
//! - **register**: every group adds its members (`add_many`, 64 in flight per group, the
//!   groups at once), beside the floor: bare etcd-client calls doing the same writes (one
//!   lease grant per group, then the guarded two-key transaction per member, at the same
//!   concurrency);
//! - **cold start and memory**: the master probe (a separate process, `probe`): a fresh
//!   master's first complete view beside one bare range read of the prefix, and its
//!   resident-memory growth per member;
//! - **soak**: how often a group went `Reconnecting` or `Reregistered` and how many members
//!   an in-process master saw turn `Suspect`, over the soak window;
//! - **crash wave**: one group abandoned (a crashed host); its lease expires and etcd deletes
//!   every liveness key in one revision. Measured: from the moment a bare etcd-client watch
//!   of the prefix receives that delete revision (the floor) until an in-process master's
//!   subscriber holds every one of the `Suspect` transitions.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use futures::StreamExt;
use muster_core::{Incarnation, MemberInfo, Record, TransitionKind};
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig};
use muster_worker::{Status, WorkerConfig, WorkerGroup};
use serde_json::json;

use crate::args::Args;
use crate::etcd::Node;
use crate::probe;
use crate::report::{count, human, ms, Headline, Report};

/// The groups' lease TTL: muster's default.
const TTL: Duration = Duration::from_secs(10);
/// The most members one group hosts (a big host); N members take ⌈N / this⌉ groups.
const PER_GROUP: usize = 10_000;
/// Registrations in flight per group (the floor uses the same).
const IN_FLIGHT: usize = 64;

fn member(group: usize, i: usize) -> MemberInfo {
    MemberInfo::new(
        format!("h{group:02}-slot-{i:05}"),
        format!("10.1.{group}.1:{}", 20_000 + i % 40_000),
    )
    .cpus(4)
    .label("zone", ["a", "b", "c"][i % 3])
    .label("host", format!("h{group:02}"))
}

/// The members of each group, for `n` members in all.
fn layout(n: usize) -> Vec<Vec<MemberInfo>> {
    let groups = n.div_ceil(PER_GROUP);
    let mut out = vec![Vec::new(); groups];
    for i in 0..n {
        let g = i % groups;
        let index = out[g].len();
        out[g].push(member(g, index));
    }
    out
}

/// Every size.
pub async fn run(args: &Args, report: &mut Report) -> Result<()> {
    for &n in &args.group_sizes {
        one_size(args, n, report).await?;
    }
    Ok(())
}

async fn one_size(args: &Args, n: usize, report: &mut Report) -> Result<()> {
    let layout = layout(n);
    println!(
        "== 4b. scale on shared leases: {} members in {} WorkerGroups (one lease each) in this process, one etcd node, TTL {TTL:?} ==",
        count(n as f64),
        layout.len()
    );
    let node = Node::start().await?;
    let prefix = format!("/bench/groups-{n}/");
    let client = Client::connect([node.endpoint()], None).await?;

    // The floor first, on a prefix of its own, then removed.
    let floor_prefix = format!("/bench/groups-floor-{n}/");
    let floor = register_bare(&client, &layout, &floor_prefix).await?;
    client
        .clone()
        .delete(
            floor_prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;

    // The observer: a master in this process, on a store of its own.
    let master = Master::start(
        EtcdStore::connect(node.config()).await?,
        MasterConfig::new(prefix.as_str()).reap_after(None),
    )?;
    master.ready().await?;
    let suspects = Arc::new(AtomicU64::new(0));
    let counter = {
        let suspects = suspects.clone();
        let mut events = master.subscribe();
        tokio::spawn(async move {
            while let Ok(Some(t)) = events.next_transition().await {
                if t.kind == TransitionKind::Suspect {
                    suspects.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // muster: the groups, on one shared store.
    let store = EtcdStore::connect(node.config()).await?;
    let started = Instant::now();
    let mut starting = Vec::new();
    for infos in &layout {
        let store = store.clone();
        let config = WorkerConfig::new(prefix.as_str()).ttl(TTL);
        let infos = infos.clone();
        starting.push(tokio::spawn(async move {
            let group = WorkerGroup::start(store, config).await?;
            for (i, result) in group.add_many(infos).await.into_iter().enumerate() {
                result.with_context(|| format!("member {i}"))?;
            }
            Ok::<_, anyhow::Error>(group)
        }));
    }
    let mut groups = Vec::new();
    for task in starting {
        groups.push(task.await??);
    }
    let register = started.elapsed();
    let joined_wait = Instant::now();
    let seen = tokio::time::timeout(
        Duration::from_secs(120),
        master.wait_until(|v| v.alive().count() == n),
    )
    .await;
    if !matches!(seen, Ok(Ok(_))) {
        bail!(
            "the in-process master did not see all {n} members alive within 120 s after registration"
        );
    }
    let visible = joined_wait.elapsed();
    println!(
        "   register {} members in {} groups: {} (floor: bare etcd-client, same writes, same concurrency: {}); the master saw them all {} after the last registration",
        count(n as f64),
        groups.len(),
        human(register),
        human(floor),
        human(visible)
    );

    let probe = match probe::run_child(&node.endpoint(), &prefix, n).await {
        Ok(probe) => probe,
        Err(err) => {
            println!("   !! {err:#}");
            json!({ "error": format!("{err:#}") })
        }
    };
    let cold_start = probe["cold_start_ms"].as_f64().unwrap_or(f64::NAN);
    let bare_list = probe["bare_paged_list_ms"].as_f64().unwrap_or(f64::NAN);
    let per_member = probe["rss_per_member_bytes"].as_f64().unwrap_or(f64::NAN);
    println!(
        "   master (separate process): cold start {:.0} ms (floor: a bare paged listing, {:.0} ms; one bare range read of everything {:.0} ms; muster's paged list {:.0} ms); {}",
        cold_start,
        bare_list,
        probe["bare_list_ms"].as_f64().unwrap_or(f64::NAN),
        probe["store_list_ms"].as_f64().unwrap_or(f64::NAN),
        probe::memory_line(&probe),
    );

    // The soak: every group's status changes, and suspects at the master.
    let changes = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = groups
        .iter()
        .map(|g| {
            let mut status = g.status();
            let changes = changes.clone();
            tokio::spawn(async move {
                status.borrow_and_update();
                while status.changed().await.is_ok() {
                    if matches!(
                        *status.borrow(),
                        Status::Reconnecting { .. } | Status::Reregistered { .. }
                    ) {
                        changes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let suspects_before = suspects.load(Ordering::Relaxed);
    tokio::time::sleep(args.soak).await;
    let soak_changes = changes.load(Ordering::Relaxed);
    let soak_suspects = suspects.load(Ordering::Relaxed) - suspects_before;
    for w in watchers {
        w.abort();
    }
    println!(
        "   soak {}: {} group status changes (Reconnecting/Reregistered), {} members suspect",
        human(args.soak),
        soak_changes,
        soak_suspects
    );

    // The crash wave: the first group dies.
    let crashed = groups.remove(0);
    let wave = layout[0].len();
    let crash = crash_wave(&client, &master, &prefix, crashed, wave).await?;
    println!(
        "   crash wave: a group of {} members abandoned; etcd deleted their liveness keys at revision {} ({} after the crash); the subscriber held all {} suspect transitions {} after the bare watch saw the delete revision",
        count(wave as f64),
        crash.revision,
        human(crash.expiry),
        count(wave as f64),
        human(crash.behind_floor)
    );

    let leaving = Instant::now();
    for group in groups {
        group.leave().await?;
    }
    let leave = leaving.elapsed();
    counter.abort();
    master.shutdown().await;
    drop(node);

    report.section(
        &format!("groups_{n}"),
        json!({
            "members": n,
            "groups": layout.len(),
            "per_group": PER_GROUP,
            "in_flight_per_group": IN_FLIGHT,
            "ttl_s": TTL.as_secs(),
            "register_ms": ms(register),
            "register_floor_ms": ms(floor),
            "all_alive_at_master_after_register_ms": ms(visible),
            "master_probe": probe,
            "soak_s": args.soak.as_secs_f64(),
            "soak_group_status_changes": soak_changes,
            "soak_suspects": soak_suspects,
            "crash_wave_members": wave,
            "crash_wave_expiry_after_abandon_ms": ms(crash.expiry),
            "crash_wave_floor_watch_all_deletes_ms": ms(crash.floor_all),
            "crash_wave_last_suspect_after_floor_ms": ms(crash.behind_floor),
            "leave_rest_ms": ms(leave),
        }),
    );
    let size = count(n as f64);
    report.headline(Headline {
        id: format!("groups{n}.register_ms"),
        section: "4b. shared leases",
        metric: format!("register {size} members in {} groups", layout.len()),
        value: ms(register),
        shown: human(register),
        unit: "ms",
        floor: Some((ms(floor), human(floor))),
        goal: "—".into(),
        met: None,
    });
    report.headline(Headline {
        id: format!("groups{n}.cold_start_ms"),
        section: "4b. shared leases",
        metric: format!(
            "master cold start to a complete view, {size} members (floor: a bare paged listing)"
        ),
        value: cold_start,
        shown: format!("{cold_start:.0} ms"),
        unit: "ms",
        floor: bare_list
            .is_finite()
            .then(|| (bare_list, format!("{bare_list:.0} ms"))),
        goal: "≤ 1.5× floor".into(),
        met: Some(cold_start <= 1.5 * bare_list),
    });
    report.headline(Headline {
        id: format!("groups{n}.master_bytes_per_member"),
        section: "4b. shared leases",
        metric: format!(
            "master resident memory per member, {size} members (RSS growth beyond the fixed cost)"
        ),
        value: per_member,
        shown: format!("{} B", count(per_member)),
        unit: "B",
        floor: None,
        goal: "≤ 1 KiB".into(),
        met: Some(per_member <= 1024.0),
    });
    report.headline(Headline {
        id: format!("groups{n}.keep_alive_failures"),
        section: "4b. shared leases",
        metric: format!(
            "keep-alive failures, {size} members in {} groups, {} soak",
            layout.len(),
            human(args.soak)
        ),
        value: (soak_changes + soak_suspects) as f64,
        shown: format!("{soak_changes} status changes, {soak_suspects} suspect"),
        unit: "",
        floor: None,
        goal: "0".into(),
        met: Some(soak_changes == 0 && soak_suspects == 0),
    });
    report.headline(Headline {
        id: format!("groups{n}.crash_wave_ms"),
        section: "4b. shared leases",
        metric: format!(
            "crash wave: {} suspect transitions at a subscriber after etcd's delete revision",
            count(wave as f64)
        ),
        value: ms(crash.behind_floor),
        shown: human(crash.behind_floor),
        unit: "ms",
        // Not a ratio: the bare watch's spread over the revision is printed above, for context.
        floor: None,
        goal: "≤ 1 s".into(),
        met: Some(crash.behind_floor <= Duration::from_secs(1)),
    });
    Ok(())
}

struct Crash {
    /// The delete revision.
    revision: i64,
    /// From the abandon to the bare watch's first delete.
    expiry: Duration,
    /// From the bare watch's first delete of the revision to its last.
    floor_all: Duration,
    /// From the bare watch's first delete of the revision to the subscriber's last suspect.
    behind_floor: Duration,
}

/// Abandons `group` (`wave` members) and times the wave at a bare watch and at a subscriber.
async fn crash_wave(
    client: &Client,
    master: &Master,
    prefix: &str,
    group: WorkerGroup,
    wave: usize,
) -> Result<Crash> {
    let alive = format!("{prefix}alive/");
    let mut bare = client
        .watch_client()
        .watch(alive.as_str(), Some(WatchOptions::new().with_prefix()))
        .await?;
    let mut events = master.subscribe();
    let abandoned = Instant::now();
    group.abandon();
    let deadline = TTL * 3 + Duration::from_secs(30);

    // The subscriber, in its own task, so the two clocks run side by side.
    let subscriber = tokio::spawn(async move {
        let mut names = BTreeSet::new();
        while names.len() < wave {
            match events.next_transition().await {
                Ok(Some(t)) if t.kind == TransitionKind::Suspect => {
                    names.insert(t.member.name().to_owned());
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the master stopped during the crash wave"),
                Err(e) => bail!("the subscriber lagged during the crash wave: {e}"),
            }
        }
        Ok(Instant::now())
    });

    let mut first: Option<(Instant, i64)> = None;
    let mut deletes = 0;
    let floor_done = tokio::time::timeout(deadline, async {
        while let Some(response) = bare.message().await? {
            for event in response.events() {
                if event.event_type() == EventType::Delete {
                    let revision = event.kv().map(|kv| kv.mod_revision()).unwrap_or(0);
                    first.get_or_insert((Instant::now(), revision));
                    deletes += 1;
                }
            }
            if deletes >= wave {
                return Ok::<_, anyhow::Error>(Instant::now());
            }
        }
        bail!("the bare watch ended during the crash wave")
    })
    .await
    .context("the crashed group's lease never expired")??;
    let (first_at, revision) = first.expect("deletes were seen");
    let last_suspect = tokio::time::timeout(deadline, subscriber)
        .await
        .context("the subscriber never got every suspect transition")???;
    Ok(Crash {
        revision,
        expiry: first_at - abandoned,
        floor_all: floor_done - first_at,
        behind_floor: last_suspect.saturating_duration_since(first_at),
    })
}

/// The floor: the groups' writes with bare etcd-client calls, [`IN_FLIGHT`] per group, the
/// groups at once. Returns how long the writes took (the leases are revoked after).
async fn register_bare(
    client: &Client,
    layout: &[Vec<MemberInfo>],
    prefix: &str,
) -> Result<Duration> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for infos in layout {
        let mut client = client.clone();
        let infos = infos.clone();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            // Nothing renews these leases while the writes run (at 100,000 members they take
            // longer than the groups' TTL), so they get an hour; the writes cost the same.
            let lease = client.lease_grant(3600, None).await?.id();
            let writes = futures::stream::iter(infos)
                .map(|info| {
                    let mut client = client.clone();
                    let live = format!("{prefix}alive/{}", info.name);
                    let record_key = format!("{prefix}members/{}", info.name);
                    async move {
                        let record = Record {
                            info,
                            incarnation: Incarnation(1_234_567_890_123),
                        };
                        let txn = Txn::new()
                            .when([Compare::create_revision(live.clone(), CompareOp::Equal, 0)])
                            .and_then([
                                TxnOp::put(
                                    live,
                                    br#"{"incarnation":1234567890123,"shared":true}"#.to_vec(),
                                    Some(PutOptions::new().with_lease(lease)),
                                ),
                                TxnOp::put(record_key, record.to_json(), None),
                            ]);
                        client.txn(txn).await.map(|_| ())
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            for write in writes {
                write?;
            }
            Ok::<_, etcd_client::Error>(lease)
        }));
    }
    let mut leases = Vec::new();
    for task in tasks {
        leases.push(task.await??);
    }
    let took = started.elapsed();
    for lease in leases {
        client.clone().lease_revoke(lease).await?;
    }
    Ok(took)
}
