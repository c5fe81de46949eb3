//! Where members live in the store: two keys per member under one prefix.
//!
//! - `{prefix}members/{name}`: the record, no lease. Its existence is membership.
//! - `{prefix}alive/{name}`: the liveness key, bound to the worker's lease.
//!
//! Lease expiry deletes only the liveness key, so a crash (`Suspect`) and a leave (`Left`)
//! are told apart by *which* keys vanish in one revision.
//!
//! Beside them, an eviction leaves a marker, `{prefix}evicted/{name}/{incarnation}` (the
//! incarnation as 16 hex digits), bound to a lease of the evicting operator: while it exists,
//! that incarnation cannot register (see `protocol`). Markers are valid keys of the group
//! ([`KeyKind::Evicted`]) but not members' keys: the state machine ignores them.
//!
//! Anything else under the prefix was not written by muster: [`Keyspace::classify`] tells
//! such a key (a [`BadKeyReason`]) apart from a key outside the prefix, so that the master
//! can count and log it instead of ignoring it silently.

use std::fmt;

use crate::error::{Error, Result};
use crate::member::{validate_name, Incarnation, MAX_NAME_LEN};

/// Which kind of key a valid key under the prefix is: each kind lives under its own
/// sub-prefix ([`KeyKind::dir`]) and names one member.
///
/// A new kind of key is one more variant here, with its directory and its place in
/// [`KeyKind::ALL`]: [`Keyspace::classify`] then finds its keys valid, never bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `{prefix}members/{name}`.
    Record,
    /// `{prefix}alive/{name}`.
    Liveness,
    /// `{prefix}evicted/{name}/{incarnation}`: an eviction marker, not a member's key.
    Evicted,
}

impl KeyKind {
    /// Every kind of key under a group's prefix.
    pub const ALL: [KeyKind; 3] = [KeyKind::Record, KeyKind::Liveness, KeyKind::Evicted];

    /// The sub-prefix this kind's keys live under, ending in `/` (`members/`, `alive/`,
    /// `evicted/`).
    pub fn dir(self) -> &'static str {
        match self {
            KeyKind::Record => "members/",
            KeyKind::Liveness => "alive/",
            KeyKind::Evicted => "evicted/",
        }
    }
}

/// Why a key under the group's prefix is not a valid key of the group, or a valid key is
/// still not part of a member. Reported by the state machine
/// ([`Step::bad_keys`](crate::Step::bad_keys)), counted and logged by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadKeyReason {
    /// Under none of the kinds' sub-prefixes (`{prefix}whatever`, `{prefix}membersx`, the
    /// prefix itself).
    UnknownKind,
    /// A kind's sub-prefix with nothing after it (`{prefix}members/`).
    EmptyName,
    /// A name longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// A name that is no valid member name: a space or other whitespace, a control
    /// character, a `/` (`{prefix}members/a/b`), `.` or `..`.
    InvalidName,
    /// A decodable liveness key whose name has no decodable record: nobody's registration
    /// writes that (a registration writes both keys in one revision, a leave or a reap
    /// leaves no liveness behind), so something wrote it by hand, or an operator deleted
    /// the record while the worker's lease lives on.
    LivenessWithoutRecord,
}

impl BadKeyReason {
    /// Every reason, in declaration order.
    pub const ALL: [BadKeyReason; 5] = [
        BadKeyReason::UnknownKind,
        BadKeyReason::EmptyName,
        BadKeyReason::NameTooLong,
        BadKeyReason::InvalidName,
        BadKeyReason::LivenessWithoutRecord,
    ];

    /// Its name in logs and metric labels (`unknown_kind`, `empty_name`, `name_too_long`,
    /// `invalid_name`, `liveness_without_record`).
    pub fn as_str(self) -> &'static str {
        match self {
            BadKeyReason::UnknownKind => "unknown_kind",
            BadKeyReason::EmptyName => "empty_name",
            BadKeyReason::NameTooLong => "name_too_long",
            BadKeyReason::InvalidName => "invalid_name",
            BadKeyReason::LivenessWithoutRecord => "liveness_without_record",
        }
    }
}

