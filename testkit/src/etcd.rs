//! A real etcd in a Docker container, one per test (or one shared by the tests running at
//! the same time: [`shared`]), removed when dropped.
//!
//! The image comes from `MUSTER_ETCD_IMAGE` (default: the official
//! `gcr.io/etcd-development/etcd:v3.5.17`); `cargo xtask test` sets it, pulling the official
//! image or building `muster-etcd:local` from Debian's etcd where no registry is reachable.
//! etcd is configured through `ETCD_*` environment variables, not arguments, so the same
//! code runs images whose entrypoint is etcd (ours) and images whose command is etcd (the
//! official one).
//!
//! The container is started with testcontainers and is ready when etcd logs "ready to serve
//! client requests" (see [`docker`](crate::docker)). It listens on a fixed host port on
//! 127.0.0.1 chosen when it starts, so it keeps its endpoint across [`Etcd::stop`] /
//! [`Etcd::restart`]. The methods block the calling thread until Docker is done, as a
//! command would.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use muster_etcd_backend::{EtcdConfig, EtcdStore};

use crate::docker::{self, block_on, free_port, port_taken, EtcdContainer, Spec};
use crate::error::{Error, Result};

pub use crate::docker::image;

/// What a role created by [`Etcd::add_user`] may do on a grant's keys: etcd's permission
/// types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `read`: ranges and watches.
    Read,
    /// `write`: puts and deletes (a transaction's compares need read too).
    Write,
    /// `readwrite`.
    ReadWrite,
}

