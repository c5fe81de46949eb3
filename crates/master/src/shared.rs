//! What the master's task shares with its handle: the state machine (whose view is the
//! master's only copy), the subscribers, the health.
//!
//! One mutex guards all three, so a [`Subscription`]'s snapshot and its stream of
//! events join without a gap or an overlap. Subscribers share one bounded broadcast
//! channel: each event is stored once, however many subscribers there are, and a subscriber
//! that falls behind by the channel's capacity is told it lagged instead of growing memory.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{FutureExt, Stream, StreamExt};
use muster_core::{
    BadKeyReason, Member, MemberState, Membership, Reap, Relisting, Revision, Step, Transition,
    TransitionKind, WatchBatch,
};
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::error::Error;
use crate::report::BadInputLog;

/// The master's view of the group at one revision.
///
/// Cheap to clone for its size: each [`Member`]'s metadata is shared (an `Arc`) with the
/// master's state machine and every other copy, so a copy costs the map and the names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Which store history `revision` belongs to (see [`Epoch`]).
    pub epoch: Epoch,
    /// The last store revision applied.
    pub revision: Revision,
    /// Whether the first listing has been applied (before that the view is empty).
    pub synced: bool,
    /// Every member with a record (`Alive` or `Suspect`), by name.
    pub members: BTreeMap<String, Member>,
}

impl View {
    /// One member by name.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// A member's state, if it has a record.
    pub fn state_of(&self, name: &str) -> Option<MemberState> {
        self.members.get(name).map(|m| m.state)
    }

    /// The members currently in the group (`Alive`).
    pub fn alive(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| m.state.in_group())
    }

    /// The members in one state.
    pub fn in_state(&self, state: MemberState) -> impl Iterator<Item = &Member> {
        self.members.values().filter(move |m| m.state == state)
    }
}

/// How the master is doing, for health checks and dashboards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Whether the first listing has been applied.
    pub synced: bool,
    /// Whether a watch is open and delivering.
    pub watching: bool,
    /// The last revision applied.
    pub revision: Revision,
    /// How many times the master listed again after losing its place (compaction).
    pub resyncs: u64,
    /// How many times the watch was re-opened after breaking.
    pub reconnects: u64,
    /// How many times a quiet watch was re-opened because the store had moved past
    /// everything it delivered (see `MasterConfig::stall_check`).
    pub watch_refreshes: u64,
    /// How many undecodable values were skipped.
    pub skipped: u64,
    /// How many bad keys under the prefix were ignored, by reason (keys that are no valid
    /// key of the group, liveness keys without a record), each counted once per write.
    /// Reasons never seen are absent.
    pub bad_keys: BTreeMap<BadKeyReason, u64>,
    /// How many reaps this master won.
    pub reaps: u64,
    /// How many times the store turned out to have been replaced (new cluster id, or
    /// revisions gone backwards) and the view was rebuilt from the new one.
    pub store_replacements: u64,
    /// Transitions emitted, by kind.
    pub transitions: BTreeMap<TransitionKind, u64>,
    /// The last error met, if any.
    pub last_error: Option<String>,
    /// Whether that error was a refusal that retrying alone cannot fix (permission denied,
    /// bad credentials: `muster_core::Error::is_retryable` says no). The master keeps
    /// retrying with backoff, in case the configuration is fixed while it runs; a program
    /// that meets one before its first listing should rather stop and say so.
    pub refused: bool,
    /// Since when the master has been failing to list or watch (`None` while healthy).
    pub unhealthy_since: Option<Instant>,
}

