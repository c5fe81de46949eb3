//! The Docker engine, through testcontainers: one etcd container ([`EtcdContainer`], crate
//! private) started with testcontainers' `GenericImage` and `AsyncRunner`, ready when etcd
//! logs its ready line, removed when dropped; and testcontainers' own Docker client (bollard)
//! for what testcontainers has no call for: SIGKILL, networks, the engine's version.
//!
//! Every Docker call and every container handle lives on a runtime of the kit's own (two
//! threads), not on the test's: a test's runtime ends with the test, while one etcd may be
//! shared by the tests running at the same time, each with its runtime. The synchronous API
//! ([`Etcd`](crate::etcd::Etcd)) blocks the calling thread until the call is done, as the
//! `docker` client did; the asynchronous one ([`Cluster`](crate::cluster::Cluster)) awaits
//! it, so a test's masters and workers keep running while a fault is injected.
//!
//! No docker command-line client is run here.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::query_parameters::{KillContainerOptions, LogsOptions, RemoveContainerOptions};
use futures::StreamExt;
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::error::{BoxError, Error, Result};

pub use bollard::Docker;

/// The variable naming the etcd image.
pub const IMAGE_VAR: &str = "MUSTER_ETCD_IMAGE";
/// The image used when [`IMAGE_VAR`] is unset.
pub const DEFAULT_IMAGE: &str = "gcr.io/etcd-development/etcd:v3.5.17";
/// The variable `cargo xtask test` sets so that it can remove what a killed test run left.
pub const RUN_ID_VAR: &str = "MUSTER_TEST_RUN_ID";
/// The label carrying that run id, on every container and network the kit creates.
pub const RUN_LABEL: &str = "org.muster.test-run";
/// The label saying what the kit created (`etcd`, `etcd-cluster`).
pub const KIND_LABEL: &str = "org.muster.test";
/// The line etcd logs once it serves clients.
pub const READY_LINE: &str = "ready to serve client requests";
/// How long etcd may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// etcd's client port inside a container.
const CLIENT_PORT: u16 = 2379;

/// The image to run: `MUSTER_ETCD_IMAGE`, or the official one.
pub fn image() -> String {
    std::env::var(IMAGE_VAR)
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

/// What the engine is, and which API version the client speaks.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The engine's version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// The newest API version the engine speaks, e.g. `1.41`.
    pub api_version: String,
    /// The API version bollard announces, e.g. `1.53`.
    pub client_api_version: String,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Docker engine {} (API {}), client bollard (API {})",
            self.version, self.api_version, self.client_api_version
        )
    }
}

/// testcontainers' Docker client (bollard), for calls testcontainers has none for.
pub async fn client() -> Result<Docker> {
    testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|err| Error::DockerUnavailable {
            message: err.to_string(),
        })
}

/// Asks the engine what it is, through the client every container call goes through: fails
/// with [`Error::DockerUnavailable`] when no engine answers, and with
/// [`Error::EngineRejectsClient`] when it refuses the client's API version.
pub async fn engine() -> Result<Engine> {
    on_kit(async {
        let docker = client().await?;
        let client_api_version = docker.client_version().to_string();
        let version = docker.version().await.map_err(|err| {
            match classify("asking the Docker engine its version", err) {
                Error::EngineRejectsClient { message, .. } => Error::EngineRejectsClient {
                    engine: "on this machine (`docker version` names it)".into(),
                    client: format!("API {client_api_version}"),
                    message,
                },
                other => other,
            }
        })?;
        Ok(Engine {
            version: version.version.unwrap_or_else(|| "?".into()),
            api_version: version.api_version.unwrap_or_else(|| "?".into()),
            client_api_version,
        })
    })
    .await
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> Result<u16> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    port.map(|addr| addr.port()).map_err(|err| Error::Docker {
        what: "finding a free port on 127.0.0.1".into(),
        source: err.into(),
    })
}

