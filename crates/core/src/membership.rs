//! The membership state machine: observations of the keyspace in, transitions out.
//!
//! [`Membership`] does no IO and reads no clock. The master feeds it what it sees in the
//! store (a [`Listing`] when it (re)lists, [`WatchBatch`]es as they come) together with the
//! current time, and it answers with the [`Transition`]s those observations imply. Time only
//! matters for reaping: [`Membership::poll_timeout`] says when the next `Suspect` member is
//! due, [`Membership::handle_timeout`] returns the guarded [`Reap`]s the master should try.
//!
//! **The view is a function of the keyspace.** A member's state is decided by its two keys
//! alone (record present and liveness present: `Alive`; record without liveness: `Suspect`;
//! no record: not a member), and a value that cannot be decoded counts as absent. So a master
//! that restarts, or that lost its watch to compaction and lists again, rebuilds exactly the
//! view of one that never stopped; [`Membership::resync`] then emits the transitions that
//! explain the difference between the old view and the new listing.
//!
//! **Bad input is reported, never silently dropped.** An undecodable value is reported in
//! [`Step::skipped`]; a key under the prefix that is no valid key of the group, and a
//! liveness key whose name has no (decodable) record, in [`Step::bad_keys`] with a
//! [`BadKeyReason`]. Each bad write is reported once: by the step that observes it, whether a
//! watch batch or a listing, and not again by later listings that still hold it.
//!
//! # Transitions, per member, between two observations
//!
//! | before | after | transitions |
//! |---|---|---|
//! | absent | `Alive` | `Joined` |
//! | absent | `Suspect` | `Joined`, `Suspect` |
//! | `Alive` | `Suspect` | `Suspect` |
//! | `Suspect` | `Alive`, same incarnation | `Recovered` |
//! | `Suspect` or `Alive` | `Alive`, new incarnation | `Restarted` |
//! | `Alive` | `Alive`, liveness re-created, same incarnation | `Suspect`, `Recovered` |
//! | `Alive` | `Alive`, record rewritten by a new incarnation | `Restarted` |
//! | `Alive` | absent, seen on the watch | `Left` |
//! | `Suspect` | absent, seen on the watch | `Failed` |
//! | present | absent, found by a resync | `Removed` |
//! | present | present, record re-created | `Left`/`Failed` (`Removed` in a resync), then as from absent |
//! | any | any, metadata changed, draining turned on | ... then `Draining` |
//! | any | any, metadata changed otherwise | ... then `Updated` |
//!
//! `Left` and `Failed` are facts the watch observed: the record was deleted while the member
//! was alive (a leave, an eviction), or after it was suspect (a reap). A [`resync`](Membership::resync)
//! only sees that a record is gone, not why (it may have left, crashed and been reaped, or the
//! store may have been replaced by an empty one), so it says `Removed`: gone, cause unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keyspace::{BadKeyReason, KeyClass, KeyKind, Keyspace};
use crate::member::{Incarnation, Liveness, MemberInfo};
use crate::store::{Event, EventKind, KeyValue, Listing, Revision, Txn, WatchBatch};

/// Where a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// In the group: record and liveness both present.
    Alive,
    /// Not in the group, not removed: the record is there, the liveness lease is gone.
    Suspect,
    /// Removed by a graceful leave or an eviction (the record was deleted while alive).
    Left,
    /// Removed after being `Suspect` (reaped, or evicted while suspect).
    Failed,
    /// Removed, and the master cannot know why: a resync (after compaction, or against a
    /// store that was replaced) found its record gone without seeing the delete.
    Removed,
}

impl MemberState {
    /// Whether a member in this state counts as in the group.
    pub fn in_group(self) -> bool {
        self == MemberState::Alive
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Left => "left",
            MemberState::Failed => "failed",
            MemberState::Removed => "removed",
        })
    }
}

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransitionKind {
    /// It registered for the first time (or its record was re-created).
    Joined,
    /// Its metadata changed.
    Updated,
    /// It announced that it is leaving: its record now says `draining` (it is still a
    /// member, and still `Alive` while its lease lives; callers should stop sending it new
    /// work). Any other metadata change in the same write comes with it.
    Draining,
    /// Its liveness lease was lost.
    Suspect,
    /// The same process is back after being `Suspect`.
    Recovered,
    /// A new process (new incarnation) took over the name.
    Restarted,
    /// It left gracefully or was evicted.
    Left,
    /// It was removed after being `Suspect` too long.
    Failed,
    /// It is gone and the master cannot know why: a resync found its record missing (it
    /// left, or failed and was reaped, or the store was replaced) without seeing the delete.
    Removed,
}

impl TransitionKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [TransitionKind; 9] = [
        TransitionKind::Joined,
        TransitionKind::Updated,
        TransitionKind::Draining,
        TransitionKind::Suspect,
        TransitionKind::Recovered,
        TransitionKind::Restarted,
        TransitionKind::Left,
        TransitionKind::Failed,
        TransitionKind::Removed,
    ];
}

impl fmt::Display for TransitionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionKind::Joined => "joined",
            TransitionKind::Updated => "updated",
            TransitionKind::Draining => "draining",
            TransitionKind::Suspect => "suspect",
            TransitionKind::Recovered => "recovered",
            TransitionKind::Restarted => "restarted",
            TransitionKind::Left => "left",
            TransitionKind::Failed => "failed",
            TransitionKind::Removed => "removed",
        })
    }
}