/// Which history of the store a revision belongs to.
///
/// Revisions only mean something within one store's history: an etcd wiped or restored
/// from a backup starts its revisions again, and revision 57 of the new store is not revision
/// 57 of the old one. The epoch is the store's identity (etcd's cluster id) as the master
/// found it when it listed; when the master notices that the store was replaced without a
/// new cluster id (its revisions went backwards), it moves to a new epoch derived from the
/// old one and the revision it had reached. Two masters on the same unreplaced store agree on
/// the epoch (its cluster id); positions from different epochs are never compared.
///
/// Printed as 16 hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after a replacement noticed at `revision` that kept the cluster id.
    pub(crate) fn next(self, revision: Revision) -> Epoch {
        // splitmix64 of the old epoch and the revision: a new, well spread value.
        let mut z =
            (self.0 ^ (revision as u64).rotate_left(32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Epoch(z ^ (z >> 31))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > 16 {
            return Err(format!("{text:?} is not an epoch (up to 16 hex digits)"));
        }
        u64::from_str_radix(text, 16)
            .map(Epoch)
            .map_err(|_| format!("{text:?} is not an epoch (up to 16 hex digits)"))
    }
}

/// Where a transition sits in the master's history: the store's [`Epoch`], the store
/// revision that caused it, then its index among that revision's transitions (one revision
/// can explain several, e.g. `joined` and `suspect` of a member found without liveness, or
/// many members after a resync).
///
/// Positions only grow within one epoch; positions of two epochs say nothing about each
/// other (a consumer that holds one from another epoch must take a fresh snapshot). Printed
/// and parsed as `EPOCH-REVISION.INDEX` (the HTTP API's SSE event id); `EPOCH-REVISION`
/// parses as "after all of that revision".
///
/// ```
/// use muster_master::{Epoch, Position};
/// let p: Position = "00000000000000ab-57.2".parse().unwrap();
/// assert_eq!((p.epoch, p.revision, p.index), (Epoch(0xab), 57, 2));
/// assert_eq!(p.to_string(), "00000000000000ab-57.2");
/// assert!(Position::before(p.epoch, 57) < p && p < Position::after(p.epoch, 57));
/// assert!("57.2".parse::<Position>().is_err(), "a position names its epoch");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The store history it belongs to.
    pub epoch: Epoch,
    /// The store revision that caused the transition.
    pub revision: Revision,
    /// Its index among that revision's transitions (0-based). `-1` stands for "before the
    /// first transition of `revision`", `i64::MAX` for "after the last".
    pub index: i64,
}

impl Position {
    /// The point just before every transition of `revision`: resuming after it replays
    /// `revision` and everything later.
    pub fn before(epoch: Epoch, revision: Revision) -> Self {
        Position {
            epoch,
            revision,
            index: -1,
        }
    }

    /// The point just after every transition of `revision`.
    pub fn after(epoch: Epoch, revision: Revision) -> Self {
        Position {
            epoch,
            revision,
            index: i64::MAX,
        }
    }

    /// The position of the transition that follows one at `self`, caused by `revision` in
    /// `epoch`.
    fn successor(self, epoch: Epoch, revision: Revision) -> Self {
        if epoch == self.epoch && revision == self.revision && self.index != i64::MAX {
            Position {
                epoch,
                revision,
                index: self.index + 1,
            }
        } else {
            Position {
                epoch,
                revision,
                index: 0,
            }
        }
    }
}

/// Formats as `EPOCH-REVISION.INDEX`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}.{}", self.epoch, self.revision, self.index)
    }
}

/// Parses `EPOCH-REVISION.INDEX`, or `EPOCH-REVISION` meaning after all of that revision.
impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!("{text:?} is not a position (EPOCH-REVISION.INDEX, e.g. 00000000000000ab-57.0)")
        };
        let (epoch, rest) = text.split_once('-').ok_or_else(bad)?;
        let epoch: Epoch = epoch.parse().map_err(|_| bad())?;
        match rest.split_once('.') {
            Some((revision, index)) => Ok(Position {
                epoch,
                revision: revision.parse().map_err(|_| bad())?,
                index: index.parse::<u32>().map(i64::from).map_err(|_| bad())?,
            }),
            None => rest
                .parse()
                .map(|revision| Position::after(epoch, revision))
                .map_err(|_| bad()),
        }
    }
}

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A member changed state or metadata.
    Transition {
        /// Where it sits in the master's history.
        position: Position,
        /// What happened.
        transition: Transition,
    },
    /// A listing was applied: the view now mirrors the store at `revision` (sent after the
    /// transitions that listing explained: the first listing, and every relist after a
    /// compaction or a store replacement).
    Synced {
        /// The store history the listing belongs to; a new one after a replacement.
        epoch: Epoch,
        /// The revision of the listing.
        revision: Revision,
        /// How many members (`Alive` or `Suspect`) the view holds.
        members: usize,
    },
    /// This subscriber fell more than `MasterConfig::subscriber_buffer` events behind and
    /// `missed` of them were dropped for it. Its picture of the group is no longer exact:
    /// take a fresh [`Master::subscribe`](crate::Master::subscribe) (or
    /// [`Master::view`](crate::Master::view)) and carry on from there.
    Lagged {
        /// How many events this subscriber missed.
        missed: u64,
    },
}

