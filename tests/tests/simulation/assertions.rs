//! The invariants, as pure functions over what the driver observed.
//!
//! Each returns `Err(message)` naming the member, the master and what was expected, so a
//! failing case reads as a sentence. They take plain data (views, listings, transition logs,
//! the [`History`]), so the tests at the bottom of `main.rs` can feed them broken runs and
//! show that each one can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_core::{
    Incarnation, KeyKind, Keyspace, Listing, Member, MemberInfo, MemberState, Membership, Revision,
    Transition, TransitionKind,
};
use muster_master::View;
use tokio::time::Instant;

use crate::reference::History;

/// A transition as one subscriber received it, with the step during which it was drained.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The 1-based op number after which it was drained (0: while settling the start).
    pub op: usize,
    /// What was received.
    pub transition: Transition,
}

/// A member as the subscriber's stream says it is: the member of its last transition, and
/// the state the sequence of kinds implies (within one revision, every transition carries
/// the member as it is *after* the revision, so the two differ until the revision ends).
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The state implied by the kinds so far.
    pub state: MemberState,
    /// The member carried by the last transition.
    pub member: Member,
}

/// One master life (start to shutdown) as its one subscriber saw it.
#[derive(Debug)]
pub struct Life {
    /// Which master.
    pub master: usize,
    /// Which life of that master (0 = the first).
    pub number: u32,
    /// The op number during which it was started.
    pub started_op: usize,
    /// Every transition delivered, in order.
    pub delivered: Vec<Delivered>,
    /// The subscription snapshot with every delivered transition applied.
    pub replayed: BTreeMap<String, Replayed>,
    /// The first transition that did not follow from the one before (if any).
    pub malformed: Option<String>,
    /// The state of each member in the subscription snapshot.
    pub initial: BTreeMap<String, MemberState>,
}

impl Life {
    /// A life whose subscription started from `snapshot`.
    pub fn new(master: usize, number: u32, started_op: usize, snapshot: &View) -> Self {
        let replayed = snapshot
            .members
            .iter()
            .map(|(name, member)| {
                let replayed = Replayed {
                    state: member.state,
                    member: member.clone(),
                };
                (name.clone(), replayed)
            })
            .collect();
        let initial = snapshot
            .members
            .iter()
            .map(|(name, member)| (name.clone(), member.state))
            .collect();
        Self {
            master,
            number,
            started_op,
            delivered: Vec::new(),
            replayed,
            malformed: None,
            initial,
        }
    }

    /// The state this life's stream had `name` in before revision `revision`: the snapshot
    /// with every transition of an earlier revision applied (`None`: absent).
    pub fn state_before(&self, name: &str, revision: Revision) -> Option<MemberState> {
        let mut state = self.initial.get(name).copied();
        for d in &self.delivered {
            let t = &d.transition;
            if t.revision >= revision || t.member.name() != name {
                continue;
            }
            state = match t.kind {
                TransitionKind::Joined | TransitionKind::Recovered | TransitionKind::Restarted => {
                    Some(MemberState::Alive)
                }
                TransitionKind::Suspect => Some(MemberState::Suspect),
                TransitionKind::Left | TransitionKind::Failed | TransitionKind::Removed => None,
                TransitionKind::Updated | TransitionKind::Draining => state,
            };
        }
        state
    }

    /// `m{master}` or `m{master}#{life}` after a restart.
    pub fn label(&self) -> String {
        match self.number {
            0 => format!("m{}", self.master),
            n => format!("m{}#{n}", self.master),
        }
    }

    /// Records a delivered transition and replays it onto the snapshot.
    pub fn deliver(&mut self, op: usize, transition: Transition) {
        if self.malformed.is_none() {
            if let Err(why) = replay(&mut self.replayed, &transition) {
                self.malformed = Some(format!(
                    "{} received {} for {} at revision {} (drained after op {op}): {why}",
                    self.label(),
                    transition.kind,
                    transition.member.name(),
                    transition.revision
                ));
            }
        }
        self.delivered.push(Delivered { op, transition });
    }
}

