//! The etcd under test: a fresh container per section (so no section inherits another's
//! leases or history), its Prometheus `/metrics` (served on the client port), and the CPU
//! time its process has used.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use muster_etcd_backend::EtcdConfig;
use muster_testkit::etcd::{Etcd, Metrics};

/// A running etcd container.
pub struct Node {
    /// The container; dropping it removes the container.
    etcd: Etcd,
    /// etcd's process id on this host, for its CPU time (`None` if Docker runs elsewhere).
    pid: Option<u32>,
}

impl Node {
    /// Starts a single-node etcd from `MUSTER_ETCD_IMAGE` and waits until it serves.
    pub async fn start() -> Result<Node> {
        let etcd = tokio::task::spawn_blocking(Etcd::start)
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let pid = etcd
            .pid()
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        Ok(Node { etcd, pid })
    }

    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// Store settings as a user would write them: the endpoint and the defaults.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig::new([self.endpoint()])
    }

    /// etcd's metrics now (it must report raft proposals: every figure here relies on them).
    pub async fn metrics(&self) -> Result<Metrics> {
        let endpoint = self.endpoint();
        let metrics = tokio::task::spawn_blocking(move || Metrics::scrape(&endpoint))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if !metrics.has(PROPOSALS) {
            bail!("etcd's /metrics at {} has no {PROPOSALS}", self.endpoint());
        }
        Ok(metrics)
    }

    /// etcd's process id on this host, if Docker runs here.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Raft proposals committed: every write that goes through consensus.
pub const PROPOSALS: &str = "etcd_server_proposals_committed_total";
/// Lease renewals the leader has seen.
pub const RENEWED: &str = "etcd_debugging_lease_renewed_total";
/// Leases revoked, by a call or by expiry.
pub const REVOKED: &str = "etcd_debugging_lease_revoked_total";

/// CPU (user + system) a process has used, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident memory of a process, from `/proc/PID/status`, in bytes.
pub fn process_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU use of a process between two points, as a fraction of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    start: Option<Duration>,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            start: pid.and_then(process_cpu),
            at: Instant::now(),
        }
    }

    /// Cores used on average since `start` (1.0 = one core busy).
    pub fn cores(&self) -> Option<f64> {
        let now = self.pid.and_then(process_cpu)?;
        let used = now.checked_sub(self.start?)?;
        Some(used.as_secs_f64() / self.at.elapsed().as_secs_f64())
    }
}

impl Node {
    pub fn cpu_meter(&self) -> CpuMeter {
        CpuMeter::start(self.pid)
    }
}

/// CPU meter for this process.
pub fn own_cpu_meter() -> CpuMeter {
    CpuMeter::start(Some(std::process::id()))
}