/// A snapshot of the view plus every event after it, with no gap and no overlap between the
/// two. A bounded [`Stream`] of [`Event`]s: a subscriber that falls too far behind gets
/// [`Event::Lagged`] instead of unbounded memory. The stream ends when the master stops.
///
/// ```no_run
/// # async fn example(master: muster_master::Master) -> Result<(), muster_master::Error> {
/// let mut events = master.subscribe();
/// println!("{} members at revision {}", events.snapshot.members.len(), events.snapshot.revision);
/// while let Some(t) = events.next_transition().await? {
///     println!("{} {}", t.member.name(), t.kind);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Subscription {
    /// The view when the subscription started.
    pub snapshot: View,
    /// The events after the snapshot.
    rx: BroadcastStream<Event>,
}

impl Subscription {
    /// The next event; `None` once the master has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        StreamExt::next(self).await
    }

    /// The next event if one is already waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        // Unconstrained: tokio's cooperative budget would otherwise answer "not ready" after
        // 128 receives in one task turn, and a drain loop would stop with events waiting.
        tokio::task::unconstrained(StreamExt::next(self))
            .now_or_never()
            .flatten()
    }

    /// The next transition, skipping `Synced` markers: `Ok(None)` once the master has
    /// stopped, [`Error::Lagged`] if this subscriber fell behind (see [`Event::Lagged`]).
    pub async fn next_transition(&mut self) -> Result<Option<Transition>, Error> {
        loop {
            match self.next().await {
                None => return Ok(None),
                Some(event) => {
                    if let Some(t) = transition_of(event)? {
                        return Ok(Some(t));
                    }
                }
            }
        }
    }

    /// The next transition if one is already waiting (skipping `Synced` markers);
    /// [`Error::Lagged`] if this subscriber fell behind.
    pub fn try_next_transition(&mut self) -> Result<Option<Transition>, Error> {
        while let Some(event) = self.try_next() {
            if let Some(t) = transition_of(event)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }
}

