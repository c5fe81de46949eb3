//! A worker written without muster's crates: `tests/interop/worker.sh`, POSIX sh and
//! `etcdctl txn` following PROTOCOL.md, registers, updates, loses its lease, crashes, comes
//! back as a new process and leaves; a muster master on real etcd must report exactly what
//! it reports for a Rust worker (`muster_worker::Worker`) telling the same story.
//!
//! The script runs on this host, and its `etcdctl` inside the etcd container
//! (`ETCDCTL="docker exec -i CONTAINER etcdctl"`): both images the kit runs carry etcdctl
//! (the official one, and `muster-etcd:local`, which xtask builds with Debian's), so
//! nothing needs installing but the Docker CLI the kit already needs.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_core::{Incarnation, MemberInfo, MemberState, Store, Transition, TransitionKind};
use muster_master::Subscription;
use muster_worker::Worker;
use tokio::sync::mpsc;

use crate::support::{assert_history, until, Group, DEADLINE};

/// The script, checked in beside this package's tests.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/worker.sh");

/// The script's lease TTL, in seconds. Each of its etcdctl calls is a `docker exec` (tens
/// of milliseconds, up to a second on a loaded machine), so it renews every 2 s, well
/// inside the TTL; a crash is still seen within 6.5 s.
const SCRIPT_TTL: u64 = 6;

/// The incarnations both workers use, pinned so that the two stories can be compared
/// exactly: the first process, and the one that takes the name over after the crash. The
/// second is above 2^53, which a double cannot hold exactly.
const FIRST: Incarnation = Incarnation(0x00c0_ffee_0000_0001);
const SECOND: Incarnation = Incarnation((1 << 53) + 7);

/// What the master reports for either worker, in order.
const STORY: [TransitionKind; 8] = {
    use TransitionKind::*;
    [
        Joined, Updated, Suspect, Recovered, Suspect, Restarted, Updated, Left,
    ]
};

/// The metadata at each step of the story: `version` is the step.
fn metadata(cpus: u32, version: &str) -> MemberInfo {
    MemberInfo::new("a", "10.0.0.5:8080")
        .cpus(cpus)
        .label("zone", "eu west")
        .label("version", version)
}

/// The script's arguments for `metadata(cpus, version)`.
fn script_args(cpus: u32, version: &str) -> Vec<String> {
    vec![
        "a".into(),
        "10.0.0.5:8080".into(),
        cpus.to_string(),
        "zone=eu west".into(),
        format!("version={version}"),
    ]
}

