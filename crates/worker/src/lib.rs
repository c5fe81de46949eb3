//! # muster-worker
//!
//! A [`Worker`] announces one member of a group and keeps it announced; a [`WorkerGroup`]
//! announces many members of one process on one lease.
//!
//! ```no_run
//! # async fn example(store: impl muster_core::Store) -> Result<(), muster_worker::Error> {
//! use muster_core::MemberInfo;
//! use muster_worker::{Worker, WorkerConfig};
//!
//! let info = MemberInfo::new("api-1", "10.0.0.5:8080").cpus(8).label("zone", "a");
//! let worker = Worker::register(store, info, WorkerConfig::new("/muster/web/")).await?;
//! // ... serve ...
//! worker.leave().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `worker`: [`Worker`], the handle (`register`, `update`, `leave`, `status`, `abandon`).
//! - `group`: [`WorkerGroup`], many members on one lease, and [`MemberStatus`].
//! - `register`: one registration attempt on a lease and why it was refused, shared by both.
//! - `retry`: the retry rules shared by both: how a streak of failures is reported, how a
//!   leave is retried (for up to a TTL, backed off).
//! - `config`: [`WorkerConfig`], [`OnDuplicate`]: TTL, keep-alive interval, timeouts, what
//!   to do when the name is taken.
//! - `status`: [`Status`], what the worker is doing, on a `tokio::sync::watch` channel.
//! - `task`: the background loop that keeps the lease alive and re-registers; it sends the
//!   transactions of `muster_core`'s protocol, it builds none.
//! - `error`: [`Error`], what can go wrong.
//!
//! # What it checks
//!
//! Before writing anything, [`Worker::register`] checks the metadata with
//! `MemberInfo::validate` (a name of 1 to 128 characters; an address that is `HOST:PORT`, or
//! `""` for a member without one; label keys) and the settings with
//! [`WorkerConfig::validate`] (a TTL from 1 s to 1 hour: [`WorkerConfig::MIN_TTL`],
//! [`WorkerConfig::MAX_TTL`]); [`Worker::update`] checks the new metadata the same way. Bad
//! input is [`Error::Invalid`] or [`Error::InvalidTtl`], never retried.
//!
//! # What it writes
//!
//! Registration is one transaction: create `{prefix}alive/{name}` on the worker's lease *only
//! if absent*, and write `{prefix}members/{name}` (no lease). Lease expiry then removes only
//! the liveness key (the master sees `Suspect`), while `leave` removes both (`Left`).
//!
//! # Evictions hold
//!
//! Every registration is also guarded by the absence of this incarnation's eviction marker
//! (`{prefix}evicted/{name}/{incarnation}`, written by `muster_master::evict`). An evicted
//! worker learns of it at its next keep-alive (the eviction revokes its lease) or its next
//! record write: registering again is refused, it reads the marker, reports
//! [`Status::Evicted`] and stops for good; the handle's calls return [`Error::Evicted`]. A
//! new process (a new incarnation) may register under the name.
//!
//! # Many members in one process
//!
//! A process hosting many members (a job runner with thousands of slots, a host serving many
//! shards) should use a [`WorkerGroup`]: **one** lease and one keep-alive for all of them,
//! members added, updated, drained and removed one by one. When the process dies, every
//! member turns `Suspect` in one revision; an eviction of one member leaves its siblings
//! alone (its liveness value says the lease is shared, and the group watches the eviction
//! markers).
//!
//! ```no_run
//! # async fn example(store: impl muster_core::Store) -> Result<(), muster_worker::Error> {
//! use muster_core::MemberInfo;
//! use muster_worker::{WorkerConfig, WorkerGroup};
//!
//! let group = WorkerGroup::start(store, WorkerConfig::new("/muster/jobs/")).await?;
//! let slots = (0..1000).map(|i| MemberInfo::new(format!("slot-{i}"), "10.0.0.5:8080"));
//! for result in group.add_many(slots).await {
//!     result?;
//! }
//! # Ok(()) }
//! ```
//!
//! Separate `Worker`s, one lease each, also work, given clones of **one** store: the etcd
//! backend renews all the leases of a store over a few shared keep-alive streams
//! (`EtcdConfig::keep_alive_streams`, 256), so 10,000 workers cost etcd 256 streams on one
//! connection rather than 10,000 (see BENCHMARKS.md, section 4) — but still 10,000 leases,
//! which one etcd node renews only up to some 10–20k.
//!
//! A renewal may take up to [`WorkerConfig::renew_timeout`] (half the TTL) before the worker
//! reports [`Status::Reconnecting`]: while thousands register at once, etcd answers renewals
//! late but in time, and that is not a failure.

mod config;
mod error;
mod group;
mod register;
mod retry;
mod status;
mod task;
mod worker;

pub use config::{OnDuplicate, WorkerConfig};
pub use error::Error;
pub use group::{MemberStatus, WorkerGroup};
pub use status::Status;
pub use worker::Worker;
