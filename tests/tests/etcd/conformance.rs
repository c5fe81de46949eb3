//! The backend conformance suite (`muster_core::testing`) on `EtcdStore` against a fresh etcd.

use muster_core::testing::{run_all, Settings};
use muster_etcd_backend::EtcdStore;
use muster_testkit::etcd::Etcd;

#[tokio::test]
async fn etcd_store_passes_the_conformance_suite() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let store = EtcdStore::connect(etcd.config())
        .await
        .unwrap_or_else(|err| panic!("connect to {}: {err}", etcd.endpoint()));
    run_all(&store, &Settings::default()).await;
}
