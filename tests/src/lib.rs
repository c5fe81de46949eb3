//! # muster-tests
//!
//! Integration tests against real etcd, and the harness they share.
//!
//! # Layout
//!
//! - [`etcd`]: start a single-node etcd in a Docker container ([`etcd::Etcd`]), get its
//!   endpoint and store settings, stop, kill, restart, pause it; removed when dropped.
//! - [`cluster`]: an etcd cluster of one or more members in Docker containers on a network
//!   of its own ([`cluster::Cluster`]): find the leader, kill, stop, start, pause, disconnect
//!   a member, or replace the whole cluster by an empty one; removed when dropped.
//! - [`proxy`]: a TCP proxy in front of etcd that can be cut and healed ([`proxy::Proxy`]):
//!   a network partition between one client and etcd.
//! - [`wait`]: waits with a deadline the test binaries share (a worker's status).
//! - `tests/etcd/main.rs`: one test binary, one module per area (`conformance`: the
//!   backend conformance suite of `muster_core::testing` on `EtcdStore`).
//! - `tests/faults/main.rs`: the faults a deployment meets (issue 4), one module per
//!   scenario, on [`cluster::Cluster`] and [`proxy::Proxy`].
//!
//! Run them with `cargo xtask test`, which provides the etcd image (`MUSTER_ETCD_IMAGE`).
//! Plain `cargo test` runs them too, and fails with instructions when there is no image.

pub mod cluster;
pub mod etcd;
pub mod proxy;
pub mod wait;

/// The README's Rust examples, compiled (not run) as doc tests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
