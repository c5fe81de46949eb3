//! What the master's task shares with its handle: the view, the subscribers, the health.
//!
//! One mutex guards all three, so a [`Subscription`]'s snapshot and its stream of
//! transitions join without a gap or an overlap.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use muster_core::{Member, MemberState, Revision, Step, Transition, TransitionKind};
use tokio::sync::{mpsc, watch};

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

/// A snapshot of the view plus every transition after it.
#[derive(Debug)]
pub struct Subscription {
    /// The view when the subscription started.
    pub snapshot: View,
    /// The transitions after the snapshot.
    rx: mpsc::UnboundedReceiver<Transition>,
}

impl Subscription {
    /// The next transition; `None` once the master has stopped.
    pub async fn next(&mut self) -> Option<Transition> {
        self.rx.recv().await
    }

    /// The next transition if one is already waiting.
    pub fn try_next(&mut self) -> Option<Transition> {
        self.rx.try_recv().ok()
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

#[derive(Debug, Default)]
struct Inner {
    view: View,
    /// Open subscriptions; closed ones are dropped on the next send.
    subscribers: Vec<mpsc::UnboundedSender<Transition>>,
    health: Health,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
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
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.subscribers.push(tx);
        Subscription {
            snapshot: inner.view.clone(),
            rx,
        }
    }

    pub(crate) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Publishes one step: refreshes the members it changed from the machine's view, sends
    /// its transitions to the subscribers, and records the machine's revision, all under
    /// one lock. The refreshed members share their metadata with the machine's; a name
    /// already in the view keeps its entry.
    pub(crate) fn publish(
        &self,
        step: Step,
        machine: &BTreeMap<String, Member>,
        revision: Revision,
        resync: bool,
    ) {
        let mut inner = self.lock();
        let Inner {
            view,
            subscribers,
            health,
        } = &mut *inner;
        for skip in &step.skipped {
            tracing::warn!(key = %skip.key, revision = skip.revision, reason = %skip.reason, "skipping undecodable value");
        }
        health.skipped += step.skipped.len() as u64;
        for name in step.changed {
            match (machine.get(&name), view.members.get_mut(&name)) {
                (Some(member), Some(slot)) => slot.clone_from(member),
                (Some(member), None) => {
                    view.members.insert(name, member.clone());
                }
                (None, _) => {
                    view.members.remove(&name);
                }
            }
        }
        for t in step.transitions {
            *health.transitions.entry(t.kind).or_default() += 1;
            subscribers.retain(|s| s.send(t.clone()).is_ok());
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

    pub(crate) fn reaped(&self) {
        self.lock().health.reaps += 1;
    }
}
