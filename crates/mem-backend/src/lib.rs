//! # muster-mem-backend
//!
//! An in-memory [`Store`](muster_core::Store) that behaves like etcd v3 for everything the
//! trait covers, on tokio's clock, deterministically, with fault injection.
//!
//! Why it exists: the master and the worker must be tested through partitions, expiries,
//! compactions and hung servers, thousands of times, in milliseconds. Real etcd (in the
//! integration tests) proves the real thing; this store makes the hard cases cheap and
//! repeatable. The shared conformance suite (`muster_core::testing`) runs against both, so
//! this fake is held to etcd's behaviour.
//!
//! - Revisions start at 1 (an empty etcd is at revision 1); every write that changes
//!   something makes one new revision; a transaction is one revision.
//! - Leases expire on tokio's clock: under `#[tokio::test(start_paused = true)]` time only
//!   moves with `tokio::time::advance` or tokio's auto-advance, so a 10 s TTL takes no real
//!   time and always expires at exactly the same simulated instant. All keys of a lease
//!   vanish in one revision, as delete events with their previous values.
//! - Watches replay history from any revision not compacted, then follow live writes; one
//!   batch never splits a revision.
//! - Same calls in the same order at the same simulated times: same revisions, lease ids
//!   and events. No randomness; every map is a `BTreeMap`.
//!
//! # Layout
//!
//! - [`MemCluster`] (`cluster.rs`): the "server", its builder, lease-expiry task and fault
//!   injection ([`partition`](MemCluster::partition), [`heal`](MemCluster::heal),
//!   [`drop_watches`](MemCluster::drop_watches), [`fail_next`](MemCluster::fail_next),
//!   [`hang`](MemCluster::hang), [`unhang`](MemCluster::unhang)).
//! - [`MemStore`] (`store.rs`): one client; the `Store` implementation and watch streams.
//! - [`ClientId`] (`faults.rs`): who a fault targets, and the per-client fault table.
//! - `state.rs`: the synchronous core (keyspace, revisions, history, watchers).
//! - `leases.rs`: the lease table, ordered by deadline.
//! - `error.rs`: the private error type and its mapping into `muster_core::Error`.
//!
//! # Differences from etcd
//!
//! - Lease TTLs keep their exact duration (etcd counts whole seconds), and a lease expires
//!   exactly at its deadline (etcd checks every ~500 ms, so up to 0.5 s later).
//! - The value limit applies to each value (etcd limits the whole request).
//! - Lease ids are a counter, not random.

mod cluster;
mod error;
mod faults;
mod leases;
mod state;
mod store;

pub use cluster::{MemCluster, MemClusterBuilder};
pub use faults::ClientId;
pub use store::{MemStore, DEFAULT_REQUEST_TIMEOUT};
