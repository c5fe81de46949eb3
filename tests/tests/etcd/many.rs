//! Many workers in one process, sharing one `EtcdStore`: how a job runner hosting thousands
//! of slots, or a test harness, uses muster.

use std::time::Duration;

use futures::StreamExt;
use muster_core::TransitionKind;
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_master::{Master, MasterConfig};
use muster_testkit::etcd::Etcd;
use muster_worker::{Worker, WorkerConfig};

use crate::support::{info, keep_alive_streams_opened, lease_renewals, DEADLINE, TTL};

/// 300 workers registered at once through one store with 4 keep-alive streams: etcd sees 4
/// streams, not 300, every worker renews its lease (at TTL 2 s, every 667 ms) through them,
/// and the master never sees one of them turn suspect.
#[tokio::test]
async fn workers_sharing_a_store_renew_over_its_few_streams_and_stay_alive() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let prefix = "/it/many/";
    let master = Master::start(
        EtcdStore::connect(etcd.config()).await.expect("connect"),
        MasterConfig::new(prefix),
    )
    .expect("master");
    let mut events = master.subscribe();
    let shared = EtcdStore::connect(EtcdConfig {
        keep_alive_streams: 4,
        ..etcd.config()
    })
    .await
    .expect("connect");
    let streams_before = keep_alive_streams_opened(&etcd);

    let workers: Vec<Worker> = futures::stream::iter(0..300)
        .map(|i| {
            let store = shared.clone();
            async move {
                let config = WorkerConfig::new(prefix).ttl(TTL);
                Worker::register(store, info(&format!("slot-{i:03}")), config)
                    .await
                    .unwrap_or_else(|err| panic!("register slot-{i:03}: {err}"))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let renewed_from = lease_renewals(&etcd);
    tokio::time::timeout(
        DEADLINE,
        master.wait_until(|view| view.alive().count() == 300),
    )
    .await
    .expect("all 300 alive at the master")
    .expect("the master stopped");

    // Three renewals per worker: at least two whole TTLs' worth of keep-alives.
    tokio::time::timeout(DEADLINE, async {
        while lease_renewals(&etcd) - renewed_from < 900.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("every worker renews its lease");

    let opened = keep_alive_streams_opened(&etcd) - streams_before;
    assert!(
        (1.0..=4.0).contains(&opened),
        "300 workers on one store with 4 streams opened {opened} keep-alive streams"
    );
    let mut suspects = Vec::new();
    while let Some(t) = events.try_next_transition().expect("the subscriber lagged") {
        if t.kind == TransitionKind::Suspect {
            suspects.push(t.member.name().to_string());
        }
    }
    assert!(
        suspects.is_empty(),
        "no worker may turn suspect: {suspects:?}"
    );
    assert_eq!(master.view().alive().count(), 300);
    drop(workers);
}