/// A member as the master sees it.
///
/// Cloning is cheap: the metadata is shared, not copied, between the machine's view, its
/// transitions and every copy made from them (a master's published view, snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its metadata, from the record. Shared: the machine decodes each record once, and
    /// every `Member` (and [`Transition`]) made from that record points to the same value.
    /// Fields read as before (`member.info.name`); compare with a plain [`MemberInfo`]
    /// directly (`member.info == info`), or build one with `Arc::new(info)`.
    pub info: Arc<MemberInfo>,
    /// Where it stands.
    pub state: MemberState,
    /// The process that last wrote the record.
    pub incarnation: Incarnation,
    /// The revision of the last write to the record.
    pub record_revision: Revision,
    /// The revision of its last state change.
    pub since: Revision,
    /// When this master saw it become `Suspect` (or first saw it suspect). Reaping counts
    /// from here, so a master restart can delay a reap but never hasten it.
    pub suspect_since: Option<Instant>,
}

impl Member {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.info.name
    }
}

/// One transition, with the member as it is after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// The member after the transition (for `Left`/`Failed`/`Removed`: as last known, with
    /// that state).
    pub member: Member,
    /// The store revision that caused it.
    pub revision: Revision,
    /// When the master observed it.
    pub at: Instant,
}

/// A value under the prefix that could not be decoded and was treated as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its key.
    pub key: String,
    /// The revision of the bad write.
    pub revision: Revision,
    /// What was wrong.
    pub reason: String,
}

/// A key under the prefix that is not part of a member: no valid key of the group, or a
/// liveness key without a record. It is otherwise ignored, as if absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadKey {
    /// The key.
    pub key: String,
    /// The revision of the last write to the key (for a liveness key without a record, the
    /// liveness key's: the record may have vanished later).
    pub revision: Revision,
    /// What is wrong with it.
    pub reason: BadKeyReason,
}

/// What one observation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// The transitions, in order.
    pub transitions: Vec<Transition>,
    /// Values that could not be decoded (each counted once per write).
    pub skipped: Vec<Skipped>,
    /// Keys under the prefix that are not part of a member (each reported once per write:
    /// when a watch or a listing first shows it, and again only after it was written again,
    /// or, for a liveness key without a record, after it had a record in between).
    pub bad_keys: Vec<BadKey>,
}

/// A reap the master should attempt: delete the record of a member that has been `Suspect`
/// for `reap_after`, but only if nothing changed since this master decided so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reap {
    /// The member's name.
    pub name: String,
    /// The record's revision when the decision was made.
    pub record_revision: Revision,
}

impl Reap {
    /// The guarded transaction: delete the record only if it is unchanged and the liveness key
    /// is still absent. Of several masters trying the same reap, exactly one succeeds.
    pub fn txn(&self, keyspace: &Keyspace) -> Txn {
        keyspace.reap_txn(&self.name, self.record_revision)
    }
}

/// A listing being read page by page for a resync ([`Membership::relisting`], then
/// [`Membership::finish_resync`]): each page is decoded as it comes, so the raw keys and
/// values of only one page are alive at a time.
#[derive(Debug, Clone)]
pub struct Relisting {
    keyspace: Keyspace,
    /// The listing's revision, from its first page.
    revision: Option<Revision>,
    /// The decoded keys, by name.
    fresh: BTreeMap<String, Keys>,
    /// Values that could not be decoded, in key order.
    skipped: Vec<Skipped>,
    /// Keys under the prefix that are no member's, in key order.
    bad_keys: Vec<BadKey>,
}

impl Relisting {
    /// Folds in one page: some of the listing's keys, in key order, after those of the
    /// pages before. A page at a newer revision than the first starts the listing over
    /// (the store read it again after a compaction; see
    /// [`Store::list_paged`](crate::Store::list_paged)): what came before is dropped.
    pub fn add(&mut self, page: &Listing) {
        match self.revision {
            Some(revision) if revision == page.revision => {}
            Some(_) => {
                self.fresh.clear();
                self.skipped.clear();
                self.bad_keys.clear();
                self.revision = Some(page.revision);
            }
            None => self.revision = Some(page.revision),
        }
        for kv in &page.kvs {
            let class = self.keyspace.classify(&kv.key);
            if let KeyClass::Bad(reason) = class {
                self.bad_keys.push(bad_key(kv, reason));
            }
            // Eviction markers are valid keys, but not members' keys.
            if let KeyClass::Valid {
                kind: kind @ (KeyKind::Record | KeyKind::Liveness),
                name,
            } = class
            {
                let keys = match self.fresh.get_mut(name) {
                    Some(keys) => keys,
                    None => self.fresh.entry(name.to_owned()).or_default(),
                };
                decode_into(&self.keyspace, keys, kind, name, kv, &mut self.skipped);
            }
        }
    }

    /// The revision of the listing so far (`None` before its first page).
    pub fn revision(&self) -> Option<Revision> {
        self.revision
    }
}

/// The decoded keys of one name, and what the machine remembers about them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Keys {
    /// The record, if present and decodable.
    record: Option<RecordKey>,
    /// The liveness key, if present and decodable.
    liveness: Option<LivenessKey>,
    /// For a member (a name in the view): the create revisions that tell a re-created key
    /// from an old one. `None` for a name that is no member, and after `forget_revisions`.
    tracked: Option<Tracked>,
}

