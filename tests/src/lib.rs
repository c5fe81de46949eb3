//! # muster-tests
//!
//! Integration tests against real etcd, and the harness they share.
//!
//! # Layout
//!
//! - [`etcd`]: start a single-node etcd in a Docker container ([`etcd::Etcd`]), get its
//!   endpoint and store settings, stop, kill, restart, pause it; removed when dropped.
//! - [`proxy`]: a TCP proxy in front of etcd that can be cut and healed ([`proxy::Proxy`]):
//!   a network partition between one client and etcd.
//! - `tests/etcd/main.rs`: one test binary, one module per area (`conformance`: the
//!   backend conformance suite of `muster_core::testing` on `EtcdStore`).
//!
//! Run them with `cargo xtask test`, which provides the etcd image (`MUSTER_ETCD_IMAGE`).
//! Plain `cargo test` runs them too, and fails with instructions when there is no image.

pub mod etcd;
pub mod proxy;
