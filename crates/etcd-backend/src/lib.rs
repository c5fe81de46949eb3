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
//! - [`EtcdStore`] (`store.rs`): the `Store` implementation: KV, transactions, leases; the
//!   connect probe and the status read, inside the caller's keys (see "Least privilege").
//! - `keepers.rs`: the lease keep-alive streams, shared by all the store's leases (up to
//!   [`EtcdConfig::keep_alive_streams`], the lease id picks one; answers routed back by
//!   lease id), each reopened when broken.
//! - `watch.rs`: etcd watch responses turned into [`WatchBatch`](muster_core::WatchBatch)es;
//!   a watch etcd cancels for "permission denied" is a `Rejected` error.
//! - `error.rs`: etcd-client errors mapped to [`muster_core::Error`] with messages that
//!   name the endpoints and the key, and say what to do; auth refusals and TLS handshake
//!   failures are [`Rejected`](muster_core::Error::Rejected) (not retryable) and never
//!   contain a password; a "permission denied" names the user, the keys and the permission
//!   needed. No etcd-client type is public.
//!
//! # Least privilege
//!
//! Every key an [`EtcdStore`] reads or writes is one its caller named (the group's keys,
//! the prefix it lists or watches); the store reads no key of its own outside them. So an
//! etcd user whose role covers only the group's prefix can do everything muster does
//! (README, "Secured etcd", gives the `etcdctl` commands for the minimal roles).
//!
//! - [`EtcdStore::connect`] checks that etcd answers and lets the client in without reading
//!   a key (it used to read a probe key outside any group): with a user, etcd-client has
//!   authenticated it and the check is etcd's maintenance `Status`; without one, a listing
//!   of etcd's roles, which etcd answers while auth is off, refuses with "user name is
//!   empty" when auth is on (so a forgotten `--user` still fails at start), and refuses
//!   with "permission denied" for a non-root user taken from a client certificate's common
//!   name (let in: its keys are checked call by call). Maintenance `Status` alone would not
//!   do there: etcd 3.4.23 answers it with no user at all.
//! - [`Store::status`](muster_core::Store::status) must be linearizable: the master compares
//!   its revision with what its watch delivered, and a revision from a member that lags
//!   would look like a store replaced or a stalled watch. In etcd every linearizable read
//!   is a key-range read, and etcd's RBAC checks every key-range read, so the store needs a
//!   key its user may read. **Decision:** it reads, count-only, the key that is the prefix
//!   it last listed or watched successfully (a role on the prefix covers it; one key, so
//!   etcd 3.4 counts nothing, where a range over the whole prefix would count every key in
//!   it). Before the store (or a clone) has listed or watched anything, `status` is etcd's
//!   maintenance `Status`: exact for the cluster id, and the answering member's own
//!   revision, possibly a little behind. That is enough for every caller in muster: the
//!   master and `muster_master::list` read the first status for the cluster id only and
//!   compare revisions only after a listing. Why not a prefix in [`EtcdConfig`]: the store
//!   would have to be told what the master is already told, and a worker's store (which
//!   never asks for the status) would need it for nothing; why not a fixed key such as
//!   `"\0"` (as before): a role on the prefix does not cover it.
//! - etcd's RBAC (measured on etcd 3.4.23 with etcdctl, and for what muster does in
//!   `tests/tests/etcd/privilege.rs`) checks key ranges only: a range or watch needs read
//!   on its range; a put or delete write on its key; a transaction read on every key it
//!   compares **and** write on every key it writes; a put on a lease, and revoking a lease,
//!   write on every key already attached to that lease. Granting a lease, its keep-alive
//!   (on 3.4/3.5 before the security releases 3.4.42 and 3.5.28, which want write on the
//!   lease's keys for a keep-alive), a lease's time-to-live, maintenance `Status`, the
//!   member list and compaction need no permission. A watch outside the user's roles is
//!   not an error but a watch etcd cancels at once, with `permission denied` as its reason.
//! - A refusal is [`Error::Rejected`](muster_core::Error::Rejected) (retrying cannot help)
//!   whose message says permission was denied, names the etcd user, the key or prefix and
//!   the permission the call needs, and the `etcdctl role grant-permission` to run; never a
//!   password.
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
