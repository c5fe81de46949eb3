//! `muster-test-worker ENDPOINTS PREFIX NAME TTL_SECS`: one muster worker as a real process,
//! for the etcd tests that kill a worker the way an operating system does.
//!
//! It registers `NAME` under `PREFIX` on etcd (`ENDPOINTS` comma-separated) with a lease of
//! `TTL_SECS` seconds (a decimal number), prints one line `registered <revision>` to stdout
//! and flushes it, then keeps the lease alive until it is told to stop:
//!
//! - SIGTERM or SIGINT (ctrl-c): leaves gracefully, prints `left`, exits 0.
//! - SIGKILL: dies at once, like a crash; the master sees the member turn `Suspect`.
//!
//! The member's address is `pid:<pid>` and its label `pid` is the process id, so a test can
//! tell which process holds the name. Errors go to stderr: exit 2 for bad arguments, 1 for a
//! failed registration, leave, or a worker that stopped on its own.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use muster_core::MemberInfo;
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_worker::{Status, Worker, WorkerConfig};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: muster-test-worker ENDPOINTS PREFIX NAME TTL_SECS";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoints, prefix, name, ttl] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let ttl = match ttl.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
        _ => {
            eprintln!("TTL_SECS must be a positive number of seconds, got {ttl:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Handlers first, so that a signal sent right after the `registered` line is not lost.
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("cannot install signal handlers: {err}");
            return ExitCode::from(1);
        }
    };
    match run(endpoints, prefix, name, ttl, async {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("muster-test-worker {name}: {message}");
            ExitCode::from(1)
        }
    }
}

/// Registers, announces it on stdout, keeps the member alive until `shutdown`, then leaves.
async fn run(
    endpoints: &str,
    prefix: &str,
    name: &str,
    ttl: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let config = EtcdConfig::new(endpoints.split(',').map(str::trim));
    let store = EtcdStore::connect(config)
        .await
        .map_err(|err| err.to_string())?;
    let pid = std::process::id();
    // No address (it serves nothing); the pid is a label.
    let info = MemberInfo::new(name, "").label("pid", pid.to_string());
    let worker = Worker::register(store, info, WorkerConfig::new(prefix).ttl(ttl))
        .await
        .map_err(|err| err.to_string())?;
    let mut status = worker.status();
    let revision = match &*status.borrow_and_update() {
        Status::Registered { revision, .. } | Status::Reregistered { revision, .. } => *revision,
        other => return Err(format!("registered, but the worker reports {other:?}")),
    };
    say(&format!("registered {revision}"))?;

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = status.changed() => {
                if changed.is_err() {
                    return Err("the worker's task ended".into());
                }
                if let Status::Failed { error } = &*status.borrow_and_update() {
                    return Err(format!("the worker failed: {error}"));
                }
            }
        }
    }
    worker.leave().await.map_err(|err| err.to_string())?;
    say("left")
}

/// Prints one line to stdout and flushes it: a test is waiting for it on a pipe.
fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|err| format!("cannot write to stdout: {err}"))
}
