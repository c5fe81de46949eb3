//! `muster-worker`: announce one member of a group and keep it announced, on its own or as
//! the sidecar of a command.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use muster_core::MemberInfo;
use muster_etcd_backend::EtcdStore;
use muster_worker::{OnDuplicate, Status, Worker, WorkerConfig};
use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::child::{self, Child};
use crate::cli::{parse_addr, parse_duration, parse_label, parse_name, parse_prefix, CommonArgs};
use crate::connect::connect;
use crate::fatal::Fatal;
use crate::signals::{self, Signals};

/// How long a sidecar's command gets to stop after SIGTERM when muster-worker must give up
/// (its registration failed) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a stop signal that arrives during registration waits for the registration to
/// finish (so that a member it created can leave) before giving up on it.
const IN_FLIGHT: Duration = Duration::from_secs(2);

const EXAMPLES: &str = "\
Examples:
  # Register api-1 and keep it registered until ctrl-c or SIGTERM:
  muster-worker --endpoints http://127.0.0.1:2379 --name api-1 --addr 10.0.0.5:8080 --label zone=a

  # A member that serves nothing (a batch worker): no address, on purpose:
  muster-worker --name batch-7 --no-addr --label queue=images

  # As a sidecar: run the server, register once its port accepts connections, leave and
  # exit with its exit status when it stops:
  muster-worker --name api-1 --addr 127.0.0.1:8080 --wait-ready -- ./my-server --port 8080

  # The same from the environment (every flag has a MUSTER_* variable):
  MUSTER_ENDPOINTS=http://etcd:2379 MUSTER_NAME=api-1 MUSTER_LABELS=zone=a,tier=web muster-worker

Logs go to stderr, warnings only; RUST_LOG=info (or debug) says more.
Exit status: 0 after leaving; 1 when etcd is unreachable, the name is taken, or leaving
failed; 2 for bad input (a blank --endpoints, a missing or malformed --addr, a TTL outside
1s..1h, a --label key given twice, a record too large for etcd, ...); 3 when an operator
evicted the member (muster-master evict; a sidecar stops its command first); in sidecar mode
the command's status (128+N if killed by signal N).";

/// What to do when the name is held by another live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DuplicatePolicy {
    /// Exit with an error.
    Fail,
    /// Wait until the other process's lease expires (e.g. a crash-restart within one TTL),
    /// then take the name.
    Wait,
}

/// muster-worker's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "muster-worker",
    version,
    about = "Register a member of a muster group in etcd and keep it alive; leave on SIGINT/SIGTERM.\n\nWith `-- COMMAND...` it runs COMMAND as a sidecar: registers while it runs, forwards signals to it, leaves when it exits and exits with its status.",
    after_help = EXAMPLES
)]
pub struct WorkerArgs {
    /// Where etcd is, and which group.
    #[command(flatten)]
    pub common: CommonArgs,

    /// The member's name: 1-128 printable characters (characters, not bytes), no '/' or
    /// whitespace. Required here or in --metadata.
    #[arg(long, env = "MUSTER_NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Where clients reach the member: HOST:PORT, with a DNS name, an IPv4 address or a
    /// bracketed IPv6 address (`[::1]:8080`) and a port 1-65535; --wait-ready connects to it.
    /// Required here or in --metadata, unless --no-addr.
    #[arg(long, env = "MUSTER_ADDR", value_name = "HOST:PORT", value_parser = parse_addr)]
    pub addr: Option<String>,

    /// Register the member without an address (it serves nothing clients connect to).
    /// Without it, a missing --addr is an error.
    #[arg(long, env = "MUSTER_NO_ADDR")]
    pub no_addr: bool,