/// `org.muster.test-run=<id>` when `cargo xtask test` set a run id.
pub(crate) fn run_label() -> Option<(String, String)> {
    std::env::var(RUN_ID_VAR)
        .ok()
        .filter(|id| !id.is_empty())
        .map(|id| (RUN_LABEL.to_string(), id))
}

/// A name no other container or network (of this or another process) uses.
pub(crate) fn unique_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "muster-{kind}-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

thread_local! {
    /// Whether this thread is one of the kit runtime's.
    static ON_KIT: Cell<bool> = const { Cell::new(false) };
}

/// The kit's runtime (see the module docs).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("muster-testkit-docker")
            .on_thread_start(|| ON_KIT.with(|on| on.set(true)))
            .enable_all()
            .build()
            .expect("build the test kit's runtime")
    })
}

/// Runs `future` on the kit's runtime and waits for it without blocking the caller's.
pub(crate) async fn on_kit<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    join(runtime().spawn(future).await)
}

/// Runs `future` on the kit's runtime and blocks the calling thread until it is done.
pub(crate) fn block_on<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    join(futures::executor::block_on(runtime().spawn(future)))
}

/// Runs `future` on the kit's runtime from a `Drop`: blocks until it is done, except on the
/// kit's own threads (where blocking could wait for itself), where it only starts it.
pub(crate) fn finish_on_drop(future: impl Future<Output = ()> + Send + 'static) {
    if ON_KIT.with(Cell::get) {
        runtime().spawn(future);
    } else {
        block_on(future);
    }
}

fn join<T>(result: std::result::Result<T, tokio::task::JoinError>) -> T {
    match result {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("a call on the test kit's runtime was cancelled: {err}"),
    }
}

/// Turns a client error into the kit's: a refused API version and an engine that does not
/// answer get errors of their own, with instructions.
pub(crate) fn classify(what: &str, err: impl Into<BoxError>) -> Error {
    let err = err.into();
    let text = err.to_string();
    if text.contains("is too new") || text.contains("is too old") {
        return Error::EngineRejectsClient {
            engine: "on this machine (`docker version` names it)".into(),
            client: "as pinned".into(),
            message: text,
        };
    }
    let unreachable = [
        "No such file or directory",
        "Connection refused",
        "error trying to connect",
        "Permission denied",
        "client error (Connect)",
        "Socket not found",
    ];
    if unreachable.iter().any(|needle| text.contains(needle)) {
        return Error::DockerUnavailable { message: text };
    }
    Error::Docker {
        what: what.to_string(),
        source: err,
    }
}

/// Checks, once per process, that the engine answers and accepts the client; and, every
/// time, that `image` is there (a registry may not be reachable, so the kit never pulls).
async fn preflight(image: &str) -> Result<()> {
    static ENGINE_OK: AtomicBool = AtomicBool::new(false);
    if !ENGINE_OK.load(Ordering::Relaxed) {
        engine().await?;
        ENGINE_OK.store(true, Ordering::Relaxed);
    }
    let docker = client().await?;
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(Error::ImageMissing {
            image: image.to_string(),
        }),
        Err(err) => Err(classify(&format!("inspecting image {image}"), err)),
    }
}

/// How to start one etcd container.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// The image, `name[:tag]`.
    pub image: String,
    /// The container's name (unique; also its host name on `network`).
    pub name: String,
    /// What created it ([`KIND_LABEL`]'s value).
    pub kind: &'static str,
    /// The network to join, if not the default bridge.
    pub network: Option<String>,
    /// The host name inside the container.
    pub hostname: Option<String>,
    /// The `ETCD_*` settings.
    pub env: Vec<(String, String)>,
    /// What may explain a member that does not become ready.
    pub hint: &'static str,
    /// Files to copy into the container before it starts: path inside it, content.
    pub files: Vec<(String, Vec<u8>)>,
}