/// Applies one transition to a replayed view, checking it can follow what came before.
pub fn replay(view: &mut BTreeMap<String, Replayed>, t: &Transition) -> Result<(), String> {
    use MemberState::{Alive, Suspect};
    let name = t.member.name().to_owned();
    let before = view.get(&name).map(|r| r.state);
    let known = view.get(&name).map(|r| r.member.incarnation);
    match t.kind {
        TransitionKind::Recovered if known != Some(t.member.incarnation) => {
            return Err(format!(
            "recovered means the same process came back, but the incarnation went from {:?} to {}",
            known.map(|i| i.0),
            t.member.incarnation.0
        ))
        }
        TransitionKind::Restarted if known == Some(t.member.incarnation) => {
            return Err(format!(
                "restarted means a new process, but the incarnation stayed {}",
                t.member.incarnation.0
            ))
        }
        _ => {}
    }
    let after = match (t.kind, before) {
        (TransitionKind::Joined, None) => Some(Alive),
        (TransitionKind::Updated, Some(state)) => Some(state),
        (TransitionKind::Draining, Some(state)) if t.member.info.draining => Some(state),
        (TransitionKind::Suspect, Some(Alive)) => Some(Suspect),
        (TransitionKind::Recovered, Some(Suspect)) => Some(Alive),
        (TransitionKind::Restarted, Some(_)) => Some(Alive),
        (TransitionKind::Left, Some(Alive)) => None,
        (TransitionKind::Failed, Some(Suspect)) => None,
        (TransitionKind::Removed, Some(_)) => None,
        (kind, before) => {
            return Err(format!(
                "{kind} cannot follow {}",
                before.map_or("absence".to_owned(), |s| format!("state {s}"))
            ))
        }
    };
    let expected_state = match t.kind {
        TransitionKind::Left => Some(MemberState::Left),
        TransitionKind::Failed => Some(MemberState::Failed),
        TransitionKind::Removed => Some(MemberState::Removed),
        _ => None,
    };
    if let Some(expected) = expected_state {
        if t.member.state != expected {
            return Err(format!(
                "its member is in state {}, not {expected}",
                t.member.state
            ));
        }
    }
    match after {
        Some(state) => {
            view.insert(
                name,
                Replayed {
                    state,
                    member: t.member.clone(),
                },
            );
        }
        None => {
            view.remove(&name);
        }
    }
    Ok(())
}

/// The view a master that just listed would have: the keyspace, decoded.
pub fn truth(listing: &Listing, keyspace: &Keyspace) -> BTreeMap<String, Member> {
    let mut machine = Membership::new(keyspace.clone(), None);
    machine.resync(listing, std::time::Instant::now());
    machine.view().clone()
}

/// What of a member the invariants compare: everything but the master-local bookkeeping
/// (`since`, `suspect_since`).
fn essence(m: &Member) -> (MemberState, Incarnation, &MemberInfo, Revision) {
    (m.state, m.incarnation, &m.info, m.record_revision)
}

/// (5) No ghost: every member in the view has a record in the store.
pub fn no_ghosts(
    who: &str,
    view: &View,
    listing: &Listing,
    keyspace: &Keyspace,
) -> Result<(), String> {
    let records: BTreeSet<&str> = listing
        .kvs
        .iter()
        .filter_map(|kv| match keyspace.parse(&kv.key) {
            Some((KeyKind::Record, name)) => Some(name),
            _ => None,
        })
        .collect();
    let ghosts: Vec<String> = view
        .members
        .values()
        .filter(|m| !records.contains(m.name()))
        .map(|m| format!("{} ({})", m.name(), m.state))
        .collect();
    if ghosts.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "ghost members in {who}'s view at revision {}: {} have no record in the store (store at revision {})",
            view.revision,
            ghosts.join(", "),
            listing.revision
        ))
    }
}