    /// A label KEY=VALUE; repeat for more, each key once (MUSTER_LABELS: comma-separated).
    #[arg(
        long = "label",
        env = "MUSTER_LABELS",
        value_name = "KEY=VALUE",
        value_parser = parse_label,
        value_delimiter = ','
    )]
    pub labels: Vec<(String, String)>,

    /// CPUs the member offers [default: this machine's count].
    #[arg(long, env = "MUSTER_CPUS")]
    pub cpus: Option<u32>,

    /// A JSON file with member fields: {"name", "addr", "cpus", "labels": {...}}. Flags
    /// override its fields; labels are merged.
    #[arg(long, env = "MUSTER_METADATA", value_name = "FILE")]
    pub metadata: Option<PathBuf>,

    /// Lease TTL: how long after the last keep-alive a crashed or cut-off member turns
    /// suspect; from 1s to 1h (etcd raises anything below 2s to 2s).
    #[arg(long, env = "MUSTER_TTL", default_value = "10s", value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: Duration,

    /// Register only once a TCP connection to --addr succeeds, so that clients never
    /// discover a port that is not listening yet.
    #[arg(long, env = "MUSTER_WAIT_READY")]
    pub wait_ready: bool,

    /// What to do when another live process holds the name.
    #[arg(long, env = "MUSTER_ON_DUPLICATE", value_enum, default_value = "fail")]
    pub on_duplicate: DuplicatePolicy,

    /// On SIGTERM or SIGINT, first mark the member draining (masters report `draining`;
    /// callers following the group stop sending it new work), wait this long, then stop:
    /// as a sidecar, forward the signal to the command and leave when it exits; on its own,
    /// leave. A second signal ends the wait at once; 0s leaves without draining. Keep it
    /// below your orchestrator's kill timeout (Kubernetes: 30s).
    #[arg(long, env = "MUSTER_DRAIN_GRACE", default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_grace: Duration,

    /// Run this command as a sidecar (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The `--metadata` file. Unknown fields are errors: a typo must not silently drop a label.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataFile {
    name: Option<String>,
    addr: Option<String>,
    cpus: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses `--ttl`: a duration within the worker's bounds ([`WorkerConfig::validate`]: 1 s
/// to 1 hour).
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_duration(text)?;
    WorkerConfig::new(crate::cli::DEFAULT_PREFIX)
        .ttl(ttl)
        .validate()
        .map(|()| ttl)
        .map_err(|e| e.to_string())
}

impl WorkerArgs {
    /// The member's metadata: the --metadata file, overridden by flags, with the machine's
    /// CPU count when neither gives one; checked as registration will check it
    /// ([`MemberInfo::validate`]), so that bad input is exit status 2 before etcd is reached.
    pub fn member_info(&self) -> Result<MemberInfo, Fatal> {
        let file = match &self.metadata {
            None => MetadataFile::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Fatal::usage(format!("cannot read --metadata {}: {e}", path.display()))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    Fatal::usage(format!(
                        "--metadata {} is not a member JSON object ({e}); expected {{\"name\", \"addr\", \"cpus\", \"labels\"}}",
                        path.display()
                    ))
                })?
            }
        };
        let name = self.name.clone().or(file.name).ok_or_else(|| {
            Fatal::usage("no member name: pass --name NAME (or MUSTER_NAME), or put \"name\" in the --metadata file")
        })?;
        muster_core::validate_name(&name).map_err(|e| Fatal::usage(e.to_string()))?;
        let addr = self.addr(file.addr)?;
        let cpus = self.cpus.or(file.cpus).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        });
        let mut info = MemberInfo::new(name, addr).cpus(cpus);
        info.labels = file.labels.into();
        // A flag overrides the file's label of the same key; two flags for one key are a
        // mistake (which value was meant?), not "the last one wins".
        let mut given = std::collections::BTreeSet::new();
        for (key, value) in &self.labels {
            if !given.insert(key.as_str()) {
                return Err(Fatal::usage(format!(
                    "label key {key:?} is given twice in --label (or MUSTER_LABELS); give each key once"
                )));
            }
            info.labels.insert(key.clone(), value.clone());
        }
        info.validate().map_err(|e| Fatal::usage(e.to_string()))?;
        Ok(info)
    }

    /// The member's address: `--addr`, else the file's `addr`; `""` with `--no-addr`. No
    /// address at all without `--no-addr` is an error, and so is an empty one in the file.
    fn addr(&self, from_file: Option<String>) -> Result<String, Fatal> {
        if self.no_addr {
            if self.addr.is_some() {
                return Err(Fatal::usage(
                    "--addr (MUSTER_ADDR) and --no-addr (MUSTER_NO_ADDR) contradict each other; give one",
                ));
            }
            if self.wait_ready {
                return Err(Fatal::usage(
                    "--wait-ready needs --addr HOST:PORT (where the command will accept connections), not --no-addr",
                ));
            }
            return Ok(String::new());
        }
        match self.addr.clone().or(from_file) {
            Some(addr) if addr.is_empty() => Err(Fatal::usage(
                "\"addr\" in the --metadata file is empty; put HOST:PORT there (e.g. 10.0.0.5:8080), or remove it and pass --no-addr to register without an address",
            )),
            Some(addr) => Ok(addr),
            None if self.wait_ready => Err(Fatal::usage(
                "--wait-ready needs --addr HOST:PORT (where the command will accept connections)",
            )),
            None => Err(Fatal::usage(
                "no member address: pass --addr HOST:PORT (or MUSTER_ADDR, or \"addr\" in the --metadata file), e.g. 10.0.0.5:8080, or --no-addr to register a member without an address",
            )),
        }
    }

    fn config(&self, prefix: String) -> WorkerConfig {
        let on_duplicate = match self.on_duplicate {
            DuplicatePolicy::Fail => OnDuplicate::Fail,
            DuplicatePolicy::Wait => OnDuplicate::Wait,
        };
        let mut config = WorkerConfig::new(prefix)
            .ttl(self.ttl)
            .on_duplicate(on_duplicate);
        if on_duplicate == OnDuplicate::Fail {
            // etcd was just reached: registration should not wait for it much longer.
            config = config.register_timeout(self.common.connect_timeout);
        } else {
            // Waiting for the old holder's lease takes up to one TTL, plus etcd's tick.
            config = config.register_timeout(self.common.connect_timeout + self.ttl * 3);
        }
        config
    }
}