/// One etcd container: testcontainers' handle. Dropping it removes the container (with its
/// anonymous volumes), paused or not.
pub(crate) struct EtcdContainer {
    /// testcontainers' handle, shared with the calls running on the kit's runtime; `None`
    /// once removed.
    handle: Option<Arc<ContainerAsync<GenericImage>>>,
    /// The container id.
    id: String,
    /// The image it runs.
    image: String,
    /// What may explain a restart that does not become ready.
    hint: &'static str,
}

impl std::fmt::Debug for EtcdContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdContainer")
            .field("id", &self.id)
            .field("image", &self.image)
            .finish()
    }
}

impl EtcdContainer {
    /// Starts a container from `spec` with etcd's client port published on 127.0.0.1:`port`
    /// and waits until etcd logs its ready line. Runs on the kit's runtime.
    pub(crate) async fn start(spec: Spec, port: u16) -> Result<EtcdContainer> {
        preflight(&spec.image).await?;
        let (name, tag) = split_image(&spec.image);
        let mut request = GenericImage::new(name, tag)
            .with_exposed_port(ContainerPort::Tcp(CLIENT_PORT))
            .with_wait_for(WaitFor::message_on_either_std(READY_LINE))
            .with_container_name(spec.name.clone())
            .with_label(KIND_LABEL, spec.kind)
            .with_startup_timeout(READY_TIMEOUT)
            // A fixed host port, on loopback only: the endpoint survives stop and restart.
            .with_host_config_modifier(move |host| {
                let binding = bollard::models::PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(port.to_string()),
                };
                host.port_bindings = Some(HashMap::from([(
                    format!("{CLIENT_PORT}/tcp"),
                    Some(vec![binding]),
                )]));
                host.publish_all_ports = Some(false);
            });
        if let Some((key, value)) = run_label() {
            request = request.with_label(key, value);
        }
        if let Some(network) = &spec.network {
            request = request.with_network(network.clone());
        }
        if let Some(hostname) = &spec.hostname {
            request = request.with_hostname(hostname.clone());
        }
        for (key, value) in &spec.env {
            request = request.with_env_var(key.clone(), value.clone());
        }
        for (path, content) in &spec.files {
            // Readable by any user: the image may run etcd as a user of its own.
            let target = testcontainers::CopyTargetOptions::new(path.clone()).with_mode(0o644);
            request = request.with_copy_to(target, content.clone());
        }
        match request.start().await {
            Ok(container) => Ok(EtcdContainer {
                id: container.id().to_string(),
                handle: Some(Arc::new(container)),
                image: spec.image,
                hint: spec.hint,
            }),
            Err(err) => {
                // testcontainers removes a container that failed its wait, but not one that
                // was created and never started (a port taken meanwhile, a timeout).
                remove_by_name(&spec.name).await;
                Err(start_error(&spec, err))
            }
        }
    }

    /// The container id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The image it runs.
    pub(crate) fn image(&self) -> &str {
        &self.image
    }

    fn handle(&self) -> Arc<ContainerAsync<GenericImage>> {
        self.handle.clone().expect("the container is not removed")
    }

    /// Stops etcd (SIGTERM, then SIGKILL after Docker's 10 s); its data survives.
    pub(crate) fn stop(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (handle, what) = (self.handle(), format!("docker stop {}", self.id));
        async move { handle.stop().await.map_err(|err| classify(&what, err)) }
    }

    /// Kills etcd at once (SIGKILL), like a crash; its data survives.
    pub(crate) fn kill(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let id = self.id.clone();
        async move {
            let what = format!("docker kill {id}");
            let options = KillContainerOptions {
                signal: "SIGKILL".into(),
            };
            client()
                .await?
                .kill_container(&id, Some(options))
                .await
                .map_err(|err| classify(&what, err))
        }
    }

    /// Freezes etcd (SIGSTOP on every process): it keeps its connections, answers nothing.
    pub(crate) fn pause(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (handle, what) = (self.handle(), format!("docker pause {}", self.id));
        async move { handle.pause().await.map_err(|err| classify(&what, err)) }
    }

    /// Thaws a paused etcd.
    pub(crate) fn unpause(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (handle, what) = (self.handle(), format!("docker unpause {}", self.id));
        async move { handle.unpause().await.map_err(|err| classify(&what, err)) }
    }

    /// Starts a stopped or killed etcd again (same port, same data) and waits until it logs
    /// its ready line once more.
    pub(crate) fn restart(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (handle, id, image, hint) = (
            self.handle(),
            self.id.clone(),
            self.image.clone(),
            self.hint,
        );
        async move {
            let before = logs(&id).await?.matches(READY_LINE).count();
            let what = format!("docker start {id}");
            handle.start().await.map_err(|err| classify(&what, err))?;
            wait_ready(&id, &image, before + 1, hint).await
        }
    }

    /// etcd's log so far (stdout and stderr).
    pub(crate) fn logs(&self) -> impl Future<Output = Result<String>> + Send + 'static {
        let id = self.id.clone();
        async move { logs(&id).await }
    }

    /// Whether the container runs (and is not paused).
    pub(crate) fn running(&self) -> impl Future<Output = Result<bool>> + Send + 'static {
        let id = self.id.clone();
        async move {
            let what = format!("docker inspect {id}");
            let state = client()
                .await?
                .inspect_container(&id, None)
                .await
                .map_err(|err| classify(&what, err))?
                .state
                .unwrap_or_default();
            Ok(state.running == Some(true) && state.paused != Some(true))
        }
    }

    /// The container's main process id on the engine's host, if it runs.
    pub(crate) fn pid(&self) -> impl Future<Output = Option<u32>> + Send + 'static {
        let id = self.id.clone();
        async move {
            let inspect = client()
                .await
                .ok()?
                .inspect_container(&id, None)
                .await
                .ok()?;
            let pid = inspect.state?.pid?;
            u32::try_from(pid).ok().filter(|pid| *pid > 0)
        }
    }

    /// Runs `command` in the container; returns its exit code, stdout and stderr.
    pub(crate) fn exec(
        &self,
        command: Vec<String>,
    ) -> impl Future<Output = Result<(i64, String, String)>> + Send + 'static {
        let id = self.id.clone();
        async move {
            use bollard::exec::{CreateExecOptions, StartExecResults};
            let what = format!("docker exec {id} {}", command.join(" "));
            let fail = |err: bollard::errors::Error| classify(&what, err);
            let docker = client().await?;
            let options = CreateExecOptions {
                cmd: Some(command.clone()),
                env: Some(vec!["ETCDCTL_API=3".to_string()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let exec = docker.create_exec(&id, options).await.map_err(fail)?;
            let (mut stdout, mut stderr) = (String::new(), String::new());
            if let StartExecResults::Attached { mut output, .. } =
                docker.start_exec(&exec.id, None).await.map_err(fail)?
            {
                while let Some(frame) = output.next().await {
                    match frame.map_err(fail)? {
                        bollard::container::LogOutput::StdErr { message } => {
                            stderr.push_str(&String::from_utf8_lossy(&message))
                        }
                        other => stdout.push_str(&other.to_string()),
                    }
                }
            }
            // The output ends when the command exits; the engine records the exit code
            // a moment later.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let inspect = docker.inspect_exec(&exec.id).await.map_err(fail)?;
                match inspect.exit_code {
                    Some(code) => return Ok((code, stdout, stderr)),
                    None if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    None => {
                        return Err(Error::Etcd {
                            what,
                            message: "its output ended but it reports no exit code".into(),
                        })
                    }
                }
            }
        }
    }

    /// Removes the container now (force: paused or running; with its anonymous volumes).
    pub(crate) async fn remove(mut self) {
        if let Some(handle) = self.handle.take() {
            remove(handle).await;
        }
    }
}

