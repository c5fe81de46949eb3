//! What the programs print and serve: members and transitions as JSON with stable field
//! names, and as tables for people.
//!
//! # JSON (stable: fields are only ever added)
//!
//! A member ([`MemberJson`], in `muster-master list --json` and `GET /v1/members`):
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `name` | string | the member's name |
//! | `state` | string | `alive` or `suspect` |
//! | `addr` | string | where to reach it |
//! | `cpus` | number | CPUs it offers |
//! | `labels` | object | string labels |
//! | `draining` | boolean | it announced that it is leaving (still a member; send it no new work) |
//! | `incarnation` | string | 16 hex digits naming the process that wrote the record |
//! | `record_revision` | number | etcd revision of the last write to its record |
//! | `since_revision` | number | etcd revision of its last state change |
//!
//! A transition ([`EventJson`], one per line with `muster-master --json`, and the `data` of
//! each `GET /v1/events` event): `kind` (`joined`, `updated`, `draining`, `suspect`,
//! `recovered`, `restarted`, `left`, `failed`, `removed`), `name`, `state` (after the
//! transition: `alive`, `suspect`, `left`, `failed` or `removed`), `revision` (the etcd
//! revision that caused it), `addr`, `cpus`, `labels`, `draining`, `incarnation`, and
//! `at_unix_ms` (when this master observed it, milliseconds
//! since the Unix epoch).
//!
//! `muster-master --json` also prints one `{"kind":"synced","revision":R,"members":N}` line
//! once the first listing has been applied: every line before it describes the group as it
//! was when the master started.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use muster_core::{Labels, Member, Revision, Transition};
use muster_master::View;
use serde::{Deserialize, Serialize};

/// A member as JSON. See the [module docs](self) for the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJson {
    /// The member's name.
    pub name: String,
    /// `alive` or `suspect`.
    pub state: String,
    /// Where to reach it.
    pub addr: String,
    /// CPUs it offers.
    pub cpus: u32,
    /// Its labels.
    pub labels: Labels,
    /// Whether it announced that it is leaving.
    pub draining: bool,
    /// The incarnation that wrote its record, 16 hex digits.
    pub incarnation: String,
    /// Revision of the last write to its record.
    pub record_revision: Revision,
    /// Revision of its last state change.
    pub since_revision: Revision,
}

impl From<&Member> for MemberJson {
    fn from(member: &Member) -> Self {
        MemberJson {
            name: member.info.name.clone(),
            state: member.state.to_string(),
            addr: member.info.addr.clone(),
            cpus: member.info.cpus,
            labels: member.info.labels.clone(),
            draining: member.info.draining,
            incarnation: member.incarnation.to_string(),
            record_revision: member.record_revision,
            since_revision: member.since,
        }
    }
}

/// A whole view as JSON: `{"revision": R, "synced": true, "members": [...]}`, members sorted
/// by name. `GET /v1/events?from_revision=R+1&epoch=E` continues it with no gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewJson {
    /// The store history `revision` belongs to (16 hex digits): a resume point is
    /// `from_revision = revision + 1` together with this epoch.
    pub epoch: String,
    /// The etcd revision the view is at.
    pub revision: Revision,
    /// Whether the first listing has been applied.
    pub synced: bool,
    /// The members, sorted by name.
    pub members: Vec<MemberJson>,
}

impl ViewJson {
    /// Every member of `view` that `keep` accepts.
    pub fn new(view: &View, mut keep: impl FnMut(&Member) -> bool) -> Self {
        ViewJson {
            epoch: view.epoch.to_string(),
            revision: view.revision,
            synced: view.synced,
            members: view
                .members
                .values()
                .filter(|m| keep(m))
                .map(MemberJson::from)
                .collect(),
        }
    }
}

/// The members a filter selects, as `GET /v1/endpoints` answers:
/// `{"epoch", "revision", "synced", "members": [...]}`, members sorted by name, plus
/// `"epoch_changed": true` when a long poll named another epoch than the set's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointsJson {
    /// The store history `revision` belongs to (16 hex digits).
    pub epoch: String,
    /// The revision of the last event the set reflects: the `wait_revision` of the next
    /// long poll.
    pub revision: Revision,
    /// Whether the master's first listing has been applied.
    pub synced: bool,
    /// The selected members, sorted by name.
    pub members: Vec<MemberJson>,
    /// The request's `epoch=` is not the set's: the store was replaced (or the answer
    /// comes from a master on another store), so its revisions are not comparable with
    /// the caller's; take this set as the whole truth. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub epoch_changed: bool,
}

impl EndpointsJson {
    /// `endpoints` as JSON; `epoch_changed` as the module says.
    pub fn new(endpoints: &muster_master::Endpoints, epoch_changed: bool) -> Self {
        EndpointsJson {
            epoch: endpoints.epoch.to_string(),
            revision: endpoints.revision,
            synced: endpoints.synced,
            members: endpoints.members.values().map(MemberJson::from).collect(),
            epoch_changed,
        }
    }
}

