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
//! that incarnation cannot register (see `protocol`). Markers are not members: the state
//! machine ignores them.

use crate::error::{Error, Result};
use crate::member::{validate_name, Incarnation};

/// Which of a member's two keys a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `{prefix}members/{name}`.
    Record,
    /// `{prefix}alive/{name}`.
    Liveness,
    /// `{prefix}evicted/{name}/{incarnation}`: an eviction marker, not a member's key.
    Evicted,
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
        if incarnation.len() != 16 {
            return None;
        }
        let incarnation = u64::from_str_radix(incarnation, 16).ok()?;
        Some((name, Incarnation(incarnation)))
    }

    /// Parses a key under the prefix into its kind and member name. Keys that are not a
    /// member's (other sub-prefixes, invalid names) give `None`: they are not muster's.
    pub fn parse<'k>(&self, key: &'k str) -> Option<(KeyKind, &'k str)> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let (kind, name) = if let Some(name) = rest.strip_prefix("members/") {
            (KeyKind::Record, name)
        } else if let Some(name) = rest.strip_prefix("alive/") {
            (KeyKind::Liveness, name)
        } else if rest.starts_with("evicted/") {
            let (name, _) = self.parse_eviction(key)?;
            return Some((KeyKind::Evicted, name));
        } else {
            return None;
        };
        validate_name(name).ok()?;
        Some((kind, name))
    }
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
