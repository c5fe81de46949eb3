//! Which members a caller wants: by state and by label.
//!
//! One rule for every consumer of the view, so the library's endpoint sets and discovery
//! streams, the HTTP API's `?state=` and `?label=` parameters and the programs' tables all
//! select members the same way.

use std::fmt;

use muster_core::{Member, MemberState};

/// A selection of members: any of some states, and all of some label rules.
///
/// The default keeps the members a caller should send work to: the `Alive` ones that are
/// not draining, whatever their labels. Label rules are the HTTP API's: `KEY=VALUE` (the label is present with
/// that value) and `KEY` (the label is present).
///
/// ```
/// use muster_core::{Incarnation, Member, MemberInfo, MemberState};
/// use muster_master::Filter;
///
/// let filter = Filter::alive().label("zone", "a").has_label("gpu");
/// assert_eq!(filter.to_string(), "state=alive&label=zone=a&label=gpu&draining=false");
/// assert_eq!(filter, "zone=a".parse::<Filter>()?.has_label("gpu"));
///
/// let info = MemberInfo::new("api-1", "10.0.0.1:80").label("zone", "a").label("gpu", "1");
/// let member = Member {
///     info: info.into(),
///     state: MemberState::Alive,
///     incarnation: Incarnation(1),
///     record_revision: 5,
///     since: 5,
///     suspect_since: None,
/// };
/// assert!(filter.matches(&member));
/// assert!(!Filter::alive().label("zone", "b").matches(&member));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Any of these states (never empty).
    states: Vec<MemberState>,
    /// All of these rules; `None` as value: the key only has to be present.
    labels: Vec<(String, Option<String>)>,
    /// Whether draining members are kept.
    draining: bool,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::alive()
    }
}

impl Filter {
    /// The `Alive` members that are not draining (the default): those to send new work to.
    pub fn alive() -> Self {
        Filter {
            states: vec![MemberState::Alive],
            labels: Vec::new(),
            draining: false,
        }
    }

    /// Every member the view holds: `Alive` or `Suspect`, draining or not.
    pub fn any_state() -> Self {
        Filter {
            states: vec![MemberState::Alive, MemberState::Suspect],
            labels: Vec::new(),
            draining: true,
        }
    }

    /// Whether to keep draining members too (members that announced they are leaving:
    /// still in the group, finishing their work).
    pub fn draining(mut self, keep: bool) -> Self {
        self.draining = keep;
        self
    }

    /// Members in any of `states` (an empty list keeps the current states).
    ///
    /// Members that left, failed or were removed are no longer in the view, so only
    /// `Alive` and `Suspect` select anything.
    pub fn states(mut self, states: impl IntoIterator<Item = MemberState>) -> Self {
        let states: Vec<MemberState> = states.into_iter().collect();
        if !states.is_empty() {
            self.states = Vec::new();
            for state in states {
                if !self.states.contains(&state) {
                    self.states.push(state);
                }
            }
        }
        self
    }

    /// Only members whose label `key` is `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), Some(value.into())));
        self
    }

    /// Only members that have the label `key`, whatever its value.
    pub fn has_label(mut self, key: impl Into<String>) -> Self {
        self.labels.push((key.into(), None));
        self
    }

    /// Adds one label rule written as `KEY=VALUE` or `KEY` (the HTTP API's `label=`
    /// parameter); the error says what is wrong with it.
    pub fn label_rule(self, rule: &str) -> Result<Self, FilterError> {
        match rule.split_once('=') {
            Some(("", _)) => Err(FilterError(format!(
                "label rule {rule:?} has an empty key; use KEY=VALUE or KEY"
            ))),
            Some((key, value)) => Ok(self.label(key, value)),
            None if rule.is_empty() => Err(FilterError(
                "an empty label rule; use KEY=VALUE or KEY".to_owned(),
            )),
            None => Ok(self.has_label(rule)),
        }
    }

    /// Whether `member` is selected.
    pub fn matches(&self, member: &Member) -> bool {
        self.states.contains(&member.state)
            && (self.draining || !member.info.draining)
            && self.labels.iter().all(|(key, value)| {
                let have = member.info.labels.get(key);
                match value {
                    Some(value) => have == Some(value),
                    None => have.is_some(),
                }
            })
    }
}