impl Drop for EtcdContainer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            finish_on_drop(remove(handle));
        }
    }
}

/// Removes a container through testcontainers (force, volumes too); if a call still holds
/// the handle, through the client by id.
async fn remove(handle: Arc<ContainerAsync<GenericImage>>) {
    match Arc::try_unwrap(handle) {
        Ok(container) => {
            let _ = container.rm().await;
        }
        Err(shared) => {
            let id = shared.id().to_string();
            remove_by_name(&id).await;
        }
    }
}

/// Removes the container named (or with the id) `name`, if there is one.
pub(crate) async fn remove_by_name(name: &str) {
    if let Ok(docker) = client().await {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = docker.remove_container(name, Some(options)).await;
    }
}

/// The container's log so far, stdout and stderr.
async fn logs(id: &str) -> Result<String> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let docker = client().await?;
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|err| classify(&format!("docker logs {id}"), err))?;
        text.push_str(&frame.to_string());
    }
    Ok(text)
}

/// Follows the container's log until etcd has logged its ready line `count` times (once per
/// start); fails when the container stops first or [`READY_TIMEOUT`] passes.
async fn wait_ready(id: &str, image: &str, count: usize, hint: &'static str) -> Result<()> {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let docker = client().await?;
    let mut stream = docker.logs(id, Some(options));
    let mut text = String::new();
    let follow = async {
        while let Some(frame) = stream.next().await {
            let frame = frame.map_err(|err| classify(&format!("docker logs -f {id}"), err))?;
            text.push_str(&frame.to_string());
            if text.matches(READY_LINE).count() >= count {
                return Ok(true);
            }
        }
        Ok::<_, Error>(false)
    };
    match tokio::time::timeout(READY_TIMEOUT, follow).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(Error::ExitedBeforeReady {
            image: image.to_string(),
            log: tail(&text, 30),
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(Error::NotReady {
            image: image.to_string(),
            within: READY_TIMEOUT,
            hint,
            log: tail(&logs(id).await.unwrap_or_default(), 30),
        }),
    }
}

/// The kit's error for a container that did not start: the image's log when etcd exited
/// before it was ready.
fn start_error(spec: &Spec, err: testcontainers::TestcontainersError) -> Error {
    use testcontainers::core::error::WaitContainerError;
    use testcontainers::core::logs::WaitLogError;
    use testcontainers::TestcontainersError;
    match err {
        TestcontainersError::WaitContainer(WaitContainerError::WaitLog(
            WaitLogError::EndOfStream(lines),
        )) => {
            let log: String = lines.iter().map(|l| String::from_utf8_lossy(l)).collect();
            Error::ExitedBeforeReady {
                image: spec.image.clone(),
                log: tail(&log, 30),
            }
        }
        TestcontainersError::WaitContainer(WaitContainerError::StartupTimeout) => Error::NotReady {
            image: spec.image.clone(),
            within: READY_TIMEOUT,
            hint: spec.hint,
            log: "(removed with its container)".into(),
        },
        other => classify(
            &format!("starting an etcd container from {}", spec.image),
            other,
        ),
    }
}

/// Whether starting failed only because the host port was taken meanwhile.
pub(crate) fn port_taken(err: &Error) -> bool {
    let text = err.to_string();
    text.contains("already allocated") || text.contains("address already in use")
}

/// `name:tag` split for testcontainers (`latest` when there is no tag; a registry port is
/// not a tag).
fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image.to_string(), "latest".to_string()),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::split_image;

    #[test]
    fn images_split_into_name_and_tag() {
        let split = |image| {
            let (name, tag) = split_image(image);
            format!("{name} {tag}")
        };
        assert_eq!(split("muster-etcd:local"), "muster-etcd local");
        assert_eq!(
            split("gcr.io/etcd-development/etcd:v3.5.17"),
            "gcr.io/etcd-development/etcd v3.5.17"
        );
        assert_eq!(split("localhost:5000/etcd"), "localhost:5000/etcd latest");
        assert_eq!(split("etcd"), "etcd latest");
    }
}
