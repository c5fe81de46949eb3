//! `--etcd`: the story told with the real programs, as processes, the way an operator would
//! tell it by hand: `muster-master --json` watching, `muster-worker`s registering, one of them
//! a sidecar, one killed with SIGKILL, one stopped with SIGTERM, one cut off from etcd.
//!
//! The programs come from `MUSTER_BIN_DIR` (`cargo xtask demo --etcd` builds them and sets
//! it). The cut-off worker reaches etcd through a TCP proxy that the demo cuts and heals.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use muster_core::TransitionKind;
use muster_testkit::proxy::Proxy;

use crate::watched;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The workers' lease TTL.
const TTL: &str = "2s";
/// How long the master lets a member stay suspect before reaping it.
const REAP_AFTER: Duration = Duration::from_secs(6);
/// The longest any step may take.
const STEP: Duration = Duration::from_secs(15);

/// Where the programs are and which etcd and group they use.
struct Programs {
    /// The directory holding `muster-master` and `muster-worker`.
    bin_dir: PathBuf,
    /// etcd's client URLs, comma-separated.
    endpoints: String,
    /// The group's prefix.
    prefix: String,
}

impl Programs {
    fn command(&self, program: &str, endpoints: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        command
            .args(["--endpoints", endpoints, "--prefix", &self.prefix])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Starts `muster-worker` for `name`, with extra arguments.
    fn worker(&self, name: &str, i: u32, endpoints: &str, extra: &[&str]) -> anyhow::Result<Child> {
        let mut command = self.command("muster-worker", endpoints);
        command
            .args([
                "--name",
                name,
                "--addr",
                &format!("10.0.0.{i}:8080"),
                "--ttl",
                TTL,
            ])
            .args(["--cpus", &(2 * i).to_string()])
            .args(["--label", if i % 2 == 0 { "zone=b" } else { "zone=a" }])
            .args(extra)
            .stdout(Stdio::null());
        println!(
            "           $ muster-worker --name {name} ... {}",
            extra.join(" ")
        );
        command
            .spawn()
            .with_context(|| format!("starting muster-worker for {name}"))
    }
}

/// The master's transitions, read from its `--json` output.
struct Log {
    /// When the story started.
    start: Instant,
    /// One JSON object per line.
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every transition kind shown so far.
    seen: Vec<TransitionKind>,
}

impl Log {
    /// Prints transitions as they come until `name` has gone through `kind`.
    async fn expect(&mut self, kind: &str, name: &str) -> anyhow::Result<()> {
        self.expect_all(kind, &[name]).await
    }

