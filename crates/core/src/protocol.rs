//! The two-key protocol, in one place: every transaction a writer sends and the one way a
//! member's values are read back.
//!
//! The worker, the master's reaper and the operator commands only *send* these; none of
//! them builds a transaction or decodes a record itself. The rules, per write:
//!
//! | write | guard | effect |
//! |---|---|---|
//! | register | liveness key absent, no eviction marker for this incarnation | liveness key on the lease + record, one revision |
//! | update | liveness key still on this lease | record rewritten |
//! | leave | liveness key still on this lease | both keys deleted, one revision (`Left`) |
//! | leave, lease lost | liveness key absent | record deleted (`Failed`: it was `Suspect`) |
//! | evict | both keys unchanged since read | both keys deleted and the marker put, one revision |
//! | reap | record unchanged and liveness absent | record deleted (`Failed`) |
//!
//! Every guard makes a write lose, never clobber, when someone else moved first: of several
//! masters reaping the same member exactly one wins, and a worker never rewrites a record
//! another live process holds.
//!
//! # Evictions hold
//!
//! An eviction writes, in the transaction that deletes the member's keys, an eviction marker
//! `{prefix}evicted/{name}/{incarnation}` ([`EvictionMarker`]) on a lease of the evicting
//! operator's (its TTL is the hold time). Every registration of that incarnation is guarded
//! by the marker's absence, so the evicted process cannot register again while the marker
//! exists: the block is one condition of the registration itself, not a read before it.
//! A new process (a new incarnation) is not blocked.

use crate::error::{Error, Result};
use crate::keyspace::Keyspace;
use crate::member::{Incarnation, Liveness, Record};
use crate::store::{Condition, KeyValue, LeaseId, Revision, Txn};

/// The value of an eviction marker, `{prefix}evicted/{name}/{incarnation}`: JSON, for the
/// people reading it (`etcdctl get --prefix`); its key is what blocks the incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvictionMarker {
    /// The evicted incarnation (also in the key).
    pub incarnation: Incarnation,
    /// When the operator evicted it, in milliseconds since the Unix epoch (the evicting
    /// command's clock).
    #[serde(default)]
    pub at_unix_ms: u64,
    /// How long the eviction holds (the hold lease's TTL), in milliseconds.
    #[serde(default)]
    pub hold_ms: u64,
}

impl EvictionMarker {
    /// Encodes as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("EvictionMarker always serializes")
    }
}

impl Keyspace {
    /// Registers `record`: creates its liveness key on `lease` if no process holds the name,
    /// and writes the record, in one transaction. Fails (`succeeded == false`) when the
    /// liveness key exists (another live process, or this one's earlier registration), or
    /// when this incarnation was evicted (its eviction marker exists).
    ///
    /// ```
    /// use muster_core::{Incarnation, Keyspace, MemberInfo, Record};
    /// let ks = Keyspace::new("/g/").unwrap();
    /// let record = Record { info: MemberInfo::new("api-1", "h:80"), incarnation: Incarnation(7) };
    /// let txn = ks.register_txn(&record, 42);
    /// assert_eq!(txn.then.len(), 2);
    /// ```
    pub fn register_txn(&self, record: &Record, lease: LeaseId) -> Txn {
        self.register_on(record, lease, false)
    }

    /// Registers `record` as [`register_txn`](Self::register_txn) does, on a lease `lease`
    /// that other members' liveness keys share (one process hosting many members): the
    /// liveness value says so (`"shared": true`), so an eviction leaves the lease alone.
    pub fn register_shared_txn(&self, record: &Record, lease: LeaseId) -> Txn {
        self.register_on(record, lease, true)
    }

    fn register_on(&self, record: &Record, lease: LeaseId, shared: bool) -> Txn {
        let live = self.liveness_key(&record.info.name);
        let liveness = Liveness {
            incarnation: record.incarnation,
            shared,
        };
        Txn::new()
            .when(Condition::Absent(live.clone()))
            .when(Condition::Absent(
                self.eviction_key(&record.info.name, record.incarnation),
            ))
            .put(live, liveness.to_json(), lease)
            .put(self.record_key(&record.info.name), record.to_json(), 0)
    }

    /// Rewrites `record`, only while its liveness key is still on `lease` (this process
    /// still holds the name). Fails when the lease was lost: registering again writes it.
    pub fn update_txn(&self, record: &Record, lease: LeaseId) -> Txn {
        Txn::new()
            .when(Condition::LeaseIs(
                self.liveness_key(&record.info.name),
                lease,
            ))
            .put(self.record_key(&record.info.name), record.to_json(), 0)
    }

    /// Leaves: deletes both keys of `name` in one revision, only while its liveness key is
    /// still on `lease`. Masters report `Left`.
    pub fn leave_txn(&self, name: &str, lease: LeaseId) -> Txn {
        let live = self.liveness_key(name);
        Txn::new()
            .when(Condition::LeaseIs(live.clone(), lease))
            .delete(self.record_key(name))
            .delete(live)
    }

