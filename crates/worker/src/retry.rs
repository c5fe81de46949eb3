//! The retry rules shared by [`Worker`](crate::Worker) and [`WorkerGroup`](crate::WorkerGroup):
//! how a streak of failed store calls is reported, and how a leave is retried.

use std::time::Duration;

use futures::future::BoxFuture;
use muster_core::Backoff;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::WorkerConfig;
use crate::error::Error;
use crate::status::Status;

/// Notes one more failure of a streak: when the streak started (set by its first failure;
/// the caller clears it on success), and [`Status::Reconnecting`] saying so.
pub(crate) fn note_failure(
    failing_since: &mut Option<std::time::Instant>,
    backoff: &Backoff,
    status: &watch::Sender<Status>,
    error: &Error,
) {
    let since = *failing_since.get_or_insert_with(|| Instant::now().into_std());
    status.send_replace(Status::Reconnecting {
        since,
        attempts: backoff.attempts() + 1,
        error: error.to_string(),
    });
}

/// One member's leave, attempt by attempt, for [`LeaveRetry::run`]. (Boxed futures rather
/// than `async fn`: an implementor that borrows, run inside a spawned task, must be provably
/// `Send`.)
pub(crate) trait Leave {
    /// One attempt: the member's leave transaction(s).
    fn attempt(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// An attempt failed with `error` and will be retried.
    fn failed(&mut self, error: &Error);
    /// What paces the retries.
    fn backoff(&mut self) -> &mut Backoff;
    /// Waits `delay` before the next attempt.
    fn wait(&mut self, delay: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// How a leave is retried: a failed attempt (a blip, an unreachable store) is tried again,
/// backed off, as long as the next attempt can start within a TTL of the first. By then a
/// lease nobody renews has expired and the member is `Suspect` whatever we do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaveRetry {
    /// No retry starts after this.
    deadline: Instant,
    /// The first retry delay: a retry must have at least this much time left.
    retry_initial: Duration,
}

impl LeaveRetry {
    /// Leaves that start now (several members may share one deadline).
    pub(crate) fn starting_now(config: &WorkerConfig) -> Self {
        Self {
            deadline: Instant::now() + config.ttl,
            retry_initial: config.retry_initial,
        }
    }

    /// Runs `leave` until an attempt succeeds or the retries run out; then its last error
    /// (report it with [`could_not_leave`]).
    pub(crate) async fn run(self, leave: &mut impl Leave) -> Result<(), Error> {
        loop {
            match leave.attempt().await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() + self.retry_initial < self.deadline => {
                    leave.failed(&error);
                    let delay = leave.backoff().next_delay();
                    leave.wait(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// What a member whose leave failed for good is reported as.
pub(crate) fn could_not_leave(error: &Error) -> String {
    format!("could not leave ({error}); the member turns Suspect when its lease expires")
}