    /// Prints transitions as they come until every one of `names` has gone through `kind`,
    /// in any order.
    async fn expect_all(&mut self, kind: &str, names: &[&str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP;
        let mut waiting: Vec<&str> = names.to_vec();
        while !waiting.is_empty() {
            let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await else {
                bail!("expected {waiting:?} to be {kind} within {STEP:?}, but they were not");
            };
            let text = |field: &str| line[field].as_str().unwrap_or("").to_owned();
            if text("kind") == "synced" {
                continue;
            }
            let labels = line["labels"]
                .as_object()
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            println!(
                "[{:>6.1}s] rev {:>3}  {:<9}  {:<6} -> {:<7}  {} cpus={} {labels}",
                self.start.elapsed().as_secs_f64(),
                line["revision"].as_i64().unwrap_or_default(),
                text("kind"),
                text("name"),
                text("state"),
                text("addr"),
                line["cpus"],
            );
            if let Some(k) = TransitionKind::ALL
                .iter()
                .find(|k| k.to_string() == text("kind"))
            {
                if !self.seen.contains(k) {
                    self.seen.push(*k);
                }
            }
            if text("kind") == kind {
                waiting.retain(|n| *n != text("name"));
            }
        }
        Ok(())
    }

    fn say(&self, what: &str) {
        println!("\n[{:>6.1}s] == {what}", self.start.elapsed().as_secs_f64());
    }
}

/// The file whose appearance makes the sidecar's stand-in server exit. Created on drop too,
/// so that the server does not outlive a demo that fails half-way.
struct StopFile(PathBuf);

impl StopFile {
    fn touch(&self) -> anyhow::Result<()> {
        std::fs::write(&self.0, b"").context("writing the stop file")
    }
}

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
        std::thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends SIGTERM to a child, as `kill` would.
fn terminate(child: &Child) -> anyhow::Result<()> {
    let pid = child.id().context("the process has already exited")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed");
    }
    Ok(())
}

/// Waits for a child to exit, with a deadline, and returns its exit code.
async fn exit_code(child: &mut Child, name: &str) -> anyhow::Result<Option<i32>> {
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .with_context(|| format!("{name} did not exit"))??;
    Ok(status.code())
}

/// The story.
pub async fn story(endpoints: Vec<String>, bin_dir: &Path, prefix: String) -> anyhow::Result<()> {
    for program in ["muster-master", "muster-worker"] {
        if !bin_dir.join(program).is_file() {
            bail!(
                "{program} not found in {}: run `cargo xtask demo --etcd`, which builds the programs",
                bin_dir.display()
            );
        }
    }
    let programs = Programs {
        bin_dir: bin_dir.to_owned(),
        endpoints: endpoints.join(","),
        prefix,
    };
    println!(
        "muster demo: the real programs as processes, on etcd at {}",
        programs.endpoints
    );
    println!(
        "prefix {}, worker TTL {TTL}, master reaps after {REAP_AFTER:?}\n",
        programs.prefix
    );

    println!("           $ muster-master --json --reap-after 6s");
    let mut master = programs
        .command("muster-master", &programs.endpoints)
        .args(["--json", "--reap-after", "6s"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting muster-master")?;
    let stdout = master.stdout.take().context("muster-master's stdout")?;
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });
    let mut log = Log {
        start: Instant::now(),
        lines,
        seen: Vec::new(),
    };

    log.say("four workers and a sidecar start");
    let proxy = Proxy::start(&endpoints[0]).await?;
    let stop_file =
        StopFile(std::env::temp_dir().join(format!("muster-demo-{}.stop", std::process::id())));
    let _ = std::fs::remove_file(&stop_file.0);
    let mut api1 = programs.worker("api-1", 1, &programs.endpoints, &["--label", "version=1"])?;
    let mut api2 = programs.worker("api-2", 2, &programs.endpoints, &["--label", "version=1"])?;
    let mut api3 = programs.worker("api-3", 3, &programs.endpoints, &["--label", "version=1"])?;
    let mut api4 = programs.worker("api-4", 4, &proxy.endpoint(), &["--label", "version=1"])?;
    let server = format!(
        "while [ ! -e {} ]; do sleep 0.1; done",
        stop_file.0.display()
    );
    let mut web1 = programs.worker(
        "web-1",
        5,
        &programs.endpoints,
        &["--", "sh", "-c", &server],
    )?;
    log.expect_all("joined", &["api-1", "api-2", "api-3", "api-4", "web-1"])
        .await?;

    log.say("api-3 is killed with SIGKILL");
    api3.start_kill()?;
    log.expect("suspect", "api-3").await?;

    log.say("api-3 is started again, a new process with new metadata (version=2)");
    api3 = programs.worker("api-3", 3, &programs.endpoints, &["--label", "version=2"])?;
    log.expect("restarted", "api-3").await?;
    log.expect("updated", "api-3").await?;

    log.say("api-4 is cut off from etcd for longer than its TTL");
    proxy.cut();
    log.expect("suspect", "api-4").await?;
    log.say("the network heals: api-4 finds its lease gone and registers again");
    proxy.heal();
    log.expect("recovered", "api-4").await?;

    log.say("api-2 is stopped with SIGTERM: it drains first (callers stop sending it work), then leaves after --drain-grace");
    terminate(&api2)?;
    log.expect("draining", "api-2").await?;
    log.expect("left", "api-2").await?;
    println!(
        "           api-2 exited with {:?}",
        exit_code(&mut api2, "api-2").await?
    );

    log.say("web-1's server exits: the sidecar leaves and exits with the server's status");
    stop_file.touch()?;
    log.expect("left", "web-1").await?;
    println!(
        "           web-1 exited with {:?}",
        exit_code(&mut web1, "web-1").await?
    );

    log.say("api-1 is killed and stays down; the master reaps it after 6s suspect");
    api1.start_kill()?;
    log.expect("suspect", "api-1").await?;
    log.expect("failed", "api-1").await?;

    log.say("the group, straight from etcd");
    println!("           $ muster-master list");
    let listed = programs
        .command("muster-master", &programs.endpoints)
        .arg("list")
        .stdout(Stdio::piped())
        .output()
        .await
        .context("running muster-master list")?;
    print!("{}", String::from_utf8_lossy(&listed.stdout));

    let missing: Vec<_> = watched()
        .into_iter()
        .filter(|k| !log.seen.contains(k))
        .collect();
    if !missing.is_empty() {
        bail!("the demo did not show {missing:?}");
    }
    println!(
        "\nevery transition kind shown: {} \
         (`removed`, a relist finding a member gone without seeing why, is the fault tests')",
        watched()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("elapsed {:.1} s", log.start.elapsed().as_secs_f64());
    for (name, child) in [("api-3", &mut api3), ("api-4", &mut api4)] {
        terminate(child)?;
        exit_code(child, name).await?;
    }
    master.start_kill()?;
    Ok(())
}