impl Keys {
    /// Whether neither key is there (the name is then forgotten).
    fn is_empty(&self) -> bool {
        self.record.is_none() && self.liveness.is_none()
    }
}

/// A decoded [`Record`], its info shared with the [`Member`] made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordKey {
    info: Arc<MemberInfo>,
    incarnation: Incarnation,
    create_revision: Revision,
    mod_revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LivenessKey {
    liveness: Liveness,
    create_revision: Revision,
    /// The revision of its last write: what identifies it as a bad key when it has no record.
    mod_revision: Revision,
}

/// What the machine remembers about a member's keys beyond the public [`Member`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    /// The record's create revision: a different one means it was deleted and re-created.
    record_created: Revision,
    /// The liveness key's create revision: a different one means it was lost in between.
    live_created: Option<Revision>,
}

/// The membership state machine. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Membership {
    /// The key layout it decodes.
    keyspace: Keyspace,
    /// How long to wait before proposing a reap again when the last one did not show up.
    reap_retry: Duration,
    /// The decoded keyspace, per name. Names with neither key are removed.
    keys: BTreeMap<String, Keys>,
    /// What is derived from the keys.
    derived: Derived,
    /// Undecodable values already reported, by key, with the revision of the bad write.
    bad: BTreeMap<String, Revision>,
    /// Bad keys under the prefix (no valid key of the group) already reported, with the
    /// revision of the write.
    bad_keys: BTreeMap<String, Revision>,
    /// The names whose liveness key is (and was reported as) without a record, with the
    /// liveness key's revision.
    orphans: BTreeMap<String, Revision>,
    /// The last revision observed.
    revision: Revision,
    /// The latest `now` seen; time never goes backwards inside the machine.
    now: Option<Instant>,
}

/// What the machine derives from the keys (a field of its own so that it can be updated
/// while one name's keys are borrowed).
#[derive(Debug, Clone)]
struct Derived {
    /// How long a member stays `Suspect` before a reap is proposed; `None` never reaps.
    reap_after: Option<Duration>,
    /// The view: every name with a record.
    members: BTreeMap<String, Member>,
    /// When each suspect member is next due for a reap proposal.
    reap_due: ReapQueue,
    /// Whether a resync is being applied (it may have missed revisions).
    resyncing: bool,
}

impl Membership {
    /// A machine for the group under `keyspace`, reaping members `Suspect` for `reap_after`.
    pub fn new(keyspace: Keyspace, reap_after: Option<Duration>) -> Self {
        Self {
            keyspace,
            reap_retry: Duration::from_secs(1),
            keys: BTreeMap::new(),
            derived: Derived {
                reap_after,
                members: BTreeMap::new(),
                reap_due: ReapQueue::default(),
                resyncing: false,
            },
            bad: BTreeMap::new(),
            bad_keys: BTreeMap::new(),
            orphans: BTreeMap::new(),
            revision: 0,
            now: None,
        }
    }

    /// Sets how long to wait before proposing the same reap again (default 1 s).
    pub fn with_reap_retry(mut self, retry: Duration) -> Self {
        self.reap_retry = retry;
        self
    }

