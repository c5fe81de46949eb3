//! The recent transitions `GET /v1/events` replays: a bounded ring buffer plus a live feed.
//!
//! Every transition comes with the [`Position`] the master gave it: the store's epoch, its
//! etcd revision and its index among the transitions of that revision. A client resumes
//! *after* a position (`Last-Event-ID: 00000000000000ab-57.1`) or *from* a revision of an
//! epoch (`?from_revision=58&epoch=00000000000000ab`). The buffer knows the last position it
//! has dropped (or never saw, before the master started): a resume point before that is
//! refused as [`Gone`], never answered with a silent gap. So is a resume point from another
//! epoch: when the master moves to a new epoch (the store was replaced, its revisions started
//! again), the buffer starts over and every live reader's stream ends, so that it reconnects,
//! is refused, and takes a fresh snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use muster_core::{Member, MemberState, Revision, Transition};
pub use muster_master::{Epoch, Position};
use muster_master::{Event, Subscription};
use tokio::sync::broadcast;

use crate::render::EventJson;

/// How many entries a slow live reader may fall behind before its stream is cut (it then
/// reconnects with `Last-Event-ID` and is served from the buffer).
const LIVE_LAG: usize = 1024;

/// One buffered transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it sits.
    pub position: Position,
    /// The transition as JSON.
    pub event: EventJson,
    /// `event` serialized once, for every reader.
    pub json: String,
    /// The member as the view held it just before the transition (`None`: it was not in
    /// the view), so that a filtered reader also sees a member leave its selection.
    pub before: Option<Member>,
    /// The member after the transition (for `left`, `failed` and `removed`: as last known,
    /// in that state, which no filter selects).
    pub after: Member,
}

impl Entry {
    /// Whether a reader filtering with `filter` is sent this entry: when the member matches
    /// before the transition or after it (a member that is gone matches nothing).
    pub fn selected_by(&self, filter: &muster_master::Filter) -> bool {
        self.before.as_ref().is_some_and(|m| filter.matches(m)) || filter.matches(&self.after)
    }
}

/// The resume point is older than what the buffer holds, or from another epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    /// The epoch the buffer holds.
    pub epoch: Epoch,
    /// The smallest `from_revision` (of `epoch`) that can be served now.
    pub oldest_revision: Revision,
}

/// What a reader gets: the buffered entries after its resume point, then a live feed that
/// continues exactly where they end.
#[derive(Debug)]
pub struct Replay {
    /// Buffered entries, in order.
    pub backlog: Vec<Arc<Entry>>,
    /// Entries pushed after the backlog was taken.
    pub live: broadcast::Receiver<Arc<Entry>>,
}

/// The ring buffer and its live feed. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EventLog {
    /// The buffer, its bounds, the last position given out, and the live feed.
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// The store history the entries belong to.
    epoch: Epoch,
    /// Every pushed entry, for readers following live. Sent under the lock, so a replay's
    /// backlog and its live feed neither overlap nor leave a gap. Replaced (ending every
    /// live reader's stream) when the epoch changes.
    live: broadcast::Sender<Arc<Entry>>,
    /// The most recent entries, oldest first.
    entries: VecDeque<Arc<Entry>>,
    /// How many entries to keep.
    capacity: usize,
    /// Everything at or before this position is not in the buffer (dropped, or before the
    /// master started).
    missing_upto: Position,
    /// The position of the last entry pushed.
    last: Option<Position>,
    /// The view as the transitions pushed so far leave it (from the starting view given
    /// with [`EventLog::with_members`]): each entry's `before`.
    members: BTreeMap<String, Member>,
}

impl EventLog {
    /// An empty log keeping `capacity` entries (at least 1), holding every transition after
    /// revision `start` of `epoch` (the view the feeding subscription started from).
    pub fn new(capacity: usize, epoch: Epoch, start: Revision) -> Self {
        EventLog {
            ring: Mutex::new(Ring {
                epoch,
                live: broadcast::channel(LIVE_LAG).0,
                entries: VecDeque::new(),
                capacity: capacity.max(1),
                missing_upto: Position::after(epoch, start),
                last: None,
                members: BTreeMap::new(),
            }),
        }
    }

