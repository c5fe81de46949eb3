//! What the program tests share: one etcd for the tests running at the same time, a group
//! (prefix) per test, the two programs as real processes, and waits with deadlines.
//!
//! Real time throughout. Every wait is on something observable (a line a program prints,
//! its exit, a fresh listing of etcd, an HTTP answer) and has a deadline; nothing sleeps in
//! place of synchronisation.

use std::future::Future;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use muster_core::MemberState;
use muster_master::View;
pub use muster_testkit::wait::states;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The programs under test, built by cargo for this package's tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_muster-worker");
/// See [`WORKER`].
pub const MASTER: &str = env!("CARGO_BIN_EXE_muster-master");

/// How long any single wait may take. Far above anything expected (a lease expiry takes
/// at most the TTL plus etcd's 500 ms tick), so a slow shared machine does not flake.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The workers' lease TTL: etcd's minimum, so that expiry costs as little as possible.
pub const TTL: &str = "2s";

/// The environment variables the programs read, removed from every child so that the
/// test's own environment cannot change what a program does.
const PROGRAM_VARS: &[&str] = &[
    "MUSTER_ENDPOINTS",
    "MUSTER_PREFIX",
    "MUSTER_CONNECT_TIMEOUT",
    "MUSTER_CACERT",
    "MUSTER_CERT",
    "MUSTER_KEY",
    "MUSTER_TLS_SERVER_NAME",
    "MUSTER_USER",
    "MUSTER_PASSWORD_FILE",
    "MUSTER_NAME",
    "MUSTER_ADDR",
    "MUSTER_NO_ADDR",
    "MUSTER_LABELS",
    "MUSTER_CPUS",
    "MUSTER_METADATA",
    "MUSTER_TTL",
    "MUSTER_WAIT_READY",
    "MUSTER_ON_DUPLICATE",
    "MUSTER_JSON",
    "MUSTER_TABLE",
    "MUSTER_HTTP",
    "MUSTER_REAP_AFTER",
    "MUSTER_NO_REAP",
    "MUSTER_EVENTS_BUFFER",
    "RUST_LOG",
];

/// One group under its own prefix (`/programs/{test}/`) on the shared etcd: the kit's
/// [`muster_testkit::group::Group`], plus what programs need.
pub struct Group(muster_testkit::group::Group);