/// Formats as [`BadKeyReason::as_str`].
impl fmt::Display for BadKeyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key is to a group ([`Keyspace::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass<'k> {
    /// A valid key of the group: its kind and the member it names.
    Valid {
        /// Which kind of key.
        kind: KeyKind,
        /// The member's name.
        name: &'k str,
    },
    /// Under the group's prefix, but not a valid key of any kind.
    Bad(BadKeyReason),
    /// Not under the group's prefix: not the group's business.
    Outside,
}

/// The key layout under one prefix.
///
/// ```
/// let ks = muster_core::Keyspace::new("/muster/web/").unwrap();
/// assert_eq!(ks.record_key("api-1"), "/muster/web/members/api-1");
/// assert_eq!(ks.liveness_key("api-1"), "/muster/web/alive/api-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace {
    /// The group's prefix, always ending in `/`.
    prefix: String,
}

impl Keyspace {
    /// A keyspace under `prefix`. A missing trailing `/` is added, so `/muster/web` and
    /// `/muster/web/` name the same group.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let mut prefix = prefix.into();
        if prefix.is_empty() {
            return Err(Error::InvalidPrefix {
                prefix,
                reason: "it is empty; use something like \"/muster/my-group/\"",
            });
        }
        if prefix.chars().any(|c| c.is_control()) {
            return Err(Error::InvalidPrefix {
                prefix,
                reason: "it contains a control character",
            });
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self { prefix })
    }

    /// The prefix, ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The record key of `name`.
    pub fn record_key(&self, name: &str) -> String {
        format!("{}members/{}", self.prefix, name)
    }

    /// The liveness key of `name`.
    pub fn liveness_key(&self, name: &str) -> String {
        format!("{}alive/{}", self.prefix, name)
    }

    /// The eviction marker of incarnation `incarnation` of `name`.
    pub fn eviction_key(&self, name: &str, incarnation: Incarnation) -> String {
        format!("{}evicted/{}/{}", self.prefix, name, incarnation)
    }

    /// Parses an eviction marker's key into the member name and the evicted incarnation.
    pub fn parse_eviction<'k>(&self, key: &'k str) -> Option<(&'k str, Incarnation)> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let (name, incarnation) = rest.strip_prefix("evicted/")?.rsplit_once('/')?;
        validate_name(name).ok()?;
        Some((name, parse_incarnation(incarnation)?))
    }

    /// Parses a key under the prefix into its kind and member name. Every other key (outside
    /// the prefix, or a bad one under it: see [`classify`](Self::classify)) gives `None`.
    pub fn parse<'k>(&self, key: &'k str) -> Option<(KeyKind, &'k str)> {
        match self.classify(key) {
            KeyClass::Valid { kind, name } => Some((kind, name)),
            KeyClass::Bad(_) | KeyClass::Outside => None,
        }
    }

    /// What `key` is to the group: a valid key of one [`KeyKind`], a bad key under the
    /// prefix (and why), or a key outside the prefix.
    ///
    /// ```
    /// use muster_core::{BadKeyReason, KeyClass, KeyKind, Keyspace};
    /// let ks = Keyspace::new("/g/").unwrap();
    /// assert_eq!(ks.classify("/g/alive/a"), KeyClass::Valid { kind: KeyKind::Liveness, name: "a" });
    /// assert_eq!(ks.classify("/g/members/a b"), KeyClass::Bad(BadKeyReason::InvalidName));
    /// assert_eq!(ks.classify("/g/whatever"), KeyClass::Bad(BadKeyReason::UnknownKind));
    /// assert_eq!(ks.classify("/h/members/a"), KeyClass::Outside);
    /// ```
    pub fn classify<'k>(&self, key: &'k str) -> KeyClass<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return KeyClass::Outside;
        };
        let found = KeyKind::ALL
            .into_iter()
            .find_map(|kind| Some((kind, rest.strip_prefix(kind.dir())?)));
        let Some((kind, name)) = found else {
            return KeyClass::Bad(BadKeyReason::UnknownKind);
        };
        // A marker's key names the member, then the evicted incarnation.
        let name = match (kind, name.rsplit_once('/')) {
            (KeyKind::Evicted, Some((name, incarnation)))
                if parse_incarnation(incarnation).is_some() =>
            {
                name
            }
            (KeyKind::Evicted, _) if !name.is_empty() => {
                return KeyClass::Bad(BadKeyReason::InvalidName)
            }
            _ => name,
        };
        match validate_name(name) {
            Ok(()) => KeyClass::Valid { kind, name },
            Err(_) if name.is_empty() => KeyClass::Bad(BadKeyReason::EmptyName),
            Err(_) if name.len() > MAX_NAME_LEN => KeyClass::Bad(BadKeyReason::NameTooLong),
            Err(_) => KeyClass::Bad(BadKeyReason::InvalidName),
        }
    }
}

