//! [`MemCluster`]: the "server" (one keyspace, its revisions, leases and history), its
//! builder, the lease-expiry task, and the fault-injection controls.
//!
//! The cluster owns the synchronous [`State`] behind a `std::sync::Mutex`; nothing awaits
//! while holding it. Time is tokio's clock, so under `#[tokio::test(start_paused = true)]`
//! leases expire only when simulated time passes (`tokio::time::advance`, or tokio's
//! auto-advance while every task waits).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use muster_core::{Result, Revision};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::faults::{partitioned_message, ClientId};
use crate::state::{Config, State};
use crate::MemStore;

/// etcd's minimum lease TTL with default server settings.
const DEFAULT_MIN_TTL: Duration = Duration::from_secs(2);

/// etcd's default maximum request size (`--max-request-bytes`, 1.5 MiB).
const DEFAULT_MAX_VALUE_SIZE: usize = 3 * 512 * 1024;

/// What the cluster handle, its clients and its streams share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The synchronous core.
    state: Mutex<State>,
    /// Wakes the expiry task when a deadline may have moved earlier, or when the cluster is
    /// dropped. In its own `Arc` so the task can wait on it without keeping the cluster alive.
    expiry_wake: Arc<Notify>,
    /// Wakes calls and watch deliveries held by a hung client whenever faults change.
    pub(crate) faults_changed: Notify,
    /// Whether the expiry task runs. It is spawned on the first use inside a tokio runtime
    /// (at build time if there is one), so building a cluster outside a runtime is fine.
    expiry_task: Mutex<bool>,
}

impl Shared {
    /// Locks the state. A poisoned lock is still used: the state is only mutated by code
    /// that does not panic, so it is consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the state after expiring every lease that is due, so a caller never sees a
    /// lease (or its keys) that should be gone.
    pub(crate) fn lock_now(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.expire(Instant::now());
        state
    }

    /// Tells the expiry task that the next deadline may have changed.
    pub(crate) fn deadlines_changed(&self) {
        self.expiry_wake.notify_one();
    }

    /// Spawns the expiry task if it does not run yet and a tokio runtime is available.
    pub(crate) fn ensure_expiry_task(self: &Arc<Self>) {
        let mut running = self
            .expiry_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *running {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(expiry_task(
                Arc::downgrade(self),
                Arc::clone(&self.expiry_wake),
            ));
            *running = true;
        }
    }

    /// Records a fault change and wakes whatever waits on faults.
    fn change_faults(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.faults_changed.notify_waiters();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the expiry task notice the cluster is gone and exit.
        self.expiry_wake.notify_one();
    }
}

/// Sleeps until the earliest lease deadline, expires what is due, and again; exits when the
/// cluster is dropped. Holds only a `Weak` to the cluster.
async fn expiry_task(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let woken = wake.notified();
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = shared.lock();
            state.expire(Instant::now());
            state.next_deadline()
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }
}

/// An in-memory etcd "server": one keyspace with revisions, leases, watch history,
/// compaction, and fault injection per client.
///
/// Cheap to clone (all clones are the same cluster). Clients are [`MemStore`]s from
/// [`client`](MemCluster::client). Leases expire on tokio's clock: a background task sleeps
/// until the earliest deadline, and every call first expires what is due.
///
/// # Fault injection
///
/// Faults target one client (by [`MemStore::id`]) and model the network between it and the
/// cluster; the cluster itself keeps running (its leases keep expiring):
///
/// - [`partition`](Self::partition): every call fails with `Error::Unavailable`, open watch
///   streams end with an `Unavailable` item; keep-alives fail too, so the client's leases
///   really expire. [`heal`](Self::heal) reconnects (streams stay ended: re-watch).
/// - [`drop_watches`](Self::drop_watches): ends the client's open watch streams with an
///   `Unavailable` item, without partitioning it.
/// - [`fail_next`](Self::fail_next): the next `n` calls fail with `Unavailable`.
/// - [`hang`](Self::hang) / [`unhang`](Self::unhang): calls do not complete, and watch
///   streams deliver nothing, until unhung (a hung server). A call fails with
///   `Error::Unavailable` after the client's
///   [request timeout](crate::MemStore::with_request_timeout), a keep-alive after the
///   caller's deadline, as etcd's calls do; a stalled watch stream just stalls.
/// - [`wipe`](Self::wipe) (cluster-wide): etcd replaced by an empty one.
///
/// Compaction is the [`Store::compact`](muster_core::Store::compact) call, or
/// [`compact`](Self::compact) here.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use muster_core::Store;
/// use muster_mem_backend::MemCluster;
///
/// let cluster = MemCluster::new();
/// let worker = cluster.client();
/// cluster.partition(worker.id());
/// assert!(worker.get("k").await.is_err());
/// cluster.heal(worker.id());
/// assert!(worker.get("k").await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemCluster {
    /// The cluster's state and wake-ups, shared with clients and streams.
    pub(crate) shared: Arc<Shared>,
}

impl Default for MemCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl MemCluster {
    /// A cluster with etcd's defaults (minimum TTL 2 s, values up to 1.5 MiB).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a cluster with other settings.
    pub fn builder() -> MemClusterBuilder {
        MemClusterBuilder {
            config: Config {
                min_ttl: DEFAULT_MIN_TTL,
                max_value_size: DEFAULT_MAX_VALUE_SIZE,
            },
        }
    }