/// Parses label rules separated by `,` (`zone=a,gpu`), on top of [`Filter::alive`].
impl std::str::FromStr for Filter {
    type Err = FilterError;

    fn from_str(rules: &str) -> Result<Self, FilterError> {
        rules
            .split(',')
            .map(str::trim)
            .filter(|rule| !rule.is_empty())
            .try_fold(Filter::alive(), Filter::label_rule)
    }
}

/// Formats as the HTTP API's query string (`state=alive&label=zone=a&label=gpu&draining=false`),
/// not percent-encoded: the same selection on every endpoint whatever its defaults.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let states: Vec<String> = self.states.iter().map(|s| s.to_string()).collect();
        write!(f, "state={}", states.join(","))?;
        for (key, value) in &self.labels {
            match value {
                Some(value) => write!(f, "&label={key}={value}")?,
                None => write!(f, "&label={key}")?,
            }
        }
        write!(f, "&draining={}", self.draining)
    }
}

/// A label rule that cannot be read; the message says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::{Incarnation, MemberInfo};

    fn member(state: MemberState, labels: &[(&str, &str)]) -> Member {
        let mut info = MemberInfo::new("api-1", "10.0.0.1:80");
        for (k, v) in labels {
            info = info.label(*k, *v);
        }
        Member {
            info: info.into(),
            state,
            incarnation: Incarnation(1),
            record_revision: 1,
            since: 1,
            suspect_since: None,
        }
    }

    #[test]
    fn the_default_keeps_alive_members_only() {
        assert!(Filter::default().matches(&member(MemberState::Alive, &[])));
        assert!(!Filter::default().matches(&member(MemberState::Suspect, &[])));
        assert!(Filter::any_state().matches(&member(MemberState::Suspect, &[])));
        let suspect_only = Filter::alive().states([MemberState::Suspect]);
        assert!(!suspect_only.matches(&member(MemberState::Alive, &[])));
        assert!(suspect_only.matches(&member(MemberState::Suspect, &[])));
        assert_eq!(Filter::alive().states([]), Filter::alive());
    }

    #[test]
    fn draining_members_are_left_out_unless_asked_for() {
        let mut m = member(MemberState::Alive, &[]);
        m.info = MemberInfo::new("api-1", "10.0.0.1:80")
            .draining(true)
            .into();
        assert!(!Filter::alive().matches(&m));
        assert!(Filter::alive().draining(true).matches(&m));
        assert!(Filter::any_state().matches(&m));
        assert!(!Filter::any_state().draining(false).matches(&m));
    }

    #[test]
    fn label_rules_need_every_label() {
        let m = member(MemberState::Alive, &[("zone", "a"), ("gpu", "")]);
        assert!(Filter::alive().label("zone", "a").matches(&m));
        assert!(Filter::alive().has_label("gpu").matches(&m));
        assert!(Filter::alive().label("gpu", "").matches(&m));
        assert!(!Filter::alive()
            .label("zone", "a")
            .has_label("ssd")
            .matches(&m));
        assert!(!Filter::alive().label("zone", "A").matches(&m));
        assert!(!Filter::alive().has_label("Zone").matches(&m));
    }

    #[test]
    fn label_rules_parse_as_the_http_api_writes_them() {
        let f: Filter = "zone=a, gpu ,k=v=w".parse().unwrap();
        assert_eq!(
            f,
            Filter::alive()
                .label("zone", "a")
                .has_label("gpu")
                .label("k", "v=w")
        );
        assert_eq!("".parse::<Filter>().unwrap(), Filter::alive());
        let e = Filter::alive().label_rule("=a").unwrap_err();
        assert_eq!(
            e.to_string(),
            "label rule \"=a\" has an empty key; use KEY=VALUE or KEY"
        );
        let e = Filter::alive().label_rule("").unwrap_err();
        assert_eq!(e.to_string(), "an empty label rule; use KEY=VALUE or KEY");
    }

    #[test]
    fn it_prints_as_a_query_string() {
        let f = Filter::any_state().label("zone", "a").has_label("gpu");
        assert_eq!(
            f.to_string(),
            "state=alive,suspect&label=zone=a&label=gpu&draining=true"
        );
    }
}