/// (1) The view equals what a fresh listing of the store says, at the same revision.
pub fn view_matches_store(
    who: &str,
    view: &View,
    truth: &BTreeMap<String, Member>,
    revision: Revision,
) -> Result<(), String> {
    if !view.synced {
        return Err(format!("{who} is not synced (it never listed)"));
    }
    if view.revision != revision {
        return Err(format!(
            "{who}'s view is at revision {} but the store is at revision {revision}",
            view.revision
        ));
    }
    let names: BTreeSet<&String> = view.members.keys().chain(truth.keys()).collect();
    let mut diffs = Vec::new();
    for name in names {
        let (have, want) = (view.members.get(name), truth.get(name));
        if have.map(essence) != want.map(essence) {
            diffs.push(format!(
                "  {name}: view {}, store {}",
                describe(have),
                describe(want)
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{who}'s view differs from the store at revision {revision}:\n{}",
            diffs.join("\n")
        ))
    }
}

fn describe(member: Option<&Member>) -> String {
    match member {
        None => "absent".to_owned(),
        Some(m) => format!(
            "{} inc {} cpus {} record rev {}",
            m.state, m.incarnation.0, m.info.cpus, m.record_revision
        ),
    }
}

/// (2) `Left` only after a leave: the k-th `Left` of a name in one master life needs k
/// leaves of that name that this life could have seen (see [`History::leaves_visible`]).
///
/// No exception: a master that finds a member gone by diffing a listing (after
/// compaction, or a restart) cannot know whether it left or crashed and was reaped, and
/// says `Removed`, never `Left`.
pub fn lefts_follow_leaves(life: &Life, history: &History) -> Result<(), String> {
    let mut lefts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &life.delivered {
        if d.transition.kind != TransitionKind::Left {
            continue;
        }
        let name = d.transition.member.name();
        if !history.left_at(name, d.transition.revision) {
            return Err(format!(
                "{} reported Left for {name} at revision {}, where its record and liveness \
                 were not deleted together: a guess (a relist cannot know why a member is \
                 gone; it must say Removed)",
                life.label(),
                d.transition.revision,
            ));
        }
        let count = lefts.entry(name).or_default();
        *count += 1;
        let leaves = history.leaves_visible(name, life.started_op, d.op)
            + history.evictions_visible(name, life.started_op, d.op);
        if *count > leaves {
            return Err(format!(
                "{} reported Left for {name} at revision {} (drained after op {}), \
                 its Left #{count} in this master life, but only {leaves} Leave or Evict op(s) of {name} \
                 could explain it (issued by then, not finished before op {} when this life started)",
                life.label(),
                d.transition.revision,
                d.op,
                life.started_op
            ));
        }
    }
    Ok(())
}

/// (3) `Suspect` only after a lost lease: a crash, restart, hang or partition of the name's
/// worker before the transition was drained.
pub fn suspects_follow_lost_leases(life: &Life, history: &History) -> Result<(), String> {
    for d in &life.delivered {
        let name = d.transition.member.name();
        if d.transition.kind == TransitionKind::Suspect && !history.lease_lost_by(name, d.op) {
            return Err(format!(
                "{} reported Suspect for {name} at revision {} (drained after op {}), \
                 but nothing that could cost {name} its lease (a crash, restart, hang or partition, \
                 or failed calls during a failure streak) happened by then",
                life.label(),
                d.transition.revision,
                d.op
            ));
        }
    }
    Ok(())
}

/// (6) No transition is delivered twice (same name, kind and revision) to one subscriber.
pub fn no_duplicate_deliveries(life: &Life) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for d in &life.delivered {
        let t = &d.transition;
        if !seen.insert((t.member.name(), t.kind, t.revision)) {
            return Err(format!(
                "{} received {} for {} at revision {} twice (again after op {})",
                life.label(),
                t.kind,
                t.member.name(),
                t.revision,
                d.op
            ));
        }
    }
    Ok(())
}

