//! The programs as an operator runs them: `muster-worker` and `muster-master` as real
//! processes against real etcd in Docker (the test kit, `muster-testkit`), plus the HTTP API on
//! a fake group. One binary, one module per area.
//!
//! Run with `MUSTER_ETCD_IMAGE=... cargo test -p muster-programs` (or `cargo xtask test`).

mod api;
mod bad_input;
mod master;
mod privilege;
mod secured;
mod server;
mod sidecar;
mod support;
mod worker;
