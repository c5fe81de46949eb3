//! [`Labels`]: a member's labels, sorted by key, in two allocations whatever their number.
//!
//! Why not a `BTreeMap<String, String>`: a master holds every member's labels, and a
//! `BTreeMap` allocates a whole node (eleven slots, about 550 bytes) for even one label, plus
//! one allocation per key and per value. At 100,000 members that was most of the master's
//! memory per member. Labels are written once (when a record is decoded or built) and then
//! only read, so they are kept as one string of all keys and values back to back and the
//! offsets where each ends. The JSON form is unchanged: an object of strings.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A member's labels (zone, version, shard, ...): string keys to string values, sorted by
/// key, each key at most once.
///
/// Built like a map and read like one; in JSON an object of strings.
///
/// ```
/// use muster_core::Labels;
/// let mut labels: Labels = [("zone", "a"), ("version", "2")].into_iter().collect();
/// labels.insert("zone", "b");
/// assert_eq!(labels.get("zone"), Some("b"));
/// assert_eq!(&labels["version"], "2");
/// assert_eq!(labels.iter().collect::<Vec<_>>(), [("version", "2"), ("zone", "b")]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels {
    /// Every key and value, in order: key 0, value 0, key 1, value 1, ...
    text: Box<str>,
    /// Where each of those strings ends in `text` (two per label).
    ends: Box<[usize]>,
}

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th string of `text` (keys are even, values odd).
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The labels in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| (self.part(2 * i), self.part(2 * i + 1)))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.part(2 * i))
    }

    /// Where `key` is, or where it would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = (low + high) / 2;
            match self.part(2 * mid).cmp(key) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.part(2 * i + 1))
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        let (key, value) = (key.into(), value.into());
        let mut entries = self.to_vec();
        let old = match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut entries[i].1, value)),
            Err(i) => {
                entries.insert(i, (key, value));
                None
            }
        };
        *self = Self::from_sorted(&entries);
        old
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.find(key).ok()?;
        let mut entries = self.to_vec();
        let (_, value) = entries.remove(i);
        *self = Self::from_sorted(&entries);
        Some(value)
    }

    /// The labels as owned pairs, in key order.
    fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// The labels as a `BTreeMap`.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.to_vec().into_iter().collect()
    }

    /// From pairs sorted by key, each key once.
    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(entries: &[(K, V)]) -> Self {
        let size = entries
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(size);
        let mut ends = Vec::with_capacity(entries.len() * 2);
        for (k, v) in entries {
            text.push_str(k.as_ref());
            ends.push(text.len());
            text.push_str(v.as_ref());
            ends.push(text.len());
        }
        Self {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

/// A later pair replaces an earlier one with the same key, as in a map.
impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from(map)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self::from_sorted(&map.into_iter().collect::<Vec<_>>())
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(labels: Labels) -> Self {
        labels.to_map()
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    /// The value of `key`.
    ///
    /// # Panics
    ///
    /// If `key` is not there (as a map's index does); [`Labels::get`] does not panic.
    fn index(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no label {key:?} among {self:?}"))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;

        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string labels")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Labels, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                let mut sorted = true;
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    sorted &= entries.last().map_or(true, |(last, _)| *last < k);
                    entries.push((k, v));
                }
                if sorted {
                    // The usual case (muster writes its keys sorted): no map in between.
                    return Ok(Labels::from_sorted(&entries));
                }
                // Sorted, and of a key written twice the last value, as a map keeps it.
                Ok(entries.into_iter().collect())
            }
        }

        deserializer.deserialize_map(LabelsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_map_it_was_built_from() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", ""), ("ä", "x y"), ("", "e")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let labels = Labels::from(map.clone());
        assert_eq!(labels.len(), 4);
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            map.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        );
        for (k, v) in &map {
            assert_eq!(labels.get(k), Some(v.as_str()));
        }
        assert_eq!(labels.get("c"), None);
        assert_eq!(labels.to_map(), map);
    }

    #[test]
    fn insert_and_remove_keep_keys_sorted_and_unique() {
        let mut labels = Labels::new();
        assert!(labels.is_empty());
        assert_eq!(labels.insert("z", "1"), None);
        assert_eq!(labels.insert("a", "2"), None);
        assert_eq!(labels.insert("m", "3"), None);
        assert_eq!(labels.insert("a", "4"), Some("2".to_owned()));
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["a", "m", "z"]);
        assert_eq!(labels.remove("m"), Some("3".to_owned()));
        assert_eq!(labels.remove("m"), None);
        assert_eq!(labels.iter().collect::<Vec<_>>(), [("a", "4"), ("z", "1")]);
    }

    #[test]
    fn json_is_an_object_and_a_repeated_key_keeps_its_last_value() {
        let labels: Labels = serde_json::from_str(r#"{"b":"1","a":"2","b":"3"}"#).unwrap();
        assert_eq!(labels.iter().collect::<Vec<_>>(), [("a", "2"), ("b", "3")]);
        assert_eq!(
            serde_json::to_string(&labels).unwrap(),
            r#"{"a":"2","b":"3"}"#
        );
        let error = serde_json::from_str::<Labels>(r#"{"a":1}"#).unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
        let error = serde_json::from_str::<Labels>(r#"["a"]"#).unwrap_err();
        assert!(
            error.to_string().contains("an object of string labels"),
            "{error}"
        );
    }

    #[test]
    fn equal_labels_are_equal_however_they_were_built() {
        let a: Labels = [("x", "1"), ("y", "2")].into_iter().collect();
        let mut b = Labels::new();
        b.insert("y", "2");
        b.insert("x", "1");
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), r#"{"x": "1", "y": "2"}"#);
    }
}
