//! A tonic client balanced over a muster group, end to end in one process: three gRPC
//! servers register as members, a master follows the group, and a `balanced_channel`
//! spreads calls over the members that are alive and not draining.
//!
//! ```text
//! cargo run -p muster-tonic --example balanced
//! ```
//!
//! It runs on the embedded in-memory store; with a real etcd, start the master and the
//! workers on `muster_etcd_backend::EtcdStore` instead (or run each server under
//! `muster-worker --name ... --addr ... -- SERVER` as a sidecar) and nothing else changes.

use std::collections::BTreeMap;
use std::time::Duration;

use muster_core::MemberInfo;
use muster_master::{Filter, Master, MasterConfig};
use muster_mem_backend::MemStore;
use muster_testkit::grpc::{serve, who};
use muster_tonic::{balanced_channel, http_endpoint};
use muster_worker::{Worker, WorkerConfig};
use tonic::transport::Channel;

const PREFIX: &str = "/example/who/";

/// `n` calls through the channel: how many each server answered. Any failed call is an
/// error: a deploy that drains first loses none.
async fn spread(channel: &Channel, n: usize) -> Result<BTreeMap<String, usize>, tonic::Status> {
    let mut answered = BTreeMap::new();
    for _ in 0..n {
        *answered.entry(who(channel).await?).or_default() += 1;
    }
    Ok(answered)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = MemStore::new();
    let master = Master::start(store.clone(), MasterConfig::new(PREFIX))?;

    // Three servers, each registered as a member at its address.
    let mut servers = Vec::new();
    let mut workers = Vec::new();
    for name in ["who-1", "who-2", "who-3"] {
        let server = serve(name).await;
        let info = MemberInfo::new(name, server.addr.to_string()).label("zone", "a");
        let config = WorkerConfig::new(PREFIX).ttl(Duration::from_secs(2));
        workers.push(Worker::register(store.clone(), info, config).await?);
        servers.push(server);
    }

    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    let mut members = follower.members();
    members.wait_for(|m| m.len() == 3).await?;
    println!("the channel follows {:?}", *members.borrow());
    println!("30 calls: {:?}", spread(&channel, 30).await?);

    // who-2 is about to be deployed: it drains first, and the channel stops sending to it.
    workers[1].drain().await?;
    members.wait_for(|m| !m.contains("who-2")).await?;
    println!("who-2 drains; the channel follows {:?}", *members.borrow());
    println!("30 calls: {:?}", spread(&channel, 30).await?);

    // It leaves; a new process takes its place and is sent calls once it is registered.
    workers.remove(1).leave().await?;
    let server = serve("who-2").await;
    let info = MemberInfo::new("who-2", server.addr.to_string()).label("zone", "a");
    let config = WorkerConfig::new(PREFIX).ttl(Duration::from_secs(2));
    workers.push(Worker::register(store.clone(), info, config).await?);
    servers[1] = server;
    members.wait_for(|m| m.len() == 3).await?;
    println!(
        "a new who-2 joins; the channel follows {:?}",
        *members.borrow()
    );
    println!("30 calls: {:?}", spread(&channel, 30).await?);

    for worker in workers {
        worker.leave().await?;
    }
    master.shutdown().await;
    Ok(())
}
