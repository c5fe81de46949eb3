//! The one error type of `muster-core`, shared by every [`Store`](crate::Store) backend.
//!
//! Backends map their own failures into these variants so that the master and the worker
//! can react to *meaning* (retry, resync, re-register) without knowing which backend runs.

use crate::store::{LeaseId, Revision};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core or in a backend.
///
/// Every message says what happened and, where a person can act, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A member name was rejected before it could become a key.
    #[error("invalid member name {name:?}: {reason}; use 1 to 128 printable characters (not bytes) without '/' or whitespace")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A member address was rejected before it could be registered.
    #[error("invalid member address {addr:?}: {reason}; use HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 address and a port from 1 to 65535 (e.g. 10.0.0.5:8080, api.internal:443, [::1]:8080), or an empty address for a member without one")]
    InvalidAddr {
        /// The address as given.
        addr: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A label key was rejected before it could be registered.
    #[error("invalid label key {key:?}: {reason}; use a non-empty key without '=' or control characters, e.g. zone")]
    InvalidLabel {
        /// The key as given.
        key: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A key prefix was rejected.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A watch or read asked for a revision that compaction has already removed.
    ///
    /// The caller must list again (a fresh snapshot) and continue from there.
    #[error("revision {requested} has been compacted (store compacted up to {compacted}); list again and watch from the new revision")]
    Compacted {
        /// The revision that was asked for.
        requested: Revision,
        /// The store's compaction revision: everything below it is gone. Where the store
        /// does not say (etcd's unary calls), `requested + 1`: that much is certainly gone.
        compacted: Revision,
    },

    /// The lease does not exist (it expired, was revoked, or the store lost it).
    #[error("lease {lease:x} not found: it expired or was revoked; grant a new lease and register again")]
    LeaseNotFound {
        /// The lease that is gone.
        lease: LeaseId,
    },

    /// The store could not be reached or did not answer in time. Retrying later may work.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// Which backend (e.g. `"etcd"`, `"mem"`).
        backend: &'static str,
        /// What happened, with endpoints where known.
        message: String,
    },

    /// A value was larger than the store accepts.
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key being written.
        key: String,
        /// The value's size.
        size: usize,
        /// The store's limit.
        limit: usize,
    },

    /// A value under the prefix could not be decoded.
    #[error("cannot decode value at key {key:?}: {reason}")]
    Decode {
        /// The key whose value is malformed.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// The store refused the request as malformed (a key written twice in one transaction,
    /// an empty key, a compaction to a future revision, ...). Retrying the same request
    /// cannot succeed.
    #[error("{backend} rejected the request: {source}")]
    Rejected {
        /// Which backend.
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// Any other backend failure, with the backend's own error as the source.
    #[error("{backend} error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Whether the caller should keep going (retry with backoff, list again, register on a
    /// new lease) rather than give up: the one rule the worker, the master and the programs
    /// share.
    ///
    /// Retryable: the store was unreachable or slow (`Unavailable`, `Backend`), the lease is
    /// gone (`LeaseNotFound`: register again on a new one), history was compacted
    /// (`Compacted`: list again), a value written by someone else did not decode (`Decode`:
    /// it may be fixed). Not retryable: the request itself is wrong and the same request can
    /// never succeed (`InvalidName`, `InvalidAddr`, `InvalidLabel`, `InvalidPrefix`,
    /// `ValueTooLarge`, `Rejected`).
    ///
    /// ```
    /// use muster_core::Error;
    /// assert!(Error::LeaseNotFound { lease: 7 }.is_retryable());
    /// let bad = Error::InvalidName { name: "a b".into(), reason: "contains whitespace" };
    /// assert!(!bad.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. }
            | Error::Backend { .. }
            | Error::LeaseNotFound { .. }
            | Error::Compacted { .. }
            | Error::Decode { .. } => true,
            Error::InvalidName { .. }
            | Error::InvalidAddr { .. }
            | Error::InvalidLabel { .. }
            | Error::InvalidPrefix { .. }
            | Error::ValueTooLarge { .. }
            | Error::Rejected { .. } => false,
        }
    }
}
