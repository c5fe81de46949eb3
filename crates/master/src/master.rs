//! The [`Master`] handle.

use std::sync::Arc;

use muster_core::{Keyspace, Member, Membership, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::MasterConfig;
use crate::discover::{self, Discover, EndpointSet};
use crate::error::Error;
use crate::filter::Filter;
use crate::shared::{Health, Shared, Subscription, View};
use crate::task::Task;

/// A live view of one group, kept by a background task.
///
/// The handle does not name the store it watches: [`start`](Master::start) is generic over
/// any [`Store`], the handle is one plain type (easy to put in an `Arc`, a struct field or
/// an axum state). Dropping the handle stops the task; [`shutdown`](Master::shutdown) does
/// so and waits.
#[derive(Debug)]
pub struct Master {
    /// View, subscribers, health.
    shared: Arc<Shared>,
    /// Tells the task to stop.
    shutdown: Option<oneshot::Sender<()>>,
    /// The list + watch loop.
    task: Option<JoinHandle<()>>,
}

/// Marks the master stopped when the task ends, however it ends (returns, panics, or is
/// aborted): subscriptions end and waiters get [`Error::Stopped`].
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Master {
    /// Starts watching the group under `config.prefix`. Returns at once; the view fills in
    /// when the first listing arrives ([`ready`](Master::ready) waits for it). Must be called
    /// inside a tokio runtime.
    pub fn start<S: Store>(store: S, config: MasterConfig) -> Result<Self, Error> {
        let keyspace = Keyspace::new(config.prefix.clone()).map_err(Error::Invalid)?;
        let machine =
            Membership::new(keyspace.clone(), config.reap_after).with_reap_retry(config.reap_retry);
        let shared = Arc::new(Shared::new(config.subscriber_buffer, machine));
        let (shutdown, stop) = oneshot::channel();
        let task = Task::new(store, keyspace, config, shared.clone());
        let guard = StopGuard(shared.clone());
        let task = tokio::spawn(async move {
            let _guard = guard;
            task.run(stop).await;
        });
        Ok(Self {
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        self.shared.view()
    }

    /// Every member with a record (`Alive` or `Suspect`), sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members()
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.shared.member(name)
    }

    /// The current view plus every event after it, with no gap between the two. See
    /// [`Subscription`].
    pub fn subscribe(&self) -> Subscription {
        self.shared.subscribe()
    }

    /// The members `filter` selects, as a stream of changes for a load balancer (tower's
    /// balancers take it as it is): the set at the first listing, then each insert and
    /// removal. See [`Discover`] for the rules. It ends when the master stops.
    pub fn discover(&self, filter: Filter) -> Discover {
        Discover::new(self.shared.clone(), filter)
    }

    /// The members `filter` selects, as a live snapshot that a caller picks from (see
    /// [`EndpointSet`]). Keeping it costs one small task, which ends when the master stops
    /// or every receiver is dropped. Must be called inside a tokio runtime.
    pub fn endpoints(&self, filter: Filter) -> EndpointSet {
        discover::endpoints(self.shared.clone(), filter)
    }

    /// How the master is doing.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Whether the master's task has ended (after which the view no longer changes).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped()
    }

    /// Waits until `pred` holds for the view and returns that view; [`Error::Stopped`] if the
    /// master stops first. Wrap it in `tokio::time::timeout` to bound the wait.
    ///
    /// ```no_run
    /// # async fn example(master: muster_master::Master) -> Result<(), muster_master::Error> {
    /// use muster_core::MemberState;
    /// let view = master.wait_until(|v| v.state_of("api-1") == Some(MemberState::Alive)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_until(&self, mut pred: impl FnMut(&View) -> bool) -> Result<View, Error> {
        self.wait_for(|shared| Some(shared.view()).filter(&mut pred))
            .await
    }

    /// Waits until `pred` holds for the master's [`Health`] and returns it (e.g. until it
    /// notices a hung store); [`Error::Stopped`] if the master stops first. Wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn wait_until_health(
        &self,
        mut pred: impl FnMut(&Health) -> bool,
    ) -> Result<Health, Error> {
        self.wait_for(|shared| Some(shared.health()).filter(&mut pred))
            .await
    }

    /// Waits until the first listing has been applied; [`Error::Stopped`] if the master
    /// stops first.
    pub async fn ready(&self) -> Result<View, Error> {
        self.wait_until(|v| v.synced).await
    }

    /// Re-evaluates `check` after every change until it answers, or the master stops.
    async fn wait_for<T>(&self, mut check: impl FnMut(&Shared) -> Option<T>) -> Result<T, Error> {
        let mut changes = self.shared.watch_changes();
        loop {
            changes.borrow_and_update();
            if let Some(found) = check(&self.shared) {
                return Ok(found);
            }
            if self.shared.stopped() || changes.changed().await.is_err() {
                // Once stopped the view changes no more; check it one last time.
                return check(&self.shared).ok_or(Error::Stopped);
            }
        }
    }

    /// Stops the task and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
