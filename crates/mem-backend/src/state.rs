//! The synchronous core: one keyspace, its revisions, leases, history and watchers.
//!
//! Everything the cluster does happens here, under one lock, with the current time passed
//! in (`now`): no IO, no awaiting, no clock reads. That is what makes the memory store
//! deterministic: the same calls in the same order, at the same simulated times, give the
//! same revisions, lease ids and events. `BTreeMap`s everywhere keep every output in a fixed
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

use muster_core::{
    Condition, Event, EventKind, KeyValue, Lease, LeaseId, Listing, Op, Result, Revision, Txn,
    TxnOutcome, WatchBatch,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::error::MemError;
use crate::faults::{ClientId, Faults};
use crate::leases::{Leases, MAX_TTL};

/// The settings of a cluster, fixed when it is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// A lease TTL below this is raised to it (etcd: 2 s).
    pub(crate) min_ttl: Duration,
    /// The largest value a put may carry, in bytes.
    pub(crate) max_value_size: usize,
}

/// What a watch stream receives: batches, or an error and then the end.
pub(crate) type WatchItem = Result<WatchBatch>;

/// One open watch.
#[derive(Debug)]
struct Watcher {
    /// The client that opened it, so faults can end it.
    client: ClientId,
    /// Only keys starting with this are reported.
    prefix: String,
    /// Only revisions at or after this are reported (a watch may start in the future).
    from: Revision,
    /// Where its batches go; the stream holds the receiving end.
    tx: UnboundedSender<WatchItem>,
}

/// The whole cluster.
#[derive(Debug)]
pub(crate) struct State {
    /// Fixed settings.
    config: Config,
    /// The current revision. An empty etcd is at revision 1, so this starts at 1.
    revision: Revision,
    /// The compaction revision: history below it is gone. `0` = never compacted.
    compacted: Revision,
    /// The keyspace.
    kvs: BTreeMap<String, KeyValue>,
    /// The live leases.
    leases: Leases,
    /// Every event since the compaction revision, in revision order: watches from the past
    /// replay from here.
    history: Vec<Event>,
    /// The open watches, by a counter so they are notified in the order they were opened.
    watchers: BTreeMap<u64, Watcher>,
    /// The id of the next watcher.
    next_watcher: u64,
    /// The id of the next client.
    next_client: u64,
    /// The injected faults.
    pub(crate) faults: Faults,
    /// This store's identity (etcd's cluster id); a new one after [`State::wipe`].
    cluster_id: u64,
}

