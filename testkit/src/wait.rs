//! Waits with a deadline, on what the system reports (a master's view or health, its
//! transitions, a worker's status): never a sleep in place of synchronisation. Each panics
//! with what it waited for and what it saw instead when the deadline passes. Under tokio's
//! paused clock a deadline costs no real time.
//!
//! The deadline is the caller's: each test area keeps one constant (far above anything
//! expected, so that a slow shared machine does not make tests flaky).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use muster_core::{LeaseId, MemberState, Transition, TransitionKind};
use muster_master::{Health, Master, Subscription, View};
use muster_worker::{Status, Worker};

/// Runs `wait` for at most `deadline`; when it runs out, panics with `what` and `context()`.
pub async fn within<T>(
    deadline: Duration,
    what: impl Display,
    context: impl FnOnce() -> String,
    wait: impl Future<Output = T>,
) -> T {
    match tokio::time::timeout(deadline, wait).await {
        Ok(value) => value,
        Err(_) => panic!("{what} within {deadline:?}\n{}", context()),
    }
}

/// Waits until the master's view satisfies `pred`; returns that view.
pub async fn view_until(
    master: &Master,
    deadline: Duration,
    what: &str,
    pred: impl FnMut(&View) -> bool,
) -> View {
    let seen = || format!("view: {:#?}\nhealth: {:#?}", master.view(), master.health());
    within(
        deadline,
        format_args!("the master never saw {what}"),
        seen,
        master.wait_until(pred),
    )
    .await
    .expect("the master stopped")
}

/// Waits until the master's health report satisfies `pred`; returns that report.
pub async fn health_until(
    master: &Master,
    deadline: Duration,
    what: &str,
    pred: impl FnMut(&Health) -> bool,
) -> Health {
    let seen = || format!("health: {:#?}", master.health());
    within(
        deadline,
        format_args!("the master's health never showed {what}"),
        seen,
        master.wait_until_health(pred),
    )
    .await
    .expect("the master stopped")
}

/// Waits until the worker's status satisfies `pred`; returns it. Panics naming `what` when
/// the deadline passes or the worker stops first.
pub async fn status_until(
    worker: &Worker,
    what: &str,
    deadline: Duration,
    mut pred: impl FnMut(&Status) -> bool,
) -> Status {
    let mut status = worker.status();
    let wait = async {
        loop {
            let now = status.borrow_and_update().clone();
            if pred(&now) {
                return now;
            }
            if status.changed().await.is_err() {
                // The task is gone: the status will not change any more.
                let last = status.borrow().clone();
                return if pred(&last) {
                    last
                } else {
                    panic!("worker {} stopped before {what}: {last:?}", worker.name())
                };
            }
        }
    };
    let seen = || format!("last status {:?}", worker.status().borrow());
    within(
        deadline,
        format_args!("worker {} never reported {what}", worker.name()),
        seen,
        wait,
    )
    .await
}

/// Receives transitions until `kind` for `name` and returns every one received on the way,
/// that one last. Each transition must come within `deadline`.
pub async fn transitions_until(
    events: &mut Subscription,
    deadline: Duration,
    kind: TransitionKind,
    name: &str,
) -> Vec<Transition> {
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(deadline, events.next_transition()).await {
            Ok(Ok(Some(t))) => {
                let done = t.kind == kind && t.member.name() == name;
                got.push(t);
                if done {
                    return got;
                }
            }
            Ok(Ok(None)) => panic!(
                "the master stopped before {kind} for {name}; got {:?}",
                summary(&got)
            ),
            Ok(Err(lagged)) => panic!("{lagged} (waiting for {kind} for {name})"),
            Err(_) => panic!(
                "no {kind} for {name} within {deadline:?}; got {:?}",
                summary(&got)
            ),
        }
    }
}

/// Transitions as `(kind, name)`, for readable assertions and messages.
pub fn summary(ts: &[Transition]) -> Vec<(TransitionKind, String)> {
    ts.iter()
        .map(|t| (t.kind, t.member.name().to_owned()))
        .collect()
}

/// A view's members as `(name, state)`.
pub fn states(view: &View) -> Vec<(String, MemberState)> {
    view.members
        .values()
        .map(|m| (m.name().to_owned(), m.state))
        .collect()
}

/// The lease of a registered worker, from its status; panics if it is not registered.
pub fn lease_of(worker: &Worker) -> LeaseId {
    match &*worker.status().borrow() {
        Status::Registered { lease, .. } | Status::Reregistered { lease, .. } => *lease,
        other => panic!("worker {} is not registered: {other:?}", worker.name()),
    }
}
