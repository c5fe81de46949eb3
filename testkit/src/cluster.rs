//! A real etcd cluster of one or more members in Docker containers, on a Docker network of
//! its own, removed when dropped: what the fault tests kill, stop, pause and cut.
//!
//! ```no_run
//! # async fn example() -> Result<(), muster_testkit::Error> {
//! use muster_testkit::cluster::Cluster;
//!
//! let cluster = Cluster::start().await?; // three members, a leader elected
//! let config = cluster.config(); // every member's endpoint, for an `EtcdStore`
//! cluster.kill(cluster.leader().await?).await?; // the rest elect a new leader
//! # Ok(()) }
//! ```
//!
//! Each member runs the image in `MUSTER_ETCD_IMAGE` (see [`etcd`](crate::etcd)), configured
//! through `ETCD_*` environment variables with a static `ETCD_INITIAL_CLUSTER`, so the same
//! code runs our image and the official one. Members are started together (a member logs
//! that it is ready only once a quorum runs) and find each other by their container names on
//! the cluster's network; each one's client port is published on a fixed port of 127.0.0.1,
//! chosen at start, so a member keeps its endpoint across [`stop`](Cluster::stop) /
//! [`restart`](Cluster::restart) and [`replace_with_empty`](Cluster::replace_with_empty).
//! Containers and the network carry the same per-run label as [`etcd`](crate::etcd)'s, so
//! `cargo xtask test` can remove what a killed test run left.
//!
//! Pause, unpause, stop and start are testcontainers' calls; SIGKILL and the network
//! (create, disconnect, connect, remove) go through testcontainers' Docker client, bollard.
//! The methods are `async` and run on the kit's runtime: a test's masters and workers keep
//! running (and keep their leases) while a fault is injected.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use muster_etcd_backend::EtcdConfig;

use crate::docker::{
    self, classify, client, finish_on_drop, free_port, on_kit, port_taken, run_label,
    EtcdContainer, Spec, KIND_LABEL,
};
use crate::error::{Error, Result};
use crate::etcd::{test_config, Metrics};

/// How long [`Cluster::leader`] waits for an election to finish.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What this module creates ([`KIND_LABEL`]'s value).
const KIND: &str = "etcd-cluster";

/// Why a member may not become ready.
const QUORUM_HINT: &str = " (a member needs a quorum of its cluster running)";

/// One member of a [`Cluster`], by position: `n0`, `n1`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node(usize);

impl Node {
    /// The member's position in the cluster (`0` for `n0`).
    pub fn index(self) -> usize {
        self.0
    }

    /// The member's etcd name.
    pub fn name(self) -> String {
        format!("n{}", self.0)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd member n{}", self.0)
    }
}

/// One member.
#[derive(Debug)]
struct Member {
    /// Its container; replaced when the cluster is replaced by an empty one.
    container: EtcdContainer,
    /// The host port on 127.0.0.1 mapped to etcd's client port 2379; never changes.
    port: u16,
}

/// A running etcd cluster. Dropping it removes its containers and its network.
#[derive(Debug)]
pub struct Cluster {
    /// The Docker network the members talk over; unique per cluster.
    network: String,
    /// The image every member runs.
    image: String,
    /// Extra `ETCD_*` settings every member gets.
    env: Vec<(String, String)>,
    /// The members, by position.
    members: Vec<Member>,
    /// How many times the cluster was created (1 at start): makes each cluster token and
    /// container name unique, so a replaced cluster is a new cluster with a new id.
    generation: u32,
}

impl Cluster {
    /// Starts a three-member cluster and waits until every member serves clients.
    pub async fn start() -> Result<Cluster> {
        Cluster::start_with(3, &[]).await
    }

    /// Starts a one-member cluster: a single etcd that can also be replaced by an empty one.
    pub async fn single() -> Result<Cluster> {
        Cluster::start_with(1, &[]).await
    }

    /// Starts a cluster of `size` members, each with the extra etcd settings `env` (as
    /// `ETCD_*` variables, e.g. `("ETCD_GRPC_KEEPALIVE_MIN_TIME", "1s")`), and waits until
    /// every member serves clients.
    pub async fn start_with(size: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        assert!(size > 0, "a cluster needs at least one member");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        on_kit(Cluster::create(size, env)).await
    }

    /// Every member, by position.
    pub fn nodes(&self) -> Vec<Node> {
        (0..self.members.len()).map(Node).collect()
    }