/// The `ETCDCTL` command that runs etcdctl inside the group's etcd container. Fails with
/// what to do when there is no Docker CLI or the image has no etcdctl.
fn etcdctl_in(group: &Group) -> String {
    let id = group.etcd.id().to_owned();
    let out = Command::new("docker")
        .args(["exec", &id, "etcdctl", "version"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "the interop test runs etcdctl inside the etcd container with the `docker` \
                 command, which cannot be run ({err}); install the Docker CLI (Debian: \
                 apt-get install docker.io)"
            )
        });
    assert!(
        out.status.success(),
        "the etcd image {} has no etcdctl (`docker exec {id} etcdctl version`: {}); the \
         interop test needs it: use the official image, or remove muster-etcd:local \
         (`docker rmi muster-etcd:local`) and let `cargo xtask test` (or `cargo xtask \
         etcd-image`) build it again with Debian's etcdctl",
        group.etcd.image(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    format!("docker exec -i {id} etcdctl")
}

/// A running `worker.sh`, in a process group of its own so that a crash kills all of it.
struct ScriptWorker {
    /// The process; `None` once waited for.
    child: Option<Child>,
    /// Its standard input, where commands go.
    stdin: Option<ChildStdin>,
    /// Its standard output, line by line.
    lines: mpsc::UnboundedReceiver<String>,
    /// Its standard error so far, for failure messages.
    stderr: Arc<Mutex<String>>,
    /// The thread reading it, joined once the script has exited.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// Its `TMPDIR`, removed when this is dropped.
    tmp: PathBuf,
}

impl ScriptWorker {
    /// Starts the script for the group, as process `incarnation`, with `args` after the
    /// prefix.
    fn spawn(
        group: &Group,
        etcdctl: &str,
        incarnation: Incarnation,
        args: &[String],
    ) -> ScriptWorker {
        use std::os::unix::process::CommandExt;
        // Its state directory's parent, removed with it even when the script was killed.
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "interop-{}-{}",
            group.prefix.trim_matches('/').replace('/', "-"),
            incarnation
        ));
        std::fs::create_dir_all(&tmp).expect("a temporary directory");
        let mut child = Command::new("sh")
            .arg(SCRIPT)
            .arg(&group.prefix)
            .args(args)
            .env("ETCDCTL", etcdctl)
            .env("MUSTER_TTL", SCRIPT_TTL.to_string())
            .env("MUSTER_INCARNATION", incarnation.0.to_string())
            .env("TMPDIR", &tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run sh {SCRIPT}: {err}"));
        let (send, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let errors = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(errors).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().expect("stderr");
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        ScriptWorker {
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
            tmp,
        }
    }

    /// [`spawn`](Self::spawn)s the script and waits (with [`DEADLINE`]) for its
    /// `registered` line.
    async fn start(
        group: &Group,
        etcdctl: &str,
        incarnation: Incarnation,
        args: &[String],
    ) -> ScriptWorker {
        let mut worker = ScriptWorker::spawn(group, etcdctl, incarnation, args);
        let line = worker.line().await;
        assert!(
            line.starts_with("registered "),
            "worker.sh printed {line:?}, not `registered LEASE`; stderr:\n{}",
            worker.stderr()
        );
        worker
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// The next line the script prints, within [`DEADLINE`].
    async fn line(&mut self) -> String {
        match tokio::time::timeout(DEADLINE, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => {
                let status = self.exit().await;
                panic!(
                    "worker.sh exited ({status}) before printing; stderr:\n{}",
                    self.stderr()
                )
            }
            Err(_) => panic!(
                "worker.sh printed nothing within {DEADLINE:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends one command line.
    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|err| panic!("send {command:?} to worker.sh: {err}"));
    }

    /// Kills the whole process group with SIGKILL, as a crash would: the script and its
    /// renewal loop stop at once, nothing is cleaned up.
    fn crash(&mut self) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL -- -{pid}: {status}");
    }

    /// Waits (with [`DEADLINE`]) for the script to exit by itself, and for the last of its
    /// standard error. Its standard input stays open: closing it would tell it to leave.
    async fn exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not yet waited for");
        let pid = child.id();
        let reader = self.stderr_reader.take();
        let waiting = tokio::task::spawn_blocking(move || {
            let status = child.wait();
            // Closed when the last process holding it (a renewal's `sleep`) is gone.
            if let Some(reader) = reader {
                let _ = reader.join();
            }
            status
        });
        tokio::time::timeout(DEADLINE, waiting)
            .await
            .unwrap_or_else(|_| {
                kill_group(pid);
                panic!("worker.sh (process {pid}) did not exit within {DEADLINE:?}")
            })
            .expect("the waiting thread")
            .expect("wait for worker.sh")
    }
}

/// SIGKILLs process group `pid` (a script this test started), ignoring failures.
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

impl Drop for ScriptWorker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// The lease the member's liveness key is on, as any etcd client reads it.
async fn liveness_lease(group: &Group, name: &str) -> i64 {
    let store = group.store().await;
    let key = group.keyspace().liveness_key(name);
    let listing = store.list(&key).await.expect("list the liveness key");
    listing
        .kvs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.lease)
        .unwrap_or_else(|| panic!("{key} does not exist"))
}