    /// A new client handle with its own [`ClientId`].
    pub fn client(&self) -> MemStore {
        let id = self.shared.lock().new_client();
        MemStore::from_parts(Arc::clone(&self.shared), id)
    }

    /// The current revision (`1` for an empty cluster).
    pub fn revision(&self) -> Revision {
        self.shared.lock_now().revision()
    }

    /// The compaction revision, `0` if never compacted.
    pub fn compacted_revision(&self) -> Revision {
        self.shared.lock_now().compacted()
    }

    /// How many leases are live (due leases are expired first).
    pub fn leases(&self) -> usize {
        self.shared.lock_now().lease_count()
    }

    /// How many watch streams are open.
    pub fn watches(&self) -> usize {
        self.shared.lock_now().watch_count()
    }

    /// Compacts history below `revision`, like [`Store::compact`](muster_core::Store::compact)
    /// but from the cluster itself (no client, no faults).
    ///
    /// # Errors
    ///
    /// `Error::Rejected` for a future revision. Compacting at or below the current
    /// compaction revision changes nothing and is not an error.
    pub fn compact(&self, revision: Revision) -> Result<()> {
        self.shared.lock_now().compact(revision)?;
        Ok(())
    }

    /// Partitions `client`: its calls fail with `Error::Unavailable`, its open watch streams
    /// end with an `Unavailable` item, until [`heal`](Self::heal).
    pub fn partition(&self, client: ClientId) {
        tracing::debug!(%client, "mem store: partition");
        self.shared.change_faults(|state| {
            state.faults.partition(client);
            state.end_watches(client, &partitioned_message(client));
        });
    }

    /// Reconnects a partitioned `client`. Its watch streams stay ended: it must watch again.
    pub fn heal(&self, client: ClientId) {
        tracing::debug!(%client, "mem store: heal");
        self.shared.change_faults(|state| state.faults.heal(client));
    }

    /// Ends every open watch stream of `client` with an `Unavailable` item, as a broken
    /// connection would; its calls keep working. Returns how many streams were ended.
    pub fn drop_watches(&self, client: ClientId) -> usize {
        tracing::debug!(%client, "mem store: drop watches");
        let mut ended = 0;
        self.shared.change_faults(|state| {
            ended = state.end_watches(
                client,
                &format!("watch of {client} dropped (injected fault); watch again"),
            );
        });
        ended
    }

    /// Makes the next `n` calls of `client` fail with `Error::Unavailable` (replacing any
    /// count set before; `0` clears it).
    pub fn fail_next(&self, client: ClientId, n: u64) {
        tracing::debug!(%client, n, "mem store: fail next calls");
        self.shared
            .change_faults(|state| state.faults.fail_next(client, n));
    }

    /// Hangs `client`: its calls do not complete, and its watch streams deliver nothing,
    /// until [`unhang`](Self::unhang) (or a [`partition`](Self::partition), which fails
    /// them). A held call fails with `Error::Unavailable` once the client's request timeout
    /// (a keep-alive: its caller's deadline) has passed; dropping a held call is fine.
    pub fn hang(&self, client: ClientId) {
        tracing::debug!(%client, "mem store: hang");
        self.shared
            .change_faults(|state| state.faults.set_hung(client, true));
    }

    /// Releases a hung `client`: held calls proceed, held watch items are delivered.
    pub fn unhang(&self, client: ClientId) {
        tracing::debug!(%client, "mem store: unhang");
        self.shared
            .change_faults(|state| state.faults.set_hung(client, false));
    }

    /// Replaces the store by an empty one, as when etcd is replaced after losing its data:
    /// keys, leases and history are gone, the revision starts again at 1, the cluster id
    /// (see [`Store::status`](muster_core::Store::status)) is new, and every open watch ends
    /// with an `Unavailable` item. Clients and their faults stay.
    pub fn wipe(&self) {
        tracing::debug!("mem store: wipe");
        self.shared.lock().wipe();
        self.shared.deadlines_changed();
        self.shared.faults_changed.notify_waiters();
    }

    /// Whether `client` is partitioned.
    pub fn is_partitioned(&self, client: ClientId) -> bool {
        self.shared.lock().faults.is_partitioned(client)
    }
}

/// Builds a [`MemCluster`] with settings other than etcd's defaults.
///
/// ```
/// use std::time::Duration;
/// let cluster = muster_mem_backend::MemCluster::builder()
///     .min_ttl(Duration::from_millis(100))
///     .max_value_size(1024)
///     .build();
/// # drop(cluster);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct MemClusterBuilder {
    /// The settings collected so far.
    config: Config,
}

impl MemClusterBuilder {
    /// A requested lease TTL below `min_ttl` is raised to it (etcd: 2 s, the default).
    pub fn min_ttl(mut self, min_ttl: Duration) -> Self {
        self.config.min_ttl = min_ttl;
        self
    }

    /// A put of a value longer than `bytes` fails with `Error::ValueTooLarge` (default
    /// 1.5 MiB, etcd's default request limit).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.config.max_value_size = bytes;
        self
    }

    /// Builds the cluster. Inside a tokio runtime this spawns the lease-expiry task; outside
    /// one, the task starts with the first call made inside a runtime.
    pub fn build(self) -> MemCluster {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(self.config)),
            expiry_wake: Arc::new(Notify::new()),
            faults_changed: Notify::new(),
            expiry_task: Mutex::new(false),
        });
        shared.ensure_expiry_task();
        MemCluster { shared }
    }
}