/// A transition as JSON. See the [module docs](self) for the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventJson {
    /// What happened: `joined`, `updated`, `suspect`, `recovered`, `restarted`, `left`,
    /// `failed`, `removed`.
    pub kind: String,
    /// The member's name.
    pub name: String,
    /// Its state after the transition.
    pub state: String,
    /// The etcd revision that caused it.
    pub revision: Revision,
    /// Where to reach it.
    pub addr: String,
    /// CPUs it offers.
    pub cpus: u32,
    /// Its labels.
    pub labels: Labels,
    /// Whether it announced that it is leaving.
    pub draining: bool,
    /// The incarnation that wrote its record, 16 hex digits.
    pub incarnation: String,
    /// When the master observed it, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl From<&Transition> for EventJson {
    fn from(t: &Transition) -> Self {
        EventJson {
            kind: t.kind.to_string(),
            name: t.member.info.name.clone(),
            state: t.member.state.to_string(),
            revision: t.revision,
            addr: t.member.info.addr.clone(),
            cpus: t.member.info.cpus,
            labels: t.member.info.labels.clone(),
            draining: t.member.info.draining,
            incarnation: t.member.incarnation.to_string(),
            at_unix_ms: unix_ms(t.at),
        }
    }
}

/// The marker line `muster-master --json` prints once the first listing is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedJson {
    /// Always `synced`.
    pub kind: String,
    /// The revision of the first listing.
    pub revision: Revision,
    /// How many members it held.
    pub members: usize,
}

/// Wall-clock milliseconds since the Unix epoch of a monotonic instant (now minus its age).
pub fn unix_ms(at: Instant) -> u64 {
    let now = SystemTime::now();
    let then = now.checked_sub(at.elapsed()).unwrap_or(now);
    then.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `zone=a,version=3`, or `-` without labels.
pub fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The members of `view` as an aligned table with a header, or a sentence when there are
/// none.
pub fn members_table(view: &View, prefix: &str) -> String {
    if view.members.is_empty() {
        return format!(
            "no members under {prefix} (etcd revision {})\n",
            view.revision
        );
    }
    let header = [
        "NAME",
        "STATE",
        "ADDR",
        "CPUS",
        "LABELS",
        "INCARNATION",
        "SINCE",
    ];
    let rows: Vec<Vec<String>> = view
        .members
        .values()
        .map(|m| {
            vec![
                m.info.name.clone(),
                state_text(m),
                or_dash(&m.info.addr),
                m.info.cpus.to_string(),
                labels_text(&m.info.labels),
                m.incarnation.to_string(),
                format!("rev {}", m.since),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// A member's state for people: `alive`, `suspect`, or with `/draining` when it is.
fn state_text(m: &Member) -> String {
    if m.info.draining {
        format!("{}/draining", m.state)
    } else {
        m.state.to_string()
    }
}

/// One transition as a line for people: `HH:MM:SSZ  kind  name  state  addr  labels  rev R`.
pub fn transition_line(t: &Transition) -> String {
    let ms = unix_ms(t.at);
    let secs = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}Z  {:<9}  {}  {:<7}  {}  cpus={}  {}  rev {}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        t.kind.to_string(),
        t.member.name(),
        state_text(&t.member),
        or_dash(&t.member.info.addr),
        t.member.info.cpus,
        labels_text(&t.member.info.labels),
        t.revision
    )
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use muster_core::{Incarnation, MemberInfo, MemberState};

    fn member(name: &str, state: MemberState) -> Member {
        Member {
            info: Arc::new(
                MemberInfo::new(name, "10.0.0.1:80")
                    .cpus(4)
                    .label("zone", "a"),
            ),
            state,
            incarnation: Incarnation(0xab),
            record_revision: 7,
            since: 9,
            suspect_since: None,
        }
    }

    #[test]
    fn member_json_has_the_documented_fields() {
        let json =
            serde_json::to_value(MemberJson::from(&member("api-1", MemberState::Alive))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "api-1", "state": "alive", "addr": "10.0.0.1:80", "cpus": 4,
                "labels": {"zone": "a"}, "draining": false, "incarnation": "00000000000000ab",
                "record_revision": 7, "since_revision": 9
            })
        );
    }

    #[test]
    fn tables_align_and_say_when_empty() {
        let mut view = View {
            epoch: Default::default(),
            revision: 12,
            synced: true,
            members: BTreeMap::new(),
        };
        assert_eq!(
            members_table(&view, "/g/"),
            "no members under /g/ (etcd revision 12)\n"
        );
        for (name, state) in [
            ("a", MemberState::Alive),
            ("long-name", MemberState::Suspect),
        ] {
            view.members.insert(name.into(), member(name, state));
        }
        let text = members_table(&view, "/g/");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME       STATE    ADDR"), "{text}");
        assert!(
            lines[2].starts_with("long-name  suspect  10.0.0.1:80"),
            "{text}"
        );
        assert!(lines[1].ends_with("rev 9"), "{text}");
    }
}
