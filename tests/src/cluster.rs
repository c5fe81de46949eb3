//! A real etcd cluster of one or more members in Docker containers, on a Docker network of
//! its own, removed when dropped: what the fault tests kill, stop, pause and cut.
//!
//! ```no_run
//! # async fn example() -> Result<(), muster_tests::etcd::HarnessError> {
//! use muster_tests::cluster::Cluster;
//!
//! let cluster = Cluster::start().await?; // three members, a leader elected
//! let config = cluster.config(); // every member's endpoint, for an `EtcdStore`
//! cluster.kill(cluster.leader().await?).await?; // the rest elect a new leader
//! # Ok(()) }
//! ```
//!
//! Each member runs the image in `MUSTER_ETCD_IMAGE` (see [`etcd`](crate::etcd)), configured
//! through `ETCD_*` environment variables with a static `ETCD_INITIAL_CLUSTER`, so the same
//! code runs our image and the official one. Members find each other by their names on the
//! cluster's network; each one's client port is published on a fixed port of 127.0.0.1,
//! chosen at start, so a member keeps its endpoint across [`stop`](Cluster::stop) /
//! [`restart`](Cluster::restart) and [`replace_with_empty`](Cluster::replace_with_empty).
//! Containers and the network carry the same per-run label as [`etcd`](crate::etcd)'s, so
//! `cargo xtask test` can remove what a killed test run left.
//!
//! The methods are `async` and run the `docker` client on tokio's blocking pool: a test's
//! masters and workers keep running (and keep their leases) while a fault is injected.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster_etcd_backend::EtcdConfig;

use crate::etcd::{
    check_image, docker, docker_ok, free_port, image, tail, HarnessError, READY_LINE,
    READY_TIMEOUT, RUN_ID_VAR, RUN_LABEL,
};

type Result<T> = std::result::Result<T, HarnessError>;

/// How long [`Cluster::leader`] waits for an election to finish.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The label that marks what this harness creates (with [`RUN_LABEL`] for the run).
const KIND_LABEL: &str = "org.muster.test=etcd-cluster";

/// One member of a [`Cluster`], by position: `n0`, `n1`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node(usize);

impl Node {
    /// The member's position in the cluster (`0` for `n0`).
    pub fn index(self) -> usize {
        self.0
    }

    /// The member's etcd name, which is also its host name on the cluster's network.
    pub fn name(self) -> String {
        format!("n{}", self.0)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd member n{}", self.0)
    }
}

