//! What the master's task shares with its handle: the view, the subscribers, the health.
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
use muster_core::{BadKeyReason, Member, MemberState, Revision, Step, Transition, TransitionKind};
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
    /// Since when the master has been failing to list or watch (`None` while healthy).
    pub unhealthy_since: Option<Instant>,
}

/// Where a transition sits in the master's history: the store revision that caused it, then
/// its index among that revision's transitions (one revision can explain several, e.g.
/// `joined` and `suspect` of a member found without liveness, or many members after a
/// resync).
///
/// Positions only grow within one store's history. Printed and parsed as `revision.index`
/// (the HTTP API's SSE event id); a bare `revision` parses as "after all of it".
///
/// ```
/// use muster_master::Position;
/// let p: Position = "57.2".parse().unwrap();
/// assert_eq!((p.revision, p.index), (57, 2));
/// assert_eq!(p.to_string(), "57.2");
/// assert!(Position::before(57) < p && p < Position::after(57));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The store revision that caused the transition.
    pub revision: Revision,
    /// Its index among that revision's transitions (0-based). `-1` stands for "before the
    /// first transition of `revision`", `i64::MAX` for "after the last".
    pub index: i64,
}

impl Position {
    /// The point just before every transition of `revision`: resuming after it replays
    /// `revision` and everything later.
    pub fn before(revision: Revision) -> Self {
        Position {
            revision,
            index: -1,
        }
    }

    /// The point just after every transition of `revision`.
    pub fn after(revision: Revision) -> Self {
        Position {
            revision,
            index: i64::MAX,
        }
    }

    /// The position of the transition that follows one at `self`, caused by `revision`.
    fn successor(self, revision: Revision) -> Self {
        if revision == self.revision && self.index != i64::MAX {
            Position {
                revision,
                index: self.index + 1,
            }
        } else {
            Position { revision, index: 0 }
        }
    }
}

/// Formats as `revision.index`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.revision, self.index)
    }
}

/// Parses `revision.index`, or a bare `revision` meaning after all of it.
impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a position (REVISION.INDEX, e.g. 57.0)");
        let text = text.trim();
        match text.split_once('.') {
            Some((revision, index)) => Ok(Position {
                revision: revision.parse().map_err(|_| bad())?,
                index: index.parse::<u32>().map(i64::from).map_err(|_| bad())?,
            }),
            None => text.parse().map(Position::after).map_err(|_| bad()),
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
    /// View, subscribers and health, changed together.
    inner: Mutex<Inner>,
    /// Bumped after every change, to wake `wait_until`.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    view: View,
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

impl Shared {
    /// `buffer`: how many events a subscriber may fall behind before it lags (at least 1).
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                view: View::default(),
                events: Some(broadcast::channel(buffer.max(1)).0),
                last: Position::after(0),
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
        self.lock().view.clone()
    }

    pub(crate) fn member(&self, name: &str) -> Option<Member> {
        self.lock().view.members.get(name).cloned()
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
            snapshot: inner.view.clone(),
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

    /// Publishes one step: applies the entries it changed to the view (as the step carries
    /// them: nothing is looked up again), sends its transitions to the subscribers, and
    /// records the machine's revision, all under one lock. The entries share their metadata
    /// with the machine's.
    pub(crate) fn publish(&self, step: Step, revision: Revision, resync: bool) {
        let mut inner = self.lock();
        let Inner {
            view,
            events,
            last,
            health,
            log,
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
        for (name, entry) in step.changed {
            match entry {
                Some(member) => {
                    view.members.insert(name, member);
                }
                None => {
                    view.members.remove(&name);
                }
            }
        }
        for t in step.transitions {
            *health.transitions.entry(t.kind).or_default() += 1;
            *last = last.successor(t.revision);
            if let Some(events) = events {
                // No subscriber is fine.
                let _ = events.send(Event::Transition {
                    position: *last,
                    transition: t,
                });
            }
        }
        if resync && view.synced {
            health.resyncs += 1;
        }
        if resync {
            view.synced = true;
            health.synced = true;
        }
        view.revision = revision;
        health.revision = revision;
        if resync {
            if let Some(events) = events {
                let _ = events.send(Event::Synced {
                    revision,
                    members: view.members.len(),
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
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn failing(&self, error: &str, reconnect: bool) {
        let mut inner = self.lock();
        let health = &mut inner.health;
        health.watching = false;
        health.last_error = Some(error.to_owned());
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
