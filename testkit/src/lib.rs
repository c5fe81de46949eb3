//! # muster-testkit
//!
//! What muster's integration tests, program tests, library tests, demo and bench share,
//! once: real etcd in Docker (started with testcontainers), a cuttable TCP proxy, and waits
//! with a deadline.
//!
//! ```no_run
//! # fn example() -> Result<(), muster_testkit::Error> {
//! let etcd = muster_testkit::etcd::Etcd::start()?; // ready when etcd says so
//! etcd.pause()?; // a hung server
//! etcd.unpause()?;
//! # Ok(()) } // dropping it removes the container
//! ```
//!
//! Without Docker, or without the image, every start fails with an [`Error`] that says what
//! to do (`cargo xtask test` provides the image); nothing is skipped.
//!
//! # Layout
//!
//! - `error`: [`Error`], the kit's one error type; each message says what to do.
//! - [`docker`]: the Docker engine through testcontainers and its client (bollard): the
//!   image, the per-run label, one etcd container (ready on etcd's ready line, removed on
//!   drop), the engine check ([`docker::engine`]); the kit's own runtime.
//! - [`etcd`]: a single-node etcd ([`etcd::Etcd`]): endpoint, store settings, stop, kill,
//!   restart, pause, logs, metrics; one etcd shared by concurrent tests ([`etcd::shared`]).
//! - [`cluster`]: an etcd cluster of one or more members on a network of its own
//!   ([`cluster::Cluster`]): find or move the leader, kill, stop, restart, pause, disconnect
//!   a member, or replace the whole cluster by an empty one.
//! - [`grpc`]: a real gRPC service (`Who`: answers its server's name) on tonic, its
//!   server on loopback and a client call, for the tests and benchmarks of callers.
//! - [`group`]: a test's own prefix on the shared etcd ([`group::Group`]): its clients,
//!   keyspace and the truth (a fresh listing).
//! - [`proxy`]: a TCP proxy in front of etcd that can be cut and healed
//!   ([`proxy::Proxy`]): a network partition between one client and etcd.
//! - [`tls`]: certificates made at test time ([`tls::Certs`]: a CA, etcd's server
//!   certificate, a client certificate, an unrelated CA) for an etcd that serves TLS.
//! - [`wait`]: waits with a deadline on a master's view, health and transitions and a
//!   worker's status, and the readers their messages use.
//! - [`clock`]: a runtime on tokio's paused clock, for the simulated runs.

pub mod clock;
pub mod cluster;
pub mod docker;
mod error;
pub mod etcd;
pub mod group;
pub mod grpc;
pub mod proxy;
pub mod tls;
pub mod wait;

pub use error::{BoxError, Error, Result};

/// A member's name and address for tests: `{name}.test:80`.
pub fn info(name: &str) -> muster_core::MemberInfo {
    muster_core::MemberInfo::new(name, format!("{name}.test:80"))
}