/// The story, told by the script: the master's transitions for member `a`.
async fn script_story(group: &Group, events: &mut Subscription) -> Vec<Transition> {
    use TransitionKind::*;
    let etcdctl = etcdctl_in(group);
    let mut all = Vec::new();

    // Register.
    let mut first = ScriptWorker::start(group, &etcdctl, FIRST, &script_args(2, "1")).await;
    all.extend(until(events, Joined, "a").await);

    // Update.
    first.send("update 4 zone=eu-west version=2");
    all.extend(until(events, Updated, "a").await);
    assert_eq!(first.line().await, "updated");

    // The lease is lost while the process lives (revoked, as an etcd restart or a long
    // partition would lose it): the script notices at its next renewal and registers again
    // with the same incarnation and its current metadata.
    let lost = liveness_lease(group, "a").await;
    group.store().await.revoke(lost).await.expect("revoke");
    all.extend(until(events, Suspect, "a").await);
    all.extend(until(events, Recovered, "a").await);
    assert_eq!(first.line().await, format!("lost {lost:x}"));
    let again = first.line().await;
    assert!(again.starts_with("reregistered "), "{again}");
    assert_ne!(liveness_lease(group, "a").await, lost, "a new lease");

    // A crash: nothing renews the lease; etcd lets it lapse.
    first.crash();
    let status = first.exit().await;
    assert!(!status.success(), "killed: {status:?}");
    all.extend(until(events, Suspect, "a").await);

    // A new process under the name, with new metadata.
    let mut second = ScriptWorker::start(group, &etcdctl, SECOND, &script_args(8, "3")).await;
    all.extend(until(events, Updated, "a").await);

    // Leave.
    second.send("leave");
    all.extend(until(events, Left, "a").await);
    assert_eq!(second.line().await, "left");
    let status = second.exit().await;
    assert!(status.success(), "left: {status:?}\n{}", second.stderr());
    all
}

/// The same story, told by a Rust worker.
async fn rust_story(group: &Group, events: &mut Subscription) -> Vec<Transition> {
    use TransitionKind::*;
    let join = |info: MemberInfo, incarnation: Incarnation| async move {
        Worker::register(
            group.store().await,
            info,
            group.worker_config().incarnation(incarnation),
        )
        .await
        .expect("register")
    };
    let mut all = Vec::new();
    let first = join(metadata(2, "1"), FIRST).await;
    all.extend(until(events, Joined, "a").await);
    first
        .update(metadata(4, "2").label("zone", "eu-west"))
        .await
        .expect("update");
    all.extend(until(events, Updated, "a").await);
    let lost = liveness_lease(group, "a").await;
    group.store().await.revoke(lost).await.expect("revoke");
    all.extend(until(events, Suspect, "a").await);
    all.extend(until(events, Recovered, "a").await);
    first.abandon();
    all.extend(until(events, Suspect, "a").await);
    let second = join(metadata(8, "3"), SECOND).await;
    all.extend(until(events, Updated, "a").await);
    second.leave().await.expect("leave");
    all.extend(until(events, Left, "a").await);
    all
}

/// A transition as the two stories are compared: everything but revisions and times.
fn seen(t: &Transition) -> (TransitionKind, MemberInfo, MemberState, Incarnation) {
    (
        t.kind,
        (*t.member.info).clone(),
        t.member.state,
        t.member.incarnation,
    )
}

#[tokio::test]
async fn a_shell_worker_following_protocol_md_is_reported_exactly_as_a_rust_worker() {
    use TransitionKind::*;
    let script_group = Group::new("interop-script");
    let rust_group = Group::new("interop-rust");
    let script_master = script_group.master(None).await;
    let rust_master = rust_group.master(None).await;
    let mut script_events = script_master.subscribe();
    let mut rust_events = rust_master.subscribe();
    script_master.ready().await.expect("the master stopped");
    rust_master.ready().await.expect("the master stopped");

    let script = script_story(&script_group, &mut script_events).await;
    let rust = rust_story(&rust_group, &mut rust_events).await;

    let expected_incarnations = [FIRST, FIRST, FIRST, FIRST, FIRST, SECOND, SECOND, SECOND];
    let expected: Vec<(TransitionKind, Incarnation)> =
        STORY.into_iter().zip(expected_incarnations).collect();
    assert_history(&script, "a", &expected);
    assert_history(&rust, "a", &expected);
    // Restarted and Updated: one registration write by the new process.
    assert_eq!(script[5].revision, script[6].revision);

    let script_seen: Vec<_> = script.iter().map(seen).collect();
    let rust_seen: Vec<_> = rust.iter().map(seen).collect();
    assert_eq!(
        script_seen, rust_seen,
        "the master reports the script's story as the Rust worker's"
    );
    // The metadata each step carried, so that the comparison above compares something.
    let update = &script_seen[1].1;
    assert_eq!((update.cpus, &update.labels["zone"]), (4, "eu-west"));
    let recovered = &script_seen[3].1;
    assert_eq!(
        &recovered.labels["version"], "2",
        "registered again with the current metadata"
    );
    let restarted = &script_seen[6].1;
    assert_eq!((restarted.cpus, &restarted.labels["version"]), (8, "3"));
    assert_eq!(
        &restarted.labels["zone"], "eu west",
        "a label value with a space"
    );

    // Every value the script wrote decoded, and it wrote no key muster does not know.
    let health = script_master.health();
    assert_eq!(health.skipped, 0, "undecodable values: {health:#?}");
    assert!(health.bad_keys.is_empty(), "bad keys: {health:#?}");
    assert!(script_master.member("a").is_none(), "left");
    assert!(
        script_group.truth().await.members.is_empty(),
        "nothing left under {}",
        script_group.prefix
    );
    assert_eq!(
        script_master.health().transitions.get(&Left),
        Some(&1),
        "one leave"
    );
}