    /// A member's client URL on this host, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self, node: Node) -> String {
        format!("http://127.0.0.1:{}", self.member(node).port)
    }

    /// Every member's client URL, by position.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes().into_iter().map(|n| self.endpoint(n)).collect()
    }

    /// Store settings with every member's endpoint, and timeouts short enough for tests.
    pub fn config(&self) -> EtcdConfig {
        test_config(self.endpoints())
    }

    /// The current leader, as the members themselves report it; waits (up to 30 s) while an
    /// election is under way. Paused and stopped members are not asked.
    pub async fn leader(&self) -> Result<Node> {
        let deadline = Instant::now() + ELECTION_TIMEOUT;
        loop {
            let mut reports = Vec::new();
            for node in self.nodes() {
                match on_kit(self.member_status(node)).await {
                    Ok(Some((me, leader))) if me == leader => return Ok(node),
                    Ok(Some((_, leader))) => reports.push(format!("{node}: leader {leader:x}")),
                    Ok(None) => reports.push(format!("{node}: not running")),
                    Err(err) => reports.push(format!("{node}: {err}")),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader {
                    within: ELECTION_TIMEOUT,
                    reports: reports.join("; "),
                });
            }
            // An election takes a few hundred milliseconds: ask again shortly.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes `node` the leader (etcd's leadership transfer, asked of the current leader);
    /// waits until it is.
    pub async fn move_leader(&self, node: Node) -> Result<()> {
        let leader = self.leader().await?;
        if leader == node {
            return Ok(());
        }
        let Some((target, _)) = on_kit(self.member_status(node)).await? else {
            return Err(Error::Etcd {
                what: format!("moving leadership to {node}"),
                message: "it is not running".into(),
            });
        };
        let transfer = self
            .member(leader)
            .container
            .exec(etcdctl(&["move-leader", &format!("{target:x}")]));
        let (code, stdout, stderr) = on_kit(transfer).await?;
        if code != 0 {
            return Err(Error::Etcd {
                what: format!("etcdctl move-leader on {leader}"),
                message: format!("exit {code}: {}{}", stdout.trim(), stderr.trim()),
            });
        }
        match self.leader().await? {
            now if now == node => Ok(()),
            now => Err(Error::Etcd {
                what: format!("asking {leader} to hand leadership to {node}"),
                message: format!("{now} leads"),
            }),
        }
    }

    /// How many watches a member is serving right now (its `etcd_debugging_mvcc_watcher_total`
    /// metric): tells which member a client's watch is on.
    pub async fn watchers(&self, node: Node) -> Result<u64> {
        const METRIC: &str = "etcd_debugging_mvcc_watcher_total";
        let endpoint = self.endpoint(node);
        let metrics = tokio::task::spawn_blocking(move || Metrics::scrape(&endpoint))
            .await
            .map_err(|err| Error::Etcd {
                what: format!("scraping {node}'s metrics"),
                message: err.to_string(),
            })??;
        if !metrics.has(METRIC) {
            return Err(Error::Etcd {
                what: format!("{node}'s metrics"),
                message: format!("no {METRIC}"),
            });
        }
        Ok(metrics.get(METRIC) as u64)
    }

    /// Kills a member at once (SIGKILL), like a crash. Its data survives for
    /// [`restart`](Self::restart).
    pub async fn kill(&self, node: Node) -> Result<()> {
        on_kit(self.member(node).container.kill()).await
    }

    /// Stops a member (SIGTERM: a leader hands over leadership first). Its data survives for
    /// [`restart`](Self::restart).
    pub async fn stop(&self, node: Node) -> Result<()> {
        on_kit(self.member(node).container.stop()).await
    }

    /// Starts a stopped or killed member again, on the same port and with its data, and
    /// waits until it serves clients (which needs a quorum of members running).
    pub async fn restart(&self, node: Node) -> Result<()> {
        on_kit(self.member(node).container.restart()).await
    }

    /// Freezes a member (SIGSTOP on every process): it keeps its connections but answers
    /// nothing, like a hung server.
    pub async fn pause(&self, node: Node) -> Result<()> {
        on_kit(self.member(node).container.pause()).await
    }

    /// Thaws a paused member.
    pub async fn unpause(&self, node: Node) -> Result<()> {
        on_kit(self.member(node).container.unpause()).await
    }

    /// Takes a member off the cluster's network: it can reach neither its peers nor be
    /// reached by clients, but keeps running (a partitioned machine).
    pub async fn disconnect(&self, node: Node) -> Result<()> {
        let (id, network) = (
            self.member(node).container.id().to_string(),
            self.network.clone(),
        );
        on_kit(async move {
            let what = format!("docker network disconnect {network} {id}");
            let request = NetworkDisconnectRequest {
                container: id.clone(),
                force: Some(false),
            };
            client()
                .await?
                .disconnect_network(&network, request)
                .await
                .map_err(|err| classify(&what, err))
        })
        .await
    }

    /// Puts a disconnected member back on the network (where its container name finds it).
    pub async fn connect(&self, node: Node) -> Result<()> {
        let (id, network) = (
            self.member(node).container.id().to_string(),
            self.network.clone(),
        );
        on_kit(async move {
            let what = format!("docker network connect {network} {id}");
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings::default()),
            };
            client()
                .await?
                .connect_network(&network, request)
                .await
                .map_err(|err| classify(&what, err))
        })
        .await
    }

    /// Replaces the whole cluster by an empty one, as a restore without data would: every
    /// member is removed with its data, and new members start on the same ports as a new
    /// cluster (new cluster id, revisions starting again). Waits until they serve clients.
    pub async fn replace_with_empty(&mut self) -> Result<()> {
        let old: Vec<Member> = std::mem::take(&mut self.members);
        let ports: Vec<u16> = old.iter().map(|m| m.port).collect();
        self.generation += 1;
        let specs: Vec<(Spec, u16)> = (0..ports.len())
            .map(|i| (self.spec(Node(i), &ports), ports[i]))
            .collect();
        let started = on_kit(async move {
            for member in old {
                member.container.remove().await;
            }
            start_members(specs, false).await
        })
        .await?;
        self.members = started;
        Ok(())
    }

    /// A member's log so far.
    pub async fn logs(&self, node: Node) -> Result<String> {
        on_kit(self.member(node).container.logs()).await
    }

    fn member(&self, node: Node) -> &Member {
        self.members.get(node.0).unwrap_or_else(|| {
            panic!(
                "{node} is not in this {}-member cluster",
                self.members.len()
            )
        })
    }

    /// A running member's own id and the leader it knows (`0`: none), from `etcdctl endpoint
    /// status` run inside its container; `None` when it is not running (stopped or paused).
    fn member_status(
        &self,
        node: Node,
    ) -> impl std::future::Future<Output = Result<Option<(u64, u64)>>> + Send + 'static {
        let container = &self.member(node).container;
        let running = container.running();
        let status = container.exec(etcdctl(&[
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "endpoint",
            "status",
            "-w",
            "json",
        ]));
        async move {
            if !running.await? {
                return Ok(None);
            }
            let (code, text, stderr) = status.await?;
            if code != 0 {
                return Err(Error::Etcd {
                    what: format!("etcdctl endpoint status on {node}"),
                    message: format!("{}{}", text.trim(), stderr.trim()),
                });
            }
            match (
                json_number(&text, "member_id"),
                json_number(&text, "leader"),
            ) {
                (Some(me), Some(leader)) => Ok(Some((me, leader))),
                _ => Err(Error::Etcd {
                    what: format!("etcdctl endpoint status on {node}"),
                    message: format!("cannot read member_id and leader from {text}"),
                }),
            }
        }
    }

    /// Creates the network and the members, and waits until they serve. Runs on the kit's
    /// runtime.
    async fn create(size: usize, env: Vec<(String, String)>) -> Result<Cluster> {
        let image = docker::image();
        let network = docker::unique_name("net");
        let mut labels = HashMap::from([(KIND_LABEL.to_string(), KIND.to_string())]);
        labels.extend(run_label());
        let request = NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels),
            ..Default::default()
        };
        client()
            .await?
            .create_network(request)
            .await
            .map_err(|err| classify(&format!("docker network create {network}"), err))?;
        let mut cluster = Cluster {
            network,
            image,
            env,
            members: Vec::new(),
            generation: 1,
        };
        // Ports are chosen here and may be taken before Docker binds them: each member
        // tries others (its port is part of its settings).
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect::<Result<_>>()?;
        let specs = (0..size)
            .map(|i| (cluster.spec(Node(i), &ports), ports[i]))
            .collect();
        match start_members(specs, true).await {
            Ok(members) => {
                cluster.members = members;
                Ok(cluster)
            }
            Err(err) => {
                cluster.remove().await;
                Err(err)
            }
        }
    }

    /// What member `node` of the cluster, as it is now, is started with.
    fn spec(&self, node: Node, ports: &[u16]) -> Spec {
        let container = |i: usize| format!("{}-n{i}-{}", self.network, self.generation);
        let name = node.name();
        let initial_cluster = (0..ports.len())
            .map(|i| format!("n{i}=http://{}:2380", container(i)))
            .collect::<Vec<_>>()
            .join(",");
        let settings = [
            ("ETCD_NAME", name.clone()),
            ("ETCD_DATA_DIR", "/tmp/muster-etcd".to_string()),
            ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379".to_string()),
            (
                "ETCD_ADVERTISE_CLIENT_URLS",
                format!("http://127.0.0.1:{}", ports[node.0]),
            ),
            ("ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380".to_string()),
            (
                "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                format!("http://{}:2380", container(node.0)),
            ),
            ("ETCD_INITIAL_CLUSTER", initial_cluster),
            ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
            (
                "ETCD_INITIAL_CLUSTER_TOKEN",
                format!("{}-{}", self.network, self.generation),
            ),
        ];
        let env = settings
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(self.env.iter().cloned())
            .collect();
        Spec {
            image: self.image.clone(),
            name: container(node.0),
            kind: KIND,
            network: Some(self.network.clone()),
            hostname: Some(name),
            env,
            hint: QUORUM_HINT,
            files: Vec::new(),
        }
    }

    /// Removes the members, then the network (which Docker refuses while containers use it).
    async fn remove(&mut self) {
        let members = std::mem::take(&mut self.members);
        let network = std::mem::take(&mut self.network);
        remove_all(members, network).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.network.is_empty() {
            return;
        }
        let members = std::mem::take(&mut self.members);
        let network = std::mem::take(&mut self.network);
        finish_on_drop(remove_all(members, network));
    }
}