    /// Leaves after the lease was lost: deletes the record of `name`, only while no process
    /// holds its liveness key. Masters report `Failed` (the member was `Suspect`).
    pub fn leave_without_lease_txn(&self, name: &str) -> Txn {
        Txn::new()
            .when(Condition::Absent(self.liveness_key(name)))
            .delete(self.record_key(name))
    }

    /// Evicts `name`: deletes both keys in one revision, only if the record is still at
    /// `record_revision` and the liveness key still at `liveness_revision` (`None`: absent)
    /// — both as the operator read them — and in the same revision puts `marker` (naming
    /// the evicted incarnation) at its [`eviction_key`](Keyspace::eviction_key) on `hold`,
    /// the lease whose TTL is how long the eviction holds.
    pub fn evict_txn(
        &self,
        name: &str,
        record_revision: Revision,
        liveness_revision: Option<Revision>,
        marker: &EvictionMarker,
        hold: LeaseId,
    ) -> Txn {
        let record = self.record_key(name);
        let live = self.liveness_key(name);
        let live_guard = match liveness_revision {
            Some(revision) => Condition::ModRevision(live.clone(), revision),
            None => Condition::Absent(live.clone()),
        };
        Txn::new()
            .when(Condition::ModRevision(record.clone(), record_revision))
            .when(live_guard)
            .delete(record)
            .delete(live)
            .put(
                self.eviction_key(name, marker.incarnation),
                marker.to_json(),
                hold,
            )
    }

    /// Reads an eviction marker's value from `kv`. [`Error::Decode`] if it does not decode;
    /// the key alone (its existence) is what blocks a registration.
    pub fn decode_eviction(&self, kv: &KeyValue) -> Result<EvictionMarker> {
        serde_json::from_slice(&kv.value).map_err(|e| Error::Decode {
            key: kv.key.clone(),
            reason: e.to_string(),
        })
    }

    /// Reaps `name`: deletes its record only if it is still at `record_revision` and the
    /// liveness key is still absent. Of several masters trying, exactly one succeeds.
    pub fn reap_txn(&self, name: &str, record_revision: Revision) -> Txn {
        let record = self.record_key(name);
        Txn::new()
            .when(Condition::ModRevision(record.clone(), record_revision))
            .when(Condition::Absent(self.liveness_key(name)))
            .delete(record)
    }

    /// Reads the record of member `name` from `kv` (its record key's value): decodable, with
    /// a valid name, and the name its key names. Anything else is [`Error::Decode`], which
    /// every reader treats as "no record".
    pub fn decode_record(&self, name: &str, kv: &KeyValue) -> Result<Record> {
        let record = Record::from_json(&kv.key, &kv.value)?;
        if record.info.name != name {
            return Err(Error::Decode {
                key: kv.key.clone(),
                reason: format!(
                    "the record names {:?} but its key names {name:?}",
                    record.info.name
                ),
            });
        }
        Ok(record)
    }

    /// Reads a liveness value from `kv` (a liveness key's value). [`Error::Decode`] if it
    /// does not decode; an undecodable liveness key still holds its name for writers (it is
    /// someone's key), but counts as absent for the view.
    pub fn decode_liveness(&self, kv: &KeyValue) -> Result<Liveness> {
        Liveness::from_json(&kv.key, &kv.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Incarnation, MemberInfo};
    use crate::store::Op;

    fn kv(key: &str, value: &[u8]) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 2,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn register_puts_liveness_on_the_lease_and_the_record_without() {
        let ks = Keyspace::new("/g/").unwrap();
        let record = Record {
            info: MemberInfo::new("a", "h:1"),
            incarnation: Incarnation(9),
        };
        let txn = ks.register_txn(&record, 42);
        assert_eq!(
            txn.when,
            vec![
                Condition::Absent("/g/alive/a".into()),
                Condition::Absent("/g/evicted/a/0000000000000009".into()),
            ]
        );
        assert_eq!(
            txn.then,
            vec![
                Op::Put {
                    key: "/g/alive/a".into(),
                    value: br#"{"incarnation":9}"#.to_vec(),
                    lease: 42
                },
                Op::Put {
                    key: "/g/members/a".into(),
                    value: record.to_json(),
                    lease: 0
                },
            ]
        );
    }

    #[test]
    fn a_record_under_another_name_is_undecodable() {
        let ks = Keyspace::new("/g/").unwrap();
        let record = Record {
            info: MemberInfo::new("b", ""),
            incarnation: Incarnation(1),
        };
        let error = ks
            .decode_record("a", &kv("/g/members/a", &record.to_json()))
            .unwrap_err();
        assert!(
            matches!(&error, Error::Decode { reason, .. } if reason.contains("\"b\"")),
            "{error}"
        );
        assert_eq!(
            ks.decode_record("b", &kv("/g/members/b", &record.to_json()))
                .unwrap(),
            record
        );
    }
}
