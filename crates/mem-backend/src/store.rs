//! [`MemStore`]: one client of a [`MemCluster`], and its [`Store`] implementation.
//!
//! Every call passes the client's fault gate first (partitioned, failing, hung), then runs
//! synchronously on the cluster state after expiring the leases that are due. Watch streams
//! are unbounded channels filled by the state under its lock, so replay and live events
//! cannot interleave wrongly; delivery goes through the fault gate too, so a hung client's
//! stream stalls.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use muster_core::{
    KeyValue, Lease, LeaseId, Listing, Result, Revision, Store, StoreStatus, Txn, TxnOutcome,
    WatchStream,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::cluster::Shared;
use crate::error::MemError;
use crate::faults::{ClientId, Gate};
use crate::state::WatchItem;
use crate::MemCluster;

/// A client of a [`MemCluster`]: implements [`Store`] with etcd v3's semantics.
///
/// Cheap to clone; clones are the same client (same [`ClientId`], same faults). Get more
/// clients with [`MemCluster::client`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> muster_core::Result<()> {
/// use muster_core::{Store, Txn};
/// use muster_mem_backend::MemStore;
///
/// let store = MemStore::new();
/// let out = store.txn(Txn::new().put("/k", b"v".to_vec(), 0)).await?;
/// assert_eq!(out.revision, 2); // an empty store is at revision 1, like etcd
/// assert_eq!(store.get("/k").await?.unwrap().value, b"v");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemStore {
    /// The cluster this client talks to.
    shared: Arc<Shared>,
    /// Who this client is, for fault injection.
    id: ClientId,
    /// How long a call may wait on a hung client before it fails (keep-alives take the
    /// caller's deadline instead).
    request_timeout: Duration,
}

/// How long a call of a [`MemStore`] waits, while its client is hung, before failing: 5 s,
/// etcd-client's default request timeout. Change it with [`MemStore::with_request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// A new cluster with etcd's defaults and one client of it.
    pub fn new() -> Self {
        MemCluster::new().client()
    }

    /// A client handle; see [`MemCluster::client`].
    pub(crate) fn from_parts(shared: Arc<Shared>, id: ClientId) -> Self {
        Self {
            shared,
            id,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// This client with another request timeout: how long a call waits while the client is
    /// [hung](MemCluster::hang) before it fails with `Error::Unavailable`, as an etcd client's
    /// request timeout bounds a call to a server that does not answer. Keep-alives wait as
    /// long as their caller says instead ([`Store::keep_alive`]'s `within`). Watch streams
    /// are not bounded: a hung client's stream just stalls, as etcd's does.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use muster_core::Store;
    /// use muster_mem_backend::MemCluster;
    ///
    /// let cluster = MemCluster::new();
    /// let client = cluster.client().with_request_timeout(Duration::from_millis(200));
    /// cluster.hang(client.id());
    /// let err = client.get("k").await.unwrap_err();
    /// assert!(err.to_string().contains("no answer within 200ms"), "{err}");
    /// # }
    /// ```
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a call waits while this client is hung.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// This client's id, to inject faults with [`MemCluster`]'s methods.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The cluster this client talks to.
    pub fn cluster(&self) -> MemCluster {
        MemCluster {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits until this client's faults let a call through, or fails it: at once when
    /// partitioned or failing, after the request timeout when hung.
    async fn gate(&self) -> Result<(), MemError> {
        self.gate_within(self.request_timeout).await
    }

    /// [`gate`](Self::gate) with the caller's deadline.
    async fn gate_within(&self, within: Duration) -> Result<(), MemError> {
        self.shared.ensure_expiry_task();
        let deadline = Instant::now() + within;
        loop {
            // Created before checking, so a change between the check and the wait wakes it.
            let changed = self.shared.faults_changed.notified();
            match self.shared.lock().faults.gate_call(self.id) {
                Gate::Pass => return Ok(()),
                Gate::Fail(message) => return Err(MemError::Unavailable(message)),
                Gate::Wait => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(MemError::Unavailable(format!(
                    "no answer within {within:?} ({} is hung: injected fault); is the store reachable?",
                    self.id
                )));
            }
        }
    }
}

#[async_trait]
impl Store for MemStore {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        self.gate().await?;
        let lease = self.shared.lock_now().grant(ttl, Instant::now())?;
        self.shared.deadlines_changed();
        Ok(lease)
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        self.gate_within(within).await?;
        let ttl = self.shared.lock_now().keep_alive(lease, Instant::now())?;
        self.shared.deadlines_changed();
        Ok(ttl)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.gate().await?;
        self.shared.lock_now().revoke(lease);
        Ok(())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.gate().await?;
        Ok(self.shared.lock_now().txn(txn)?)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.gate().await?;
        Ok(self.shared.lock_now().get(key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.gate().await?;
        Ok(self.shared.lock_now().list(prefix))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.gate().await?;
        let rx = self.shared.lock_now().watch(self.id, prefix, from);
        Ok(watch_stream(rx, Arc::downgrade(&self.shared), self.id))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.gate().await?;
        self.shared.lock_now().compact(revision)?;
        Ok(())
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.gate().await?;
        let state = self.shared.lock_now();
        Ok(StoreStatus {
            revision: state.revision(),
            cluster_id: state.cluster_id(),
        })
    }
}

/// What a watch stream carries between items.
struct WatchRx {
    /// The batches the cluster queued for this watch.
    rx: UnboundedReceiver<WatchItem>,
    /// The cluster, weakly: a dropped cluster drops the sender, which ends the stream.
    shared: Weak<Shared>,
    /// The client that opened the watch, whose faults gate delivery.
    client: ClientId,
    /// Set after an error item: the stream ends.
    done: bool,
}

/// The stream over a watch's channel: yields what the cluster queued, held while the client
/// is hung, ended with an `Unavailable` item if the client is partitioned, and ended after
/// any error item.
fn watch_stream(
    rx: UnboundedReceiver<WatchItem>,
    shared: Weak<Shared>,
    client: ClientId,
) -> WatchStream {
    let state = WatchRx {
        rx,
        shared,
        client,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = s.rx.recv().await?;
        loop {
            let Some(shared) = s.shared.upgrade() else {
                break;
            };
            let changed = shared.faults_changed.notified();
            let gate = shared.lock().faults.gate_delivery(s.client);
            match gate {
                Gate::Pass => break,
                Gate::Fail(message) => {
                    s.done = true;
                    return Some((Err(MemError::Unavailable(message).into()), s));
                }
                Gate::Wait => changed.await,
            }
        }
        s.done = item.is_err();
        Some((item, s))
    })
    .boxed()
}
