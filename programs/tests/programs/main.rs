//! The programs as an operator runs them: `muster-worker` and `muster-master` as real
//! processes against real etcd in Docker (the test kit, `muster-testkit`), plus the HTTP API on
//! a fake group, and the web page in a real browser (headless Chromium). One binary, one
//! module per area.
//!
//! Run with `MUSTER_ETCD_IMAGE=... cargo test -p muster-programs` (or `cargo xtask test`).

mod api;
mod bad_input;
mod master;
mod page;
mod privilege;
mod secured;
mod server;
mod sidecar;
mod support;
mod worker;
