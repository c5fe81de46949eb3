//! [`Instrumented`]: a thin [`Store`] wrapper that notes when calls were sent.
//!
//! The bench needs instants that only the store sees: when a worker's registration
//! transaction went out (the start of join propagation), and when a lease was last renewed
//! (what its remaining TTL was when the worker was abandoned). It also counts keep-alive
//! outcomes and their round-trip times during the soak. The cost is one uncontended mutex
//! per call, microseconds against the milliseconds of a round trip to etcd.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_core::{
    Lease, LeaseId, Listing, Op, Result, Revision, Store, StoreStatus, Txn, TxnOutcome, WatchStream,
};

/// What the wrapper noted.
#[derive(Debug, Default)]
struct Log {
    /// Per key: when the last transaction that puts it was sent.
    txn_sent: HashMap<String, Instant>,
    /// Per lease: when its last grant or keep-alive was sent (a keep-alive cut short by an
    /// abandon may still have reached etcd, so it counts from its sending). etcd starts the
    /// TTL when it receives the request, a little later: a remaining TTL computed from here
    /// errs on the short side, which makes the floor lower, never flattering.
    renewed: HashMap<LeaseId, Instant>,
    /// Keep-alive round trips, in microseconds, since the last `take_keep_alives`.
    keep_alive_us: Vec<u32>,
    /// Failed keep-alives by error kind, since the last `take_keep_alives`.
    keep_alive_errors: BTreeMap<String, u64>,
    /// Keep-alives started since the last `take_keep_alives`.
    keep_alives_started: u64,
    /// Keep-alives whose caller gave up (the call was dropped unfinished: the worker's
    /// timeout), since the last `take_keep_alives`.
    keep_alives_cancelled: u64,
    /// Grant and transaction round trips, in microseconds, since the last `take_writes`.
    grant_us: Vec<u32>,
    txn_us: Vec<u32>,
    /// Grants and transactions started, and failed by error kind, since the last
    /// `take_writes`. Started minus answered minus failed = abandoned by the caller (its
    /// own timeout ran out first).
    writes_started: u64,
    write_errors: BTreeMap<String, u64>,
}

/// The name of an error's variant, e.g. `Unavailable`.
fn kind(err: &muster_core::Error) -> String {
    let text = format!("{err:?}");
    text.split([' ', '{', '('])
        .next()
        .unwrap_or("?")
        .to_string()
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A store that notes when calls were sent.
pub struct Instrumented<S> {
    inner: S,
    log: Mutex<Log>,
}

/// Keep-alive outcomes over a window.
#[derive(Debug, Default)]
pub struct KeepAlives {
    pub round_trips: Vec<Duration>,
    pub errors: BTreeMap<String, u64>,
    /// Calls started in the window.
    pub started: u64,
    /// Calls dropped unfinished in the window: their caller gave up.
    pub cancelled: u64,
}

impl KeepAlives {
    /// Calls the caller gave up on before they answered (the worker's own timeout dropped
    /// them mid-flight). Counted when dropped, so calls merely still in flight when the
    /// window closes are not among them.
    pub fn abandoned(&self) -> u64 {
        self.cancelled
    }

    /// Answers faster than any round trip to etcd can be (under 50 µs; a bare keeper's
    /// fastest on loopback is ~150 µs): a reply that was already waiting on the stream.
    pub fn instant(&self) -> usize {
        self.round_trips
            .iter()
            .filter(|d| **d < Duration::from_micros(50))
            .count()
    }
}

/// Grant and transaction round trips over a window.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub grants: Vec<Duration>,
    pub txns: Vec<Duration>,
    pub started: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Writes {
    /// Calls the caller gave up on before they answered (its own timeout).
    pub fn abandoned(&self) -> u64 {
        self.started
            .saturating_sub((self.grants.len() + self.txns.len()) as u64)
            .saturating_sub(self.errors.values().sum())
    }
}

impl<S> Instrumented<S> {
    /// The grant and transaction round trips since the last call, and starts a new window.
    pub fn take_writes(&self) -> Writes {
        let mut log = self.log();
        let us = |v: Vec<u32>| {
            v.into_iter()
                .map(|us| Duration::from_micros(us.into()))
                .collect()
        };
        Writes {
            grants: us(std::mem::take(&mut log.grant_us)),
            txns: us(std::mem::take(&mut log.txn_us)),
            started: std::mem::take(&mut log.writes_started),
            errors: std::mem::take(&mut log.write_errors),
        }
    }

    pub fn new(inner: S) -> Self {
        Self {
            inner,
            log: Mutex::default(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the last transaction putting `key` was sent.
    pub fn txn_sent(&self, key: &str) -> Option<Instant> {
        self.log().txn_sent.get(key).copied()
    }

    /// When `lease` was last renewed (granted or kept alive), as sent.
    pub fn renewed(&self, lease: LeaseId) -> Option<Instant> {
        self.log().renewed.get(&lease).copied()
    }

    /// The keep-alive outcomes since the last call, and starts a new window.
    pub fn take_keep_alives(&self) -> KeepAlives {
        let mut log = self.log();
        KeepAlives {
            round_trips: std::mem::take(&mut log.keep_alive_us)
                .into_iter()
                .map(|us| Duration::from_micros(us.into()))
                .collect(),
            errors: std::mem::take(&mut log.keep_alive_errors),
            started: std::mem::take(&mut log.keep_alives_started),
            cancelled: std::mem::take(&mut log.keep_alives_cancelled),
        }
    }
}

#[async_trait]
impl<S: Store> Store for Instrumented<S> {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        let sent = Instant::now();
        self.log().writes_started += 1;
        let result = self.inner.grant(ttl).await;
        let mut log = self.log();
        match &result {
            Ok(lease) => {
                log.renewed.insert(lease.id, sent);
                log.grant_us.push(micros(sent.elapsed()));
            }
            Err(err) => *log.write_errors.entry(kind(err)).or_default() += 1,
        }
        result
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        let sent = Instant::now();
        {
            let mut log = self.log();
            log.renewed.insert(lease, sent);
            log.keep_alives_started += 1;
        }
        // Counts the call as cancelled if it is dropped before it finishes.
        struct Unfinished<'a>(Option<&'a Mutex<Log>>);
        impl Drop for Unfinished<'_> {
            fn drop(&mut self) {
                if let Some(log) = self.0 {
                    log.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .keep_alives_cancelled += 1;
                }
            }
        }
        let mut unfinished = Unfinished(Some(&self.log));
        let result = self.inner.keep_alive(lease, within).await;
        unfinished.0 = None;
        let took = sent.elapsed();
        let mut log = self.log();
        match &result {
            Ok(_) => {
                log.keep_alive_us.push(micros(took));
            }
            Err(err) => *log.keep_alive_errors.entry(kind(err)).or_default() += 1,
        }
        result
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.revoke(lease).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let sent = Instant::now();
        {
            let mut log = self.log();
            log.writes_started += 1;
            for op in &txn.then {
                if let Op::Put { key, .. } = op {
                    log.txn_sent.insert(key.clone(), sent);
                }
            }
        }
        let outcome = self.inner.txn(txn).await;
        let mut log = self.log();
        match &outcome {
            Ok(_) => log.txn_us.push(micros(sent.elapsed())),
            Err(err) => *log.write_errors.entry(kind(err)).or_default() += 1,
        }
        drop(log);
        outcome
    }

    async fn get(&self, key: &str) -> Result<Option<muster_core::KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.inner.list(prefix).await
    }

    async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        self.inner.list_paged(prefix, page).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.inner.watch(prefix, from).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.inner.status().await
    }
}
