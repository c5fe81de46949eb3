//! The view as the callers of a group need it: the set of members to send work to.
//!
//! A load balancer wants changes, not transitions: "add this endpoint", "drop that one".
//! [`Discover`] turns the master's subscription into exactly those, keyed by member name,
//! for a [`Filter`]; tower's balancers take it as it is (tower's `Discover` is implemented
//! for every stream of `Result<Change<K, V>, E>`). [`EndpointSet`] keeps the same set as a
//! `tokio::sync::watch` of snapshots for callers that pick a member themselves.
//!
//! The rules, for a member and a filter:
//!
//! | what happens | change |
//! |---|---|
//! | joined, recovered or restarted, and it matches | `Insert` |
//! | updated, and it matches (it may not have before) | `Insert` (replaces the old value) |
//! | updated, and it no longer matches | `Remove` |
//! | draining (the default filter leaves draining members out) | `Remove`, if it was in the set |
//! | suspect, left, failed or removed (no longer `Alive`) | `Remove`, if it was in the set |
//! | the first listing | an `Insert` per matching member, after the whole listing |
//! | a resync (compaction, a replaced store) | the exact difference, from its transitions |
//! | the subscriber lagged | the exact difference between what it was given and a fresh snapshot |
//!
//! A member that was never in the set is never removed, and one already there with the
//! same value is never inserted again.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use muster_core::{Member, Revision};
use tokio::sync::watch;
pub use tower::discover::Change;

use crate::error::Error;
use crate::filter::Filter;
use crate::shared::{Epoch, Event, Shared, Subscription};

/// A stream of [`Change`]s to the set of members a [`Filter`] selects, keyed by name;
/// from [`Master::discover`](crate::Master::discover). It starts with the set at the
/// master's first listing (nothing before that) and ends when the master stops.
///
/// Never yields an error today; the `Result` is what tower's balancers take.
///
/// ```no_run
/// # async fn example(master: muster_master::Master) {
/// use futures::StreamExt;
/// use muster_master::{Change, Filter};
///
/// let mut changes = master.discover(Filter::alive().label("zone", "a"));
/// while let Some(Ok(change)) = changes.next().await {
///     match change {
///         Change::Insert(name, member) => println!("send to {name} at {}", member.info.addr),
///         Change::Remove(name) => println!("stop sending to {name}"),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Discover {
    shared: Arc<Shared>,
    subscription: Subscription,
    filter: Filter,
    /// What the consumer has been given (or, before the first listing, will be given).
    set: BTreeMap<String, Member>,
    /// Changes worked out and not yet yielded.
    queue: VecDeque<Change<String, Member>>,
    /// Whether the first listing has been seen (and the initial set queued).
    synced: bool,
    epoch: Epoch,
    revision: Revision,
}

impl Discover {
    pub(crate) fn new(shared: Arc<Shared>, filter: Filter) -> Self {
        let subscription = shared.subscribe();
        let mut discover = Discover {
            shared,
            subscription,
            filter,
            set: BTreeMap::new(),
            queue: VecDeque::new(),
            synced: false,
            epoch: Epoch::default(),
            revision: 0,
        };
        discover.take_snapshot();
        discover
    }

    /// The filter it follows.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The set as the changes yielded so far (and those queued) leave it.
    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.set
    }

    /// The store history and revision the set belongs to: the last event seen.
    pub fn position(&self) -> (Epoch, Revision) {
        (self.epoch, self.revision)
    }

    /// Whether the first listing has been applied (before that the set is empty).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Moves the set to the subscription's snapshot, queueing the difference if the set
    /// has been handed out already.
    fn take_snapshot(&mut self) {
        let snapshot = &self.subscription.snapshot;
        self.epoch = snapshot.epoch;
        self.revision = snapshot.revision;
        let target: BTreeMap<String, Member> = snapshot
            .members
            .iter()
            .filter(|(_, m)| self.filter.matches(m))
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect();
        if self.synced {
            for name in self.set.keys() {
                if !target.contains_key(name) {
                    self.queue.push_back(Change::Remove(name.clone()));
                }
            }
            for (name, member) in &target {
                if self.set.get(name) != Some(member) {
                    self.queue
                        .push_back(Change::Insert(name.clone(), member.clone()));
                }
            }
        } else if snapshot.synced {
            self.synced = true;
            for (name, member) in &target {
                self.queue
                    .push_back(Change::Insert(name.clone(), member.clone()));
            }
        }
        self.set = target;
    }

    /// Applies one event to the set, queueing the changes it makes once synced.
    fn apply(&mut self, event: Event) {
        match event {
            Event::Transition {
                position,
                transition,
            } => {
                self.epoch = position.epoch;
                self.revision = position.revision;
                let member = transition.member;
                let name = member.name().to_owned();
                if self.filter.matches(&member) {
                    if self.set.get(&name) != Some(&member) {
                        if self.synced {
                            self.queue
                                .push_back(Change::Insert(name.clone(), member.clone()));
                        }
                        self.set.insert(name, member);
                    }
                } else if self.set.remove(&name).is_some() && self.synced {
                    self.queue.push_back(Change::Remove(name));
                }
            }
            Event::Synced {
                epoch, revision, ..
            } => {
                self.epoch = epoch;
                self.revision = revision;
                if !self.synced {
                    self.synced = true;
                    for (name, member) in &self.set {
                        self.queue
                            .push_back(Change::Insert(name.clone(), member.clone()));
                    }
                }
            }
            Event::Lagged { .. } => {
                self.subscription = self.shared.subscribe();
                self.take_snapshot();
            }
        }
    }
}