    /// The keyspace it decodes.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// The last revision observed (`0` before the first listing).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// One member, if it has a record.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.derived.members.get(name)
    }

    /// Every member with a record (`Alive` or `Suspect`), sorted by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.derived.members.values()
    }

    /// The view as a map, sorted by name.
    pub fn view(&self) -> &BTreeMap<String, Member> {
        &self.derived.members
    }

    /// Replaces everything known with a listing taken at one revision, and emits the
    /// transitions that explain the difference. Used for the first list, after compaction,
    /// and when the store went backwards.
    ///
    /// The same as feeding the listing to a [`Relisting`] and finishing it: a caller that
    /// reads the listing in pages ([`Store::list_paged`](crate::Store::list_paged)) folds
    /// each page in as it comes and never holds the whole listing.
    pub fn resync(&mut self, listing: &Listing, now: Instant) -> Step {
        let mut relisting = self.relisting();
        relisting.add(listing);
        self.finish_resync(relisting, now)
    }

    /// An empty [`Relisting`] for this machine's keyspace, to fold a listing into page by
    /// page before [`finish_resync`](Self::finish_resync). It borrows nothing: the machine
    /// may go on applying watch batches meanwhile (they are superseded by the resync).
    pub fn relisting(&self) -> Relisting {
        Relisting {
            keyspace: self.keyspace.clone(),
            revision: None,
            fresh: BTreeMap::new(),
            skipped: Vec::new(),
            bad_keys: Vec::new(),
        }
    }

    /// Replaces everything known with what `relisting` read (a listing at one revision),
    /// and emits the transitions that explain the difference: [`resync`](Self::resync), in
    /// two halves. A relisting of no page at all is an empty listing at revision 0.
    pub fn finish_resync(&mut self, relisting: Relisting, now: Instant) -> Step {
        let now = self.tick(now);
        let mut step = Step::default();
        let Relisting {
            revision,
            fresh,
            skipped,
            bad_keys: listed_bad_keys,
            ..
        } = relisting;
        let revision = revision.unwrap_or(0);
        let mut bad_keys = BTreeMap::new();
        for bad in listed_bad_keys {
            // Reported once per write, however many listings still hold it.
            if self.bad_keys.get(&bad.key) != Some(&bad.revision) {
                step.bad_keys.push(bad.clone());
            }
            bad_keys.insert(bad.key, bad.revision);
        }
        let mut bad = BTreeMap::new();
        for skip in skipped {
            // A bad write is reported once, however many listings still hold it.
            if self.bad.get(&skip.key) != Some(&skip.revision) {
                step.skipped.push(skip.clone());
            }
            bad.insert(skip.key, skip.revision);
        }
        self.bad = bad;
        self.bad_keys = bad_keys;
        self.orphans = listed_orphans(&self.keyspace, &self.orphans, &fresh, &mut step);
        // Every name known before or now, sorted, each once. The old names are moved, not
        // copied, and what the machine remembers about a name's keys carries over.
        let old = std::mem::replace(&mut self.keys, fresh);
        let mut names = Vec::with_capacity(old.len().max(self.keys.len()));
        let mut new = self.keys.iter_mut().peekable();
        for (name, known) in old {
            while let Some((added, _)) = new.next_if(|(added, _)| added.as_str() < name.as_str()) {
                names.push(added.clone());
            }
            if let Some((_, keys)) = new.next_if(|(added, _)| **added == name) {
                keys.tracked = known.tracked;
            }
            names.push(name);
        }
        names.extend(new.map(|(added, _)| added.clone()));
        self.revision = revision;
        self.derived.resyncing = true;
        for name in &names {
            self.settle(name, revision, now, &mut step);
        }
        self.derived.resyncing = false;
        step
    }

    /// Applies a watch batch. Events at or below the last observed revision are ignored (a
    /// resumed watch may repeat them), so nothing is applied twice. The batch's header
    /// revision is not trusted to mean "nothing else happened up to here": resume watching
    /// from [`revision`](Self::revision)` + 1`.
    pub fn apply(&mut self, batch: &WatchBatch, now: Instant) -> Step {
        let now = self.tick(now);
        let mut step = Step::default();
        let mut i = 0;
        while i < batch.events.len() {
            let revision = batch.events[i].revision();
            let mut j = i;
            while j < batch.events.len() && batch.events[j].revision() == revision {
                j += 1;
            }
            if revision > self.revision {
                self.apply_revision(&batch.events[i..j], revision, now, &mut step);
            }
            i = j;
        }
        // Only event revisions advance the machine: a catching-up watch may send a header
        // revision ahead of the events it has delivered so far.
        step
    }

    /// Applies the (non-empty) events of one revision: decodes them all, then settles each
    /// name they touched once, in name order.
    fn apply_revision(
        &mut self,
        events: &[Event],
        revision: Revision,
        now: Instant,
        step: &mut Step,
    ) {
        // The events under the prefix. A revision usually writes one or two keys: keep them
        // on the stack.
        let mut inline = [(KeyKind::Record, "", &events[0]); 4];
        let mut spilled = Vec::new();
        let mut n = 0;
        for event in events {
            let (kind, name) = match self.keyspace.classify(&event.kv.key) {
                // Eviction markers are valid keys, but not members' keys.
                KeyClass::Valid {
                    kind: KeyKind::Evicted,
                    ..
                } => continue,
                KeyClass::Valid { kind, name } => (kind, name),
                KeyClass::Bad(reason) => {
                    observe_bad_key(&mut self.bad_keys, reason, event, &mut step.bad_keys);
                    continue;
                }
                KeyClass::Outside => continue,
            };
            if n < inline.len() {
                inline[n] = (kind, name, event);
            } else {
                if n == inline.len() {
                    spilled.extend_from_slice(&inline);
                }
                spilled.push((kind, name, event));
            }
            n += 1;
        }
        let ours = if n <= inline.len() {
            &mut inline[..n]
        } else {
            &mut spilled[..]
        };
        self.revision = revision;
        let Some(&(_, first, _)) = ours.first() else {
            return;
        };
        if ours.iter().all(|&(_, name, _)| name == first) {
            // One name (a join writes both of its keys in one revision): find it once.
            let keys = match self.keys.get_mut(first) {
                Some(keys) => keys,
                None => self.keys.entry(first.to_owned()).or_default(),
            };
            for &(kind, name, event) in ours.iter() {
                observe(
                    &self.keyspace,
                    keys,
                    &mut self.bad,
                    kind,
                    name,
                    event,
                    &mut step.skipped,
                );
            }
            observe_orphan(&mut self.orphans, &self.keyspace, first, keys, step);
            if self.derived.settle(first, Some(keys), revision, now, step) {
                self.keys.remove(first);
            }
            return;
        }
        for &(kind, name, event) in ours.iter() {
            let keys = match self.keys.get_mut(name) {
                Some(keys) => keys,
                None => self.keys.entry(name.to_owned()).or_default(),
            };
            observe(
                &self.keyspace,
                keys,
                &mut self.bad,
                kind,
                name,
                event,
                &mut step.skipped,
            );
        }
        ours.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let mut last = None;
        for &(_, name, _) in ours.iter() {
            if last != Some(name) {
                self.settle(name, revision, now, step);
                last = Some(name);
            }
        }
        let mut last = None;
        for &(_, name, _) in ours.iter() {
            if last != Some(name) {
                if let Some(keys) = self.keys.get(name) {
                    observe_orphan(&mut self.orphans, &self.keyspace, name, keys, step);
                } else {
                    self.orphans.remove(name);
                }
                last = Some(name);
            }
        }
    }

    /// Re-derives `name` from its keys (forgetting the name if it has none left).
    fn settle(&mut self, name: &str, revision: Revision, now: Instant, step: &mut Step) {
        if self
            .derived
            .settle(name, self.keys.get_mut(name), revision, now, step)
        {
            self.keys.remove(name);
        }
    }

    /// When the next reap proposal is due, if any member is `Suspect` and reaping is on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.derived.reap_due.next()
    }

    /// Forgets every revision number seen so far, keeping the view: for when the store was
    /// replaced by another whose revisions start again (etcd restored empty, or from a
    /// backup). The next [`resync`](Self::resync) then compares members by incarnation and
    /// metadata only, so a worker that re-registered on the new store with the same
    /// process is no transition at all, and events of the old store are not mistaken for
    /// repeats of the new one's.
    pub fn forget_revisions(&mut self) {
        for keys in self.keys.values_mut() {
            keys.tracked = None;
        }
        self.bad.clear();
        self.bad_keys.clear();
        self.orphans.clear();
        self.revision = 0;
    }

    /// Returns the reaps due at `now`. Each is proposed again after the reap retry interval
    /// if the record is still there by then (the transaction failed or was lost).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Reap> {
        let now = self.tick(now);
        let Derived {
            members, reap_due, ..
        } = &mut self.derived;
        let mut reaps = Vec::new();
        reap_due.take_due(now, self.reap_retry, |name| {
            if let Some(member) = members.get(name) {
                reaps.push(Reap {
                    name: name.to_owned(),
                    record_revision: member.record_revision,
                });
            }
        });
        reaps
    }

    fn tick(&mut self, now: Instant) -> Instant {
        let now = match self.now {
            Some(last) if last > now => last,
            _ => now,
        };
        self.now = Some(now);
        now
    }
}

