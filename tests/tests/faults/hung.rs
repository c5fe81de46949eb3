//! Scenario 6: etcd hangs (`docker pause`: every process stopped, connections kept open),
//! then thaws.
//!
//! A hung server is worse than a dead one: nothing fails by itself, calls and streams just
//! wait. With HTTP/2 keep-alive configured the clients notice, fail their calls, and retry
//! with capped, jittered backoff — the workers' `Reconnecting { attempts }` status shows
//! how many times, far from a busy loop — and everything converges once etcd answers
//! again: same leases (the hang was shorter than the TTL, so no `Suspect`), the master
//! watching, its log what etcd's history implies.

use std::time::{Duration, Instant};

use futures::future::join_all;
use muster_core::TransitionKind;
use muster_etcd_backend::EtcdConfig;
use muster_master::Master;
use muster_testkit::cluster::Cluster;
use muster_worker::{Status, WorkerConfig};

use crate::support::{
    assert_view_is_truth, connect, count, health_until, info, join, lease_of, master_config, ms,
    report, status_until, view_until, History, Outcome, Recorder,
};

const PREFIX: &str = "/faults/hung/";
/// Longer than the hang plus a keep-alive interval, so no lease may expire.
const TTL: Duration = Duration::from_secs(10);
/// Renew often, so the lease has nearly its whole TTL left when the hang starts.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long etcd stays frozen: the passage of time this scenario is about.
const HANG: Duration = Duration::from_secs(5);
const WORKERS: usize = 3;

/// The most attempts a backoff from `initial` doubling up to `max` (each delay at least
/// half its ceiling) can make in `window`, even if every call failed at once.
fn backoff_allows(window: Duration, initial: Duration, max: Duration) -> u32 {
    let (mut spent, mut ceiling, mut attempts) = (Duration::ZERO, initial, 0);
    while spent <= window {
        attempts += 1;
        spent += ceiling / 2;
        ceiling = (ceiling * 2).min(max);
    }
    attempts
}

#[tokio::test]
async fn a_hung_etcd_makes_clients_back_off_and_converge_when_it_thaws() -> Outcome {
    // The server accepts a ping every second, so clients can detect the hang in ~2 s.
    let etcd = Cluster::start_with(1, &[("ETCD_GRPC_KEEPALIVE_MIN_TIME", "1s")]).await?;
    let node = etcd.nodes()[0];
    let config = EtcdConfig {
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..etcd.config()
    };
    let store = connect(config.clone()).await;
    let master_config = master_config(PREFIX);
    let master = Master::start(connect(config.clone()).await, master_config.clone())?;
    master.ready().await.expect("the master stopped");
    let mut log = Recorder::attach(&master);
    let worker_config = WorkerConfig {
        keep_alive_every: Some(KEEP_ALIVE_EVERY),
        ..WorkerConfig::new(PREFIX).ttl(TTL)
    };
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let own = connect(config.clone()).await;
        workers.push(join(own, info(&format!("w{i}")), worker_config.clone()).await);
    }
    workers[0].update(info("w0").cpus(2)).await?;
    view_until(&master, "every worker alive", |v| {
        v.alive().count() == WORKERS && v.get("w0").is_some_and(|m| m.info.cpus == 2)
    })
    .await;
    let leases: Vec<_> = workers.iter().map(lease_of).collect();

    // Freeze etcd.
    let paused_at = Instant::now();
    etcd.pause(node).await?;
    let master_down = health_until(&master, "its watch failing", |h| !h.watching).await;
    let master_detected = master_down.unhealthy_since.map_or(Duration::ZERO, |since| {
        since.saturating_duration_since(paused_at)
    });
    let workers_detected = join_all(workers.iter().map(|w| async move {
        match status_until(w, "reconnecting", |s| {
            matches!(s, Status::Reconnecting { .. })
        })
        .await
        {
            Status::Reconnecting { since, .. } => since.saturating_duration_since(paused_at),
            _ => unreachable!(),
        }
    }))
    .await;
    let reconnects_before = master.health().reconnects;
    // The hang itself: nothing to wait for but time.
    tokio::time::sleep(HANG.saturating_sub(paused_at.elapsed())).await;
    let attempts: Vec<u32> = workers
        .iter()
        .map(|w| match &*w.status().borrow() {
            Status::Reconnecting { attempts, .. } => *attempts,
            other => panic!(
                "{} is not reconnecting during the hang: {other:?}",
                w.name()
            ),
        })
        .collect();
    let master_attempts = master.health().reconnects;
    let hung_for = paused_at.elapsed();

    // Thaw: everyone converges, on the same leases.
    let thawed_at = Instant::now();
    etcd.unpause(node).await?;
    let master_back = async {
        health_until(&master, "watching again", |h| h.watching).await;
        thawed_at.elapsed()
    };
    let workers_back = join_all(workers.iter().map(|w| async move {
        status_until(w, "renewing again", |s| {
            matches!(s, Status::Registered { .. })
        })
        .await;
        thawed_at.elapsed()
    }));
    let (master_back, workers_back) = tokio::join!(master_back, workers_back);
    for (worker, lease) in workers.iter().zip(&leases) {
        assert_eq!(lease_of(worker), *lease, "{} kept its lease", worker.name());
    }
    let late = join(store.clone(), info("late"), worker_config.clone()).await;
    log.until_kind(TransitionKind::Joined, "late").await;

    // No busy loop: the attempts fit the backoff schedule over the hang (each attempt also
    // waits for its call to time out, so there are fewer still).
    let worker_cap = backoff_allows(hung_for, worker_config.retry_initial, KEEP_ALIVE_EVERY);
    for (worker, n) in workers.iter().zip(&attempts) {
        assert!(
            (1..=worker_cap).contains(n),
            "{}: {n} attempts in {hung_for:?}; its backoff allows at most {worker_cap}",
            worker.name()
        );
    }
    let master_cap = backoff_allows(
        hung_for,
        master_config.retry_initial,
        master_config.retry_max,
    );
    assert!(
        master_attempts <= u64::from(master_cap),
        "the master re-opened its watch {master_attempts} times in {hung_for:?}; its backoff allows at most {master_cap}"
    );

    let history = History::read(&store, PREFIX).await?;
    let emitted = log.up_to(&master, history.end).await.to_vec();
    history.assert_explains("the master", &emitted);
    assert_eq!(
        count(&emitted, TransitionKind::Suspect, None),
        0,
        "no false Suspect"
    );
    assert_view_is_truth("the master", &master, &store, PREFIX).await?;

    report(
        "S6 hung etcd (docker pause)",
        &[
            ("etcd frozen for", ms(hung_for)),
            ("time to detect: master watch failing", ms(master_detected)),
            (
                "time to detect: workers reconnecting (each)",
                workers_detected
                    .iter()
                    .map(|d| ms(*d))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "worker attempts during the hang (backoff cap)",
                format!("{attempts:?} (≤ {worker_cap})"),
            ),
            (
                "master watch re-opens during the hang (backoff cap)",
                format!("{master_attempts} (first failure counted at {reconnects_before}; ≤ {master_cap})"),
            ),
            ("time to recover: master watching again", ms(master_back)),
            (
                "time to recover: workers renewing, same leases (max)",
                ms(workers_back.into_iter().max().unwrap_or_default()),
            ),
            ("false Suspects (hang < TTL)", "0".into()),
            ("events lost", "0 (log = etcd's history)".into()),
        ],
    );
    drop(late);
    Ok(())
}
