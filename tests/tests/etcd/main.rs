//! Integration tests against real etcd in Docker: one binary, one module per area.
//!
//! Each test starts its own etcd container ([`muster_tests::etcd::Etcd`]), so tests run in
//! parallel without sharing state. Real time throughout: never tokio's paused clock here.

mod conformance;
mod faults;
mod store;
