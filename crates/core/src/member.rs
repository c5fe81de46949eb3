//! What a member is: its validated name, its record ([`MemberInfo`]) and its liveness value.
//!
//! Both values are JSON so that operators can read them with `etcdctl get`, and both ignore
//! unknown fields so that a newer worker can add fields without breaking an older master.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest member name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` can be used as a member name: 1 to [`MAX_NAME_LEN`] bytes, printable,
/// no whitespace, no `/`, and not `.` or `..`.
///
/// ```
/// assert!(muster_core::validate_name("api-1").is_ok());
/// assert!(muster_core::validate_name("a/b").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 128 bytes")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it contains whitespace or a control character")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A member's record: what the group knows about it. Stored without a lease at
/// `{prefix}members/{name}`; its existence *is* membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's unique name within the group.
    pub name: String,
    /// Where to reach it (free-form, usually `host:port`).
    #[serde(default)]
    pub addr: String,
    /// How many CPUs it offers.
    #[serde(default)]
    pub cpus: u32,
    /// Free-form labels (zone, version, shard, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl MemberInfo {
    /// A record with a name and an address, no CPUs and no labels.
    ///
    /// ```
    /// let info = muster_core::MemberInfo::new("api-1", "10.0.0.5:8080").label("zone", "a");
    /// assert_eq!(info.labels["zone"], "a");
    /// ```
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addr: addr.into(),
            cpus: 0,
            labels: BTreeMap::new(),
        }
    }

    /// Sets the CPU count.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Encodes the record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("MemberInfo always serializes")
    }

    /// Decodes a record read at `key`, checking that its name is valid.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        let info: MemberInfo = serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        validate_name(&info.name).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(info)
    }
}

/// A [`Member`](crate::Member) holds its info in an [`Arc`]: these let it be compared with a
/// plain `MemberInfo` (`member.info == info`) as before.
impl PartialEq<MemberInfo> for Arc<MemberInfo> {
    fn eq(&self, other: &MemberInfo) -> bool {
        **self == *other
    }
}

impl PartialEq<Arc<MemberInfo>> for MemberInfo {
    fn eq(&self, other: &Arc<MemberInfo>) -> bool {
        *self == **other
    }
}

/// A process's identity: fresh for every process start, kept across re-registrations of the
/// same process. It is what tells `Recovered` (same process back) from `Restarted`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The value at `{prefix}members/{name}`: the member's [`MemberInfo`] plus the incarnation of
/// the process that last wrote it (JSON, the info's fields flattened beside `incarnation`).
///
/// Keeping the incarnation in the record makes `Recovered` versus `Restarted` a function of
/// the keyspace alone: a master that restarts decides it exactly as one that never stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The member's metadata.
    #[serde(flatten)]
    pub info: MemberInfo,
    /// The process that wrote this record.
    #[serde(default)]
    pub incarnation: Incarnation,
}

impl Record {
    /// Encodes as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Record always serializes")
    }

    /// Decodes a record read at `key`, checking that its name is valid.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        let wire: RecordWire = serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        validate_name(&wire.name).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Record {
            info: MemberInfo {
                name: wire.name,
                addr: wire.addr,
                cpus: wire.cpus,
                labels: wire.labels,
            },
            incarnation: wire.incarnation,
        })
    }
}

/// A record's JSON, field by field, for [`Record::from_json`]: the same document as
/// `Record`'s derived form, but decoding through `#[serde(flatten)]` buffers every field
/// before it decodes any, which made decoding half of the state machine's time (it decodes
/// one record per observation). Unknown fields are ignored, as with `Record`.
#[derive(Deserialize)]
struct RecordWire {
    name: String,
    #[serde(default)]
    addr: String,
    #[serde(default)]
    cpus: u32,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    incarnation: Incarnation,
}

/// The small value at `{prefix}alive/{name}`, bound to the worker's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The incarnation of the process holding the name.
    pub incarnation: Incarnation,
}

impl Liveness {
    /// Encodes as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Liveness always serializes")
    }

    /// Decodes a liveness value read at `key`.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "api-1", "node_7.zone-b", "ünïcode", &"x".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good:?} should be valid");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "tab\t",
            "nl\n",
            ".",
            "..",
            &"x".repeat(129),
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_default() {
        let info =
            MemberInfo::from_json("k", br#"{"name":"a","addr":"h:1","future":true}"#).unwrap();
        assert_eq!(info, MemberInfo::new("a", "h:1"));
        let live = Liveness::from_json("k", br#"{"incarnation":7,"pid":1}"#).unwrap();
        assert_eq!(live.incarnation, Incarnation(7));
    }

    #[test]
    fn records_carry_info_and_incarnation_side_by_side() {
        let record = Record {
            info: MemberInfo::new("a", "h:1").cpus(4).label("zone", "z"),
            incarnation: Incarnation(9),
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["name"], "a");
        assert_eq!(json["incarnation"], 9);
        assert_eq!(Record::from_json("k", &record.to_json()).unwrap(), record);
        let err = Record::from_json("/p/members/a", b"{}").unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn record_decoding_agrees_with_the_derived_form() {
        for json in [
            &br#"{"name":"a"}"#[..],
            br#"{"name":"a","addr":"h:1","cpus":4,"labels":{"z":"1","y":"2"},"incarnation":7}"#,
            br#"{"incarnation":7,"future":{"x":[1,2]},"labels":{},"name":"b","cpus":0}"#,
        ] {
            let derived: Record = serde_json::from_slice(json).unwrap();
            assert_eq!(Record::from_json("k", json).unwrap(), derived);
        }
        for bad in [&br#"{"name":"a","cpus":-1}"#[..], br#"{"name":7}"#, b"[]"] {
            let err = Record::from_json("/m/members/a", bad).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_decode_errors_naming_the_key() {
        for bad in [&b"not json"[..], br#"{"addr":"x"}"#, br#"{"name":"a/b"}"#] {
            let err = MemberInfo::from_json("/m/members/x", bad).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
            assert!(err.to_string().contains("/m/members/x"), "{err}");
        }
    }
}