/// Parses the command line, runs, and returns the exit status.
///
/// Standalone, the worker stops on SIGINT/SIGTERM; as a sidecar it also forwards SIGHUP,
/// SIGQUIT, SIGUSR1 and SIGUSR2 to its command.
pub fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    crate::logging::init();
    super::block_on(NAME, async {
        let which = if args.command.is_empty() {
            signals::STOP
        } else {
            signals::FORWARDED
        };
        let signals = Signals::install(which)?;
        run(args, signals).await
    })
}

/// The program's name in messages.
const NAME: &str = "muster-worker";

/// Runs the worker (standalone or sidecar) until it leaves; `signals` stop it (and, as a
/// sidecar, go to its command). Returns the exit status.
pub async fn run(args: WorkerArgs, signals: Signals) -> Result<u8, Fatal> {
    let info = args.member_info()?;
    let prefix = parse_prefix(&args.common.prefix).map_err(Fatal::usage)?;
    if let Some(program) = args.command.first() {
        child::check_program(program)?;
    }
    let config = args.config(prefix.clone());
    if args.command.is_empty() {
        standalone(&args, info, config, signals).await
    } else {
        sidecar(&args, info, config, signals).await
    }
}

/// Registers, keeps alive until SIGINT/SIGTERM, leaves.
async fn standalone(
    args: &WorkerArgs,
    info: MemberInfo,
    config: WorkerConfig,
    mut signals: Signals,
) -> Result<u8, Fatal> {
    let store = tokio::select! {
        store = connect(&args.common) => store?,
        _ = signals.recv() => return Ok(0),
    };
    if args.wait_ready {
        tokio::select! {
            () = child::wait_until_listening(&info.addr) => {}
            _ = signals.recv() => return Ok(0),
        }
    }
    let registration = register(store, info, config);
    tokio::pin!(registration);
    let worker = tokio::select! {
        worker = &mut registration => worker?,
        sig = signals.recv() => {
            // A registration transaction may be in flight: give it a moment to land, so
            // that a member it created leaves rather than lingers as suspect.
            tracing::info!(signal = %sig, "stopping during registration");
            return match tokio::time::timeout(IN_FLIGHT, registration).await {
                Ok(Ok(worker)) => leave(worker).await,
                _ => Ok(0),
            };
        }
    };
    let mut status = worker.status();
    loop {
        tokio::select! {
            sig = signals.recv() => {
                tracing::info!(signal = %sig, "stopping");
                if drain(&worker, args.drain_grace).await {
                    tokio::select! {
                        () = tokio::time::sleep(args.drain_grace) => {}
                        sig = signals.recv() => {
                            tracing::info!(signal = %sig, "a second signal: leaving now");
                        }
                    }
                }
                break;
            }
            changed = status.changed() => {
                let now = status.borrow_and_update().clone();
                log_status(worker.name(), &now);
                if changed.is_err() {
                    // The worker's task has ended (evicted, or its name was taken over while
                    // it was cut off from etcd): it will not register again.
                    return Err(stopped(worker.name(), now));
                }
            }
        }
    }
    leave(worker).await
}