impl Derived {
    /// Re-derives `name` from its keys (`None`: it has none) and emits what changed. Returns whether the name has no key left, so
    /// that the caller forgets it.
    ///
    /// Nothing is copied but reference counts: the member and its keys are updated in place,
    /// and the name is allocated only for a map entry that is new.
    fn settle(
        &mut self,
        name: &str,
        keys: Option<&mut Keys>,
        revision: Revision,
        now: Instant,
        step: &mut Step,
    ) -> bool {
        let Some(keys) = keys else {
            // Neither key (a listing without the name): no member.
            self.remove(name, revision, now, step);
            return false;
        };
        let forget = keys.is_empty();
        let Keys {
            record,
            liveness,
            tracked,
        } = keys;
        let Some(record) = record else {
            if self.remove(name, revision, now, step) {
                *tracked = None;
            }
            return forget;
        };
        let slot = self.members.get_mut(name);
        // The member as it was, unless its record was re-created: then it is gone.
        let before = match slot.as_deref() {
            Some(member) if recreated(record, tracked.as_ref()) => {
                let (kind, member) = gone(member.clone(), revision, self.resyncing);
                emit(step, kind, member, revision, now);
                None
            }
            before => before,
        };
        let liveness = liveness.as_ref();
        let state = if liveness.is_some() {
            MemberState::Alive
        } else {
            MemberState::Suspect
        };
        let mut kinds = state_transitions(before, state, record, liveness, tracked.as_ref());
        let changed_state = !kinds.as_slice().is_empty();
        if metadata_changed(before, record) {
            kinds.push(metadata_kind(before, record));
        }
        let kept_suspicion = kept_suspicion(before, state, record, self.resyncing);
        let after = member_after(
            before,
            record,
            state,
            changed_state,
            kept_suspicion,
            revision,
            now,
        );
        emit_kinds(step, &kinds, &after, revision, now);
        *tracked = Some(Tracked {
            record_created: record.create_revision,
            live_created: liveness.map(|l| l.create_revision),
        });
        self.reap_due.follow(
            name,
            after.suspect_since,
            kept_suspicion.is_some(),
            self.reap_after,
        );
        match slot {
            Some(member) => {
                if *member != after {
                    *member = after;
                }
            }
            None => {
                self.members.insert(name.to_owned(), after);
            }
        }
        forget
    }

    /// Takes `name` out of the view, if it is there, because it has no record any more: emits
    /// its `Left` (it was `Alive`), `Failed` (it was `Suspect`) or, in a resync, `Removed`, and
    /// drops its reap deadline. Returns whether it was a member.
    fn remove(&mut self, name: &str, revision: Revision, now: Instant, step: &mut Step) -> bool {
        let Some(member) = self.members.remove(name) else {
            return false;
        };
        let (kind, member) = gone(member, revision, self.resyncing);
        emit(step, kind, member, revision, now);
        self.reap_due.remove(name);
        true
    }
}

/// Notes one transition, caused by `revision` and observed at `now`.
fn emit(step: &mut Step, kind: TransitionKind, member: Member, revision: Revision, now: Instant) {
    step.transitions.push(Transition {
        kind,
        member,
        revision,
        at: now,
    })
}

