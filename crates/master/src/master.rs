//! The [`Master`] handle.

use std::marker::PhantomData;
use std::sync::Arc;

use muster_core::{Keyspace, Member, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::MasterConfig;
use crate::error::Error;
use crate::shared::{Health, Shared, Subscription, View};
use crate::task::Task;

/// A live view of one group, kept by a background task.
///
/// Dropping the handle stops the task; [`shutdown`](Master::shutdown) does so and waits.
#[derive(Debug)]
pub struct Master<S> {
    /// View, subscribers, health.
    shared: Arc<Shared>,
    /// Tells the task to stop.
    shutdown: Option<oneshot::Sender<()>>,
    /// The list + watch loop.
    task: Option<JoinHandle<()>>,
    /// The master is tied to its store type, though the handle does not touch the store.
    _store: PhantomData<fn() -> S>,
}

impl<S: Store> Master<S> {
    /// Starts watching the group under `config.prefix`. Returns at once; the view fills in
    /// when the first listing arrives ([`ready`](Master::ready) waits for it). Must be called
    /// inside a tokio runtime.
    pub fn start(store: S, config: MasterConfig) -> Result<Self, Error> {
        let keyspace = Keyspace::new(config.prefix.clone()).map_err(Error::Invalid)?;
        let shared = Arc::new(Shared::new());
        let (shutdown, stop) = oneshot::channel();
        let task = Task::new(store, keyspace, config, shared.clone());
        let task = tokio::spawn(task.run(stop));
        Ok(Self {
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
            _store: PhantomData,
        })
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        self.shared.view()
    }

    /// Every member with a record (`Alive` or `Suspect`), sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.shared.view().members.into_values().collect()
    }

    /// One member by name.
    pub fn member(&self, name: &str) -> Option<Member> {
        self.shared.member(name)
    }

    /// The current view plus every transition after it, with no gap between the two.
    pub fn subscribe(&self) -> Subscription {
        self.shared.subscribe()
    }

    /// How the master is doing.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Waits until `pred` holds for the view and returns that view. Wrap it in
    /// `tokio::time::timeout` to bound the wait.
    ///
    /// ```no_run
    /// # async fn example(master: muster_master::Master<impl muster_core::Store>) {
    /// use muster_core::MemberState;
    /// let view = master.wait_until(|v| v.state_of("api-1") == Some(MemberState::Alive)).await;
    /// # }
    /// ```
    pub async fn wait_until(&self, mut pred: impl FnMut(&View) -> bool) -> View {
        let mut changes = self.shared.watch_changes();
        loop {
            changes.borrow_and_update();
            let view = self.shared.view();
            if pred(&view) {
                return view;
            }
            if changes.changed().await.is_err() {
                // The task is gone: the view will not change any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until `pred` holds for the master's [`Health`] and returns it (e.g. until it
    /// notices a hung store). Wrap it in `tokio::time::timeout` to bound the wait.
    pub async fn wait_until_health(&self, mut pred: impl FnMut(&Health) -> bool) -> Health {
        let mut changes = self.shared.watch_changes();
        loop {
            changes.borrow_and_update();
            let health = self.shared.health();
            if pred(&health) {
                return health;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the first listing has been applied.
    pub async fn ready(&self) -> View {
        self.wait_until(|v| v.synced).await
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

impl<S> Drop for Master<S> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