fn transition_of(event: Event) -> Result<Option<Transition>, Error> {
    match event {
        Event::Transition { transition, .. } => Ok(Some(transition)),
        Event::Synced { .. } => Ok(None),
        Event::Lagged { missed } => Err(Error::Lagged { missed }),
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match Pin::new(&mut self.rx).poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => Poll::Ready(Some(event)),
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                Poll::Ready(Some(Event::Lagged { missed }))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// State behind the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The machine, subscribers and health, changed together.
    inner: Mutex<Inner>,
    /// Bumped after every change, to wake `wait_until`.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    /// The state machine: its view is the master's, the only copy (a [`View`] is cut from
    /// it when asked for).
    machine: Membership,
    /// The epoch of the view.
    epoch: Epoch,
    /// Whether the first listing has been applied.
    synced: bool,
    /// The subscribers' channel; `None` once the master has stopped (which ends every
    /// subscription's stream).
    events: Option<broadcast::Sender<Event>>,
    /// The position of the last transition sent.
    last: Position,
    /// Whether the master's task has ended.
    stopped: bool,
    health: Health,
    /// The bad-input warnings, rate-limited.
    log: BadInputLog,
}

impl Inner {
    fn view(&self) -> View {
        View {
            epoch: self.epoch,
            revision: self.machine.revision(),
            synced: self.synced,
            members: self.machine.view().clone(),
        }
    }
}

impl Shared {
    /// `buffer`: how many events a subscriber may fall behind before it lags (at least 1).
    pub(crate) fn new(buffer: usize, machine: Membership) -> Self {
        Self {
            inner: Mutex::new(Inner {
                machine,
                epoch: Epoch::default(),
                synced: false,
                events: Some(broadcast::channel(buffer.max(1)).0),
                last: Position::after(Epoch::default(), 0),
                stopped: false,
                health: Health::default(),
                log: BadInputLog::default(),
            }),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the view half-written in a way that
        // matters more than stopping: keep serving what is there.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn view(&self) -> View {
        self.lock().view()
    }

    pub(crate) fn members(&self) -> Vec<Member> {
        self.lock().machine.members().cloned().collect()
    }

    pub(crate) fn member(&self, name: &str) -> Option<Member> {
        self.lock().machine.get(name).cloned()
    }

    pub(crate) fn health(&self) -> Health {
        self.lock().health.clone()
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        let rx = match &inner.events {
            Some(events) => events.subscribe(),
            // Stopped: a receiver of a dropped sender, so the stream ends at once.
            None => broadcast::channel(1).1,
        };
        Subscription {
            snapshot: inner.view(),
            rx: BroadcastStream::new(rx),
        }
    }

    /// Whether the master's task has ended.
    pub(crate) fn stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Marks the master stopped: ends every subscription and wakes every waiter.
    pub(crate) fn stop(&self) {
        let mut inner = self.lock();
        inner.stopped = true;
        inner.events = None;
        inner.log.flush(tokio::time::Instant::now());
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The last revision the machine applied.
    pub(crate) fn revision(&self) -> Revision {
        self.lock().machine.revision()
    }

    /// When the next reap proposal is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.lock().machine.poll_timeout()
    }

    /// The reaps due at `now`.
    pub(crate) fn handle_timeout(&self, now: Instant) -> Vec<Reap> {
        self.lock().machine.handle_timeout(now)
    }

    /// See [`Membership::forget_revisions`].
    pub(crate) fn forget_revisions(&self) {
        self.lock().machine.forget_revisions();
    }

    /// Replaces the view with `listing` (in a new `epoch`, maybe) and publishes the step.
    /// An empty relisting for the machine's keyspace, to fold a listing into page by page.
    pub(crate) fn relisting(&self) -> Relisting {
        self.lock().machine.relisting()
    }

    /// Resyncs the machine with a finished relisting and publishes the step.
    pub(crate) fn finish_resync(&self, relisting: Relisting, now: Instant, epoch: Epoch) {
        self.step(true, epoch, |machine| machine.finish_resync(relisting, now));
    }

    /// Applies one watch batch and publishes the step.
    pub(crate) fn apply(&self, batch: &WatchBatch, now: Instant, epoch: Epoch) {
        self.step(false, epoch, |machine| machine.apply(batch, now));
    }

    /// Runs one step of the machine and publishes it, under one lock: the view changes, the
    /// step's transitions go to the subscribers, and the health counts them, together. A
    /// resync may start a new `epoch`.
    fn step(&self, resync: bool, epoch: Epoch, run: impl FnOnce(&mut Membership) -> Step) {
        let mut inner = self.lock();
        let step = run(&mut inner.machine);
        let revision = inner.machine.revision();
        let members = inner.machine.view().len();
        let Inner {
            events,
            last,
            health,
            log,
            synced,
            epoch: view_epoch,
            ..
        } = &mut *inner;
        let now = tokio::time::Instant::now();
        log.tick(now);
        for skip in &step.skipped {
            log.skipped(now, skip);
        }
        health.skipped += step.skipped.len() as u64;
        for bad in &step.bad_keys {
            log.bad_key(now, bad);
            *health.bad_keys.entry(bad.reason).or_default() += 1;
        }
        for t in step.transitions {
            tracing::debug!(name = %t.member.name(), kind = %t.kind, revision = t.revision, "transition");
            *health.transitions.entry(t.kind).or_default() += 1;
            *last = last.successor(epoch, t.revision);
            if let Some(events) = events {
                // No subscriber is fine.
                let _ = events.send(Event::Transition {
                    position: *last,
                    transition: t,
                });
            }
        }
        if resync && *synced {
            health.resyncs += 1;
        }
        if resync {
            *synced = true;
            *view_epoch = epoch;
            health.synced = true;
        }
        health.revision = revision;
        if resync {
            if let Some(events) = events {
                let _ = events.send(Event::Synced {
                    epoch,
                    revision,
                    members,
                });
            }
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn healthy(&self, watching: bool) {
        let mut inner = self.lock();
        inner.health.watching = watching;
        inner.health.unhealthy_since = None;
        inner.health.refused = false;
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records a failure; `refused`: one that retrying alone cannot fix.
    pub(crate) fn failing(&self, error: &str, reconnect: bool, refused: bool) {
        let mut inner = self.lock();
        let health = &mut inner.health;
        health.watching = false;
        health.last_error = Some(error.to_owned());
        health.refused = refused;
        health
            .unhealthy_since
            .get_or_insert_with(|| tokio::time::Instant::now().into_std());
        if reconnect {
            health.reconnects += 1;
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn store_replaced(&self, message: &str) {
        let mut inner = self.lock();
        inner.health.store_replacements += 1;
        inner.health.watching = false;
        inner.health.last_error = Some(message.to_owned());
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn watch_refreshed(&self) {
        self.lock().health.watch_refreshes += 1;
    }

    /// When the bad-input log's window ends with a summary to write, if it does.
    pub(crate) fn log_due(&self) -> Option<tokio::time::Instant> {
        self.lock().log.due()
    }

    /// Writes the bad-input log's summary if its window is over.
    pub(crate) fn log_tick(&self) {
        self.lock().log.tick(tokio::time::Instant::now());
    }

    pub(crate) fn reaped(&self) {
        self.lock().health.reaps += 1;
    }
}
