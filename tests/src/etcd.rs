//! A real etcd in a Docker container, one per test, removed when dropped.
//!
//! The image comes from `MUSTER_ETCD_IMAGE` (default: the official
//! `gcr.io/etcd-development/etcd:v3.5.17`); `cargo xtask test` sets it, pulling the official
//! image or building `muster-etcd:local` from Debian's etcd where no registry is reachable.
//! etcd is configured through `ETCD_*` environment variables, not arguments, so the same
//! code runs images whose entrypoint is etcd (ours) and images whose command is etcd (the
//! official one).
//!
//! The container is driven with the `docker` command-line client rather than a Docker API
//! library: the `testcontainers` crate (through bollard) speaks a fixed, recent Docker API
//! version and does not negotiate, so it cannot talk to older engines such as Debian 12's
//! Docker 20.10 (API 1.41), which is what CI machines here run. The CLI negotiates.
//!
//! Each container listens on a fixed host port on 127.0.0.1 chosen when it starts, so it
//! keeps its endpoint across [`Etcd::stop`] / [`Etcd::restart`].

use std::fmt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use muster_etcd_backend::EtcdConfig;

/// The variable naming the etcd image.
pub const IMAGE_VAR: &str = "MUSTER_ETCD_IMAGE";
/// The image used when [`IMAGE_VAR`] is unset.
pub const DEFAULT_IMAGE: &str = "gcr.io/etcd-development/etcd:v3.5.17";
/// The variable `cargo xtask test` sets so that it can remove containers a killed test left.
pub(crate) const RUN_ID_VAR: &str = "MUSTER_TEST_RUN_ID";
/// The label carrying that run id.
pub(crate) const RUN_LABEL: &str = "org.muster.test-run";
/// The line etcd logs once it serves clients.
pub(crate) const READY_LINE: &str = "ready to serve client requests";
/// How long etcd may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an etcd container could not be had; the message says what to do.
#[derive(Debug)]
pub struct HarnessError(pub(crate) String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

type Result<T> = std::result::Result<T, HarnessError>;

/// A running single-node etcd in a container. Dropping it removes the container.
#[derive(Debug)]
pub struct Etcd {
    /// The container id.
    id: String,
    /// The image it runs.
    image: String,
    /// The host port mapped to etcd's client port 2379.
    port: u16,
}

impl Etcd {
    /// Starts etcd from the image in `MUSTER_ETCD_IMAGE` and waits until it serves clients.
    ///
    /// Blocks for a second or two. Fails with instructions when Docker does not answer or
    /// the image is missing.
    pub fn start() -> Result<Etcd> {
        Etcd::start_with(&[])
    }

    /// Like [`start`](Self::start), with extra etcd settings as `ETCD_*` environment
    /// variables, e.g. `("ETCD_GRPC_KEEPALIVE_MIN_TIME", "1s")`.
    pub fn start_with(env: &[(&str, &str)]) -> Result<Etcd> {
        let image = image();
        check_image(&image)?;
        // A free port can be taken by someone else before Docker binds it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            match run_container(&image, port, env) {
                Ok(id) => {
                    let etcd = Etcd {
                        id,
                        image: image.clone(),
                        port,
                    };
                    etcd.wait_ready(1)?;
                    return Ok(etcd);
                }
                Err(err) if err.0.contains("already allocated") || err.0.contains("in use") => {
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// etcd's client URL on this host, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Store settings for this etcd, with timeouts short enough for tests.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..EtcdConfig::new([self.endpoint()])
        }
    }

    /// Stops etcd (SIGTERM, then SIGKILL after 10 s). Its data survives for [`restart`](Self::restart).
    pub fn stop(&self) -> Result<()> {
        docker_ok(&["stop", &self.id]).map(drop)
    }

    /// Kills etcd at once (SIGKILL), like a crash. Its data survives for [`restart`](Self::restart).
    pub fn kill(&self) -> Result<()> {
        docker_ok(&["kill", &self.id]).map(drop)
    }

    /// Starts a stopped or killed etcd again on the same port and waits until it serves.
    pub fn restart(&self) -> Result<()> {
        let ready_before = self.ready_count()?;
        docker_ok(&["start", &self.id])?;
        self.wait_ready(ready_before + 1)
    }

    /// Freezes etcd (SIGSTOP on every process): it keeps its connections but answers nothing,
    /// like a hung server.
    pub fn pause(&self) -> Result<()> {
        docker_ok(&["pause", &self.id]).map(drop)
    }

    /// Thaws a paused etcd.
    pub fn unpause(&self) -> Result<()> {
        docker_ok(&["unpause", &self.id]).map(drop)
    }

    /// One scrape of etcd's Prometheus `/metrics` (served on the client port). Blocks for
    /// one local HTTP request.
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::scrape(&self.endpoint())
    }

    /// etcd's log so far (it logs to stderr).
    pub fn logs(&self) -> Result<String> {
        let out = docker_ok(&["logs", &self.id])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// How many times etcd has logged that it is ready (once per start).
    fn ready_count(&self) -> Result<usize> {
        Ok(self.logs()?.matches(READY_LINE).count())
    }

    /// Waits until etcd has logged its ready line `count` times.
    fn wait_ready(&self, count: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let logs = self.logs()?;
            if logs.matches(READY_LINE).count() >= count {
                return Ok(());
            }
            let running = docker_ok(&["inspect", "--format", "{{.State.Running}}", &self.id])?;
            if String::from_utf8_lossy(&running.stdout).trim() != "true" {
                return Err(HarnessError(format!(
                    "etcd container from {} exited before it was ready; its log:\n{}",
                    self.image,
                    tail(&logs, 30)
                )));
            }
            if Instant::now() >= deadline {
                return Err(HarnessError(format!(
                    "etcd container from {} did not log {READY_LINE:?} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.image,
                    tail(&logs, 30)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // A paused container cannot be removed until it is unpaused... except with -f, which
        // kills it first. -v drops its anonymous volumes.
        let _ = docker(&["rm", "-f", "-v", &self.id]);
    }
}

/// One scrape of etcd's `/metrics`: every sample, by its name with labels as etcd wrote
/// them (Prometheus sorts labels by name).
///
/// ```no_run
/// # let etcd = muster_tests::etcd::Etcd::start().unwrap();
/// let metrics = etcd.metrics().unwrap();
/// let writes = metrics.get("etcd_server_proposals_committed_total");
/// let streams = metrics.sum("grpc_server_started_total", &[("grpc_method", "LeaseKeepAlive")]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: std::collections::BTreeMap<String, f64>,
}

impl Metrics {
    /// Reads `{endpoint}/metrics` over plain HTTP/1.0 (no client library needed).
    pub fn scrape(endpoint: &str) -> Result<Metrics> {
        use std::io::{Read, Write};
        let fail = |what: String| HarnessError(format!("etcd's /metrics at {endpoint}: {what}"));
        let host = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| fail("not an http:// endpoint".into()))?;
        let mut stream =
            std::net::TcpStream::connect(host).map_err(|e| fail(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| fail(e.to_string()))?;
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n"
        )
        .map_err(|e| fail(format!("request: {e}")))?;
        let mut body = String::new();
        stream
            .read_to_string(&mut body)
            .map_err(|e| fail(format!("response: {e}")))?;
        let status = body.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.") || !status.contains(" 200") {
            return Err(fail(format!("answered {status:?}")));
        }
        let mut metrics = Metrics::default();
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            // `name{labels} value`: the value follows the last space (label values may hold
            // spaces).
            if let Some((sample, value)) = line.rsplit_once(' ') {
                if let Ok(value) = value.parse() {
                    metrics.samples.insert(sample.to_string(), value);
                }
            }
        }
        Ok(metrics)
    }

    /// An unlabelled sample's value; `0` if etcd does not report it.
    pub fn get(&self, name: &str) -> f64 {
        self.samples.get(name).copied().unwrap_or(0.0)
    }

    /// Whether an unlabelled sample is reported at all.
    pub fn has(&self, name: &str) -> bool {
        self.samples.contains_key(name)
    }

    /// The sum of the samples of metric `name` whose labels include every `(label, value)`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(sample, _)| {
                let (metric, rest) = sample.split_once('{').unwrap_or((sample, ""));
                metric == name
                    && labels
                        .iter()
                        .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// The label `label` of the first sample of metric `name`, e.g. the `server_version` of
    /// `etcd_server_version`.
    pub fn label(&self, name: &str, label: &str) -> Option<String> {
        let prefix = format!("{name}{{");
        let needle = format!("{label}=\"");
        self.samples.keys().find_map(|sample| {
            let rest = sample.strip_prefix(&prefix)?;
            let value = &rest[rest.find(&needle)? + needle.len()..];
            value.split('"').next().map(str::to_string)
        })
    }
}

/// The image to run: `MUSTER_ETCD_IMAGE`, or the official one.
pub fn image() -> String {
    std::env::var(IMAGE_VAR)
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

pub(crate) fn check_image(image: &str) -> Result<()> {
    let out = docker(&["image", "inspect", "--format", "{{.Id}}", image])?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Cannot connect")
        || stderr.contains("daemon") && !stderr.contains("No such image")
    {
        return Err(HarnessError(format!(
            "the Docker daemon does not answer ({}): the etcd tests run etcd in Docker; start the daemon, or run `cargo xtask test`, which says what is missing",
            stderr.trim()
        )));
    }
    Err(HarnessError(format!(
        "etcd image {image} not found: run `cargo xtask test`, which builds one, or set {IMAGE_VAR}"
    )))
}

fn run_container(image: &str, port: u16, extra_env: &[(&str, &str)]) -> Result<String> {
    let publish = format!("127.0.0.1:{port}:2379");
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--label".into(),
        "org.muster.test=etcd".into(),
        "-p".into(),
        publish,
    ];
    if let Ok(run_id) = std::env::var(RUN_ID_VAR) {
        args.push("--label".into());
        args.push(format!("{RUN_LABEL}={run_id}"));
    }
    let env = [
        ("ETCD_NAME", "muster-test"),
        ("ETCD_DATA_DIR", "/tmp/muster-etcd"),
        ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
        ("ETCD_ADVERTISE_CLIENT_URLS", "http://127.0.0.1:2379"),
        ("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:2380"),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:2380"),
        ("ETCD_INITIAL_CLUSTER", "muster-test=http://127.0.0.1:2380"),
    ];
    for (key, value) in env.iter().chain(extra_env) {
        args.push("-e".into());
        args.push(format!("{key}={value}"));
    }
    args.push(image.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_ok(&args)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|err| HarnessError(format!("cannot find a free port on 127.0.0.1: {err}")))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| HarnessError(format!("cannot find a free port on 127.0.0.1: {err}")))
}

/// Runs `docker args` and returns its output, whatever the exit status.
pub(crate) fn docker(args: &[&str]) -> Result<Output> {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            HarnessError(format!(
                "cannot run `docker` ({err}): the etcd tests run etcd in Docker; install Docker and start its daemon, or run `cargo xtask test`, which says what is missing"
            ))
        })
}

/// Runs `docker args`; fails unless it exits with 0.
pub(crate) fn docker_ok(args: &[&str]) -> Result<Output> {
    let out = docker(args)?;
    if !out.status.success() {
        return Err(HarnessError(format!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