impl Stream for Discover {
    type Item = Result<Change<String, Member>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match self.subscription.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => self.apply(event),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The members a [`Filter`] selects, at one point of the master's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The store history `revision` belongs to.
    pub epoch: Epoch,
    /// The revision of the last event this set reflects.
    pub revision: Revision,
    /// Whether the master's first listing has been applied (before that `members` is empty
    /// because nothing is known yet, not because the group is empty).
    pub synced: bool,
    /// The selected members, by name.
    pub members: BTreeMap<String, Member>,
}

/// A live [`Endpoints`] snapshot for a [`Filter`]; from
/// [`Master::endpoints`](crate::Master::endpoints).
///
/// [`current`](EndpointSet::current) is the latest set, [`changed`](EndpointSet::changed)
/// waits for the next one. A new snapshot is published only when the set changes (and once
/// at the first listing, and when the store's epoch changes), never half-way through a
/// revision; between two, `revision` may move on silently. Cloning it is cheap and every
/// clone sees the same snapshots; it is a `tokio::sync::watch` underneath
/// ([`into_receiver`](EndpointSet::into_receiver) for code that wants one).
///
/// ```no_run
/// # async fn example(master: muster_master::Master) {
/// use muster_master::Filter;
///
/// let mut set = master.endpoints(Filter::alive());
/// loop {
///     let endpoints = set.current();
///     println!("{} members at revision {}", endpoints.members.len(), endpoints.revision);
///     if set.changed().await.is_err() {
///         break; // the master stopped
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EndpointSet {
    rx: watch::Receiver<Arc<Endpoints>>,
}

impl EndpointSet {
    /// The latest snapshot (a cheap `Arc` clone), marking it seen.
    pub fn current(&mut self) -> Arc<Endpoints> {
        self.rx.borrow_and_update().clone()
    }

    /// The latest snapshot without marking it seen.
    pub fn peek(&self) -> Arc<Endpoints> {
        self.rx.borrow().clone()
    }

    /// Whether a snapshot newer than the last one [`current`](EndpointSet::current)
    /// returned is waiting (`false` once the master has stopped and the last one was seen).
    pub fn has_changed(&self) -> bool {
        self.rx.has_changed().unwrap_or(false)
    }

    /// Waits for a snapshot newer than the last one seen; [`Error::Stopped`] once the
    /// master has stopped (the last snapshot stays readable).
    pub async fn changed(&mut self) -> Result<(), Error> {
        self.rx.changed().await.map_err(|_| Error::Stopped)
    }

    /// Waits until `pred` holds for a snapshot and returns it (e.g. until the set is
    /// synced and not empty); [`Error::Stopped`] if the master stops first. Wrap it in
    /// `tokio::time::timeout` to bound the wait.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Endpoints) -> bool,
    ) -> Result<Arc<Endpoints>, Error> {
        self.rx
            .wait_for(|e| pred(e))
            .await
            .map(|e| e.clone())
            .map_err(|_| Error::Stopped)
    }

    /// The `tokio::sync::watch` receiver underneath.
    pub fn into_receiver(self) -> watch::Receiver<Arc<Endpoints>> {
        self.rx
    }
}

/// Starts the task that keeps an [`EndpointSet`] for `filter`. It ends when the master
/// stops or when every receiver is gone.
pub(crate) fn endpoints(shared: Arc<Shared>, filter: Filter) -> EndpointSet {
    let mut discover = Discover::new(shared, filter);
    let (tx, rx) = watch::channel(Arc::new(snapshot(&discover)));
    discover.queue.clear();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = discover.subscription.next() => event,
                () = tx.closed() => return,
            };
            let Some(event) = event else { return };
            discover.apply(event);
            // Everything one step published arrived together: take it all, publish once.
            while let Some(event) = discover.subscription.try_next() {
                discover.apply(event);
            }
            discover.queue.clear();
            if !discover.is_synced() {
                continue;
            }
            let next = snapshot(&discover);
            tx.send_if_modified(|current| {
                // A new epoch is news even with the same members: a reader holding a
                // revision of the old history must hear that it means nothing now.
                let changed = !current.synced
                    || current.members != next.members
                    || current.epoch != next.epoch;
                *current = Arc::new(next);
                changed
            });
        }
    });
    EndpointSet { rx }
}

fn snapshot(discover: &Discover) -> Endpoints {
    let (epoch, revision) = discover.position();
    Endpoints {
        epoch,
        revision,
        synced: discover.is_synced(),
        members: discover.members().clone(),
    }
}