    /// The view at `start` (the feeding subscription's snapshot), so that the first
    /// transitions of a member already there know what it was before them.
    pub fn with_members(self, members: BTreeMap<String, Member>) -> Self {
        self.lock().members = members;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a transition at the position the master gave it, dropping the oldest entry
    /// when full.
    pub fn push(&self, position: Position, transition: &Transition) {
        let mut ring = self.lock();
        if position.epoch != ring.epoch {
            ring.new_epoch(
                position.epoch,
                Position::before(position.epoch, position.revision),
            );
        }
        let event = EventJson::from(transition);
        let json = serde_json::to_string(&event).expect("events always serialize");
        let name = transition.member.name().to_owned();
        let in_view = matches!(
            transition.member.state,
            MemberState::Alive | MemberState::Suspect
        );
        let before = if in_view {
            ring.members.insert(name, transition.member.clone())
        } else {
            ring.members.remove(&name)
        };
        let entry = Arc::new(Entry {
            position,
            event,
            json,
            before,
            after: transition.member.clone(),
        });
        if ring.entries.len() == ring.capacity {
            if let Some(dropped) = ring.entries.pop_front() {
                ring.missing_upto = dropped.position;
            }
        }
        ring.entries.push_back(entry.clone());
        ring.last = Some(position);
        // No live reader is fine.
        let _ = ring.live.send(entry);
    }

    /// The entries after `after` (`None`: none, only what comes next) and the live feed
    /// after them. [`Gone`] if entries after `after` were dropped or never seen.
    pub fn replay(&self, after: Option<Position>) -> Result<Replay, Gone> {
        let ring = self.lock();
        let backlog = match after {
            None => Vec::new(),
            Some(after) if after.epoch != ring.epoch || after < ring.missing_upto => {
                return Err(ring.gone())
            }
            Some(after) => ring
                .entries
                .iter()
                .filter(|e| e.position > after)
                .cloned()
                .collect(),
        };
        Ok(Replay {
            backlog,
            live: ring.live.subscribe(),
        })
    }

    /// How many entries are buffered.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The smallest `from_revision` that can be served now.
    pub fn oldest_revision(&self) -> Revision {
        self.lock().gone().oldest_revision
    }

    /// The epoch of the buffered entries.
    pub fn epoch(&self) -> Epoch {
        self.lock().epoch
    }

    /// Feeds the log from a master subscription until the master stops. The subscription's
    /// snapshot revision must be the `start` the log was made with. If the log's feed lags
    /// (it cannot, unless the process is starved for longer than the master's subscriber
    /// buffer lasts), what it missed is gone: resume points before now are refused.
    pub async fn follow(
        self: Arc<Self>,
        master: Arc<muster_master::Master>,
        mut subscription: Subscription,
    ) {
        while let Some(event) = subscription.next().await {
            match event {
                Event::Transition {
                    position,
                    transition,
                } => self.push(position, &transition),
                Event::Synced {
                    epoch, revision, ..
                } => {
                    // A replacement that explained itself with no transition still starts
                    // a new epoch.
                    let mut ring = self.lock();
                    if epoch != ring.epoch {
                        ring.new_epoch(epoch, Position::after(epoch, revision));
                    }
                }
                Event::Lagged { missed } => {
                    tracing::error!(missed, "the event log fell behind the master; clients resuming from before now must re-read /v1/members");
                    subscription = master.subscribe();
                    let mut ring = self.lock();
                    ring.entries.clear();
                    let snapshot = &subscription.snapshot;
                    ring.epoch = snapshot.epoch;
                    ring.missing_upto = Position::after(snapshot.epoch, snapshot.revision);
                    ring.members = snapshot.members.clone();
                }
                _ => {}
            }
        }
    }
}

impl Ring {
    /// Starts over in `epoch`: positions of the old one mean nothing now, so the buffer is
    /// emptied, everything up to `missing_upto` is gone, and every live reader's stream
    /// ends (it reconnects, is refused, and takes a fresh snapshot).
    fn new_epoch(&mut self, epoch: Epoch, missing_upto: Position) {
        tracing::warn!(
            from = %self.epoch,
            to = %epoch,
            "the store was replaced (new epoch); event history restarts, clients resuming from the old one must re-read /v1/members"
        );
        self.epoch = epoch;
        self.entries.clear();
        self.missing_upto = missing_upto;
        self.last = None;
        self.live = broadcast::channel(LIVE_LAG).0;
    }

