//! Helpers shared by the membership tests: values, keys, and `Sim`, a tiny etcd-like keyspace
//! that turns writes into the `Event`s, `WatchBatch`es and `Listing`s a master would observe.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_core::{
    Condition, Event, EventKind, Incarnation, KeyValue, Keyspace, Listing, Liveness, MemberInfo,
    Membership, Record, Revision, Step, TransitionKind, WatchBatch,
};

/// The prefix every test group lives under.
pub const PREFIX: &str = "/muster/test/";

/// The keyspace under [`PREFIX`].
pub fn keyspace() -> Keyspace {
    Keyspace::new(PREFIX).expect("valid prefix")
}

/// The record key of `name`.
pub fn rkey(name: &str) -> String {
    keyspace().record_key(name)
}

/// The liveness key of `name`.
pub fn lkey(name: &str) -> String {
    keyspace().liveness_key(name)
}

/// Some metadata for `name`, varied by `v`.
pub fn info(name: &str, v: u32) -> MemberInfo {
    MemberInfo::new(name, format!("10.0.0.{v}:80")).cpus(v)
}

/// The JSON of a record.
pub fn record_json(info: &MemberInfo, incarnation: u64) -> Vec<u8> {
    Record {
        info: info.clone(),
        incarnation: Incarnation(incarnation),
    }
    .to_json()
}

/// The JSON of a liveness value.
pub fn live_json(incarnation: u64) -> Vec<u8> {
    Liveness {
        incarnation: Incarnation(incarnation),
        shared: false,
    }
    .to_json()
}

/// A key-value with etcd metadata.
pub fn kv(key: &str, value: &[u8], create: Revision, modified: Revision) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modified,
        version: 1,
        lease: 0,
    }
}

/// A put event (the kv carries the revision).
pub fn put_event(kv: KeyValue) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
    }
}

/// A delete event at `revision`.
pub fn delete_event(key: &str, revision: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_owned(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        },
    }
}

/// A batch of events; its revision is the last event's (or `revision` if there is none).
pub fn batch(events: Vec<Event>) -> WatchBatch {
    let revision = events.last().map(|e| e.revision()).unwrap_or(0);
    WatchBatch { revision, events }
}

/// A listing at `revision`, sorted by key like a real one.
pub fn listing(revision: Revision, mut kvs: Vec<KeyValue>) -> Listing {
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    Listing { revision, kvs }
}

/// The kinds of a step's transitions, in order.
pub fn kinds(step: &Step) -> Vec<TransitionKind> {
    step.transitions.iter().map(|t| t.kind).collect()
}

/// The (name, kind) pairs of a step's transitions, in order.
pub fn named(step: &Step) -> Vec<(String, TransitionKind)> {
    step.transitions
        .iter()
        .map(|t| (t.member.name().to_owned(), t.kind))
        .collect()
}

/// The (name, kind, revision) triples of a step's transitions, in order.
pub fn timeline(step: &Step) -> Vec<(String, TransitionKind, Revision)> {
    step.transitions
        .iter()
        .map(|t| (t.member.name().to_owned(), t.kind, t.revision))
        .collect()
}

/// How long a member stays `Suspect` before a reap is proposed, in these tests.
pub const REAP_AFTER: Duration = Duration::from_secs(10);

/// A machine over [`keyspace`] reaping after [`REAP_AFTER`].
pub fn machine() -> Membership {
    Membership::new(keyspace(), Some(REAP_AFTER))
}

/// A fixed origin for test time, and offsets from it.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// `secs` seconds after the origin.
    pub fn at(&self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }

    /// `millis` milliseconds after the origin.
    pub fn at_ms(&self, millis: u64) -> Instant {
        self.0 + Duration::from_millis(millis)
    }
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Put `value` at `key`.
    Put(String, Vec<u8>),
    /// Delete `key` (nothing happens if it is absent).
    Delete(String),
}

/// Put `name`'s record.
pub fn put_record(name: &str, info: &MemberInfo, incarnation: u64) -> Write {
    Write::Put(rkey(name), record_json(info, incarnation))
}

/// Put `name`'s liveness key.
pub fn put_live(name: &str, incarnation: u64) -> Write {
    Write::Put(lkey(name), live_json(incarnation))
}

