//! muster-worker as a sidecar: the command's exit status becomes ours, the member leaves
//! when the command exits, signals reach the command, `--wait-ready` registers only once
//! the command listens.

use muster_core::MemberState;
use nix::sys::signal::Signal;

use crate::support::{args, free_port, worker_flags, worker_flags_at, Group, Proc};
use crate::worker::json_master;

fn sidecar(group: &Group, name: &str, extra: &[&str], command: &[&str]) -> Proc {
    let mut flags = if extra.contains(&"--addr") {
        worker_flags_at(group, name)
    } else {
        worker_flags(group, name)
    };
    flags.extend(args(extra));
    flags.push("--".into());
    flags.extend(args(command));
    Proc::worker(&flags)
}

#[tokio::test]
async fn the_exit_code_propagates_and_the_member_leaves() {
    let group = Group::new("sidecar-exit");
    let mut master = json_master(&group).await;
    let mut proc = sidecar(&group, "job-1", &[], &["sh", "-c", "exit 3"]);
    proc.exit_with(3).await;
    group.wait_gone("job-1").await;
    // It was a member while the command ran, and it left: never suspect.
    let lines = master
        .wait_stdout("job-1 left", |l| {
            l.iter()
                .any(|l| l.contains("\"kind\":\"left\"") && l.contains("job-1"))
        })
        .await;
    assert!(lines
        .iter()
        .any(|l| l.contains("\"kind\":\"joined\"") && l.contains("job-1")));
    assert!(
        !lines.iter().any(|l| l.contains("\"kind\":\"suspect\"")),
        "{lines:#?}"
    );

    // A command killed by a signal: 128 + its number, as shells report it.
    let mut proc = sidecar(&group, "job-2", &[], &["sh", "-c", "kill -9 $$"]);
    proc.exit_with(137).await;
    // Success is success.
    let mut proc = sidecar(&group, "job-3", &[], &["true"]);
    proc.exit_with(0).await;
    let view = group.truth().await;
    assert!(view.members.is_empty(), "{:?}", view.members.keys());
}

#[tokio::test]
async fn signals_are_forwarded_and_a_stop_drains_first() {
    let group = Group::new("sidecar-signal");
    // The command reports SIGHUP on stdout and exits 7 on SIGTERM.
    let script =
        "trap 'echo got-hup' HUP; trap 'exit 7' TERM; echo started; while :; do sleep 0.05; done";
    // A grace far longer than the test: only the second signal can end it.
    let mut proc = sidecar(
        &group,
        "srv-1",
        &["--drain-grace", "1h"],
        &["sh", "-c", script],
    );
    proc.wait_stdout("the command starting", |l| l.iter().any(|l| l == "started"))
        .await;
    group.wait_state("srv-1", MemberState::Alive).await;
    proc.signal(Signal::SIGHUP);
    proc.wait_stdout("the forwarded SIGHUP", |l| l.iter().any(|l| l == "got-hup"))
        .await;
    // A reload signal does not leave the group.
    assert_eq!(
        group.truth().await.state_of("srv-1"),
        Some(MemberState::Alive)
    );
    // SIGTERM: the member drains (still a member, still alive) and the command keeps
    // running, without the signal, through the grace.
    proc.signal(Signal::SIGTERM);
    let view = group
        .wait_truth("srv-1 draining", |v| {
            v.get("srv-1").is_some_and(|m| m.info.draining)
        })
        .await;
    assert_eq!(view.state_of("srv-1"), Some(MemberState::Alive));
    proc.signal(Signal::SIGHUP);
    proc.wait_stdout("a SIGHUP forwarded while draining", |l| {
        l.iter().filter(|l| *l == "got-hup").count() == 2
    })
    .await;
    // A second SIGTERM ends the grace: the command gets it, exits 7, the member leaves.
    proc.signal(Signal::SIGTERM);
    proc.exit_with(7).await;
    group.wait_gone("srv-1").await;
}

#[tokio::test]
async fn wait_ready_registers_only_once_the_command_listens() {
    let group = Group::new("sidecar-ready");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // The command only sleeps; the test itself opens the port when it chooses.
    let mut flags = worker_flags_at(&group, "web-1");
    flags.extend(args(&[
        "--addr",
        &addr,
        "--wait-ready",
        "--",
        "sleep",
        "60",
    ]));
    let mut proc = Proc::spawn(
        crate::support::WORKER,
        &flags,
        &[("RUST_LOG", "muster_programs=debug")],
    );
    // Proof that it is waiting: it has tried (and failed) to connect twice.
    proc.wait_stderr_count("not listening yet", 2).await;
    assert!(
        group.truth().await.get("web-1").is_none(),
        "registered before the command listened"
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let view = group.wait_state("web-1", MemberState::Alive).await;
    assert_eq!(view.get("web-1").unwrap().info.addr, addr);
    // SIGTERM reaches `sleep` (killed by signal 15) and the member leaves.
    proc.signal(Signal::SIGTERM);
    proc.exit_with(143).await;
    group.wait_gone("web-1").await;
    drop(listener);
}

#[tokio::test]
async fn a_command_that_exits_before_it_listens_is_never_registered() {
    let group = Group::new("sidecar-never-ready");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut proc = sidecar(
        &group,
        "never",
        &["--addr", &addr, "--wait-ready"],
        &["sh", "-c", "exit 4"],
    );
    proc.exit_with(4).await;
    assert!(group.truth().await.members.is_empty());
}

#[tokio::test]
async fn an_evicted_sidecar_stops_its_command_and_exits_3() {
    let group = Group::new("sidecar-evicted");
    // The command reports SIGTERM on stdout and exits 0 on it.
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.05; done";
    let mut proc = sidecar(&group, "srv-ev", &[], &["sh", "-c", script]);
    proc.wait_stdout("the command starting", |l| l.iter().any(|l| l == "started"))
        .await;
    group.wait_state("srv-ev", MemberState::Alive).await;

    let mut flags = group.flags();
    flags.extend(args(&["evict", "srv-ev"]));
    Proc::master(&flags).exit_with(0).await;
    let stderr = proc.exit_with(3).await;
    assert!(stderr.contains("srv-ev was evicted"), "{stderr}");
    assert!(
        proc.stdout.borrow().iter().any(|l| l == "got-term"),
        "the command was not stopped: {:#?}",
        proc.stdout.borrow()
    );
    assert!(group.truth().await.members.is_empty());
}