/// A script started under a name a live process holds is refused, exit status 1, and
/// writes nothing: the create-if-absent guard of PROTOCOL.md's registration.
#[tokio::test]
async fn a_shell_worker_cannot_take_a_name_a_live_process_holds() {
    let group = Group::new("interop-duplicate");
    let etcdctl = etcdctl_in(&group);
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let holder = Worker::register(
        group.store().await,
        metadata(2, "1"),
        group.worker_config().incarnation(FIRST),
    )
    .await
    .expect("register");
    until(&mut events, TransitionKind::Joined, "a").await;

    let mut intruder = ScriptWorker::spawn(&group, &etcdctl, SECOND, &script_args(9, "x"));
    let status = intruder.exit().await;
    assert_eq!(status.code(), Some(1), "refused: {status:?}");
    assert!(
        intruder
            .stderr()
            .contains("another live process holds the name a"),
        "{}",
        intruder.stderr()
    );
    let member = master.member("a").expect("a");
    assert_eq!(
        (member.incarnation, member.info.cpus),
        (FIRST, 2),
        "untouched"
    );
    holder.leave().await.expect("leave");
    let left = until(&mut events, TransitionKind::Left, "a").await;
    assert_eq!(
        crate::support::summary(&left),
        [(TransitionKind::Left, "a".to_string())],
        "the refused script caused no transition"
    );
}

/// An operator's eviction holds against a script too: its lease is revoked, its
/// registration again is refused by the eviction marker (a condition of PROTOCOL.md's
/// registration), and it stops with status 3; a new process under the name may join.
#[tokio::test]
async fn an_evicted_shell_worker_is_refused_by_the_marker_and_stops() {
    use TransitionKind::*;
    let group = Group::new("interop-evict");
    let etcdctl = etcdctl_in(&group);
    let master = group.master(None).await;
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");

    let mut evicted = ScriptWorker::start(&group, &etcdctl, FIRST, &script_args(2, "1")).await;
    until(&mut events, Joined, "a").await;
    let store = group.store().await;
    let eviction = muster_master::evict(&store, &group.prefix, "a", Duration::from_secs(60))
        .await
        .expect("evict");
    assert_eq!(
        (eviction.incarnation, eviction.blocked),
        (FIRST, FIRST),
        "{eviction:?}"
    );
    until(&mut events, Left, "a").await;

    // The script finds its lease gone at its next renewal and tries to register again.
    let lost = evicted.line().await;
    let status = evicted.exit().await;
    assert_eq!(
        status.code(),
        Some(3),
        "evicted: {status:?}\n{}",
        evicted.stderr()
    );
    assert!(
        evicted.stderr().contains("was evicted"),
        "{}",
        evicted.stderr()
    );
    assert!(lost.starts_with("lost "), "{lost}");
    assert!(master.member("a").is_none(), "the eviction holds");

    // A new process (a new incarnation) is not blocked.
    let mut next = ScriptWorker::start(&group, &etcdctl, SECOND, &script_args(2, "2")).await;
    let joined = until(&mut events, Joined, "a").await;
    assert_eq!(joined.last().expect("Joined").member.incarnation, SECOND);
    next.send("leave");
    until(&mut events, Left, "a").await;
    assert!(next.exit().await.success());
    assert_eq!(master.health().skipped, 0);
}