/// The keys a grant of [`Etcd::add_user`] covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys<'a> {
    /// Every key under this prefix (`--prefix=true`).
    Prefix(&'a str),
    /// This one key (`--prefix=false`).
    Exact(&'a str),
}

/// A running single-node etcd in a container. Dropping it removes the container.
#[derive(Debug)]
pub struct Etcd {
    /// The container.
    container: EtcdContainer,
    /// The host port mapped to etcd's client port 2379.
    port: u16,
    /// The client TLS settings when etcd serves TLS ([`Etcd::start_tls`]).
    tls: Option<muster_etcd_backend::TlsConfig>,
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
        Etcd::start_spec(env, None)
    }

    /// Starts etcd serving TLS only (`https://`) with `certs`' server certificate, and
    /// requiring a client certificate signed by `certs`' CA (`--client-cert-auth`), plus
    /// `env` as in [`start_with`](Self::start_with). The files are copied into the
    /// container. [`config`](Self::config) carries the client certificate.
    pub fn start_tls(certs: &crate::tls::Certs, env: &[(&str, &str)]) -> Result<Etcd> {
        Etcd::start_spec(env, Some(certs))
    }

    fn start_spec(env: &[(&str, &str)], certs: Option<&crate::tls::Certs>) -> Result<Etcd> {
        let dir = crate::tls::CONTAINER_DIR;
        let mut extra: Vec<(String, String)> = Vec::new();
        let scheme = if certs.is_some() { "https" } else { "http" };
        if certs.is_some() {
            extra.extend([
                ("ETCD_CERT_FILE".to_string(), format!("{dir}/server.pem")),
                ("ETCD_KEY_FILE".to_string(), format!("{dir}/server-key.pem")),
                ("ETCD_TRUSTED_CA_FILE".to_string(), format!("{dir}/ca.pem")),
                ("ETCD_CLIENT_CERT_AUTH".to_string(), "true".to_string()),
            ]);
        }
        extra.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let files = certs.map(|c| c.server_files()).unwrap_or_default();
        let tls = certs.map(|c| c.client_tls());
        block_on(async move {
            let image = docker::image();
            let listen = format!("{scheme}://0.0.0.0:2379");
            let advertise = format!("{scheme}://127.0.0.1:2379");
            let settings = [
                ("ETCD_NAME", "muster-test"),
                ("ETCD_DATA_DIR", "/tmp/muster-etcd"),
                ("ETCD_LISTEN_CLIENT_URLS", listen.as_str()),
                ("ETCD_ADVERTISE_CLIENT_URLS", advertise.as_str()),
                ("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:2380"),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:2380"),
                ("ETCD_INITIAL_CLUSTER", "muster-test=http://127.0.0.1:2380"),
            ];
            let env = settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(extra)
                .collect();
            let spec = Spec {
                image,
                name: docker::unique_name("etcd"),
                kind: "etcd",
                network: None,
                hostname: None,
                env,
                hint: "",
                files,
            };
            // A free port can be taken by someone else before Docker binds it: try a few.
            let mut attempts = 0;
            loop {
                let port = free_port()?;
                match EtcdContainer::start(spec.clone(), port).await {
                    Ok(container) => {
                        return Ok(Etcd {
                            container,
                            port,
                            tls,
                        })
                    }
                    Err(err) if port_taken(&err) && attempts < 4 => attempts += 1,
                    Err(err) => return Err(err),
                }
            }
        })
    }

    /// etcd's client URL on this host, e.g. `http://127.0.0.1:41234` (`https://` when it
    /// serves TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The host port of etcd's client URL.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The container id.
    pub fn id(&self) -> &str {
        self.container.id()
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        self.container.image()
    }

    /// etcd's process id on this host (as the engine reports it), for its CPU time; `None`
    /// when the engine does not say (Docker on another machine, a stopped container).
    pub fn pid(&self) -> Option<u32> {
        block_on(self.container.pid())
    }

    /// Store settings for this etcd, with timeouts short enough for tests (and the client
    /// certificate when it serves TLS).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            tls: self.tls.clone(),
            ..test_config(vec![self.endpoint()])
        }
    }

    /// A new client of this etcd (its own connections), as a separate process would have.
    /// Panics when it cannot connect.
    pub async fn store(&self) -> EtcdStore {
        connect(self.config()).await
    }

    /// Turns etcd's authentication on, as `etcdctl user add root`, `role add root`,
    /// `user grant-role root root`, `auth enable` would: afterwards every request needs the
    /// user `root` with `password` (or, on a TLS etcd with `--client-cert-auth`, a client
    /// certificate whose common name is `root`). Blocks for a few round trips.
    pub fn enable_auth(&self, password: &str) -> Result<()> {
        let password = password.to_owned();
        let fail = self.admin_failure("enabling auth");
        let connecting = self.admin_client(None);
        block_on(async move {
            let mut client = connecting.await.map_err(|e| fail("connect", e))?;
            client
                .user_add("root", password, None)
                .await
                .map_err(|e| fail("user add root", e))?;
            client
                .role_add("root")
                .await
                .map_err(|e| fail("role add root", e))?;
            client
                .user_grant_role("root", "root")
                .await
                .map_err(|e| fail("user grant-role root root", e))?;
            client
                .auth_enable()
                .await
                .map_err(|e| fail("auth enable", e))?;
            Ok(())
        })
    }

    /// Makes etcd forget every token it has issued to `user`, as `etcdctl user passwd USER`
    /// with the same password would: a client holding one is refused ("invalid auth
    /// token") until it authenticates again. Authenticated as `root` with
    /// `root_password`. Blocks for a few round trips.
    pub fn invalidate_tokens(&self, root_password: &str, user: &str, password: &str) -> Result<()> {
        let (user, password) = (user.to_owned(), password.to_owned());
        let fail = self.admin_failure("invalidating tokens");
        let connecting = self.admin_client(Some(("root", root_password)));
        block_on(async move {
            let mut client = connecting.await.map_err(|e| fail("connect", e))?;
            client
                .user_change_password(user, password)
                .await
                .map_err(|e| fail("user passwd", e))?;
            Ok(())
        })
    }

    /// Adds the etcd user `user` with `password` and a role of the same name holding `access`
    /// on exactly the keys under `prefix`, and nothing else: [`add_user`](Self::add_user)
    /// with one grant.
    pub fn add_prefix_user(
        &self,
        root_password: &str,
        user: &str,
        password: &str,
        access: Access,
        prefix: &str,
    ) -> Result<()> {
        self.add_user(
            root_password,
            user,
            password,
            &[(access, Keys::Prefix(prefix))],
        )
    }

    /// Adds the etcd user `user` with `password` and a role of the same name holding
    /// exactly `grants`, and nothing else. As `etcdctl role add USER`,
    /// `role grant-permission USER [--prefix=true] ACCESS KEY` (per grant), `user add USER`,
    /// `user grant-role USER USER` would, authenticated as `root` with `root_password` (see
    /// [`enable_auth`](Self::enable_auth)). Blocks for a few round trips.
    pub fn add_user(
        &self,
        root_password: &str,
        user: &str,
        password: &str,
        grants: &[(Access, Keys<'_>)],
    ) -> Result<()> {
        let (user, password) = (user.to_owned(), password.to_owned());
        let grants: Vec<(Access, String, bool)> = grants
            .iter()
            .map(|(access, keys)| match keys {
                Keys::Prefix(prefix) => (*access, prefix.to_string(), true),
                Keys::Exact(key) => (*access, key.to_string(), false),
            })
            .collect();
        let fail = self.admin_failure("adding a least-privilege user");
        let connecting = self.admin_client(Some(("root", root_password)));
        block_on(async move {
            let mut client = connecting.await.map_err(|e| fail("connect as root", e))?;
            client
                .role_add(user.as_str())
                .await
                .map_err(|e| fail("role add", e))?;
            for (access, key, prefix) in grants {
                let mut permission = match access {
                    Access::Read => etcd_client::Permission::read(key),
                    Access::Write => etcd_client::Permission::write(key),
                    Access::ReadWrite => etcd_client::Permission::read_write(key),
                };
                if prefix {
                    permission = permission.with_prefix();
                }
                client
                    .role_grant_permission(user.as_str(), permission)
                    .await
                    .map_err(|e| fail("role grant-permission", e))?;
            }
            client
                .user_add(user.as_str(), password, None)
                .await
                .map_err(|e| fail("user add", e))?;
            client
                .user_grant_role(user.as_str(), user.as_str())
                .await
                .map_err(|e| fail("user grant-role", e))?;
            Ok(())
        })
    }

    /// A failure of an administrative step, naming etcd and the task; never a password
    /// (etcd-client's errors carry none).
    fn admin_failure(&self, task: &str) -> impl Fn(&str, etcd_client::Error) -> Error {
        let what = format!("{task} on etcd at {}", self.endpoint());
        move |step: &str, err: etcd_client::Error| Error::Etcd {
            what: format!("{what} ({step})"),
            message: err.to_string(),
        }
    }

    /// An etcd-client connection for administrative steps (with this etcd's client
    /// certificate when it serves TLS), as `user` and password if given.
    fn admin_client(
        &self,
        user: Option<(&str, &str)>,
    ) -> impl std::future::Future<
        Output = std::result::Result<etcd_client::Client, etcd_client::Error>,
    > + Send
           + 'static {
        let endpoint = self.endpoint();
        let tls = self.tls.clone();
        let user = user.map(|(name, password)| (name.to_owned(), password.to_owned()));
        async move {
            let mut options = etcd_client::ConnectOptions::new();
            if let Some(tls) = &tls {
                let pem = |pem: &Option<muster_etcd_backend::Pem>| match pem {
                    Some(muster_etcd_backend::Pem::File(path)) => {
                        std::fs::read(path).unwrap_or_default()
                    }
                    Some(muster_etcd_backend::Pem::Bytes(bytes)) => bytes.clone(),
                    None => Vec::new(),
                };
                options = options.with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(pem(&tls.ca)))
                        .identity(etcd_client::Identity::from_pem(
                            pem(&tls.cert),
                            pem(&tls.key),
                        )),
                );
            }
            if let Some((name, password)) = user {
                options = options.with_user(name, password);
            }
            etcd_client::Client::connect([endpoint.as_str()], Some(options)).await
        }
    }

    /// Stops etcd (SIGTERM, then SIGKILL after 10 s). Its data survives for [`restart`](Self::restart).
    pub fn stop(&self) -> Result<()> {
        block_on(self.container.stop())
    }

    /// Kills etcd at once (SIGKILL), like a crash. Its data survives for [`restart`](Self::restart).
    pub fn kill(&self) -> Result<()> {
        block_on(self.container.kill())
    }

    /// Starts a stopped or killed etcd again on the same port and waits until it serves.
    pub fn restart(&self) -> Result<()> {
        block_on(self.container.restart())
    }

    /// Freezes etcd (SIGSTOP on every process): it keeps its connections but answers nothing,
    /// like a hung server.
    pub fn pause(&self) -> Result<()> {
        block_on(self.container.pause())
    }

    /// Thaws a paused etcd.
    pub fn unpause(&self) -> Result<()> {
        block_on(self.container.unpause())
    }

    /// One scrape of etcd's Prometheus `/metrics` (served on the client port). Blocks for
    /// one local HTTP request.
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::scrape(&self.endpoint())
    }

    /// etcd's log so far (stdout and stderr; etcd logs to stderr).
    pub fn logs(&self) -> Result<String> {
        block_on(self.container.logs())
    }
}