/// (6b) Transitions arrive in revision order: a resumed watch or a relist never goes back.
pub fn deliveries_in_revision_order(life: &Life) -> Result<(), String> {
    for pair in life.delivered.windows(2) {
        let (a, b) = (&pair[0].transition, &pair[1].transition);
        if b.revision < a.revision {
            return Err(format!(
                "{} received {} for {} at revision {} after {} for {} at revision {} (drained after op {})",
                life.label(),
                b.kind,
                b.member.name(),
                b.revision,
                a.kind,
                a.member.name(),
                a.revision,
                pair[1].op
            ));
        }
    }
    Ok(())
}

/// (7) The stream is well formed (each transition can follow the one before), and the
/// subscription snapshot plus the stream is the view.
pub fn stream_replays_to_view(life: &Life, view: &View) -> Result<(), String> {
    if let Some(malformed) = &life.malformed {
        return Err(malformed.clone());
    }
    let names: BTreeSet<&String> = view.members.keys().chain(life.replayed.keys()).collect();
    let mut diffs = Vec::new();
    for name in names {
        let have = view
            .members
            .get(name)
            .map(|m| (m.state, m.incarnation, &m.info));
        let want = life
            .replayed
            .get(name)
            .map(|r| (r.state, r.member.incarnation, &r.member.info));
        let carried = life.replayed.get(name).map(|r| r.member.state);
        if have != want || carried != have.map(|h| h.0) {
            diffs.push(format!("  {name}: view {have:?}, stream {want:?}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}'s subscription (snapshot + transitions) does not add up to its view:\n{}",
            life.label(),
            diffs.join("\n")
        ))
    }
}

/// A worker process that has been registered-able and unfaulted for a while.
#[derive(Debug, Clone)]
pub struct HealthyWorker {
    /// Its member name.
    pub name: String,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// The metadata it was last given.
    pub info: MemberInfo,
    /// How long it has been running with a healthy client.
    pub healthy_for: Duration,
    /// How long ago it was given its current metadata (an update that failed is written
    /// on a later keep-alive tick).
    pub info_age: Duration,
    /// Whether its registration call has returned.
    pub registered: bool,
}

/// (4) No member missing while its worker is healthy: a worker healthy for `after` is
/// registered and `Alive` in the view, with its incarnation, and with its latest metadata
/// once that too is `after` old.
pub fn healthy_workers_alive(
    who: &str,
    view: &View,
    workers: &[HealthyWorker],
    after: Duration,
) -> Result<(), String> {
    for w in workers.iter().filter(|w| w.healthy_for >= after) {
        if !w.registered {
            return Err(format!(
                "{} (incarnation {}) has been healthy for {:?} but its registration has not returned",
                w.name, w.incarnation.0, w.healthy_for
            ));
        }
        let seen = view.get(&w.name);
        let info_due = w.info_age >= after;
        let ok = seen.is_some_and(|m| {
            m.state == MemberState::Alive
                && m.incarnation == w.incarnation
                && (m.info == w.info || !info_due)
        });
        if !ok {
            return Err(format!(
                "{} (incarnation {}, cpus {}) has been healthy for {:?} but {who} has it as {}",
                w.name,
                w.incarnation.0,
                w.info.cpus,
                w.healthy_for,
                describe(seen)
            ));
        }
    }
    Ok(())
}

/// A worker or host process ever started, for the store-level checks.
#[derive(Debug, Clone)]
pub struct ProcessLife {
    /// Its member names (one for a worker, every member for a host).
    pub names: BTreeSet<String>,
    /// When it stopped keeping its lease alive for good (crash, or its leave returned).
    pub ended: Option<Instant>,
}

/// (9) No ghost liveness: a liveness key belongs to a running process, or to one that ended
/// less than a TTL ago (its lease has not run out yet).
pub fn no_ghost_liveness(
    listing: &Listing,
    keyspace: &Keyspace,
    processes: &BTreeMap<Incarnation, ProcessLife>,
    now: Instant,
    ttl: Duration,
) -> Result<(), String> {
    for kv in &listing.kvs {
        let Some((KeyKind::Liveness, name)) = keyspace.parse(&kv.key) else {
            continue;
        };
        let live = muster_core::Liveness::from_json(&kv.key, &kv.value)
            .map_err(|e| format!("undecodable liveness key in the store: {e}"))?;
        match processes.get(&live.incarnation) {
            None => {
                return Err(format!(
                    "the liveness key of {name} carries incarnation {}, which no process of the run had",
                    live.incarnation.0
                ))
            }
            Some(p) if !p.names.contains(name) => {
                return Err(format!(
                    "the liveness key of {name} carries incarnation {} of a process of {:?}",
                    live.incarnation.0, p.names
                ))
            }
            Some(ProcessLife {
                ended: Some(ended), ..
            }) if now > *ended + ttl => {
                return Err(format!(
                    "the liveness key of {name} (incarnation {}) outlived its process by {:?} (TTL {ttl:?})",
                    live.incarnation.0,
                    now - *ended
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// (8) A leave that returned `Ok` removed the member: while no process of that name runs or
/// leaves, it has no record.
pub fn left_members_have_no_record(
    listing: &Listing,
    keyspace: &Keyspace,
    left_cleanly: &[String],
) -> Result<(), String> {
    for name in left_cleanly {
        let key = keyspace.record_key(name);
        if listing.kvs.iter().any(|kv| kv.key == key) {
            return Err(format!(
                "{name} left successfully and nothing registered it since, but its record is still in the store at revision {}",
                listing.revision
            ));
        }
    }
    Ok(())
}

/// (10) No early reap: a record deleted on its own (a reap, or a leave after the lease was
/// lost) is deleted only after its liveness key has been gone for `reap_after`, unless a
/// leave of that name was in flight; and never while its liveness key exists.
pub fn no_early_reaps(history: &History, reap_after: Duration) -> Result<(), String> {
    use muster_core::EventKind::{Delete, Put};
    for (name, log) in &history.key_log {
        let mut live = false;
        let mut gone_at: Option<Instant> = None;
        for change in log {
            if change.record == Some(Delete) && change.liveness.is_none() {
                if live {
                    return Err(format!(
                        "the record of {name} was deleted alone at revision {} while its liveness key existed",
                        change.revision
                    ));
                }
                let waited = gone_at.map(|gone| change.at - gone);
                let early = !matches!(waited, Some(waited) if waited >= reap_after);
                let evicted = history.evicted_at(name, change.revision);
                if early && !evicted && !history.leaving_at(name, change.at) {
                    return Err(format!(
                        "the record of {name} was deleted at revision {} only {waited:?} after its liveness \
                         key went (reap_after {reap_after:?}), and no leave of {name} was in flight",
                        change.revision
                    ));
                }
            }
            match change.liveness {
                Some(Put) => {
                    live = true;
                    gone_at = None;
                }
                Some(Delete) => {
                    live = false;
                    gone_at = Some(change.at);
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// (11) A worker cut off (partitioned or hung) for longer than a TTL has no liveness key:
/// nothing renews a lease through a dead connection.
pub fn cut_off_workers_lose_liveness(
    listing: &Listing,
    keyspace: &Keyspace,
    cut_off: &[(String, Duration)],
    ttl: Duration,
) -> Result<(), String> {
    for (name, for_how_long) in cut_off.iter().filter(|(_, d)| *d > ttl) {
        let key = keyspace.liveness_key(name);
        if let Some(kv) = listing.kvs.iter().find(|kv| kv.key == key) {
            return Err(format!(
                "{name} has been cut off for {for_how_long:?} (TTL {ttl:?}) but its liveness key \
                 (revision {}) is still in the store",
                kv.mod_revision
            ));
        }
    }
    Ok(())
}

/// Invariant 12: an evicted incarnation never reappears. After the revision of an eviction
/// (whose marker holds for longer than any run), no record or liveness key carrying the
/// incarnation it refused is written again.
pub fn evicted_never_reappear(history: &History) -> Result<(), String> {
    for (name, evictions) in &history.evictions {
        let puts = history.incarnation_puts.get(name).map_or(&[][..], |p| p);
        for eviction in evictions {
            if let Some((revision, _)) = puts
                .iter()
                .find(|(r, i)| *r > eviction.revision && *i == eviction.blocked)
            {
                return Err(format!(
                    "incarnation {} of {name}, evicted at revision {} (op {}), wrote its keys again at revision {revision}",
                    eviction.blocked.0, eviction.revision, eviction.op
                ));
            }
        }
    }
    Ok(())
}

/// Invariant 13 (one lease, one revision), in the store: every liveness key a process holds
/// is on its one lease (a host's members all on the group's lease).
pub fn one_lease_per_process(listing: &Listing, keyspace: &Keyspace) -> Result<(), String> {
    let mut leases: BTreeMap<Incarnation, BTreeMap<i64, Vec<&str>>> = BTreeMap::new();
    for kv in &listing.kvs {
        let Some((KeyKind::Liveness, name)) = keyspace.parse(&kv.key) else {
            continue;
        };
        let live = muster_core::Liveness::from_json(&kv.key, &kv.value)
            .map_err(|e| format!("undecodable liveness key in the store: {e}"))?;
        leases
            .entry(live.incarnation)
            .or_default()
            .entry(kv.lease)
            .or_default()
            .push(name);
    }
    for (incarnation, by_lease) in leases {
        if by_lease.len() > 1 {
            return Err(format!(
                "the liveness keys of incarnation {} are on {} leases at revision {}: {by_lease:?}",
                incarnation.0,
                by_lease.len(),
                listing.revision
            ));
        }
    }
    Ok(())
}

/// Invariant 13, in the store: when a lease runs out (or is revoked), every liveness key on
/// it goes in that one revision.
pub fn leases_expire_in_one_revision(history: &History) -> Result<(), String> {
    for expiry in &history.expiries {
        if !expiry.stayed.is_empty() {
            return Err(format!(
                "at revision {} the liveness keys of {:?} went with lease {}, but those of {:?} \
                 stayed on it",
                expiry.revision, expiry.names, expiry.lease, expiry.stayed
            ));
        }
    }
    Ok(())
}

/// Invariant 13, in each subscriber's stream: the members whose liveness keys went with one
/// lease at one revision (a host's crash) turn `Suspect` together, at that revision. A
/// master that reports any of them `Suspect` at that revision reports every one it had
/// `Alive` before it `Suspect` at that same revision (a master that saw the revision only
/// through a later relist reports them at the relist's revision, and is not held to it).
pub fn suspects_of_one_lease_together(life: &Life, history: &History) -> Result<(), String> {
    for expiry in history.expiries.iter().filter(|e| e.names.len() > 1) {
        let suspected: BTreeSet<&str> = life
            .delivered
            .iter()
            .map(|d| &d.transition)
            .filter(|t| t.revision == expiry.revision && t.kind == TransitionKind::Suspect)
            .map(|t| t.member.name())
            .filter(|name| expiry.names.contains(*name))
            .collect();
        if suspected.is_empty() {
            continue;
        }
        for name in &expiry.names {
            if suspected.contains(name.as_str()) {
                continue;
            }
            if life.state_before(name, expiry.revision) == Some(MemberState::Alive) {
                return Err(format!(
                    "{} reported Suspect at revision {} for {suspected:?}, whose liveness keys went \
                     with lease {} at that revision, but not for {name}, which it had Alive and \
                     whose liveness key went with them",
                    life.label(),
                    expiry.revision,
                    expiry.lease
                ));
            }
        }
    }
    Ok(())
}
