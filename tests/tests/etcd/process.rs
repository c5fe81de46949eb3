//! A worker as a real process (`muster-test-worker`), killed the way an operating system
//! does: SIGKILL is a crash (the member turns `Suspect` once its lease runs out), SIGTERM a
//! graceful leave (`Left`, exit status 0).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use muster_core::{MemberState, Revision, TransitionKind};

use crate::support::{until, wait, Group, DEADLINE, TTL};

/// The helper program, built by cargo for this package's integration tests.
const WORKER_BIN: &str = env!("CARGO_BIN_EXE_muster-test-worker");

/// A running `muster-test-worker`, killed and reaped if the test ends early.
struct WorkerProcess {
    /// The process; `None` once it has been waited for.
    child: Option<Child>,
    /// Its stdout, after the `registered` line.
    stdout: Option<BufReader<ChildStdout>>,
    /// The revision it registered at.
    registered: Revision,
}

impl WorkerProcess {
    /// Starts the program for `name` in `group` and waits (with [`DEADLINE`]) for its
    /// `registered <revision>` line.
    async fn spawn(group: &Group, name: &str) -> WorkerProcess {
        let child = Command::new(WORKER_BIN)
            .args([
                group.etcd.endpoint(),
                group.prefix.clone(),
                name.to_owned(),
                TTL.as_secs_f64().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {WORKER_BIN}: {err}"));
        let mut process = WorkerProcess {
            child: Some(child),
            stdout: None,
            registered: 0,
        };
        let stdout = process.child_mut().stdout.take().expect("piped stdout");
        // A blocking read on its own thread; if it never returns, dropping `process` kills
        // the child, which closes the pipe and ends the read.
        let read = tokio::task::spawn_blocking(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            (read.map(|_| line), stdout)
        });
        let (line, stdout) = tokio::time::timeout(DEADLINE, read)
            .await
            .unwrap_or_else(|_| panic!("{name} did not register within {DEADLINE:?}"))
            .expect("the reading thread");
        let line = line.unwrap_or_else(|err| panic!("reading {name}'s stdout: {err}"));
        process.registered = line
            .strip_prefix("registered ")
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("{name} printed {line:?}, not `registered <revision>` (see its stderr)")
            });
        process.stdout = Some(stdout);
        process
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("not yet waited for")
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("not yet waited for").id()
    }

    /// Waits (with [`DEADLINE`]) for the process to exit; returns its status and the rest of
    /// its stdout.
    async fn exit(&mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("not yet waited for");
        let stdout = self.stdout.take();
        let pid = child.id();
        let waiting = tokio::task::spawn_blocking(move || {
            let mut rest = String::new();
            if let Some(mut stdout) = stdout {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
            }
            (child.wait(), rest)
        });
        let (status, rest) = tokio::time::timeout(DEADLINE, waiting)
            .await
            .unwrap_or_else(|_| {
                // Do not leave it running: the thread above then returns too.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("process {pid} did not exit within {DEADLINE:?}")
            })
            .expect("the waiting thread");
        (status.expect("wait for the process"), rest)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn a_sigkilled_worker_process_turns_suspect_within_its_ttl() {
    let group = Group::new("process-sigkill");
    let mut worker = WorkerProcess::spawn(&group, "proc-k").await;
    let master = group.master(None).await;
    let view = wait(&master, "proc-k alive", |v| {
        v.state_of("proc-k") == Some(MemberState::Alive)
    })
    .await;
    let member = &view.members["proc-k"];
    assert_eq!(member.record_revision, worker.registered);
    assert_eq!(&member.info.labels["pid"], worker.pid().to_string());
    let mut events = master.subscribe();

    // std's `Child::kill` is SIGKILL on unix: no handler runs, nothing is cleaned up.
    worker.child_mut().kill().expect("SIGKILL");
    let killed = Instant::now();
    let (status, rest) = worker.exit().await;
    assert!(!status.success(), "killed: {status:?}");
    assert_eq!(rest, "", "a killed process says nothing more");

    let got = until(&mut events, TransitionKind::Suspect, "proc-k").await;
    let suspect = got.last().expect("Suspect");
    let after = suspect.at.saturating_duration_since(killed);
    eprintln!("SIGKILL -> Suspect after {after:?} (TTL {TTL:?})");
    assert_eq!(
        got.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TransitionKind::Suspect],
        "only the suspicion: {got:?}"
    );
    assert!(suspect.revision > worker.registered);
    // A generous bound: the TTL, etcd's 500 ms expiry tick, and a slow shared machine.
    assert!(
        after <= TTL + Duration::from_secs(5),
        "Suspect {after:?} after the kill"
    );
    // The record stays: it is a suspect member, not one that left.
    let member = master.member("proc-k").expect("still a member");
    assert_eq!(member.state, MemberState::Suspect);
    assert_eq!(member.record_revision, worker.registered);
}

#[tokio::test]
async fn a_sigtermed_worker_process_leaves_gracefully() {
    let group = Group::new("process-sigterm");
    let mut worker = WorkerProcess::spawn(&group, "proc-t").await;
    let master = group.master(None).await;
    wait(&master, "proc-t alive", |v| {
        v.state_of("proc-t") == Some(MemberState::Alive)
    })
    .await;
    let mut events = master.subscribe();

    let pid = worker.pid().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}: {sent:?}");
    let (status, rest) = worker.exit().await;
    assert!(status.success(), "exits 0 after leaving: {status:?}");
    assert_eq!(rest, "left\n");

    let got = until(&mut events, TransitionKind::Left, "proc-t").await;
    assert_eq!(
        got.iter().map(|t| t.kind).collect::<Vec<_>>(),
        [TransitionKind::Left],
        "a leave, never a suspicion: {got:?}"
    );
    assert!(master.member("proc-t").is_none());
    // Both keys went in one revision, and the lease was revoked: nothing is left.
    let listing = muster_core::Store::list(&group.store().await, &group.prefix)
        .await
        .expect("list");
    assert!(listing.kvs.is_empty(), "{:?}", listing.kvs);
}
