//! # muster-etcd-backend
//!
//! [`EtcdStore`]: muster's [`Store`](muster_core::Store) over etcd v3, through the
//! `etcd-client` crate.
//!
//! ```no_run
//! # async fn demo() -> muster_core::Result<()> {
//! use std::time::Duration;
//! use muster_core::Store;
//! use muster_etcd_backend::{EtcdConfig, EtcdStore};
//!
//! let store = EtcdStore::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
//! // TLS and users: `EtcdConfig::tls`, `EtcdConfig::credentials`, or `EtcdConfig::from_env()`.
//! let lease = store.grant(Duration::from_secs(10)).await?;
//! store.keep_alive(lease.id, Duration::from_secs(5)).await?; // wait up to 5 s for the answer
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`EtcdConfig`] (`config.rs`): endpoints and timeouts; TLS ([`TlsConfig`], [`Pem`]) and
//!   an etcd user ([`Credentials`], [`Password`], redacted in `Debug`);
//!   [`parse_endpoints`], [`EtcdConfig::set_security`] ([`Security`]: etcdctl's flags as
//!   paths) and [`EtcdConfig::from_env`] (`MUSTER_ENDPOINTS`, `MUSTER_CACERT`,
//!   `MUSTER_CERT`, `MUSTER_KEY`, `MUSTER_TLS_SERVER_NAME`, `MUSTER_USER`,
//!   `MUSTER_PASSWORD_FILE`; no variable holds a password), which refuse a blank list or
//!   contradicting settings ([`ConfigError`]) rather than fall back to a default.
//! - [`EtcdStore`] (`store.rs`): the `Store` implementation: KV, transactions, leases.
//! - `keepers.rs`: the lease keep-alive streams, shared by all the store's leases (up to
//!   [`EtcdConfig::keep_alive_streams`], the lease id picks one; answers routed back by
//!   lease id), each reopened when broken.
//! - `watch.rs`: etcd watch responses turned into [`WatchBatch`](muster_core::WatchBatch)es.
//! - `error.rs`: etcd-client errors mapped to [`muster_core::Error`] with messages that
//!   name the endpoints and the key, and say what to do; auth refusals and TLS handshake
//!   failures are [`Rejected`](muster_core::Error::Rejected) (not retryable) and never
//!   contain a password. No etcd-client type is public.
//!
//! # What etcd does that the contract leaves open
//!
//! - etcd raises a lease TTL below its minimum (2 s with default settings) and reports the
//!   raised TTL; expiry is checked every ~500 ms.
//! - A watch from a compacted revision fails from [`Store::watch`](muster_core::Store::watch)
//!   itself, because the backend waits for etcd to confirm (or refuse) the watch.
//! - HTTP/2 keep-alive pings make calls and streams to a hung etcd fail; the request timeout
//!   bounds every unary call even while no endpoint can be reached.

mod config;
mod error;
mod keepers;
mod store;
mod watch;

pub use config::{
    parse_endpoints, ConfigError, Credentials, EtcdConfig, Password, Pem, Security, TlsConfig,
    CACERT_VAR, CERT_VAR, ENDPOINTS_VAR, KEY_VAR, PASSWORD_FILE_VAR, TLS_SERVER_NAME_VAR, USER_VAR,
};
pub use store::EtcdStore;
