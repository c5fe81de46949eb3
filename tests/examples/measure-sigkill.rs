//! How long after a worker process is SIGKILLed does the master report it `Suspect`?
//!
//! Not a test (timing depends on the machine), a measurement to run by hand:
//!
//! ```sh
//! cargo build -p muster-tests --bins
//! MUSTER_ETCD_IMAGE=muster-etcd:local cargo run -p muster-tests --example measure-sigkill -- [RUNS] [TTL_SECS]
//! ```
//!
//! It starts one etcd container and one master, then RUNS times (default 10): runs
//! `muster-test-worker` (found next to this example's directory, or at `MUSTER_TEST_WORKER`),
//! waits until the master sees it `Alive`, lets it live for a while, kills it with SIGKILL,
//! and measures from the kill to the master's `Suspect` transition. Prints each run, then
//! min / median / max.
//!
//! Expect `TTL - TTL/3 .. TTL + 0.5 s`: the worker renews every TTL/3, the kill lands
//! anywhere in that period, and etcd checks expiry on a ~500 ms tick. How long each worker
//! lives before the kill is the experiment's variable, spread evenly over 1 s .. 1 s + TTL:
//! killing right after registration would always land at the same keep-alive phase, and
//! starting each run right after the last expiry would lock runs to etcd's expiry tick
//! (every run then measures ~TTL + 0.5 s).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use muster_core::{MemberState, TransitionKind};
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig};
use muster_testkit::etcd::Etcd;

const PREFIX: &str = "/measure/sigkill/";
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let ttl: f64 = args.next().map_or(Ok(2.0), |a| a.parse())?;
    let worker_bin = worker_bin()?;

    let etcd = Etcd::start()?;
    let master = Master::start(
        EtcdStore::connect(etcd.config()).await?,
        MasterConfig::new(PREFIX).reap_after(None),
    )?;
    master.ready().await.expect("the master stopped");

    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let name = format!("victim-{run}");
        let mut child = Command::new(&worker_bin)
            .args([&etcd.endpoint(), PREFIX, &name, &ttl.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        if !line.starts_with("registered ") {
            child.kill()?;
            return Err(format!("{name} printed {line:?}").into());
        }
        let mut events = master.subscribe();
        if events.snapshot.state_of(&name) != Some(MemberState::Alive) {
            loop {
                let t = next(&mut events).await?;
                if t.kind == TransitionKind::Joined && t.member.name() == name {
                    break;
                }
            }
        }
        let lived =
            Duration::from_secs(1) + Duration::from_secs_f64(ttl * run as f64 / runs as f64);
        tokio::time::sleep(lived).await;
        child.kill()?;
        let killed = Instant::now();
        child.wait()?;
        let suspect_at = loop {
            let t = next(&mut events).await?;
            if t.kind == TransitionKind::Suspect && t.member.name() == name {
                break t.at;
            }
        };
        let took = suspect_at.saturating_duration_since(killed);
        println!(
            "run {run:2}: lived {:5.0} ms, SIGKILL -> Suspect {:5.0} ms",
            ms(lived),
            ms(took)
        );
        times.push(took);
    }
    times.sort();
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2
    };
    println!(
        "TTL {ttl} s, {runs} runs: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(times[0]),
        ms(median),
        ms(times[times.len() - 1])
    );
    Ok(())
}

async fn next(
    events: &mut muster_master::Subscription,
) -> Result<muster_core::Transition, Box<dyn std::error::Error>> {
    match tokio::time::timeout(DEADLINE, events.next_transition()).await {
        Ok(Ok(Some(t))) => Ok(t),
        Ok(Ok(None)) => Err("the master stopped".into()),
        Ok(Err(lagged)) => Err(lagged.into()),
        Err(_) => Err(format!("no transition within {DEADLINE:?}").into()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `MUSTER_TEST_WORKER`, or `muster-test-worker` in the directory above this example's
/// (`target/<profile>/examples/..`).
fn worker_bin() -> Result<PathBuf, Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var("MUSTER_TEST_WORKER") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("muster-test-worker"))
        .ok_or("cannot locate the target directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build -p muster-tests --bins` first, or set MUSTER_TEST_WORKER",
            path.display()
        )
        .into())
    }
}
