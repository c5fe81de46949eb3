//! Waits with a deadline that the etcd and fault tests share.

use std::time::Duration;

use muster_worker::{Status, Worker};

/// Waits (at most `deadline`) until the worker's status satisfies `pred`; returns it. Panics
/// naming `what` when the deadline passes or the worker stops first.
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
    match tokio::time::timeout(deadline, wait).await {
        Ok(status) => status,
        Err(_) => panic!(
            "worker {} never reported {what} within {deadline:?}; last status {:?}",
            worker.name(),
            worker.status().borrow()
        ),
    }
}