/// One member's container.
#[derive(Debug, Clone)]
struct Container {
    /// The container id; changes when the cluster is replaced by an empty one.
    id: String,
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
    /// How many members it has.
    size: usize,
    /// The members, by position (fewer than `size` only while starting).
    members: Vec<Container>,
    /// How many times the cluster was created (1 at start): makes each cluster token unique,
    /// so a replaced cluster is a new cluster with a new id.
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
        blocking(move || Cluster::create(size, env)).await
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
        EtcdConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..EtcdConfig::new(self.endpoints())
        }
    }

    /// The current leader, as the members themselves report it; waits (up to 30 s) while an
    /// election is under way. Paused, stopped and disconnected members are not asked.
    pub async fn leader(&self) -> Result<Node> {
        let deadline = Instant::now() + ELECTION_TIMEOUT;
        loop {
            let mut reports = Vec::new();
            for node in self.nodes() {
                let id = self.member(node).id.clone();
                match blocking(move || member_status(&id)).await {
                    Ok(Some((me, leader))) if me == leader => return Ok(node),
                    Ok(Some((_, leader))) => reports.push(format!("{node}: leader {leader:x}")),
                    Ok(None) => reports.push(format!("{node}: not running")),
                    Err(err) => reports.push(format!("{node}: {err}")),
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError(format!(
                    "no etcd member reports itself leader after {ELECTION_TIMEOUT:?}: {}",
                    reports.join("; ")
                )));
            }
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
        let (from, to) = (self.member(leader).id.clone(), self.member(node).id.clone());
        blocking(move || {
            let Some((target, _)) = member_status(&to)? else {
                return Err(HarnessError(format!("{node} is not running")));
            };
            docker_ok(&[
                "exec",
                "-e",
                "ETCDCTL_API=3",
                &from,
                "etcdctl",
                "--endpoints=http://127.0.0.1:2379",
                "move-leader",
                &format!("{target:x}"),
            ])
            .map(drop)
        })
        .await?;
        match self.leader().await? {
            now if now == node => Ok(()),
            now => Err(HarnessError(format!(
                "asked {leader} to hand leadership to {node}, but {now} leads"
            ))),
        }
    }

    /// How many watches a member is serving right now (its `etcd_debugging_mvcc_watcher_total`
    /// metric): tells which member a client's watch is on.
    pub async fn watchers(&self, node: Node) -> Result<u64> {
        let port = self.member(node).port;
        blocking(move || {
            let metrics = http_get(port, "/metrics")?;
            metrics
                .lines()
                .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
                .and_then(|n| n.trim().parse::<f64>().ok())
                .map(|n| n as u64)
                .ok_or_else(|| {
                    HarnessError(format!(
                        "{node} reports no etcd_debugging_mvcc_watcher_total"
                    ))
                })
        })
        .await
    }

    /// Kills a member at once (SIGKILL), like a crash. Its data survives for
    /// [`restart`](Self::restart).
    pub async fn kill(&self, node: Node) -> Result<()> {
        self.docker(node, &["kill"]).await
    }

    /// Stops a member (SIGTERM: a leader hands over leadership first). Its data survives for
    /// [`restart`](Self::restart).
    pub async fn stop(&self, node: Node) -> Result<()> {
        self.docker(node, &["stop"]).await
    }

    /// Starts a stopped or killed member again, on the same port and with its data, and
    /// waits until it serves clients (which needs a quorum of members running).
    pub async fn restart(&self, node: Node) -> Result<()> {
        let id = self.member(node).id.clone();
        let image = self.image.clone();
        blocking(move || {
            let before = ready_count(&id)?;
            docker_ok(&["start", &id])?;
            wait_ready(&id, &image, before + 1)
        })
        .await
    }

    /// Freezes a member (SIGSTOP on every process): it keeps its connections but answers
    /// nothing, like a hung server.
    pub async fn pause(&self, node: Node) -> Result<()> {
        self.docker(node, &["pause"]).await
    }

    /// Thaws a paused member.
    pub async fn unpause(&self, node: Node) -> Result<()> {
        self.docker(node, &["unpause"]).await
    }

    /// Takes a member off the cluster's network: it can reach neither its peers nor be
    /// reached by clients, but keeps running (a partitioned machine).
    pub async fn disconnect(&self, node: Node) -> Result<()> {
        let (id, network) = (self.member(node).id.clone(), self.network.clone());
        blocking(move || docker_ok(&["network", "disconnect", &network, &id]).map(drop)).await
    }

    /// Puts a disconnected member back on the network, under its name.
    pub async fn connect(&self, node: Node) -> Result<()> {
        let (id, network) = (self.member(node).id.clone(), self.network.clone());
        blocking(move || {
            docker_ok(&["network", "connect", "--alias", &node.name(), &network, &id]).map(drop)
        })
        .await
    }

    /// Replaces the whole cluster by an empty one, as a restore without data would: every
    /// member is removed with its data, and new members start on the same ports as a new
    /// cluster (new cluster id, revisions starting again). Waits until they serve clients.
    pub async fn replace_with_empty(&mut self) -> Result<()> {
        let ids: Vec<String> = self.members.iter().map(|m| m.id.clone()).collect();
        blocking(move || {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            docker_ok(&args).map(drop)
        })
        .await?;
        self.generation += 1;
        for node in self.nodes() {
            let (spec, port) = (self.spec(), self.member(node).port);
            // Recorded at once, so that dropping the cluster removes it whatever happens next.
            self.members[node.0].id = blocking(move || spec.run(node, port)).await?;
        }
        let (ids, image): (Vec<String>, String) = (
            self.members.iter().map(|m| m.id.clone()).collect(),
            self.image.clone(),
        );
        blocking(move || ids.iter().try_for_each(|id| wait_ready(id, &image, 1))).await
    }

    /// A member's log so far.
    pub async fn logs(&self, node: Node) -> Result<String> {
        let id = self.member(node).id.clone();
        blocking(move || logs(&id)).await
    }

    fn member(&self, node: Node) -> &Container {
        self.members.get(node.0).unwrap_or_else(|| {
            panic!(
                "{node} is not in this {}-member cluster",
                self.members.len()
            )
        })
    }

    /// Runs `docker {command} {container}`.
    async fn docker(&self, node: Node, command: &'static [&'static str]) -> Result<()> {
        let id = self.member(node).id.clone();
        blocking(move || {
            let mut args = command.to_vec();
            args.push(&id);
            docker_ok(&args).map(drop)
        })
        .await
    }

    /// Creates the network and the members, and waits until they serve.
    fn create(size: usize, env: Vec<(String, String)>) -> Result<Cluster> {
        let image = image();
        check_image(&image)?;
        let network = unique_network_name();
        let mut args = vec!["network", "create", "--label", KIND_LABEL];
        let run_label = run_label();
        if let Some(label) = &run_label {
            args.extend(["--label", label.as_str()]);
        }
        args.push(&network);
        docker_ok(&args)?;
        // From here on, dropping `cluster` removes whatever was created.
        let mut cluster = Cluster {
            network,
            image,
            env,
            size,
            members: Vec::new(),
            generation: 1,
        };
        for index in 0..size {
            let container = cluster.run_member(Node(index))?;
            cluster.members.push(container);
        }
        for member in &cluster.members {
            wait_ready(&member.id, &cluster.image, 1)?;
        }
        Ok(cluster)
    }

    /// Starts one member on a free port (trying a few: another process may take a port
    /// between our check and Docker's bind).
    fn run_member(&self, node: Node) -> Result<Container> {
        let spec = self.spec();
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match spec.run(node, port) {
                Ok(id) => return Ok(Container { id, port }),
                Err(err) if err.0.contains("already allocated") || err.0.contains("in use") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// What every member of the cluster, as it is now, is started with.
    fn spec(&self) -> MemberSpec {
        MemberSpec {
            network: self.network.clone(),
            image: self.image.clone(),
            env: self.env.clone(),
            size: self.size,
            generation: self.generation,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.members.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(self.members.iter().map(|m| m.id.as_str()));
            let _ = docker(&args);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// What every member of one cluster is started with.
struct MemberSpec {
    /// The cluster's network.
    network: String,
    /// The image.
    image: String,
    /// Extra `ETCD_*` settings.
    env: Vec<(String, String)>,
    /// How many members the cluster has.
    size: usize,
    /// Which creation of the cluster (see [`Cluster::generation`]).
    generation: u32,
}

impl MemberSpec {
    /// `docker run`s one member publishing its client port on `port`; returns its id.
    fn run(&self, node: Node, port: u16) -> Result<String> {
        let name = node.name();
        let initial_cluster = (0..self.size)
            .map(|i| format!("n{i}=http://n{i}:2380"))
            .collect::<Vec<_>>()
            .join(",");
        let settings = [
            ("ETCD_NAME", name.clone()),
            ("ETCD_DATA_DIR", "/tmp/muster-etcd".to_string()),
            ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379".to_string()),
            (
                "ETCD_ADVERTISE_CLIENT_URLS",
                format!("http://127.0.0.1:{port}"),
            ),
            ("ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380".to_string()),
            (
                "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                format!("http://{name}:2380"),
            ),
            ("ETCD_INITIAL_CLUSTER", initial_cluster),
            ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
            (
                "ETCD_INITIAL_CLUSTER_TOKEN",
                format!("{}-{}", self.network, self.generation),
            ),
        ];
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            format!("{}-{name}-{}", self.network, self.generation),
            "--hostname".into(),
            name.clone(),
            "--network".into(),
            self.network.clone(),
            "--network-alias".into(),
            name.clone(),
            "--label".into(),
            KIND_LABEL.into(),
            "-p".into(),
            format!("127.0.0.1:{port}:2379"),
        ];
        if let Some(label) = run_label() {
            args.push("--label".into());
            args.push(label);
        }
        let extra = self.env.iter().map(|(k, v)| (k.as_str(), v.clone()));
        for (key, value) in settings.into_iter().chain(extra) {
            args.push("-e".into());
            args.push(format!("{key}={value}"));
        }
        args.push(self.image.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker_ok(&args)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// `org.muster.test-run=<id>` when `cargo xtask test` set a run id.
fn run_label() -> Option<String> {
    std::env::var(RUN_ID_VAR)
        .ok()
        .map(|run_id| format!("{RUN_LABEL}={run_id}"))
}

/// A network name no other cluster (of this or another process) uses.
fn unique_network_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "muster-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| HarnessError(format!("the docker client task failed: {err}")))?
}

fn logs(id: &str) -> Result<String> {
    let out = docker_ok(&["logs", id])?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// How many times the member has logged that it serves clients (once per start).
fn ready_count(id: &str) -> Result<usize> {
    Ok(logs(id)?.matches(READY_LINE).count())
}

/// Waits until the member has logged its ready line `count` times.
fn wait_ready(id: &str, image: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let logs = logs(id)?;
        if logs.matches(READY_LINE).count() >= count {
            return Ok(());
        }
        if state(id)? != "running" {
            return Err(HarnessError(format!(
                "etcd member container from {image} exited before it was ready; its log:\n{}",
                tail(&logs, 30)
            )));
        }
        if Instant::now() >= deadline {
            return Err(HarnessError(format!(
                "etcd member container from {image} did not log {READY_LINE:?} within {READY_TIMEOUT:?} (a member needs a quorum of its cluster running); its log:\n{}",
                tail(&logs, 30)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The container's state: `running`, `paused`, `exited`, ...
fn state(id: &str) -> Result<String> {
    let out = docker_ok(&["inspect", "--format", "{{.State.Status}}", id])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running member's own id and the leader it knows (`0`: none), from `etcdctl endpoint
/// status` run inside its container; `None` when it is not running (stopped or paused).
fn member_status(id: &str) -> Result<Option<(u64, u64)>> {
    if state(id)? != "running" {
        return Ok(None);
    }
    let out = docker(&[
        "exec",
        "-e",
        "ETCDCTL_API=3",
        id,
        "etcdctl",
        "--endpoints=http://127.0.0.1:2379",
        "--dial-timeout=1s",
        "--command-timeout=2s",
        "endpoint",
        "status",
        "-w",
        "json",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(HarnessError(format!(
            "etcdctl endpoint status failed: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    match (
        json_number(&text, "member_id"),
        json_number(&text, "leader"),
    ) {
        (Some(me), Some(leader)) => Ok(Some((me, leader))),
        _ => Err(HarnessError(format!(
            "cannot read member_id and leader from etcdctl's output: {text}"
        ))),
    }
}

/// The body of `GET path` on a member's client port (etcd serves HTTP/1 there too).
fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let fail = |err: std::io::Error| HarnessError(format!("GET {path} on 127.0.0.1:{port}: {err}"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(fail)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(fail)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(HarnessError(format!(
            "GET {path} on 127.0.0.1:{port}: unexpected answer: {}",
            tail(&response, 5)
        ))),
    }
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