impl std::ops::Deref for Group {
    type Target = muster_testkit::group::Group;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Group {
    /// A group for the test named `test`.
    pub fn new(test: &str) -> Self {
        Group(muster_testkit::group::Group::new("programs", test))
    }

    /// The flags that point a program at this group.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--endpoints".into(),
            self.endpoint(),
            "--prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// Polls the truth (every 50 ms, up to [`DEADLINE`]) until `pred` holds.
    pub async fn wait_truth(&self, what: &str, mut pred: impl FnMut(&View) -> bool) -> View {
        let store = self.store().await;
        let poll = async {
            loop {
                let view = muster_master::list(&store, &self.prefix)
                    .await
                    .unwrap_or_else(|err| panic!("list {}: {err}", self.prefix));
                if pred(&view) {
                    return view;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(DEADLINE, poll).await {
            Ok(view) => view,
            Err(_) => panic!(
                "etcd never showed {what} within {DEADLINE:?}; it holds {:?}",
                states(&self.truth().await)
            ),
        }
    }

    /// Waits until `name` is in `state` in etcd.
    pub async fn wait_state(&self, name: &str, state: MemberState) -> View {
        self.wait_truth(&format!("{name} {state}"), |v| {
            v.state_of(name) == Some(state)
        })
        .await
    }

    /// Waits until `name` has no record in etcd.
    pub async fn wait_gone(&self, name: &str) -> View {
        self.wait_truth(&format!("{name} gone"), |v| v.get(name).is_none())
            .await
    }
}

/// A running program whose output lines are collected as they come. Killed if the test
/// ends before it exits.
pub struct Proc {
    /// What it is, for messages.
    pub label: String,
    /// The process.
    child: Child,
    /// Every stdout line so far.
    pub stdout: watch::Receiver<Vec<String>>,
    /// Every stderr line so far.
    pub stderr: watch::Receiver<Vec<String>>,
    /// Its exit status, once waited for.
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program` with `args` and extra environment variables; the `MUSTER_*` and
    /// `RUST_LOG` variables of the test's own environment are removed.
    pub fn spawn(program: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in PROGRAM_VARS {
            command.env_remove(var);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
        let label = format!(
            "{} {}",
            program.rsplit('/').next().unwrap_or(program),
            args.join(" ")
        );
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Proc {
            label,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Starts muster-worker.
    pub fn worker(args: &[String]) -> Proc {
        Proc::spawn(WORKER, args, &[])
    }

    /// Starts muster-master.
    pub fn master(args: &[String]) -> Proc {
        Proc::spawn(MASTER, args, &[])
    }

    /// The process id.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("still running") as i32)
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(self.pid(), sig)
            .unwrap_or_else(|err| panic!("cannot send {sig} to {}: {err}", self.label));
    }

    /// Everything it printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.borrow().join("\n")
    }

    /// Waits (with [`DEADLINE`]) until its stdout satisfies `pred`; returns the lines.
    pub async fn wait_stdout(
        &mut self,
        what: &str,
        pred: impl FnMut(&Vec<String>) -> bool,
    ) -> Vec<String> {
        let label = self.label.clone();
        let stderr = self.stderr.clone();
        deadline(
            &format!("{label}: stdout never showed {what}"),
            || {
                format!(
                    "stdout: {:#?}\nstderr: {:#?}",
                    self.stdout.borrow(),
                    stderr.borrow()
                )
            },
            async {
                let mut stdout = self.stdout.clone();
                let lines = stdout.wait_for(pred).await.map(|l| l.clone());
                lines.unwrap_or_else(|_| stdout.borrow().clone())
            },
        )
        .await
    }

    /// Waits (with [`DEADLINE`]) until a stderr line contains `needle`; returns that line.
    pub async fn wait_stderr(&mut self, needle: &str) -> String {
        let label = self.label.clone();
        let mut stderr = self.stderr.clone();
        let found = deadline(
            &format!("{label}: stderr never showed {needle:?}"),
            || format!("stderr: {:#?}", self.stderr.borrow()),
            async {
                let lines = stderr
                    .wait_for(|lines| lines.iter().any(|l| l.contains(needle)))
                    .await
                    .map(|l| l.clone())
                    .unwrap_or_default();
                lines.into_iter().find(|l| l.contains(needle))
            },
        )
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "{label} closed stderr without {needle:?}: {:#?}",
                self.stderr.borrow()
            )
        })
    }

    /// Waits (with [`DEADLINE`]) until `count` stderr lines contain `needle`.
    pub async fn wait_stderr_count(&mut self, needle: &str, count: usize) {
        let label = self.label.clone();
        let mut stderr = self.stderr.clone();
        deadline(
            &format!("{label}: stderr never showed {needle:?} {count} times"),
            || format!("stderr: {:#?}", self.stderr.borrow()),
            async {
                let _ = stderr
                    .wait_for(|lines| lines.iter().filter(|l| l.contains(needle)).count() >= count)
                    .await;
            },
        )
        .await;
        let seen = self
            .stderr
            .borrow()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        assert!(
            seen >= count,
            "{label} closed stderr after {seen} lines with {needle:?}"
        );
    }

    /// Waits (with [`DEADLINE`]) for it to exit, and for its output to be read to the end.
    pub async fn exit(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let label = self.label.clone();
        let status = deadline(
            &format!("{label} did not exit"),
            || format!("stderr: {:#?}", self.stderr.borrow()),
            self.child.wait(),
        )
        .await
        .unwrap_or_else(|err| panic!("waiting for {label}: {err}"));
        // Both pipes close at exit; wait until the readers have everything.
        for lines in [self.stdout.clone(), self.stderr.clone()] {
            let mut lines = lines;
            let _ = tokio::time::timeout(DEADLINE, lines.wait_for(|_| false)).await;
        }
        self.status = Some(status);
        status
    }

    /// Waits for it to exit and checks its status is `code`; returns its stderr.
    pub async fn exit_with(&mut self, code: i32) -> String {
        let status = self.exit().await;
        let stderr = self.stderr_text();
        assert_eq!(
            status.code(),
            Some(code),
            "{} exited with {status}, not {code}; stderr:\n{stderr}",
            self.label
        );
        stderr
    }
}

/// Reads `pipe` line by line into a watch channel; the sender is dropped at end of input,
/// which ends every `wait_for` on it.
fn collect(pipe: impl AsyncRead + Unpin + Send + 'static) -> watch::Receiver<Vec<String>> {
    let (tx, rx) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tx.send_modify(|all| all.push(line));
        }
    });
    rx
}

/// Runs `wait` with [`DEADLINE`]; panics with `what` and `context()` when it runs out.
pub async fn deadline<T>(
    what: &str,
    context: impl FnOnce() -> String,
    wait: impl Future<Output = T>,
) -> T {
    muster_testkit::wait::within(DEADLINE, what, context, wait).await
}

/// `args` as owned strings.
pub fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The worker flags for `name` in `group`, with the test TTL and no address (`--no-addr`).
pub fn worker_flags(group: &Group, name: &str) -> Vec<String> {
    let mut flags = worker_flags_at(group, name);
    flags.push("--no-addr".into());
    flags
}

/// The worker flags for `name` in `group`, with the test TTL; the caller says where the
/// address comes from (`--addr`, `--metadata`).
pub fn worker_flags_at(group: &Group, name: &str) -> Vec<String> {
    let mut flags = group.flags();
    flags.extend(args(&["--name", name, "--ttl", TTL]));
    flags
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    muster_testkit::docker::free_port().expect("a free port")
}