/// Whether the record of a member was deleted and created again since it was last seen (its
/// create revision moved). Unknown, so `false`, after `forget_revisions`: then only
/// incarnations and metadata can tell what changed.
fn recreated(record: &RecordKey, tracked: Option<&Tracked>) -> bool {
    tracked.is_some_and(|t| t.record_created != record.create_revision)
}

/// Decides the state transitions from `before` (`None`: no member, or one whose record was
/// re-created) to `state`, what the keys say now: `Joined` (then `Suspect` if it has no
/// liveness), `Suspect`, `Recovered` or `Restarted`, or the pair that explains a loss and a
/// comeback (or a new process and its loss) in between two observations.
fn state_transitions(
    before: Option<&Member>,
    state: MemberState,
    record: &RecordKey,
    liveness: Option<&LivenessKey>,
    tracked: Option<&Tracked>,
) -> Kinds {
    let mut kinds = Kinds::default();
    let Some(b) = before else {
        kinds.push(TransitionKind::Joined);
        if state == MemberState::Suspect {
            kinds.push(TransitionKind::Suspect);
        }
        return kinds;
    };
    let relived = match tracked {
        Some(t) => t.live_created != liveness.map(|l| l.create_revision),
        None => comeback(b, record, liveness) == TransitionKind::Restarted,
    };
    match (b.state, state) {
        (MemberState::Alive, MemberState::Suspect) => kinds.push(TransitionKind::Suspect),
        (MemberState::Suspect, MemberState::Alive) => {
            kinds.push(comeback(b, record, liveness));
        }
        (MemberState::Suspect, MemberState::Suspect) if b.incarnation != record.incarnation => {
            // A new process registered and was lost again in between.
            kinds.push(TransitionKind::Restarted);
            kinds.push(TransitionKind::Suspect);
        }
        (MemberState::Alive, MemberState::Alive) if b.incarnation != record.incarnation => {
            // A new process replaced both keys (the liveness key was overwritten, not
            // re-created): the record names another process.
            kinds.push(TransitionKind::Restarted);
        }
        (MemberState::Alive, MemberState::Alive) if relived => {
            // The liveness key was lost and created again in between.
            let back = comeback(b, record, liveness);
            if back == TransitionKind::Recovered {
                kinds.push(TransitionKind::Suspect);
            }
            kinds.push(back);
        }
        _ => {}
    }
    kinds
}

/// Decides whether the metadata changed since `before` (an `Updated`). A record rewritten with
/// the same metadata is made to share the value the view (and any copy of it) already holds.
fn metadata_changed(before: Option<&Member>, record: &mut RecordKey) -> bool {
    let Some(b) = before else {
        return false;
    };
    if Arc::ptr_eq(&b.info, &record.info) {
        return false;
    }
    if *b.info == *record.info {
        record.info = Arc::clone(&b.info);
        return false;
    }
    true
}

/// What a metadata change is called: `Draining` when it turns draining on, else `Updated`.
fn metadata_kind(before: Option<&Member>, record: &RecordKey) -> TransitionKind {
    match before {
        Some(b) if !b.info.draining && record.info.draining => TransitionKind::Draining,
        _ => TransitionKind::Updated,
    }
}

/// Decides whether suspicion (and its reap clock) carries over from `before`, and if so
/// returns when it started: the member was and still is `Suspect`, and, in a resync (which
/// may have missed revisions), its record is unchanged, since a rewritten record may mean the
/// member registered again and was lost anew.
fn kept_suspicion(
    before: Option<&Member>,
    state: MemberState,
    record: &RecordKey,
    resyncing: bool,
) -> Option<Instant> {
    before
        .filter(|b| b.state == MemberState::Suspect && state == MemberState::Suspect)
        .filter(|b| !resyncing || b.record_revision == record.mod_revision)
        .and_then(|b| b.suspect_since)
}

/// Decides the member as it is now: its state change (if any, `changed_state`) dates from
/// `revision`, and a `Suspect` member is suspect since the suspicion it kept, or from `now`.
fn member_after(
    before: Option<&Member>,
    record: &RecordKey,
    state: MemberState,
    changed_state: bool,
    kept_suspicion: Option<Instant>,
    revision: Revision,
    now: Instant,
) -> Member {
    Member {
        info: Arc::clone(&record.info),
        state,
        incarnation: record.incarnation,
        record_revision: record.mod_revision,
        since: match before {
            Some(b) if !changed_state => b.since,
            _ => revision,
        },
        suspect_since: match state {
            MemberState::Suspect => Some(kept_suspicion.unwrap_or(now)),
            _ => None,
        },
    }
}

/// Emits `kinds` with the member `after`, except for the first half of a pair that a resync
/// found, which carries the state the member had in between: `Alive` for a `Restarted`
/// before a `Suspect`, `Suspect` (since `now`) for a `Suspect` before a `Recovered`.
fn emit_kinds(step: &mut Step, kinds: &Kinds, after: &Member, revision: Revision, now: Instant) {
    for &kind in kinds.as_slice() {
        let member = if kind == TransitionKind::Restarted && after.state == MemberState::Suspect {
            // The new process was alive in between.
            let mut back = after.clone();
            back.state = MemberState::Alive;
            back.suspect_since = None;
            back
        } else if kind == TransitionKind::Suspect && after.state == MemberState::Alive {
            // The member was suspect in between, so say so.
            let mut lost = after.clone();
            lost.state = MemberState::Suspect;
            lost.suspect_since = Some(now);
            lost
        } else {
            after.clone()
        };
        emit(step, kind, member, revision, now);
    }
}