/// The etcd the tests running right now share; started by the first, removed with the last.
/// Panics with the kit's instructions when it cannot be started.
///
/// Tests share it through distinct prefixes. Nothing is left behind: when no test holds it
/// the container is removed, and a later test starts a new one. (A `static` holding the
/// container itself would never be dropped, so the container would outlive the run.)
pub fn shared() -> Arc<Etcd> {
    static SHARED: Mutex<Weak<Etcd>> = Mutex::new(Weak::new());
    // A test that panicked while starting etcd poisons nothing worth keeping.
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(etcd) = shared.upgrade() {
        return etcd;
    }
    let etcd = Arc::new(Etcd::start().unwrap_or_else(|err| panic!("{err}")));
    *shared = Arc::downgrade(&etcd);
    etcd
}

/// Store settings for `endpoints` with timeouts short enough for tests.
pub(crate) fn test_config(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..EtcdConfig::new(endpoints)
    }
}

/// A new client (its own connections), as a separate process would have. Panics naming the
/// endpoints when it cannot connect.
pub async fn connect(config: EtcdConfig) -> EtcdStore {
    let endpoints = config.endpoints.join(", ");
    EtcdStore::connect(config)
        .await
        .unwrap_or_else(|err| panic!("connect to {endpoints}: {err}"))
}

/// One scrape of etcd's `/metrics`: every sample, by its name with labels as etcd wrote
/// them (Prometheus sorts labels by name).
///
/// ```no_run
/// # let etcd = muster_testkit::etcd::Etcd::start().unwrap();
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
        let fail = |what: String| Error::Etcd {
            what: format!("etcd's /metrics at {endpoint}"),
            message: what,
        };
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
