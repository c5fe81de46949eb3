//! What the master and worker tests on real etcd share: one etcd container for the tests
//! that run at the same time, a group (prefix) per test, and waits with deadlines.
//!
//! Real time throughout. A wait is always on something the system reports (the master's
//! view, its transitions, a worker's status) and has a deadline; nothing sleeps in place of
//! synchronisation.

use std::time::Duration;

use muster_core::{
    Incarnation, MemberInfo, MemberState, Membership, Store, Transition, TransitionKind,
};
use muster_etcd_backend::EtcdStore;
use muster_master::{Master, MasterConfig, Subscription, View};
use muster_testkit::etcd::Etcd;
use muster_worker::{Status, Worker, WorkerConfig};

pub use muster_testkit::info;
pub use muster_testkit::wait::{lease_of, states, summary};

/// The lease TTL of every worker here: etcd's minimum, so expiry costs as little as possible.
pub const TTL: Duration = Duration::from_secs(2);

/// How long any single wait may take before the test fails. Far above anything expected
/// (an expiry takes at most TTL plus etcd's 500 ms expiry tick), so that a slow, shared
/// machine does not make the tests flaky.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One group under its own prefix (`/it/{test}/`) on the shared etcd: the kit's
/// [`muster_testkit::group::Group`], plus masters and workers for it.
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
        Group(muster_testkit::group::Group::new("it", test))
    }

    /// Master settings: this prefix, reaping after `reap_after`.
    pub fn master_config(&self, reap_after: Option<Duration>) -> MasterConfig {
        MasterConfig::new(self.prefix.as_str()).reap_after(reap_after)
    }

    /// Starts a master on its own client.
    pub async fn master(&self, reap_after: Option<Duration>) -> Master {
        Master::start(self.store().await, self.master_config(reap_after))
            .unwrap_or_else(|err| panic!("start a master on {}: {err}", self.prefix))
    }

    /// Worker settings: this prefix, [`TTL`].
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig::new(self.prefix.as_str()).ttl(TTL)
    }

    /// Registers `info` from a new client, as a new process would.
    pub async fn join(&self, info: MemberInfo) -> Worker {
        let name = info.name.clone();
        Worker::register(self.store().await, info, self.worker_config())
            .await
            .unwrap_or_else(|err| panic!("register {name}: {err}"))
    }

    /// The view a fresh listing of etcd through `store` implies, by name and state: what
    /// any master starting now would rebuild.
    pub async fn states(&self, store: &EtcdStore) -> Vec<(String, MemberState)> {
        let listing = store.list(&self.prefix).await.expect("list the group");
        let mut machine = Membership::new(self.keyspace(), None);
        machine.resync(&listing, std::time::Instant::now());
        machine
            .members()
            .map(|m| (m.name().to_owned(), m.state))
            .collect()
    }
}

/// Waits (with [`DEADLINE`]) until the master's view satisfies `pred`.
pub async fn wait(master: &Master, what: &str, pred: impl FnMut(&View) -> bool) -> View {
    muster_testkit::wait::view_until(master, DEADLINE, what, pred).await
}

/// Receives transitions until `kind` for `name` and returns every one received on the way,
/// that one last. Each transition must come within [`DEADLINE`].
pub async fn until(events: &mut Subscription, kind: TransitionKind, name: &str) -> Vec<Transition> {
    muster_testkit::wait::transitions_until(events, DEADLINE, kind, name).await
}

/// Waits (with [`DEADLINE`]) until the worker's status satisfies `pred`; returns it.
pub async fn status_until(
    worker: &Worker,
    what: &str,
    pred: impl FnMut(&Status) -> bool,
) -> Status {
    muster_testkit::wait::status_until(worker, what, DEADLINE, pred).await
}

/// Checks one member's transitions: exactly `expected` (kind and the incarnation each one
/// names), in order, at increasing revisions. Only an `Updated` may share its revision with
/// the transition before it: one write that both brought a member back and changed its
/// metadata.
pub fn assert_history(all: &[Transition], name: &str, expected: &[(TransitionKind, Incarnation)]) {
    let mine: Vec<&Transition> = all.iter().filter(|t| t.member.name() == name).collect();
    let got: Vec<(TransitionKind, Incarnation)> = mine
        .iter()
        .map(|t| (t.kind, t.member.incarnation))
        .collect();
    assert_eq!(got, expected, "transitions of {name}");
    for pair in mine.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        assert!(
            before.revision < after.revision
                || (matches!(
                    after.kind,
                    TransitionKind::Updated | TransitionKind::Draining
                ) && before.revision == after.revision),
            "{name}: {} at revision {} then {} at revision {}",
            before.kind,
            before.revision,
            after.kind,
            after.revision
        );
    }
}

/// How many `LeaseKeepAlive` streams `etcd` has seen opened so far.
pub fn keep_alive_streams_opened(etcd: &Etcd) -> f64 {
    let metrics = etcd.metrics().unwrap_or_else(|err| panic!("{err}"));
    metrics.sum(
        "grpc_server_started_total",
        &[("grpc_method", "LeaseKeepAlive")],
    )
}

/// How many lease renewals `etcd` has seen so far.
pub fn lease_renewals(etcd: &Etcd) -> f64 {
    let metrics = etcd.metrics().unwrap_or_else(|err| panic!("{err}"));
    metrics.get("etcd_debugging_lease_renewed_total")
}