/// The reap deadlines of the suspect members, kept both by name and in deadline order, so
/// that the next one is found without a scan and a timeout visits only the members due.
#[derive(Debug, Clone, Default)]
struct ReapQueue {
    /// When each member is next due for a reap proposal.
    by_name: BTreeMap<String, Instant>,
    /// The same deadlines, earliest first, each with the names due then. No set is empty.
    by_due: BTreeMap<Instant, BTreeSet<String>>,
}

impl ReapQueue {
    /// Whether `name` has a deadline.
    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The earliest deadline, if any.
    fn next(&self) -> Option<Instant> {
        self.by_due.first_key_value().map(|(&due, _)| due)
    }

    /// Sets (or moves) `name`'s deadline to `due`.
    fn set(&mut self, name: &str, due: Instant) {
        match self.by_name.get_mut(name) {
            Some(old) if *old == due => return,
            Some(old) => {
                let old = std::mem::replace(old, due);
                self.unqueue(old, name);
            }
            None => {
                self.by_name.insert(name.to_owned(), due);
            }
        }
        self.by_due.entry(due).or_default().insert(name.to_owned());
    }

    /// Keeps `name`'s deadline in step with its suspicion once it settled: a suspicion that
    /// carried over (`kept`) keeps its deadline, which a failed proposal may have pushed
    /// back; a new one is due `reap_after` from its start; a member not `Suspect`, or a
    /// machine that never reaps, has none.
    fn follow(
        &mut self,
        name: &str,
        suspect_since: Option<Instant>,
        kept: bool,
        reap_after: Option<Duration>,
    ) {
        match (suspect_since, reap_after) {
            (Some(since), Some(reap_after)) => {
                if !kept || !self.contains(name) {
                    self.set(name, since + reap_after);
                }
            }
            _ => self.remove(name),
        }
    }

    /// Drops `name`'s deadline, if it has one.
    fn remove(&mut self, name: &str) {
        if let Some(due) = self.by_name.remove(name) {
            self.unqueue(due, name);
        }
    }

    /// Calls `f` with every name due at `now`, in name order, and moves each one's deadline
    /// to `now + retry`. Only the names due are visited.
    fn take_due(&mut self, now: Instant, retry: Duration, mut f: impl FnMut(&str)) {
        let mut due = BTreeSet::new();
        while let Some(entry) = self.by_due.first_entry() {
            if *entry.key() > now {
                break;
            }
            let names = entry.remove();
            if due.is_empty() {
                due = names;
            } else {
                due.extend(names);
            }
        }
        if due.is_empty() {
            return;
        }
        let next = now + retry;
        for name in &due {
            f(name);
            if let Some(at) = self.by_name.get_mut(name.as_str()) {
                *at = next;
            }
        }
        match self.by_due.get_mut(&next) {
            Some(names) => names.extend(due),
            None => {
                self.by_due.insert(next, due);
            }
        }
    }

    /// Takes `name` out of the set due at `due`.
    fn unqueue(&mut self, due: Instant, name: &str) {
        if let Some(names) = self.by_due.get_mut(&due) {
            names.remove(name);
            if names.is_empty() {
                self.by_due.remove(&due);
            }
        }
    }
}

/// The transition of a member whose record is gone (deleted, or re-created since), and the
/// member as it leaves: `Left` if it was in the group, `Failed` if it was `Suspect`, both
/// when the delete was observed; `Removed` when a resync (`resyncing`) found it gone and
/// cannot know why.
fn gone(mut member: Member, revision: Revision, resyncing: bool) -> (TransitionKind, Member) {
    let (kind, state) = match member.state {
        _ if resyncing => (TransitionKind::Removed, MemberState::Removed),
        MemberState::Alive => (TransitionKind::Left, MemberState::Left),
        _ => (TransitionKind::Failed, MemberState::Failed),
    };
    member.state = state;
    member.since = revision;
    member.suspect_since = None;
    (kind, member)
}

/// The transitions of one member in one observation: at most three (e.g. `Suspect`,
/// `Recovered`, `Updated`), kept on the stack.
struct Kinds {
    buf: [TransitionKind; 3],
    len: usize,
}

impl Default for Kinds {
    fn default() -> Self {
        Self {
            buf: [TransitionKind::Joined; 3],
            len: 0,
        }
    }
}

impl Kinds {
    fn push(&mut self, kind: TransitionKind) {
        self.buf[self.len] = kind;
        self.len += 1;
    }

    fn as_slice(&self) -> &[TransitionKind] {
        &self.buf[..self.len]
    }
}

/// `Recovered` if the liveness that came back, and the record, both belong to the process
/// that wrote the record we knew; `Restarted` otherwise (a new process, or keys written by
/// hand that name another one: the member's incarnation changes either way).
fn comeback(before: &Member, record: &RecordKey, liveness: Option<&LivenessKey>) -> TransitionKind {
    let back = liveness.map(|l| l.liveness.incarnation);
    if back == Some(before.incarnation) && record.incarnation == before.incarnation {
        TransitionKind::Recovered
    } else {
        TransitionKind::Restarted
    }
}

