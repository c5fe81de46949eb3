//! The [`Store`] trait: the small slice of etcd v3 that membership needs.
//!
//! muster talks to its key-value store only through this trait, so the same master and
//! worker run on real etcd (`muster-etcd-backend`) and on the deterministic in-memory store
//! (`muster-mem-backend`). The trait holds only what a backend must implement; the contract
//! below is checked against every backend by the conformance suite in
//! [`testing`](crate::testing) (feature `testing`).

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;

/// A store revision: etcd's cluster-wide, monotonically increasing write counter.
pub type Revision = i64;

/// A lease id. `0` means "no lease".
pub type LeaseId = i64;

/// One key with its value and etcd-style metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// The lease this key is bound to, `0` for none.
    pub lease: LeaseId,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease id.
    pub id: LeaseId,
    /// The TTL the store granted (it may raise a too-small request, as etcd does to 2 s).
    pub ttl: Duration,
}

/// Where a store is: its current revision and which store it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// The store's current revision.
    pub revision: Revision,
    /// The store's identity (etcd's cluster id). A store replaced by an empty one (data
    /// lost, revisions starting again) has a new id.
    pub cluster_id: u64,
}

/// A consistent listing of a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The store revision at which the listing was taken.
    pub revision: Revision,
    /// Every key under the prefix, sorted by key.
    pub kvs: Vec<KeyValue>,
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted (explicitly, by revoke, or by lease expiry: they look the same).
    Delete,
}

/// One change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, an empty value, and
    /// `mod_revision` = the revision of the delete.
    ///
    /// There is no previous value (etcd's `prev_kv`): nothing in muster needs one, and etcd
    /// reads it with one range read per event, which made the 10,000 deletes of one
    /// expired shared lease reach the master seconds late (BENCHMARKS.md, section 4b).
    pub kv: KeyValue,
}

impl Event {
    /// The revision at which this event happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// One message from a watch: the events of one or more whole revisions, in order.
///
/// A backend never splits one revision's events across two batches. A batch with no events
/// is a progress notification: the store has reached `revision` with nothing to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The store revision when this batch was sent (at least the last event's revision).
    pub revision: Revision,
    /// The events, in revision order.
    pub events: Vec<Event>,
}

/// A stream of watch batches. It ends (or yields an error and then ends) when the watch breaks.
pub type WatchStream = BoxStream<'static, Result<WatchBatch>>;

/// A condition a transaction checks before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key does not exist.
    Absent(String),
    /// The key exists and its last write was at this revision.
    ModRevision(String, Revision),
    /// The key exists and is bound to this lease.
    LeaseIs(String, LeaseId),
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `value` at `key`, bound to `lease` (`0` for none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease to bind the key to, `0` for none.
        lease: LeaseId,
    },
    /// Delete `key` if it exists.
    Delete {
        /// The key.
        key: String,
    },
}

