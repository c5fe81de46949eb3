//! Integration tests against real etcd in Docker: one binary, one module per area.
//!
//! Tests that stop, pause or compact etcd, or need exact revisions (`conformance`, `faults`,
//! `store`), start their own container ([`muster_testkit::etcd::Etcd`]). The master and worker
//! tests (`lifecycle`, `evict`, `group` (many members on one lease), `process`, and `interop`, where the worker is a shell script
//! speaking PROTOCOL.md through etcdctl) share one container (`support`), each under a prefix
//! of its own. `secured` starts TLS and auth-enabled etcds of its own; `privilege`
//! auth-enabled etcds with users whose roles cover one prefix (least privilege). Real time
//! throughout: never tokio's paused clock here.

mod conformance;
mod evict;
mod faults;
mod group;
mod interop;
mod lifecycle;
mod many;
mod privilege;
mod process;
mod secured;
mod store;
mod support;