/// Runs the command, registers while it runs, forwards signals, leaves when it exits.
async fn sidecar(
    args: &WorkerArgs,
    info: MemberInfo,
    config: WorkerConfig,
    mut signals: Signals,
) -> Result<u8, Fatal> {
    let store = tokio::select! {
        store = connect(&args.common) => store?,
        sig = signals.recv() => return Ok(killed_by(sig)),
    };
    let (worker, mut child) = if args.wait_ready {
        let mut child = Child::spawn(&args.command)?;
        // Until the command listens: forward signals; if it exits, so do we, unregistered.
        loop {
            tokio::select! {
                () = child::wait_until_listening(&info.addr) => break,
                status = child.wait() => {
                    tracing::warn!(command = child.display(), "the command exited before it accepted connections; not registered");
                    return Ok(child::exit_code(status));
                }
                sig = signals.recv() => child.signal(sig),
            }
        }
        let registration = register(store, info, config);
        tokio::pin!(registration);
        let worker = loop {
            tokio::select! {
                worker = &mut registration => break worker,
                sig = signals.recv() => child.signal(sig),
            }
        };
        match worker {
            Ok(worker) => (worker, child),
            Err(fatal) => {
                tracing::error!(
                    command = child.display(),
                    "registration failed; stopping the command"
                );
                child.stop(STOP_GRACE).await;
                return Err(fatal);
            }
        }
    } else {
        let worker = register(store, info, config).await?;
        match Child::spawn(&args.command) {
            Ok(child) => (worker, child),
            Err(fatal) => {
                let _ = worker.leave().await;
                return Err(fatal);
            }
        }
    };
    let name = worker.name().to_owned();
    let mut status = worker.status();
    let mut worker = Some(worker);
    let mut leaving = None;
    // A stop signal held back while the member drains, and when it goes to the command.
    let mut held: Option<(Signal, tokio::time::Instant)> = None;
    let exit = loop {
        let grace_over = async {
            match held {
                Some((_, at)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            exit = child.wait() => break exit,
            () = grace_over => {
                let (sig, _) = held.take().expect("the grace ends only while a signal is held");
                tracing::info!(signal = %sig, "drain grace over: stopping the command; leaving when it exits");
                child.signal(sig);
            }
            sig = signals.recv() => {
                if let (Some((first, _)), true) = (held, signals::is_stop(sig)) {
                    // A second stop signal during the grace: the wait ends now.
                    tracing::info!(signal = %sig, "a second signal: stopping the command now");
                    held = None;
                    child.signal(first);
                    if sig != first {
                        child.signal(sig);
                    }
                    continue;
                }
                if signals::is_stop(sig) && held.is_none() {
                    if let Some(w) = worker.as_ref() {
                        if drain(w, args.drain_grace).await {
                            held = Some((sig, tokio::time::Instant::now() + args.drain_grace));
                            continue;
                        }
                    }
                }
                if signals::is_stop(sig) {
                    if let Some(worker) = worker.take() {
                        // Leave first, so clients stop choosing this member while the
                        // command shuts down; the command gets the signal at once anyway.
                        tracing::info!(signal = %sig, "leaving the group and stopping the command");
                        leaving = Some(tokio::spawn(worker.leave()));
                    }
                }
                child.signal(sig);
            }
            changed = status.changed(), if worker.is_some() => match changed {
                Ok(()) => log_status(&name, &status.borrow_and_update().clone()),
                Err(_) => {
                    let now = status.borrow_and_update().clone();
                    if matches!(now, Status::Evicted { .. }) {
                        // An operator wants this process out: the command goes too.
                        tracing::error!(member = %name, command = child.display(), "evicted; stopping the command");
                        child.stop(STOP_GRACE).await;
                        return Err(stopped(&name, now));
                    }
                    tracing::error!(member = %name, "the worker stopped; the command keeps running unregistered");
                    worker = None;
                }
            },
        }
    };
    let code = child::exit_code(exit);
    tracing::info!(command = child.display(), code, "the command exited");
    let left = match (worker, leaving) {
        (Some(worker), _) => leave(worker).await.map(drop),
        (None, Some(task)) => match task.await {
            Ok(result) => result.map_err(|e| leave_error(&name, e)),
            Err(e) => Err(Fatal::failure(format!("leaving: {e}"))),
        },
        (None, None) => Ok(()),
    };
    if let Err(fatal) = left {
        // The command's status is what the caller asked for; the failed leave is logged.
        tracing::error!("{fatal}");
    }
    Ok(code)
}

/// Registers, turning library errors into one-line messages for this program.
async fn register(
    store: EtcdStore,
    info: MemberInfo,
    config: WorkerConfig,
) -> Result<Worker, Fatal> {
    let prefix = config.prefix.clone();
    let name = info.name.clone();
    let worker = Worker::register(store, info, config).await.map_err(|e| match e {
        muster_worker::Error::DuplicateName { name, holder } => Fatal::failure(format!(
            "member name {name:?} is already held by a live process (incarnation {holder}) under {prefix}; pick another --name, stop that process, or pass --on-duplicate wait to take the name once its lease expires"
        )),
        muster_worker::Error::Invalid(e) => Fatal::usage(e.to_string()),
        e @ muster_worker::Error::Evicted { .. } => Fatal::evicted(e.to_string()),
        e @ muster_worker::Error::InvalidTtl { .. } => Fatal::usage(e.to_string()),
        // The member's record is bad input too: nothing will make etcd take it.
        muster_worker::Error::Store {
            source: e @ muster_core::Error::ValueTooLarge { .. },
            ..
        } => Fatal::usage(format!(
            "cannot register {name:?}: its record is too large for etcd ({e}); use fewer or shorter labels (or raise etcd's --max-request-bytes)"
        )),
        // etcd refused the request itself (e.g. "permission denied": the user's roles do
        // not cover the group): no retry can fix it.
        muster_worker::Error::Store {
            source: e @ muster_core::Error::Rejected { .. },
            ..
        } => Fatal::usage(format!("cannot register {name:?} under {prefix}: {e}")),
        e => Fatal::failure(format!("cannot register {name:?} under {prefix}: {e}")),
    })?;
    tracing::info!(member = %name, %prefix, incarnation = %worker.incarnation(), "registered");
    Ok(worker)
}

/// Marks the member draining before a stop, unless `grace` is zero; whether it did (if the
/// store cannot take the write in time, the stop goes on without the grace: waiting would
/// only delay the leave that follows).
async fn drain(worker: &Worker, grace: Duration) -> bool {
    if grace.is_zero() {
        return false;
    }
    match tokio::time::timeout(grace, worker.drain()).await {
        Ok(Ok(())) => {
            tracing::info!(member = %worker.name(), grace = ?grace, "draining: callers stop sending new work; stopping after the grace");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(member = %worker.name(), "could not mark the member draining ({e}); stopping now");
            false
        }
        Err(_) => {
            tracing::warn!(member = %worker.name(), "marking the member draining took longer than the grace; stopping now");
            false
        }
    }
}

async fn leave(worker: Worker) -> Result<u8, Fatal> {
    let name = worker.name().to_owned();
    worker.leave().await.map_err(|e| leave_error(&name, e))?;
    tracing::info!(member = %name, "left the group");
    Ok(0)
}

/// The fatal end of a worker whose task stopped with `status`: exit status 3 if it was
/// evicted, 1 otherwise.
fn stopped(name: &str, status: Status) -> Fatal {
    match status {
        Status::Evicted { revision } => Fatal::evicted(format!(
            "{name} was evicted by an operator (muster-master evict) at revision {revision}; stopped, and will not register again (a new process may)"
        )),
        Status::Failed { error } => Fatal::failure(format!(
            "{name} is no longer registered and has stopped trying: {error}"
        )),
        other => Fatal::failure(format!(
            "{name} is no longer registered and has stopped trying: {other:?}"
        )),
    }
}

fn leave_error(name: &str, e: muster_worker::Error) -> Fatal {
    Fatal::failure(format!(
        "{name} could not leave gracefully ({e}); it turns suspect when its lease expires"
    ))
}

fn log_status(name: &str, status: &Status) {
    match status {
        Status::Registered { revision, .. } => {
            tracing::info!(member = name, revision, "registered")
        }
        Status::Reconnecting {
            attempts, error, ..
        } => {
            if *attempts == 1 {
                tracing::warn!(member = name, %error, "etcd unreachable; retrying")
            } else {
                tracing::debug!(member = name, attempts, %error, "etcd still unreachable")
            }
        }
        Status::Reregistered { revision, .. } => tracing::warn!(
            member = name,
            revision,
            "the lease was lost (outage longer than the TTL, or etcd restarted); registered again"
        ),
        Status::WaitingForName { holder } => tracing::warn!(
            member = name,
            %holder,
            "the name is held by another live process; waiting for its lease to expire"
        ),
        Status::Failed { error } => tracing::error!(member = name, %error, "worker failed"),
        Status::Left => tracing::info!(member = name, "left"),
        Status::Evicted { revision } => {
            tracing::warn!(member = name, revision, "evicted by an operator")
        }
        Status::Registering => {}
    }
}

/// The exit status for a signal that stopped us before the command started.
fn killed_by(sig: Signal) -> u8 {
    128 + sig as u8
}