/// Applies one watch event under the prefix to its name's keys (`kind`, `name`: its key,
/// parsed), noting an undecodable value in `skipped` and `bad`.
fn observe(
    keyspace: &Keyspace,
    keys: &mut Keys,
    bad: &mut BTreeMap<String, Revision>,
    kind: KeyKind,
    name: &str,
    event: &Event,
    skipped: &mut Vec<Skipped>,
) {
    bad.remove(&event.kv.key);
    match event.kind {
        EventKind::Put => {
            let before = skipped.len();
            decode_into(keyspace, keys, kind, name, &event.kv, skipped);
            if let Some(skip) = skipped.get(before) {
                bad.insert(skip.key.clone(), skip.revision);
            }
        }
        EventKind::Delete => match kind {
            KeyKind::Record => keys.record = None,
            KeyKind::Liveness => keys.liveness = None,
            // Never passed in: the callers skip markers.
            KeyKind::Evicted => {}
        },
    }
}

/// Decodes `kv` into the right slot of `keys`; an undecodable value empties the slot and is
/// reported as skipped.
fn decode_into(
    keyspace: &Keyspace,
    keys: &mut Keys,
    kind: KeyKind,
    name: &str,
    kv: &KeyValue,
    skipped: &mut Vec<Skipped>,
) {
    let mut skip = |reason: String| {
        skipped.push(Skipped {
            key: kv.key.clone(),
            revision: kv.mod_revision,
            reason,
        })
    };
    match kind {
        KeyKind::Record => {
            keys.record = match keyspace.decode_record(name, kv) {
                Ok(record) => Some(RecordKey {
                    info: Arc::new(record.info),
                    incarnation: record.incarnation,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                }),
                Err(e) => {
                    skip(decode_reason(e));
                    None
                }
            }
        }
        KeyKind::Liveness => {
            keys.liveness = match keyspace.decode_liveness(kv) {
                Ok(liveness) => Some(LivenessKey {
                    liveness,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                }),
                Err(e) => {
                    skip(decode_reason(e));
                    None
                }
            }
        }
        // Never passed in: the callers skip markers.
        KeyKind::Evicted => {}
    }
}

/// What was wrong with an undecodable value, without repeating its key ([`Skipped`] holds it).
fn decode_reason(error: crate::Error) -> String {
    match error {
        crate::Error::Decode { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// Applies one watch event at a bad key (`reason`: why it is bad): a write is reported and
/// remembered, a delete forgotten.
fn observe_bad_key(
    reported: &mut BTreeMap<String, Revision>,
    reason: BadKeyReason,
    event: &Event,
    bad_keys: &mut Vec<BadKey>,
) {
    match event.kind {
        EventKind::Put => {
            bad_keys.push(bad_key(&event.kv, reason));
            reported.insert(event.kv.key.clone(), event.kv.mod_revision);
        }
        EventKind::Delete => {
            reported.remove(&event.kv.key);
        }
    }
}

/// Notes whether `name`'s keys, as one revision left them, are a liveness key without a
/// record, and reports one that was not already (a normal registration writes both keys in
/// one revision, and a leave or a reap leaves no liveness key, so none of them is).
fn observe_orphan(
    orphans: &mut BTreeMap<String, Revision>,
    keyspace: &Keyspace,
    name: &str,
    keys: &Keys,
    step: &mut Step,
) {
    match orphan(keys) {
        Some(revision) => {
            if orphans.get(name) != Some(&revision) {
                let key = keyspace.liveness_key(name);
                step.bad_keys.push(liveness_without_record(key, revision));
                orphans.insert(name.to_owned(), revision);
            }
        }
        None => {
            if !orphans.is_empty() {
                orphans.remove(name);
            }
        }
    }
}

/// The names of a listing (`fresh`) whose liveness key has no record, with its revision;
/// reports each that is not among those already reported (`orphans`).
fn listed_orphans(
    keyspace: &Keyspace,
    orphans: &BTreeMap<String, Revision>,
    fresh: &BTreeMap<String, Keys>,
    step: &mut Step,
) -> BTreeMap<String, Revision> {
    let mut listed = BTreeMap::new();
    for (name, keys) in fresh {
        if let Some(revision) = orphan(keys) {
            if orphans.get(name) != Some(&revision) {
                let key = keyspace.liveness_key(name);
                step.bad_keys.push(liveness_without_record(key, revision));
            }
            listed.insert(name.clone(), revision);
        }
    }
    listed
}

/// The revision of `keys`' liveness key if it has no record (none, or an undecodable one).
fn orphan(keys: &Keys) -> Option<Revision> {
    match (&keys.record, &keys.liveness) {
        (None, Some(liveness)) => Some(liveness.mod_revision),
        _ => None,
    }
}

/// The report of a bad key as written in `kv`.
fn bad_key(kv: &KeyValue, reason: BadKeyReason) -> BadKey {
    BadKey {
        key: kv.key.clone(),
        revision: kv.mod_revision,
        reason,
    }
}

/// The report of the liveness key `key`, last written at `revision`, without a record.
fn liveness_without_record(key: String, revision: Revision) -> BadKey {
    BadKey {
        key,
        revision,
        reason: BadKeyReason::LivenessWithoutRecord,
    }
}
