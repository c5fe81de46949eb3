//! # muster-tests
//!
//! Integration tests against real etcd, on the test kit (`muster-testkit`: the etcd
//! container, the cluster, the proxy, the waits), and the whole-system simulation.
//!
//! # Layout
//!
//! - `tests/etcd/main.rs`: one test binary, one module per area (`conformance`: the
//!   backend conformance suite of `muster_core::testing` on `EtcdStore`).
//! - `tests/faults/main.rs`: the faults a deployment meets (issue 4), one module per
//!   scenario, on the kit's `Cluster` and `Proxy`.
//! - `tests/simulation/main.rs`: real masters and workers on the in-memory backend under
//!   generated schedules.
//! - `src/bin/muster-test-worker.rs`: a worker as a real process, which the etcd tests
//!   SIGKILL or SIGTERM.
//!
//! Run them with `cargo xtask test`, which provides the etcd image (`MUSTER_ETCD_IMAGE`).
//! Plain `cargo test` runs them too, and fails with instructions when there is no image.

/// The README's Rust examples, compiled (not run) as doc tests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;
