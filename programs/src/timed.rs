//! [`TimedStore`]: any [`Store`] with the latency of every request recorded for `/metrics`.
//!
//! The master runs on `TimedStore<EtcdStore>`, so the histogram shows how long etcd takes to
//! answer the master's lists, watch openings and reaps, by operation and outcome, without
//! the library or the backend knowing about metrics.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use muster_core::{
    Lease, LeaseId, Listing, Result, Revision, Store, StoreStatus, Txn, TxnOutcome, WatchStream,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The labels of one request: which [`Store`] method, and whether it succeeded.
type RequestLabels = [(&'static str, &'static str); 2];

/// Builds one histogram per label set: 0.5 ms to ~4 s, doubling.
fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Request latency histograms, shared by every clone (and every [`TimedStore`] using it).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds per request, by `op` and `outcome`.
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            latency: Family::new_with_constructor(new_histogram),
        }
    }
}

impl StoreMetrics {
    /// Empty histograms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the histogram as `muster_etcd_request_duration_seconds{op, outcome}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "muster_etcd_request_duration",
            "Latency of the master's etcd requests, by operation (grant, keep_alive, revoke, txn, get, list, watch = opening a watch, compact, status) and outcome (ok, error)",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    /// Records one request.
    pub fn observe(&self, op: &'static str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.latency
            .get_or_create(&[("op", op), ("outcome", outcome)])
            .observe(elapsed.as_secs_f64());
    }
}

/// A [`Store`] that forwards every call to `S` and records its latency in [`StoreMetrics`].
///
/// A watch is timed until the stream is open (etcd confirmed it), not for its whole life.
#[derive(Debug, Clone)]
pub struct TimedStore<S> {
    /// The store doing the work.
    inner: S,
    /// Where latencies go.
    metrics: StoreMetrics,
}

impl<S> TimedStore<S> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: S, metrics: StoreMetrics) -> Self {
        TimedStore { inner, metrics }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The metrics it records into.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.observe(op, result.is_ok(), start.elapsed());
        result
    }
}

#[async_trait]
impl<S: Store> Store for TimedStore<S> {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        self.timed("grant", self.inner.grant(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        self.timed("keep_alive", self.inner.keep_alive(lease, within))
            .await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        self.timed("revoke", self.inner.revoke(lease)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.timed("txn", self.inner.txn(txn)).await
    }

    async fn get(&self, key: &str) -> Result<Option<muster_core::KeyValue>> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.timed("list", self.inner.list(prefix)).await
    }

    async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        self.timed("list", self.inner.list_paged(prefix, page))
            .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        self.timed("watch", self.inner.watch(prefix, from)).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.timed("compact", self.inner.compact(revision)).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.timed("status", self.inner.status()).await
    }
}