    /// What a refused resume point is told.
    fn gone(&self) -> Gone {
        Gone {
            epoch: self.epoch,
            oldest_revision: match self.missing_upto.index {
                -1 => self.missing_upto.revision,
                _ => self.missing_upto.revision + 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::{Incarnation, Member, MemberInfo, MemberState, TransitionKind};

    fn transition(name: &str, revision: Revision) -> Transition {
        Transition {
            kind: TransitionKind::Joined,
            member: Member {
                info: Arc::new(MemberInfo::new(name, "")),
                state: MemberState::Alive,
                incarnation: Incarnation(1),
                record_revision: revision,
                since: revision,
                suspect_since: None,
            },
            revision,
            at: std::time::Instant::now(),
        }
    }

    const E: Epoch = Epoch(0xab);

    fn pos(revision: Revision, index: i64) -> Position {
        Position {
            epoch: E,
            revision,
            index,
        }
    }

    fn before(revision: Revision) -> Position {
        Position::before(E, revision)
    }

    fn names(replay: &Replay) -> Vec<String> {
        replay
            .backlog
            .iter()
            .map(|e| e.event.name.clone())
            .collect()
    }

    #[test]
    fn positions_parse_and_print() {
        let p: Position = "00000000000000ab-57.2".parse().unwrap();
        assert_eq!(p, pos(57, 2));
        assert_eq!(p.to_string(), "00000000000000ab-57.2");
        assert_eq!("ab-57".parse::<Position>().unwrap(), Position::after(E, 57));
        for bad in [
            "", "x", "57.2", "57", "ab-5.x", "ab-5.-1", "ab-a.1", "-5.1", "zz-5.1",
        ] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }

    /// Issue 13.1: after the store is replaced (a new epoch), a resume point from the old
    /// history is refused, even one whose revision the new history has reached, and every
    /// live reader's stream ends instead of carrying positions that went backwards.
    #[test]
    fn a_new_epoch_refuses_the_old_history_and_ends_live_streams() {
        let log = EventLog::new(10, E, 0);
        log.push(pos(3, 0), &transition("a", 3));
        let mut live = log.replay(Some(before(1))).unwrap().live;
        let new = Epoch(0xcd);
        log.push(
            Position {
                epoch: new,
                revision: 2,
                index: 0,
            },
            &transition("b", 2),
        );
        assert!(
            matches!(live.try_recv(), Err(broadcast::error::TryRecvError::Closed)),
            "the old live stream must end"
        );
        for stale in [pos(3, 0), pos(1, 0), before(2)] {
            assert_eq!(
                log.replay(Some(stale)).unwrap_err(),
                Gone {
                    epoch: new,
                    oldest_revision: 2
                },
                "{stale}"
            );
        }
        let fresh = log.replay(Some(Position::before(new, 2))).unwrap();
        assert_eq!(names(&fresh), ["b"]);
        assert_eq!(log.epoch(), new);
    }

    #[test]
    fn replays_from_a_revision_or_after_an_event_id() {
        let log = EventLog::new(10, E, 0);
        log.push(pos(5, 0), &transition("a", 5));
        log.push(pos(5, 1), &transition("b", 5));
        log.push(pos(6, 0), &transition("c", 6));
        let from = |r| log.replay(Some(before(r))).unwrap();
        assert_eq!(names(&from(1)), ["a", "b", "c"]);
        assert_eq!(names(&from(6)), ["c"]);
        let after_a = log.replay(Some(pos(5, 0))).unwrap();
        assert_eq!(names(&after_a), ["b", "c"]);
        assert_eq!(after_a.backlog[0].position, pos(5, 1));
        let after_5 = log.replay(Some("ab-5".parse().unwrap())).unwrap();
        assert_eq!(names(&after_5), ["c"]);
        assert!(log.replay(None).unwrap().backlog.is_empty());
    }

    #[test]
    fn the_live_feed_continues_the_backlog_exactly() {
        let log = EventLog::new(10, E, 0);
        log.push(pos(5, 0), &transition("a", 5));
        let mut replay = log.replay(Some(before(1))).unwrap();
        log.push(pos(6, 0), &transition("b", 6));
        assert_eq!(names(&replay), ["a"]);
        assert_eq!(replay.live.try_recv().unwrap().event.name, "b");
        assert!(replay.live.try_recv().is_err());
    }

    #[test]
    fn dropped_history_is_gone_not_skipped() {
        let log = EventLog::new(2, E, 3);
        // Before the master started: never seen.
        assert_eq!(
            log.replay(Some(before(3))).unwrap_err(),
            Gone {
                epoch: E,
                oldest_revision: 4
            }
        );
        log.push(pos(5, 0), &transition("a", 5));
        log.push(pos(5, 1), &transition("b", 5));
        log.push(pos(6, 0), &transition("c", 6));
        // "a" (5.0) was dropped: revision 5 is incomplete.
        assert_eq!(
            log.replay(Some(before(5))).unwrap_err(),
            Gone {
                epoch: E,
                oldest_revision: 6
            }
        );
        // ... but resuming after "a" still works.
        assert_eq!(names(&log.replay(Some(pos(5, 0))).unwrap()), ["b", "c"]);
        assert_eq!(log.oldest_revision(), 6);
        assert_eq!(log.len(), 2);
    }
}
