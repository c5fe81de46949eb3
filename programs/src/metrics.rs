//! `GET /metrics`: the master's state in Prometheus text, read fresh at every scrape.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `muster_members` | gauge | `state` = `alive`, `suspect` | members in the view, by state |
//! | `muster_transitions_total` | counter | `kind` = `joined` ... `failed` | transitions emitted since the master started |
//! | `muster_watch_resyncs_total` | counter | | re-listings after the watch lost its place (compaction) |
//! | `muster_watch_reconnects_total` | counter | | watches re-opened after breaking |
//! | `muster_watch_refreshes_total` | counter | | quiet watches re-opened because etcd had moved past them (stall check) |
//! | `muster_store_replacements_total` | counter | | times etcd turned out to be a new, different store and the view was rebuilt |
//! | `muster_decode_errors_total` | counter | | undecodable values at member keys, skipped |
//! | `muster_bad_keys_total` | counter | `reason` = `unknown_kind`, `empty_name`, `name_too_long`, `invalid_name`, `liveness_without_record` | keys under the prefix that are no member key (or a liveness key without a record), ignored; each counted once per write |
//! | `muster_reaps_total` | counter | | suspect members this master reaped |
//! | `muster_last_revision` | gauge | | the last etcd revision applied |
//! | `muster_synced` | gauge | | 1 once the first listing is applied |
//! | `muster_watch_healthy` | gauge | | 1 while the watch is open and delivering |
//! | `muster_etcd_request_duration_seconds` | histogram | `op`, `outcome` | etcd request latency ([`TimedStore`](crate::timed::TimedStore)) |
//!
//! Every label value of a family is always exported, with 0 until it happens, so that a rate
//! or an alert on it has a series from the start. Bad input (`muster_decode_errors_total`,
//! `muster_bad_keys_total`) is also logged, rate-limited: the first 10 of each 10 s window
//! one by one with its key, then one summary line.

use std::fmt;
use std::sync::Arc;

use muster_core::{BadKeyReason, MemberState, TransitionKind};
use muster_master::{Endpoints, Filter, Health, View};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::timed::StoreMetrics;

/// What the HTTP API and the metrics read: a live group view and its health. Implemented
/// for [`Master`](muster_master::Master); tests can supply anything else.
pub trait Group: Send + Sync + 'static {
    /// The current view.
    fn view(&self) -> View;
    /// The current health.
    fn health(&self) -> Health;
    /// The members `filter` selects, as a live snapshot (`Master::endpoints`): a new
    /// value whenever the set changes. Called inside a tokio runtime.
    fn endpoints(&self, filter: Filter) -> watch::Receiver<Arc<Endpoints>>;
}

impl Group for muster_master::Master {
    fn view(&self) -> View {
        muster_master::Master::view(self)
    }

    fn health(&self) -> Health {
        muster_master::Master::health(self)
    }

    fn endpoints(&self, filter: Filter) -> watch::Receiver<Arc<Endpoints>> {
        muster_master::Master::endpoints(self, filter).into_receiver()
    }
}

/// Reads the group at every scrape.
struct GroupCollector(Arc<dyn Group>);

impl fmt::Debug for GroupCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupCollector")
    }
}

impl GroupCollector {
    fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
    }

    fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
        let gauge = ConstGauge::new(value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
    }
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let view = self.0.view();
        let health = self.0.health();

        let members = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "muster_members",
            "Members in the master's view, by state",
            None,
            members.metric_type(),
        )?;
        for state in [MemberState::Alive, MemberState::Suspect] {
            let count = view.in_state(state).count() as i64;
            let state = state.to_string();
            ConstGauge::new(count).encode(family.encode_family(&[("state", state.as_str())])?)?;
        }

        let transitions = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "muster_transitions",
            "Transitions emitted since this master started, by kind",
            None,
            transitions.metric_type(),
        )?;
        for kind in TransitionKind::ALL {
            let count = health.transitions.get(&kind).copied().unwrap_or(0);
            let kind = kind.to_string();
            ConstCounter::new(count).encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }

        Self::counter(
            &mut encoder,
            "muster_watch_resyncs",
            "Times the master listed the group again after its watch lost its place (compaction)",
            health.resyncs,
        )?;
        Self::counter(
            &mut encoder,
            "muster_watch_reconnects",
            "Times the master re-opened a broken watch",
            health.reconnects,
        )?;
        Self::counter(
            &mut encoder,
            "muster_watch_refreshes",
            "Times a quiet watch was re-opened because etcd had moved past everything it delivered (stall check)",
            health.watch_refreshes,
        )?;
        Self::counter(
            &mut encoder,
            "muster_store_replacements",
            "Times etcd turned out to be a different store (new cluster id, or revisions gone backwards) and the view was rebuilt",
            health.store_replacements,
        )?;
        Self::counter(
            &mut encoder,
            "muster_decode_errors",
            "Undecodable values at member keys, skipped (see the master's warnings for their keys)",
            health.skipped,
        )?;

        let bad_keys = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "muster_bad_keys",
            "Keys under the prefix that are no member key, or liveness keys without a record, ignored, by reason (see the master's warnings for their keys)",
            None,
            bad_keys.metric_type(),
        )?;
        for reason in BadKeyReason::ALL {
            let count = health.bad_keys.get(&reason).copied().unwrap_or(0);
            ConstCounter::new(count)
                .encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }
        Self::counter(
            &mut encoder,
            "muster_reaps",
            "Suspect members this master reaped (turned failed)",
            health.reaps,
        )?;
        Self::gauge(
            &mut encoder,
            "muster_last_revision",
            "The last etcd revision the master applied",
            health.revision,
        )?;
        Self::gauge(
            &mut encoder,
            "muster_synced",
            "1 once the master has applied its first listing",
            i64::from(health.synced),
        )?;
        Self::gauge(
            &mut encoder,
            "muster_watch_healthy",
            "1 while the master's watch is open and delivering",
            i64::from(health.watching),
        )?;
        Ok(())
    }
}

/// The registry `/metrics` encodes: the group's state plus the store's request latency.
pub fn registry(group: Arc<dyn Group>, store: &StoreMetrics) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(GroupCollector(group)));
    store.register(&mut registry);
    registry
}

/// The registry in Prometheus text format (version 0.0.4).
pub fn prometheus_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// The registry in OpenMetrics text format.
pub fn openmetrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}