/// Delete `name`'s record.
pub fn del_record(name: &str) -> Write {
    Write::Delete(rkey(name))
}

/// Delete `name`'s liveness key.
pub fn del_live(name: &str) -> Write {
    Write::Delete(lkey(name))
}

/// Put the eviction marker of incarnation `incarnation` of `name`.
pub fn put_marker(name: &str, incarnation: u64) -> Write {
    let marker = muster_core::EvictionMarker {
        incarnation: Incarnation(incarnation),
        at_unix_ms: 0,
        hold_ms: 0,
    };
    Write::Put(
        keyspace().eviction_key(name, Incarnation(incarnation)),
        marker.to_json(),
    )
}

/// Delete the eviction marker of incarnation `incarnation` of `name` (its hold expired).
pub fn del_marker(name: &str, incarnation: u64) -> Write {
    Write::Delete(keyspace().eviction_key(name, Incarnation(incarnation)))
}

/// Evict `name`: both keys deleted and the marker put, in one transaction.
pub fn evict(name: &str, incarnation: u64) -> Vec<Write> {
    vec![
        del_record(name),
        del_live(name),
        put_marker(name, incarnation),
    ]
}

/// Register `name`: record and liveness in one transaction.
pub fn register(name: &str, info: &MemberInfo, incarnation: u64) -> Vec<Write> {
    vec![
        put_record(name, info, incarnation),
        put_live(name, incarnation),
    ]
}

/// An etcd-like keyspace: every transaction that changes something makes one new revision,
/// with create/mod revisions and versions as etcd keeps them.
#[derive(Debug, Clone)]
pub struct Sim {
    /// The current revision (etcd starts at 1).
    pub revision: Revision,
    /// The keys present now.
    pub kvs: BTreeMap<String, KeyValue>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// An empty keyspace at revision 1.
    pub fn new() -> Self {
        Self {
            revision: 1,
            kvs: BTreeMap::new(),
        }
    }

    /// Applies `writes` as one transaction. Returns its events (empty, and no new revision,
    /// if it changed nothing). Panics if a key is written twice, as etcd would refuse.
    pub fn commit(&mut self, writes: &[Write]) -> Vec<Event> {
        let mut seen = std::collections::BTreeSet::new();
        for w in writes {
            let key = match w {
                Write::Put(k, _) | Write::Delete(k) => k,
            };
            assert!(seen.insert(key.clone()), "a txn may not write {key} twice");
        }
        let changes = writes.iter().any(|w| match w {
            Write::Put(..) => true,
            Write::Delete(k) => self.kvs.contains_key(k),
        });
        if !changes {
            return Vec::new();
        }
        let revision = self.revision + 1;
        self.revision = revision;
        let mut events = Vec::new();
        for w in writes {
            match w {
                Write::Put(key, value) => {
                    let prev = self.kvs.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: 0,
                    };
                    self.kvs.insert(key.clone(), kv.clone());
                    events.push(put_event(kv));
                }
                Write::Delete(key) => {
                    if self.kvs.remove(key).is_some() {
                        events.push(delete_event(key, revision));
                    }
                }
            }
        }
        events
    }

    /// Commits `writes` and wraps the events in a one-revision batch.
    pub fn txn(&mut self, writes: &[Write]) -> WatchBatch {
        let events = self.commit(writes);
        WatchBatch {
            revision: self.revision,
            events,
        }
    }

    /// Commits several transactions and returns them as one multi-revision batch.
    pub fn txns(&mut self, txns: &[Vec<Write>]) -> WatchBatch {
        let events = txns.iter().flat_map(|w| self.commit(w)).collect();
        WatchBatch {
            revision: self.revision,
            events,
        }
    }

    /// A listing of everything at the current revision.
    pub fn listing(&self) -> Listing {
        Listing {
            revision: self.revision,
            kvs: self.kvs.values().cloned().collect(),
        }
    }

    /// One key.
    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    /// Whether a transaction condition holds now.
    pub fn holds(&self, condition: &Condition) -> bool {
        match condition {
            Condition::Absent(key) => !self.kvs.contains_key(key),
            Condition::ModRevision(key, rev) => {
                self.get(key).is_some_and(|kv| kv.mod_revision == *rev)
            }
            Condition::LeaseIs(key, lease) => self.get(key).is_some_and(|kv| kv.lease == *lease),
        }
    }
}