async fn remove_all(members: Vec<Member>, network: String) {
    for member in members {
        member.container.remove().await;
    }
    if let Ok(docker) = client().await {
        let _ = docker.remove_network(&network).await;
    }
}

/// Starts every member at once (a member is ready only once a quorum runs) and waits until
/// all serve. With `retry_ports`, a member whose port was taken meanwhile tries another;
/// its advertised URL changes with it. On failure, removes those that started.
async fn start_members(specs: Vec<(Spec, u16)>, retry_ports: bool) -> Result<Vec<Member>> {
    let starts = specs.into_iter().map(|(spec, port)| async move {
        let (mut spec, mut port, mut attempts) = (spec, port, 0);
        loop {
            match EtcdContainer::start(spec.clone(), port).await {
                Ok(container) => return Ok(Member { container, port }),
                Err(err) if retry_ports && port_taken(&err) && attempts < 4 => {
                    attempts += 1;
                    let old = format!("http://127.0.0.1:{port}");
                    port = free_port()?;
                    for (key, value) in &mut spec.env {
                        if key == "ETCD_ADVERTISE_CLIENT_URLS" && *value == old {
                            *value = format!("http://127.0.0.1:{port}");
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
    });
    let results = futures::future::join_all(starts).await;
    if results.iter().all(Result::is_ok) {
        return Ok(results.into_iter().map(|r| r.expect("ok")).collect());
    }
    let mut first = None;
    for result in results {
        match result {
            Ok(member) => member.container.remove().await,
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    Err(first.expect("a member failed"))
}

/// `etcdctl` with `args`, asking the member it runs in.
fn etcdctl(args: &[&str]) -> Vec<String> {
    ["etcdctl", "--endpoints=http://127.0.0.1:2379"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// The first unsigned number stored under `"field":` in a JSON text.
fn json_number(text: &str, field: &str) -> Option<u64> {
    let pattern = format!("\"{field}\":");
    let start = text.find(&pattern)? + pattern.len();
    let digits: String = text[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn reads_numbers_from_etcdctl_json() {
        let text = r#"[{"Endpoint":"http://127.0.0.1:2379","Status":{"header":{"cluster_id":17,"member_id":42,"revision":5},"leader":42,"raftIndex":9}}]"#;
        assert_eq!(json_number(text, "member_id"), Some(42));
        assert_eq!(json_number(text, "leader"), Some(42));
        assert_eq!(json_number(text, "missing"), None);
    }
}
