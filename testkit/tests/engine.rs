//! The kit against this machine's Docker engine: the engine and testcontainers' client agree
//! on an API version, and an etcd container is labelled for its run, ready when etcd says
//! so, keeps its port across a restart, and is gone once dropped. Needs Docker and the etcd
//! image (`cargo xtask test` provides both).

use muster_testkit::docker::{self, RUN_ID_VAR, RUN_LABEL};
use muster_testkit::etcd::Etcd;

/// bollard 0.21.1 (pinned in testkit/Cargo.toml and Cargo.lock) announces API 1.53 but sends
/// request paths without a version, which an engine serves at its own newest version; Debian
/// 12's Docker 20.10 speaks 1.41 and refuses any versioned path above it. A bollard that
/// starts sending its version, or an engine that refuses unversioned paths, fails here first,
/// with what to do.
#[tokio::test(flavor = "current_thread")]
async fn the_engine_accepts_the_kit_client() {
    let engine = docker::engine().await.unwrap_or_else(|err| panic!("{err}"));
    eprintln!("[testkit] {engine}");
    assert_ne!(
        engine.api_version, "?",
        "the engine named no API version: {engine}"
    );
}

#[test]
fn an_etcd_container_is_ready_labelled_kept_on_its_port_and_removed_on_drop() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let id = etcd.id().to_string();
    let endpoint = etcd.endpoint();
    assert!(etcd.logs().unwrap().contains(docker::READY_LINE));
    etcd.kill().unwrap();
    etcd.restart().unwrap();
    assert_eq!(etcd.endpoint(), endpoint, "the endpoint survives a restart");
    assert!(etcd.metrics().unwrap().has("etcd_server_has_leader"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inspect = |id: String| {
        runtime.block_on(async move {
            let docker = docker::client().await.unwrap();
            docker.inspect_container(&id, None).await
        })
    };
    let labels = inspect(id.clone())
        .expect("the container runs")
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    if let Ok(run) = std::env::var(RUN_ID_VAR) {
        assert_eq!(labels.get(RUN_LABEL), Some(&run), "labels: {labels:?}");
    }
    drop(etcd);
    assert!(
        inspect(id.clone()).is_err(),
        "container {id} is still there after the drop"
    );
}
