//! Bad keys under the group's prefix, on the in-memory backend under tokio's paused clock:
//! counted per reason in the master's health, and logged a bounded number of times however
//! many there are. The master's warnings are captured by a subscriber of the test's own
//! (the master's task runs on the test's thread, so the thread's default subscriber sees it).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_core::{BadKeyReason, Keyspace, Liveness, MemberInfo, Store, Txn, MAX_NAME_LEN};
use muster_master::{Health, Master, MasterConfig};
use muster_mem_backend::MemCluster;
use muster_worker::{Worker, WorkerConfig};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

const PREFIX: &str = "/g/";
const DEADLINE: Duration = Duration::from_secs(120);
/// The master logs the first 10 bad inputs of a 10 s window one by one, then one summary
/// line per window (`muster_master`'s `report` module).
const LOG_BURST: u64 = 10;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// One warning the master logged: its message and its fields, as text.
#[derive(Debug, Clone)]
struct Logged {
    message: String,
    fields: BTreeMap<String, String>,
}

/// A subscriber that keeps the warnings of `muster_master` and counts them on a channel.
#[derive(Clone)]
struct Capture {
    logged: Arc<Mutex<Vec<Logged>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Capture {
    fn new() -> Self {
        Self {
            logged: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }

    fn logged(&self) -> Vec<Logged> {
        self.logged.lock().unwrap().clone()
    }

    /// The bad inputs the log accounts for: one per line logged one by one, plus what the
    /// summary lines say they left out; and how many lines of each kind.
    fn accounted(&self) -> (u64, u64, u64) {
        let (mut one_by_one, mut summaries, mut suppressed) = (0, 0, 0);
        for line in self.logged() {
            if let Some(n) = line.fields.get("suppressed") {
                summaries += 1;
                suppressed += n.parse::<u64>().unwrap();
            } else if line.message.starts_with("ignoring a bad key")
                || line.message.starts_with("skipping undecodable value")
            {
                one_by_one += 1;
            }
        }
        (one_by_one + suppressed, one_by_one, summaries)
    }

    /// Waits until the log accounts for `n` bad inputs.
    async fn until_accounted(&self, n: u64) {
        let mut count = self.count.subscribe();
        let wait = async {
            while self.accounted().0 < n {
                count.changed().await.unwrap();
            }
        };
        muster_testkit::wait::within(
            DEADLINE,
            format_args!("the log never accounted for {n} bad inputs"),
            || format!("{:#?}", self.logged()),
            wait,
        )
        .await
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN && metadata.target().starts_with("muster_master")
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let message = fields.0.remove("message").unwrap_or_default();
        self.logged.lock().unwrap().push(Logged {
            message,
            fields: fields.0,
        });
        self.count.send_modify(|n| *n += 1);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn bad_keys(health: &Health) -> u64 {
    health.bad_keys.values().sum()
}

#[tokio::test(start_paused = true)]
async fn three_thousand_bad_keys_are_counted_by_reason_and_logged_a_bounded_number_of_times() {
    let capture = Capture::new();
    let _default = tracing::subscriber::set_default(capture.clone());
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX).seed(1)).unwrap();
    master.ready().await.expect("the master stopped");
    let started = tokio::time::Instant::now();
    let store = cluster.client();
    let long = "x".repeat(MAX_NAME_LEN);
    for i in 0..3_000 {
        let key = match i % 3 {
            0 => format!("{PREFIX}whatever-{i}"),
            1 => format!("{PREFIX}members/bad name {i}"),
            _ => format!("{PREFIX}alive/{long}{i}"),
        };
        store
            .txn(Txn::new().put(key, b"{}".to_vec(), 0))
            .await
            .unwrap();
    }
    let health = muster_testkit::wait::health_until(&master, DEADLINE, "3,000 bad keys", |h| {
        bad_keys(h) >= 3_000
    })
    .await;
    assert_eq!(
        health.bad_keys,
        BTreeMap::from([
            (BadKeyReason::UnknownKind, 1_000),
            (BadKeyReason::InvalidName, 1_000),
            (BadKeyReason::NameTooLong, 1_000),
        ])
    );
    assert_eq!(health.skipped, 0);
    assert!(master.view().members.is_empty());

    // Every bad key is in the log, one by one or counted in a summary line, and the lines
    // are bounded by the windows the writes took, not by the writes.
    capture.until_accounted(3_000).await;
    let windows = started.elapsed().as_secs() / LOG_WINDOW.as_secs() + 1;
    let (accounted, one_by_one, summaries) = capture.accounted();
    assert_eq!(accounted, 3_000);
    assert!(
        one_by_one <= LOG_BURST * windows && summaries <= windows,
        "{one_by_one} lines one by one and {summaries} summaries in {windows} windows"
    );
    assert!(one_by_one + summaries < 100, "{:#?}", capture.logged());
    let first = &capture.logged()[0];
    assert!(first.fields["key"].contains("whatever-0"), "{first:?}");
    assert_eq!(first.fields["reason"], "unknown_kind");
    assert!(capture.logged().iter().any(|l| l
        .message
        .contains("more bad keys or undecodable values in the last")));

    // A master that lists them afresh counts them again, once, and logs as boundedly.
    let before = capture.logged().len();
    let again = Master::start(cluster.client(), MasterConfig::new(PREFIX).seed(2)).unwrap();
    again.ready().await.expect("the master stopped");
    assert_eq!(again.health().bad_keys, health.bad_keys);
    capture.until_accounted(6_000).await;
    assert!(capture.logged().len() - before <= LOG_BURST as usize + 1);
    assert_eq!(bad_keys(&master.health()), 3_000, "nothing counted twice");
}

#[tokio::test(start_paused = true)]
async fn a_liveness_key_without_a_record_is_counted_and_a_normal_lifecycle_is_not() {
    let capture = Capture::new();
    let _default = tracing::subscriber::set_default(capture.clone());
    let cluster = MemCluster::new();
    let master = Master::start(cluster.client(), MasterConfig::new(PREFIX).seed(1)).unwrap();
    master.ready().await.expect("the master stopped");
    let ks = Keyspace::new(PREFIX).unwrap();

    // A worker joins and leaves: both keys in one revision each time, nothing bad.
    let config = WorkerConfig::new(PREFIX).ttl(Duration::from_secs(2));
    let worker = Worker::register(cluster.client(), MemberInfo::new("a", "a:80"), config)
        .await
        .unwrap();
    muster_testkit::wait::view_until(&master, DEADLINE, "a", |v| v.get("a").is_some()).await;
    worker.leave().await.unwrap();
    muster_testkit::wait::view_until(&master, DEADLINE, "a gone", |v| v.get("a").is_none()).await;
    assert_eq!(master.health().bad_keys, BTreeMap::new());

    // A liveness key written by hand, with no record.
    let live = Liveness {
        incarnation: muster_core::Incarnation(1),
        shared: false,
    };
    cluster
        .client()
        .txn(Txn::new().put(ks.liveness_key("ghost"), live.to_json(), 0))
        .await
        .unwrap();
    let health =
        muster_testkit::wait::health_until(&master, DEADLINE, "the orphan", |h| bad_keys(h) > 0)
            .await;
    assert_eq!(
        health.bad_keys,
        BTreeMap::from([(BadKeyReason::LivenessWithoutRecord, 1)])
    );
    capture.until_accounted(1).await;
    let line = capture
        .logged()
        .into_iter()
        .find(|l| l.fields.get("reason").map(String::as_str) == Some("liveness_without_record"))
        .expect("the orphan was logged");
    assert!(line.fields["key"].contains("alive/ghost"), "{line:?}");
}