/// An all-or-nothing transaction: if every condition holds, every op is applied at one new
/// revision; otherwise nothing is written.
///
/// As in etcd, a transaction may not write the same key twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub when: Vec<Condition>,
    /// Writes applied when they do.
    pub then: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no conditions, no writes).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition.
    pub fn when(mut self, condition: Condition) -> Self {
        self.when.push(condition);
        self
    }

    /// Adds a put.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Self {
        self.then.push(Op::Put {
            key: key.into(),
            value,
            lease,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.then.push(Op::Delete { key: key.into() });
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the conditions held and the writes were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (the new one if it wrote anything).
    pub revision: Revision,
}

/// The key-value store muster runs on: etcd v3, or something that behaves exactly like it.
///
/// # Contract
///
/// - **Revisions**: every successful write (a put, a delete that removed something, a
///   transaction that wrote anything, a lease expiry or revoke that deleted keys) makes one
///   new revision; all keys changed by it carry that revision. Revisions only grow.
/// - **Leases**: a key put with a lease is deleted when the lease expires or is revoked; all
///   keys of one lease vanish in one revision. Expiry happens no earlier than the lease's TTL
///   after its last grant or keep-alive. [`keep_alive`](Store::keep_alive) on a lease that is
///   gone returns [`Error::LeaseNotFound`](crate::Error::LeaseNotFound).
/// - **Transactions** are atomic; a transaction that puts a key twice, or puts and deletes
///   the same key, is rejected (deleting a key twice is allowed, as in etcd). A put on a
///   lease that is gone fails the whole transaction with
///   [`Error::LeaseNotFound`](crate::Error::LeaseNotFound).
/// - **Conditions** on a missing key: [`Condition::ModRevision`] and
///   [`Condition::LeaseIs`] are false (the key must exist), whatever revision or lease they
///   name. (etcd compares a missing key as zeros; the etcd backend adds an existence guard.)
/// - **Listing** returns every key under a prefix at one revision.
/// - **Watching** from revision `r` yields every event with revision ≥ `r` under the prefix,
///   in order, with no revision split across batches
///   (`r ≤ 0` means "from the next revision"). If `r` is below the compaction revision `c`
///   (etcd keeps revision `c` itself), the watch reports
///   [`Error::Compacted`](crate::Error::Compacted), either from `watch` itself or as the
///   stream's first item, and ends. A batch's `revision` is the store's revision when it
///   was sent, which may be ahead of the events delivered so far while a watch catches up:
///   resume from the last *event* revision + 1.
/// - A broken connection ends the watch stream (with an error item or not); the stream is
///   never resumed by the backend: the caller re-watches from the last revision it saw.
/// - **Status** reports the current revision (≥ every revision a call has returned so far)
///   and an identity that stays the same for the life of the store's data.
/// - **Errors** are mapped to [`Error`](crate::Error) variants; no backend error type leaks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Grants a lease of (at least) `ttl`.
    async fn grant(&self, ttl: Duration) -> Result<Lease>;

    /// Renews a lease once; returns the TTL it now has.
    ///
    /// `within` is how long the caller waits for the answer: a renewal's useful life depends
    /// on the lease (a worker waits up to half its TTL), so unlike the other calls, which
    /// the backend bounds with its own request timeout, the caller sets it. A renewal not
    /// answered in time fails with [`Error::Unavailable`](crate::Error::Unavailable), in the
    /// backend's words.
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration>;

    /// Revokes a lease, deleting its keys. Revoking a lease that is gone is not an error.
    async fn revoke(&self, lease: LeaseId) -> Result<()>;

    /// Runs a transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome>;

    /// Reads one key at the current revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Lists every key under `prefix` at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Lists every key under `prefix` at one revision, as [`list`](Store::list) does, but
    /// hands the keys to `page` as they are read, one page at a time, so that a caller
    /// folding them into its own state (the master's resync) never holds the whole listing.
    /// Returns the listing's revision.
    ///
    /// Pages come in key order, each a [`Listing`] of some of the keys at the listing's
    /// revision. If a listing has to start over (history compacted between two pages), the
    /// next page carries a newer revision and begins again at the first key: every page
    /// before it is void. On an error, what was handed over is void too.
    ///
    /// The default reads the whole listing with [`list`](Store::list) and hands it over as
    /// one page; a backend that reads in pages (etcd) hands over each as it arrives.
    async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        let listing = self.list(prefix).await?;
        let revision = listing.revision;
        page(listing);
        Ok(revision)
    }

    /// Watches `prefix` from revision `from` (inclusive).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// Compacts history up to `revision`: watches from earlier revisions will fail.
    /// Compacting at or below an earlier compaction changes nothing and is not an error.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The store's current revision and identity, cheaply (no keys are read).
    async fn status(&self) -> Result<StoreStatus>;
}

#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        (**self).grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        (**self).keep_alive(lease, within).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        (**self).revoke(lease).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        (**self).txn(txn).await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        (**self).get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        (**self).list(prefix).await
    }
    async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        (**self).list_paged(prefix, page).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        (**self).watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        (**self).compact(revision).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        (**self).status().await
    }
}
