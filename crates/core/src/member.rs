//! What a member is: its validated name, its record ([`MemberInfo`]) and its liveness value.
//!
//! Both values are JSON so that operators can read them with `etcdctl get`, and both ignore
//! unknown fields so that a newer worker can add fields without breaking an older master.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::labels::Labels;

/// The longest member name, in characters (Unicode scalar values, as `str::chars` counts
/// them; so at most 512 bytes).
pub const MAX_NAME_LEN: usize = 128;

/// Checks that `name` can be used as a member name: 1 to [`MAX_NAME_LEN`] characters
/// (counted as `str::chars` counts them, not bytes: `"é".repeat(128)` is a valid name of 256
/// bytes), printable, no whitespace, no `/`, and not `.` or `..`.
///
/// ```
/// assert!(muster_core::validate_name("api-1").is_ok());
/// assert!(muster_core::validate_name(&"é".repeat(128)).is_ok());
/// assert!(muster_core::validate_name(&"é".repeat(129)).is_err());
/// assert!(muster_core::validate_name("a/b").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    // Up to MAX_NAME_LEN bytes is at most that many characters: count only longer names.
    let too_long = name.len() > MAX_NAME_LEN && name.chars().count() > MAX_NAME_LEN;
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if too_long {
        Some("it is longer than 128 characters")
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

/// The longest host part of an address, in bytes (DNS's limit for a name).
const MAX_HOST_LEN: usize = 253;

/// Checks that `addr` can be registered as a member's address: `HOST:PORT`, or empty for a
/// member without an address.
///
/// - `HOST` is a DNS name (ASCII letters, digits, `-` and `_`, dot-separated labels of 1 to
///   63 characters not starting or ending with `-`, 253 characters in all; one trailing
///   `.` allowed; international names in their punycode form), an IPv4 address, or an IPv6
///   address in brackets (`[::1]`, without a zone).
/// - `PORT` is a decimal number from 1 to 65535.
/// - `""` registers the member with no address (a batch worker that serves nothing): the
///   one documented way to say "no address". Anything else must be a full `HOST:PORT`.
///
/// Only registration and updates check this; a record already in the store decodes whatever
/// its `addr` says.
///
/// ```
/// use muster_core::validate_addr;
/// for good in ["10.0.0.5:8080", "api.internal:443", "[::1]:8080", ""] {
///     assert!(validate_addr(good).is_ok(), "{good}");
/// }
/// for bad in ["not-an-addr", "10.0.0.1", ":8080", "h:99999", "h:0", "::1:80"] {
///     assert!(validate_addr(bad).is_err(), "{bad}");
/// }
/// ```
pub fn validate_addr(addr: &str) -> Result<()> {
    if addr.is_empty() {
        return Ok(());
    }
    match addr_problem(addr) {
        Some(reason) => Err(Error::InvalidAddr {
            addr: addr.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What is wrong with a non-empty `addr`, if anything.
fn addr_problem(addr: &str) -> Option<&'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Some("its '[' has no matching ']'");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Some("the part in brackets is not an IPv6 address");
        }
        match after.strip_prefix(':') {
            Some(port) => (None, port),
            None => return Some("it has no ':PORT' after the bracketed IPv6 address"),
        }
    } else {
        match addr.rsplit_once(':') {
            None => return Some("it has no port"),
            Some((host, _)) if host.contains(':') => {
                return Some("it has more than one ':' (an IPv6 address goes in brackets)")
            }
            Some((host, port)) => (Some(host), port),
        }
    };
    if let Some(problem) = port_problem(port) {
        return Some(problem);
    }
    host.and_then(host_problem)
}

/// What is wrong with the port of an address, if anything.
fn port_problem(port: &str) -> Option<&'static str> {
    if port.is_empty() {
        return Some("it has no port after ':'");
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Some("its port is not a number");
    }
    match port.parse::<u32>() {
        Ok(0) => Some("port 0 is not a port clients can connect to"),
        Ok(1..=65535) => None,
        _ => Some("its port is over 65535"),
    }
}

/// What is wrong with the host of an address (not a bracketed IPv6 one), if anything.
fn host_problem(host: &str) -> Option<&'static str> {
    if host.is_empty() {
        return Some("it has no host (clients need one to connect to)");
    }
    if host.len() > MAX_HOST_LEN {
        return Some("its host is longer than 253 characters");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return match host.parse::<std::net::Ipv4Addr>() {
            Ok(_) => None,
            Err(_) => Some("its host is not a valid IPv4 address"),
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    for label in name.split('.') {
        if label.is_empty() {
            return Some("its host has an empty part between dots");
        }
        if label.len() > 63 {
            return Some("a part of its host is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("its host is not a DNS name or an IP address (a DNS name has only ASCII letters, digits, '-', '_' and dots; use punycode for international names)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a part of its host starts or ends with '-'");
        }
    }
    None
}

/// Checks that `key` can be used as a label key: not empty, no `=` (the HTTP API's filter
/// `label=KEY=VALUE` splits at the first one) and no control characters. Values are
/// free-form.
///
/// ```
/// assert!(muster_core::validate_label_key("zone").is_ok());
/// assert!(muster_core::validate_label_key("a=b").is_err());
/// ```
pub fn validate_label_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if key.contains('=') {
        Some("it contains '='")
    } else if key.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidLabel {
            key: key.to_owned(),
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
    /// Where to reach it: `HOST:PORT`, or empty for a member without an address (see
    /// [`validate_addr`], which registration applies).
    #[serde(default)]
    pub addr: String,
    /// How many CPUs it offers.
    #[serde(default)]
    pub cpus: u32,
    /// Free-form labels (zone, version, shard, ...).
    #[serde(default)]
    pub labels: Labels,
    /// Whether it is draining: still a member, finishing its work, no longer to be sent
    /// new work (see [`MemberInfo::draining`]). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl MemberInfo {
    /// A record with a name and an address, no CPUs and no labels.
    ///
    /// ```
    /// let info = muster_core::MemberInfo::new("api-1", "10.0.0.5:8080").label("zone", "a");
    /// assert_eq!(info.labels.get("zone"), Some("a"));
    /// ```
    pub fn new(name: impl Into<String>, addr: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addr: addr.into(),
            cpus: 0,
            labels: Labels::new(),
            draining: false,
        }
    }

    /// Sets the CPU count.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// Marks it draining (or not): a member that announces it is about to leave, so that
    /// callers stop sending it new work while it finishes what it has. The master reports
    /// the change as `Draining`; `muster_master::Filter` leaves draining members out by
    /// default.
    ///
    /// ```
    /// let info = muster_core::MemberInfo::new("api-1", "10.0.0.5:8080").draining(true);
    /// assert!(info.draining);
    /// ```
    pub fn draining(mut self, draining: bool) -> Self {
        self.draining = draining;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Checks everything registration requires of a member's metadata: a valid name
    /// ([`validate_name`]), an address that is `HOST:PORT` or empty ([`validate_addr`]),
    /// and valid label keys ([`validate_label_key`]). `Worker::register` and
    /// `Worker::update` call it before writing anything.
    ///
    /// ```
    /// use muster_core::MemberInfo;
    /// assert!(MemberInfo::new("api-1", "10.0.0.5:8080").validate().is_ok());
    /// assert!(MemberInfo::new("batch-1", "").validate().is_ok()); // no address
    /// assert!(MemberInfo::new("api-1", "10.0.0.5").validate().is_err()); // no port
    /// ```
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        validate_addr(&self.addr)?;
        self.labels.keys().try_for_each(validate_label_key)
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
        object_only(key, bytes)?;
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
                draining: wire.draining,
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
    labels: Labels,
    #[serde(default)]
    draining: bool,
    #[serde(default)]
    incarnation: Incarnation,
}

/// The small value at `{prefix}alive/{name}`, bound to the worker's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The incarnation of the process holding the name.
    pub incarnation: Incarnation,
    /// Whether the lease carries other members' liveness keys too (a process hosting many
    /// members on one lease: `muster_worker::WorkerGroup`). An eviction then leaves the
    /// lease alone (revoking it would take the siblings down with the evicted member); the
    /// group learns of the eviction from its marker instead. Written only when `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

impl Liveness {
    /// Encodes as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Liveness always serializes")
    }

    /// Decodes a liveness value read at `key`.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        object_only(key, bytes)?;
        serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// Refuses a value that is not a JSON object: serde would read a struct from an array of
/// its fields in declaration order (`["a","h:1",4]`), which is no part of the protocol and
/// would change meaning whenever a field is added.
fn object_only(key: &str, bytes: &[u8]) -> Result<()> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(Error::Decode {
            key: key.to_owned(),
            reason: "not a JSON object (PROTOCOL.md: values are objects)".to_owned(),
        }),
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
    fn the_name_limit_counts_characters_not_bytes() {
        // 128 two-, three- and four-byte characters: 256, 384 and 512 bytes, all valid.
        for c in ['é', '名', '🦀'] {
            let at_limit = c.to_string().repeat(MAX_NAME_LEN);
            assert!(at_limit.len() > MAX_NAME_LEN);
            assert!(validate_name(&at_limit).is_ok(), "{c:?} x 128");
            let over = format!("{at_limit}{c}");
            let err = validate_name(&over).unwrap_err();
            assert!(
                err.to_string().contains("longer than 128 characters"),
                "{err}"
            );
        }
        // Mixed: 127 ASCII characters and one multibyte one is 128 characters.
        let mixed = format!("{}é", "x".repeat(127));
        assert!(validate_name(&mixed).is_ok());
        assert!(validate_name(&format!("{mixed}x")).is_err());
    }

    #[test]
    fn addresses_are_host_and_port_or_empty() {
        for good in [
            "",
            "10.0.0.5:8080",
            "127.0.0.1:1",
            "h:65535",
            "api.internal:443",
            "api.example.com.:443",
            "web_1:80",
            "xn--bcher-kva.example:80",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "localhost:9001",
        ] {
            assert!(validate_addr(good).is_ok(), "{good:?} should be valid");
        }
        for (bad, reason) in [
            ("not-an-addr", "no port"),
            ("10.0.0.1", "no port"),
            ("h:", "no port"),
            (":8080", "no host"),
            (":99999", "over 65535"),
            ("h:99999", "over 65535"),
            ("h:0", "port 0"),
            ("h:http", "not a number"),
            ("h:+80", "not a number"),
            ("::1:80", "more than one ':'"),
            ("h:80:90", "more than one ':'"),
            ("[::1]", "no ':PORT'"),
            ("[::1:80", "no matching ']'"),
            ("[10.0.0.1]:80", "not an IPv6 address"),
            ("999.0.0.1:80", "not a valid IPv4"),
            ("10.0.0:80", "not a valid IPv4"),
            ("a..b:80", "empty part"),
            ("-a:80", "starts or ends with '-'"),
            ("bücher.example:80", "not a DNS name"),
            ("a b:80", "not a DNS name"),
            ("http://h:80", "more than one ':'"),
        ] {
            let err = validate_addr(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidAddr { .. }), "{bad:?}: {err}");
            let text = err.to_string();
            assert!(text.contains(reason), "{bad:?}: {text}");
            // What to do, every time.
            assert!(text.contains("use HOST:PORT"), "{text}");
        }
        let long = format!("{0}.{0}.{0}.{0}:80", "a".repeat(63));
        assert!(validate_addr(&long)
            .unwrap_err()
            .to_string()
            .contains("253"));
        let label = format!("{}.b:80", "a".repeat(64));
        assert!(validate_addr(&label)
            .unwrap_err()
            .to_string()
            .contains("63"));
    }

    #[test]
    fn validate_checks_name_addr_and_label_keys() {
        assert!(MemberInfo::new("a", "h:1")
            .label("zone", "")
            .validate()
            .is_ok());
        let err = MemberInfo::new("a b", "h:1").validate().unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        let err = MemberInfo::new("a", "h").validate().unwrap_err();
        assert!(matches!(err, Error::InvalidAddr { .. }), "{err}");
        for (key, reason) in [("", "empty"), ("a=b", "'='"), ("a\nb", "control")] {
            let err = MemberInfo::new("a", "h:1")
                .label(key, "v")
                .validate()
                .unwrap_err();
            assert!(matches!(err, Error::InvalidLabel { .. }), "{err}");
            assert!(err.to_string().contains(reason), "{err}");
        }
        // Decoding stays lenient: a record already in the store is read whatever its addr.
        let info = MemberInfo::from_json("k", br#"{"name":"a","addr":"pid:4000000"}"#).unwrap();
        assert_eq!(info.addr, "pid:4000000");
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