/// An incarnation as a marker's key spells it: 16 hex digits.
fn parse_incarnation(text: &str) -> Option<Incarnation> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(Incarnation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let ks = Keyspace::new("/g").unwrap();
        assert_eq!(ks.prefix(), "/g/");
        assert_eq!(ks.parse(&ks.record_key("a")), Some((KeyKind::Record, "a")));
        assert_eq!(
            ks.parse(&ks.liveness_key("a")),
            Some((KeyKind::Liveness, "a"))
        );
        let marker = ks.eviction_key("a", Incarnation(0xab));
        assert_eq!(marker, "/g/evicted/a/00000000000000ab");
        assert_eq!(ks.parse(&marker), Some((KeyKind::Evicted, "a")));
        assert_eq!(ks.parse_eviction(&marker), Some(("a", Incarnation(0xab))));
        assert_eq!(ks.parse("/g/evicted/a"), None);
        assert_eq!(ks.parse("/g/evicted/a/ab"), None);
        assert_eq!(ks.parse("/g/evicted/a b/00000000000000ab"), None);
        assert_eq!(ks.parse("/g/other/a"), None);
        assert_eq!(ks.parse("/g/members/a/b"), None);
        assert_eq!(ks.parse("/h/members/a"), None);
    }

    #[test]
    fn bad_keys_under_the_prefix_are_told_apart_from_keys_outside_it() {
        let ks = Keyspace::new("/g/").unwrap();
        let bad = |key: &str| match ks.classify(key) {
            KeyClass::Bad(reason) => Some(reason),
            _ => None,
        };
        assert_eq!(bad("/g/whatever"), Some(BadKeyReason::UnknownKind));
        assert_eq!(bad("/g/membersx"), Some(BadKeyReason::UnknownKind));
        assert_eq!(bad("/g/members"), Some(BadKeyReason::UnknownKind));
        assert_eq!(bad("/g/"), Some(BadKeyReason::UnknownKind));
        assert_eq!(bad("/g/other/a"), Some(BadKeyReason::UnknownKind));
        assert_eq!(bad("/g/members/"), Some(BadKeyReason::EmptyName));
        assert_eq!(bad("/g/alive/"), Some(BadKeyReason::EmptyName));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            bad(&format!("/g/members/{long}")),
            Some(BadKeyReason::NameTooLong)
        );
        assert_eq!(
            ks.classify(&format!("/g/members/{}", &long[1..])),
            KeyClass::Valid {
                kind: KeyKind::Record,
                name: &long[1..]
            }
        );
        for name in ["a b", "a\tb", "a\u{7}", "a/b", ".", ".."] {
            assert_eq!(
                bad(&format!("/g/alive/{name}")),
                Some(BadKeyReason::InvalidName),
                "{name:?}"
            );
        }
        assert_eq!(ks.classify("/h/members/a"), KeyClass::Outside);
        assert_eq!(ks.classify("/gg/members/a"), KeyClass::Outside);
        assert_eq!(ks.classify("/g"), KeyClass::Outside);
    }

    #[test]
    fn every_kind_classifies_its_own_keys_as_valid() {
        let ks = Keyspace::new("/g/").unwrap();
        for kind in KeyKind::ALL {
            let key = match kind {
                KeyKind::Evicted => ks.eviction_key("a", Incarnation(7)),
                _ => format!("/g/{}a", kind.dir()),
            };
            assert_eq!(ks.classify(&key), KeyClass::Valid { kind, name: "a" });
        }
        let bad = |key: &str| match ks.classify(key) {
            KeyClass::Bad(reason) => Some(reason),
            _ => None,
        };
        assert_eq!(bad("/g/evicted/"), Some(BadKeyReason::EmptyName));
        assert_eq!(bad("/g/evicted/a"), Some(BadKeyReason::InvalidName));
        assert_eq!(bad("/g/evicted/a/7"), Some(BadKeyReason::InvalidName));
        assert_eq!(
            bad("/g/evicted/a b/0000000000000007"),
            Some(BadKeyReason::InvalidName)
        );
    }

    #[test]
    fn reasons_have_distinct_snake_case_names() {
        let names: std::collections::BTreeSet<_> =
            BadKeyReason::ALL.iter().map(|r| r.to_string()).collect();
        assert_eq!(names.len(), BadKeyReason::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        assert!(matches!(
            Keyspace::new(""),
            Err(Error::InvalidPrefix { .. })
        ));
        assert!(matches!(
            Keyspace::new("/a\n"),
            Err(Error::InvalidPrefix { .. })
        ));
    }
}
