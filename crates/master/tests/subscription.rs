//! Subscriptions: positions, the synced marker, the lagged signal, and what waiters get once
//! the master has stopped. On the in-memory backend under tokio's paused clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{
    Incarnation, Lease, LeaseId, Listing, MemberInfo, Result, Revision, Store, StoreStatus,
    TransitionKind, Txn, TxnOutcome, WatchStream,
};
use muster_master::{Epoch, Error, Event, Master, MasterConfig, Position};
use muster_mem_backend::{MemCluster, MemStore};
use muster_worker::{Worker, WorkerConfig};

const PREFIX: &str = "/g/";
const DEADLINE: Duration = Duration::from_secs(120);

async fn join(cluster: &MemCluster, name: &str, incarnation: u64) -> Worker {
    let config = WorkerConfig::new(PREFIX)
        .ttl(Duration::from_secs(2))
        .incarnation(Incarnation(incarnation));
    Worker::register(cluster.client(), MemberInfo::new(name, "h:80"), config)
        .await
        .expect("register")
}

async fn next(events: &mut muster_master::Subscription) -> Event {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .expect("an event within the deadline")
        .expect("the master is running")
}

fn joined(event: &Event) -> (Position, String) {
    match event {
        Event::Transition {
            position,
            transition,
        } if transition.kind == TransitionKind::Joined => {
            (*position, transition.member.name().to_owned())
        }
        other => panic!("expected a joined transition, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_listing_ends_with_a_synced_marker_and_positions_count_within_a_revision() {
    let cluster = MemCluster::new();
    let _a = join(&cluster, "a", 1).await;
    let _b = join(&cluster, "b", 2).await;
    let listed_at = cluster.revision();
    let epoch = Epoch(cluster.client().status().await.unwrap().cluster_id);
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    // Subscribed before the task ran: the first listing's transitions come as events.
    let mut events = master.subscribe();
    assert!(!events.snapshot.synced);
    assert_eq!(
        joined(&next(&mut events).await),
        (
            Position {
                epoch,
                revision: listed_at,
                index: 0
            },
            "a".to_owned()
        )
    );
    assert_eq!(
        joined(&next(&mut events).await),
        (
            Position {
                epoch,
                revision: listed_at,
                index: 1
            },
            "b".to_owned()
        )
    );
    assert_eq!(
        next(&mut events).await,
        Event::Synced {
            epoch,
            revision: listed_at,
            members: 2
        }
    );
    let _c = join(&cluster, "c", 3).await;
    let (position, name) = joined(&next(&mut events).await);
    assert_eq!(name, "c");
    assert_eq!(position.index, 0);
    assert!(position > Position::after(epoch, listed_at));
    assert_eq!(
        master.view().epoch,
        epoch,
        "the epoch is the store's identity"
    );
    // It is a `futures::Stream` too, with nothing more waiting.
    let more = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut events));
    assert!(more.is_none(), "{more:?}");
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_falls_behind_is_told_how_much_it_missed() {
    let cluster = MemCluster::new();
    let config = MasterConfig::new(PREFIX).subscriber_buffer(2);
    let master = Master::start(cluster.client(), config).unwrap();
    master.ready().await.expect("the master stopped");
    let mut slow = master.subscribe();
    let mut also_slow = master.subscribe();
    let mut workers = Vec::new();
    for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        workers.push(join(&cluster, name, i as u64 + 1).await);
    }
    master
        .wait_until(|v| v.alive().count() == 5)
        .await
        .expect("the master stopped");
    // Five events were sent, two fit: three were dropped for this subscriber.
    assert_eq!(next(&mut slow).await, Event::Lagged { missed: 3 });
    assert_eq!(joined(&next(&mut slow).await).1, "d");
    assert_eq!(joined(&next(&mut slow).await).1, "e");
    assert!(slow.try_next().is_none());
    // The transition-only API reports the same as an error, with what to do.
    let error = also_slow.next_transition().await.unwrap_err();
    assert!(matches!(error, Error::Lagged { missed: 3 }), "{error:?}");
    assert!(error.to_string().contains("subscribe again"), "{error}");
    // A fresh subscription starts from a snapshot that holds everything.
    let fresh = master.subscribe();
    assert_eq!(fresh.snapshot.alive().count(), 5);
}

/// A store that works until told to panic (a bug in a backend, say).
#[derive(Clone)]
struct Panicking {
    inner: MemStore,
    panic: Arc<AtomicBool>,
}

impl Panicking {
    fn check(&self) {
        if self.panic.load(Ordering::SeqCst) {
            panic!("the store panicked (on purpose)");
        }
    }
}

#[async_trait]
impl Store for Panicking {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        self.check();
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        self.check();
        self.inner.keep_alive(lease, within).await
    }
    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.check();
        self.inner.revoke(lease).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.check();
        self.inner.txn(txn).await
    }
    async fn get(&self, key: &str) -> Result<Option<muster_core::KeyValue>> {
        self.check();
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.check();
        self.inner.list(prefix).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.check();
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.check();
        self.inner.compact(revision).await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.check();
        self.inner.status().await
    }
}

#[tokio::test(start_paused = true)]
async fn once_the_task_has_ended_waiters_get_stopped_and_streams_end() {
    let cluster = MemCluster::new();
    let panic = Arc::new(AtomicBool::new(false));
    let store = Panicking {
        inner: cluster.client(),
        panic: panic.clone(),
    };
    // A quiet watch is checked with `status` after a second: that call panics the task.
    let config = MasterConfig::new(PREFIX).stall_check(Duration::from_secs(1));
    let master = Master::start(store, config).unwrap();
    master.ready().await.expect("the master stopped");
    let mut events = master.subscribe();
    panic.store(true, Ordering::SeqCst);
    let never = master.wait_until(|v| v.alive().count() == 1);
    let error = tokio::time::timeout(DEADLINE, never)
        .await
        .expect("waiters are woken when the master stops");
    assert!(matches!(error, Err(Error::Stopped)), "{error:?}");
    assert!(master.is_stopped());
    assert_eq!(
        tokio::time::timeout(DEADLINE, events.next()).await.unwrap(),
        None
    );
    assert!(matches!(master.ready().await, Ok(view) if view.synced));
    assert!(matches!(
        master.wait_until_health(|h| h.reaps > 0).await,
        Err(Error::Stopped)
    ));
    // A subscription taken after the stop ends at once.
    assert_eq!(master.subscribe().next().await, None);
}

#[tokio::test(start_paused = true)]
async fn try_next_drains_everything_waiting_in_one_go() {
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX)).unwrap();
    master.ready().await.expect("the master stopped");
    let mut events = master.subscribe();
    let mut workers = Vec::new();
    for i in 0..300u64 {
        workers.push(join(&cluster, &format!("w{i}"), i + 1).await);
    }
    master
        .wait_until(|v| v.alive().count() == 300)
        .await
        .expect("the master stopped");
    // More than tokio's cooperative budget (128) in one task turn: none may be left behind.
    let mut joined = 0;
    while let Some(t) = events.try_next_transition().expect("no lag") {
        assert_eq!(t.kind, TransitionKind::Joined);
        joined += 1;
    }
    assert_eq!(joined, 300);
}