/// Cluster ids handed out in this process, so every cluster (and every wipe) gets a new one.
static NEXT_CLUSTER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_cluster_id() -> u64 {
    NEXT_CLUSTER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl State {
    /// An empty cluster at revision 1.
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            revision: 1,
            compacted: 0,
            kvs: BTreeMap::new(),
            leases: Leases::new(),
            history: Vec::new(),
            watchers: BTreeMap::new(),
            next_watcher: 0,
            next_client: 1,
            faults: Faults::default(),
            cluster_id: next_cluster_id(),
        }
    }

    /// This store's identity.
    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Replaces the store by an empty one, as when etcd is replaced after losing its data:
    /// keys, leases and history are gone, the revision starts again at 1, the cluster id is
    /// new, and every open watch ends with an `Unavailable` error. Clients and faults stay.
    pub(crate) fn wipe(&mut self) {
        for (_, watcher) in std::mem::take(&mut self.watchers) {
            let _ = watcher.tx.send(Err(MemError::Unavailable(
                "the store was replaced by an empty one (data lost); watch again".to_owned(),
            )
            .into()));
        }
        self.revision = 1;
        self.compacted = 0;
        self.kvs.clear();
        self.leases = Leases::new();
        self.history.clear();
        self.cluster_id = next_cluster_id();
    }

    /// A new client id.
    pub(crate) fn new_client(&mut self) -> ClientId {
        let id = ClientId(self.next_client);
        self.next_client += 1;
        id
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// The compaction revision (`0` if never compacted).
    pub(crate) fn compacted(&self) -> Revision {
        self.compacted
    }

    /// How many leases are live.
    pub(crate) fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// How many watches are open (counting only those whose stream is still held).
    pub(crate) fn watch_count(&self) -> usize {
        self.watchers.values().filter(|w| !w.tx.is_closed()).count()
    }

    /// When the next lease expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leases.next_deadline()
    }

    /// Expires every lease whose deadline is at or before `now`, each in its own revision
    /// (one revision per lease, all its keys in it, as etcd revokes an expired lease).
    /// Returns how many leases expired.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some((id, keys)) = self.leases.pop_expired(now) {
            tracing::debug!(lease = id, keys = keys.len(), "mem store: lease expired");
            self.delete_keys(keys);
            expired += 1;
        }
        expired
    }

    /// Grants a lease of `ttl`, raised to the configured minimum.
    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> Result<Lease, MemError> {
        if ttl > MAX_TTL {
            return Err(MemError::TtlTooLarge { ttl, max: MAX_TTL });
        }
        let ttl = ttl.max(self.config.min_ttl);
        let id = self.leases.grant(ttl, now)?;
        Ok(Lease { id, ttl })
    }

    /// Restarts a lease's TTL; returns the TTL.
    pub(crate) fn keep_alive(
        &mut self,
        lease: LeaseId,
        now: Instant,
    ) -> Result<Duration, MemError> {
        self.leases.renew(lease, now)
    }

    /// Revokes a lease, deleting its keys in one revision. A missing lease is fine.
    pub(crate) fn revoke(&mut self, lease: LeaseId) {
        if let Some(keys) = self.leases.remove(lease) {
            self.delete_keys(keys);
        }
    }

    /// Runs a transaction.
    ///
    /// In etcd's order: the request is validated first (empty keys, value sizes, duplicate
    /// keys: errors even if the conditions would fail), then the conditions are checked,
    /// then the leases of the chosen writes (an unknown lease is an error only if the writes
    /// would run), then everything is applied at one new revision.
    pub(crate) fn txn(&mut self, txn: Txn) -> Result<TxnOutcome, MemError> {
        self.validate(&txn.then)?;
        if !txn.when.iter().all(|c| self.holds(c)) {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: self.revision,
            });
        }
        for op in &txn.then {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !self.leases.contains(*lease) {
                    return Err(MemError::LeaseNotFound(*lease));
                }
            }
        }
        self.apply(txn.then);
        Ok(TxnOutcome {
            succeeded: true,
            revision: self.revision,
        })
    }

    /// Reads one key.
    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.kvs.get(key).cloned()
    }

    /// Lists a prefix at the current revision.
    pub(crate) fn list(&self, prefix: &str) -> Listing {
        Listing {
            revision: self.revision,
            kvs: self
                .kvs
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect(),
        }
    }

    /// Compacts history below `revision`.
    pub(crate) fn compact(&mut self, revision: Revision) -> Result<(), MemError> {
        if revision > self.revision {
            return Err(MemError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= self.compacted {
            // Already compacted that far: nothing to do (the etcd backend does the same).
            return Ok(());
        }
        let keep_from = self.history.partition_point(|e| e.revision() < revision);
        self.history.drain(..keep_from);
        self.compacted = revision;
        tracing::debug!(revision, "mem store: compacted");
        Ok(())
    }

    /// Opens a watch of `prefix` from `from` for `client`; returns the receiving end.
    ///
    /// `from <= 0` means "from the next revision", as etcd's unset `start_revision`. A
    /// compacted `from` yields one `Compacted` error and then the end, as etcd cancels such a
    /// watch after creating it. Otherwise the history from `from` is queued now (one batch
    /// per revision) and the watch is registered under the same lock, so no write can fall
    /// between the replay and the live events.
    pub(crate) fn watch(
        &mut self,
        client: ClientId,
        prefix: &str,
        from: Revision,
    ) -> UnboundedReceiver<WatchItem> {
        let (tx, rx) = unbounded_channel();
        let start = if from <= 0 { self.revision + 1 } else { from };
        if start < self.compacted {
            let err = MemError::Compacted {
                requested: from,
                compacted: self.compacted,
            };
            // The receiver is alive: it was created just above.
            let _ = tx.send(Err(err.into()));
            return rx;
        }
        let replay_from = self.history.partition_point(|e| e.revision() < start);
        for events in self.history[replay_from..].chunk_by(|a, b| a.revision() == b.revision()) {
            let events: Vec<Event> = events
                .iter()
                .filter(|e| e.kv.key.starts_with(prefix))
                .cloned()
                .collect();
            if !events.is_empty() {
                let _ = tx.send(Ok(WatchBatch {
                    revision: self.revision,
                    events,
                }));
            }
        }
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.watchers.insert(
            id,
            Watcher {
                client,
                prefix: prefix.to_owned(),
                from: start,
                tx,
            },
        );
        rx
    }

    /// Ends every open watch of `client` with an `Unavailable` error carrying `message`.
    pub(crate) fn end_watches(&mut self, client: ClientId, message: &str) -> usize {
        let ids: Vec<u64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.client == client)
            .map(|(&id, _)| id)
            .collect();
        for id in &ids {
            if let Some(watcher) = self.watchers.remove(id) {
                let _ = watcher
                    .tx
                    .send(Err(MemError::Unavailable(message.to_owned()).into()));
            }
        }
        ids.len()
    }

    /// Rejects what etcd rejects before looking at the data: empty keys, oversized values,
    /// a key written twice. Two deletes of one key are allowed, as in etcd.
    fn validate(&self, ops: &[Op]) -> Result<(), MemError> {
        let mut puts = BTreeSet::new();
        let mut deletes = BTreeSet::new();
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    if key.is_empty() {
                        return Err(MemError::EmptyKey);
                    }
                    if value.len() > self.config.max_value_size {
                        return Err(MemError::ValueTooLarge {
                            key: key.clone(),
                            size: value.len(),
                            limit: self.config.max_value_size,
                        });
                    }
                    if !puts.insert(key.as_str()) {
                        return Err(MemError::DuplicateKey { key: key.clone() });
                    }
                }
                Op::Delete { key } => {
                    deletes.insert(key.as_str());
                }
            }
        }
        if let Some(key) = puts.intersection(&deletes).next() {
            return Err(MemError::DuplicateKey {
                key: (*key).to_owned(),
            });
        }
        Ok(())
    }

    /// Whether a condition holds now.
    fn holds(&self, condition: &Condition) -> bool {
        match condition {
            Condition::Absent(key) => !self.kvs.contains_key(key),
            Condition::ModRevision(key, revision) => self
                .kvs
                .get(key)
                .is_some_and(|kv| kv.mod_revision == *revision),
            Condition::LeaseIs(key, lease) => {
                self.kvs.get(key).is_some_and(|kv| kv.lease == *lease)
            }
        }
    }

    /// Deletes `keys` in one revision (nothing if none of them exists).
    fn delete_keys(&mut self, keys: BTreeSet<String>) {
        self.apply(keys.into_iter().map(|key| Op::Delete { key }).collect());
    }

    /// Applies validated writes at one new revision, records them and tells the watchers.
    /// Writes that change nothing (deleting absent keys) make no revision.
    fn apply(&mut self, ops: Vec<Op>) {
        let revision = self.revision + 1;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    // (lease, create revision, version) of the key being overwritten.
                    let prev = self
                        .kvs
                        .get(&key)
                        .map(|p| (p.lease, p.create_revision, p.version));
                    if let Some((old_lease, _, _)) = prev {
                        if old_lease != 0 && old_lease != lease {
                            self.leases.detach(old_lease, &key);
                        }
                    }
                    if lease != 0 {
                        self.leases.attach(lease, &key);
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: prev.map_or(revision, |(_, created, _)| created),
                        mod_revision: revision,
                        version: prev.map_or(1, |(_, _, version)| version + 1),
                        lease,
                    };
                    self.kvs.insert(key, kv.clone());
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Op::Delete { key } => {
                    if let Some(prev) = self.kvs.remove(&key) {
                        if prev.lease != 0 {
                            self.leases.detach(prev.lease, &key);
                        }
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key,
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: revision,
                                version: 0,
                                lease: 0,
                            },
                        });
                    }
                }
            }
        }
        if events.is_empty() {
            return;
        }
        self.revision = revision;
        self.notify(revision, &events);
        self.history.extend(events);
    }

    /// Sends the events of one new revision to every watcher they concern, as one batch.
    fn notify(&mut self, revision: Revision, events: &[Event]) {
        let mut gone = Vec::new();
        for (&id, watcher) in &self.watchers {
            if watcher.tx.is_closed() {
                gone.push(id);
                continue;
            }
            if revision < watcher.from {
                continue;
            }
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.kv.key.starts_with(&watcher.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                continue;
            }
            let batch = WatchBatch {
                revision,
                events: mine,
            };
            if watcher.tx.send(Ok(batch)).is_err() {
                gone.push(id);
            }
        }
        for id in gone {
            self.watchers.remove(&id);
        }
    }
}
