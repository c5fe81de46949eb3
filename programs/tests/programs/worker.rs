//! muster-worker on its own: what it registers, SIGTERM → `Left`, SIGKILL → `Suspect`, as
//! etcd and a running `muster-master --json` both see it.

use muster_core::MemberState;
use muster_programs::render::EventJson;
use nix::sys::signal::Signal;

use crate::support::{args, worker_flags, worker_flags_at, Group, Proc};

/// The transitions a `--json` master printed so far, without the `synced` marker.
fn transitions(lines: &[String]) -> Vec<EventJson> {
    lines
        .iter()
        .filter(|l| !l.contains("\"kind\":\"synced\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Whether a `--json` master printed `kind` for `name`.
fn printed(lines: &[String], kind: &str, name: &str) -> bool {
    transitions(lines)
        .iter()
        .any(|t| t.kind == kind && t.name == name)
}

/// Starts `muster-master --json` on `group` and waits for its `synced` line.
pub async fn json_master(group: &Group) -> Proc {
    let mut flags = group.flags();
    flags.push("--json".into());
    let mut master = Proc::master(&flags);
    master
        .wait_stdout("the synced line", |lines| {
            lines.iter().any(|l| l.contains("\"kind\":\"synced\""))
        })
        .await;
    master
}

#[tokio::test]
async fn registers_flags_and_metadata_then_sigterm_leaves() {
    let group = Group::new("worker-sigterm");
    let mut master = json_master(&group).await;
    let dir = std::env::temp_dir().join(format!("muster-programs-meta-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let meta = dir.join("api.json");
    std::fs::write(
        &meta,
        r#"{"addr": "10.0.0.9:1", "cpus": 3, "labels": {"zone": "a", "tier": "web"}}"#,
    )
    .unwrap();
    let mut flags = worker_flags_at(&group, "api-1");
    flags.extend(args(&[
        "--metadata",
        meta.to_str().unwrap(),
        "--addr",
        "10.0.0.5:8080",
        "--label",
        "zone=b",
        "--label",
        "version=1.2",
    ]));
    let mut worker = Proc::worker(&flags);
    let view = group.wait_state("api-1", MemberState::Alive).await;
    let info = &view.get("api-1").unwrap().info;
    // Flags override the file; labels merge; the file's cpus beat the machine's count.
    assert_eq!(info.addr, "10.0.0.5:8080");
    assert_eq!(info.cpus, 3);
    assert_eq!(
        info.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        ["tier=web", "version=1.2", "zone=b"]
    );

    worker.signal(Signal::SIGTERM);
    let stderr = worker.exit_with(0).await;
    assert!(stderr.is_empty(), "quiet by default, got {stderr:?}");
    group.wait_gone("api-1").await;
    let lines = master
        .wait_stdout("api-1 left", |l| printed(l, "left", "api-1"))
        .await;
    let mine: Vec<String> = transitions(&lines)
        .into_iter()
        .filter(|t| t.name == "api-1")
        .map(|t| t.kind)
        .collect();
    assert_eq!(
        mine,
        ["joined", "draining", "left"],
        "SIGTERM drains, waits the grace (3s by default), then leaves; never suspect"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cpus_default_to_the_machine_and_env_vars_work() {
    let group = Group::new("worker-env");
    let mut worker = Proc::spawn(
        crate::support::WORKER,
        &[],
        &[
            ("MUSTER_ENDPOINTS", group.endpoint().as_str()),
            ("MUSTER_PREFIX", group.prefix.as_str()),
            ("MUSTER_NAME", "env-1"),
            ("MUSTER_ADDR", "h:1"),
            ("MUSTER_LABELS", "zone=a,tier=web"),
            ("MUSTER_TTL", "2s"),
        ],
    );
    let view = group.wait_state("env-1", MemberState::Alive).await;
    let info = &view.get("env-1").unwrap().info;
    let machine = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(info.cpus, machine);
    assert_eq!(info.labels.len(), 2);
    worker.signal(Signal::SIGINT);
    worker.exit_with(0).await;
    group.wait_gone("env-1").await;
}

#[tokio::test]
async fn sigkill_turns_the_member_suspect() {
    let group = Group::new("worker-sigkill");
    let mut master = json_master(&group).await;
    let mut worker = Proc::worker(&worker_flags(&group, "api-2"));
    group.wait_state("api-2", MemberState::Alive).await;
    worker.signal(Signal::SIGKILL);
    worker.exit().await;
    // The record stays, the liveness lease runs out: suspect, not left.
    let view = group.wait_state("api-2", MemberState::Suspect).await;
    assert!(view.get("api-2").is_some());
    let lines = master
        .wait_stdout("api-2 suspect", |l| printed(l, "suspect", "api-2"))
        .await;
    assert!(!printed(&lines, "left", "api-2"), "{lines:#?}");
    let suspect = transitions(&lines)
        .into_iter()
        .find(|t| t.kind == "suspect")
        .unwrap();
    assert_eq!(suspect.state, "suspect");
    assert_eq!(suspect.name, "api-2");
}

/// `run(args, shutdown)` in-process, mini-redis style: the caller's signals stop it, and it
/// leaves on SIGTERM exactly as the program does.
#[tokio::test]
async fn run_in_process_registers_and_leaves_on_the_shutdown_it_is_given() {
    use clap::Parser;
    use muster_programs::cmd::worker::{run, WorkerArgs};
    use muster_programs::signals::Signals;

    let group = Group::new("run-in-process");
    let mut argv = vec!["muster-worker".to_owned()];
    argv.extend(worker_flags_at(&group, "inproc-1"));
    argv.extend(args(&["--addr", "10.0.0.9:80"]));
    let parsed = WorkerArgs::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
    let (shutdown, signals) = Signals::channel();
    let running = tokio::spawn(run(parsed, signals));

    let view = group.wait_state("inproc-1", MemberState::Alive).await;
    assert_eq!(view.get("inproc-1").unwrap().info.addr, "10.0.0.9:80");
    shutdown
        .send(Signal::SIGTERM)
        .expect("the worker is running");
    let code = tokio::time::timeout(crate::support::DEADLINE, running)
        .await
        .expect("the worker stops after SIGTERM")
        .expect("the worker task did not panic")
        .unwrap_or_else(|fatal| panic!("{fatal}"));
    assert_eq!(code, 0);
    group.wait_gone("inproc-1").await;
}

#[tokio::test]
async fn an_evicted_worker_exits_3_and_a_new_process_may_take_the_name() {
    let group = Group::new("worker-evicted");
    let mut master = json_master(&group).await;
    let mut worker = Proc::worker(&worker_flags(&group, "ev"));
    group.wait_state("ev", MemberState::Alive).await;

    let mut flags = group.flags();
    flags.extend(args(&["evict", "ev", "--hold", "10m"]));
    let mut evict = Proc::master(&flags);
    evict.exit_with(0).await;
    let said = evict.stdout.borrow().join("\n");
    assert!(said.contains("report it left"), "{said}");
    assert!(said.contains("refused for 600s"), "{said}");

    let stderr = worker.exit_with(3).await;
    assert!(stderr.contains("ev was evicted"), "{stderr}");
    // It never came back: the master saw it join once and leave once.
    let mut next = Proc::worker(&worker_flags(&group, "ev"));
    group.wait_state("ev", MemberState::Alive).await;
    let lines = master
        .wait_stdout("ev joined again", |l| {
            l.iter()
                .filter(|l| l.contains("\"kind\":\"joined\"") && l.contains("\"ev\""))
                .count()
                >= 2
        })
        .await;
    let kinds: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<EventJson>(l).ok())
        .filter(|e| e.name == "ev")
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["joined", "left", "joined"], "{lines:#?}");
    next.signal(Signal::SIGTERM);
    next.exit_with(0).await;
    master.signal(Signal::SIGTERM);
    master.exit_with(0).await;
}
