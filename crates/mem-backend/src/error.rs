//! The memory store's own failures, and how they map into [`muster_core::Error`].
//!
//! Kept private (object_store style): callers only ever see the shared error type, and the
//! variants that carry meaning (`LeaseNotFound`, `Compacted`, ...) map to the shared
//! variants of the same meaning. The rest are requests the store refuses, and become
//! [`Error::Rejected`] (never retryable) with this error as the source, worded like etcd's own message so a log reads the same on both backends.

use std::time::Duration;

use muster_core::{Error, LeaseId, Revision};

/// The name every error of this backend carries.
pub(crate) const BACKEND: &str = "mem";

/// Something the memory store refused or could not do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemError {
    /// An injected fault: the client is partitioned, or a `fail_next` call.
    #[error("{0}")]
    Unavailable(String),

    /// The lease does not exist (never granted, expired or revoked).
    #[error("requested lease {0:x} not found")]
    LeaseNotFound(LeaseId),

    /// A transaction touched one key twice (etcd: "duplicate key given in txn request").
    #[error("duplicate key given in txn request: {key:?} is written more than once; split the transaction or drop one of the writes")]
    DuplicateKey {
        /// The key written twice.
        key: String,
    },

    /// A put with an empty key (etcd: "key is not provided").
    #[error("key is not provided: a put needs a non-empty key")]
    EmptyKey,

    /// A value over the configured size limit.
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key being written.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// `compact` to a revision the store has not reached.
    #[error(
        "required revision {requested} is a future revision (the store is at revision {current})"
    )]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },

    /// A revision at or below the compaction point.
    #[error("required revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The compaction revision.
        compacted: Revision,
    },

    /// A lease TTL over etcd's maximum.
    #[error("too large lease TTL {ttl:?}: the maximum is {max:?}")]
    TtlTooLarge {
        /// The TTL asked for.
        ttl: Duration,
        /// The maximum.
        max: Duration,
    },
}

impl From<MemError> for Error {
    fn from(err: MemError) -> Self {
        match err {
            MemError::Unavailable(message) => Error::Unavailable {
                backend: BACKEND,
                message,
            },
            MemError::LeaseNotFound(lease) => Error::LeaseNotFound { lease },
            MemError::ValueTooLarge { key, size, limit } => {
                Error::ValueTooLarge { key, size, limit }
            }
            MemError::Compacted {
                requested,
                compacted,
            } => Error::Compacted {
                requested,
                compacted,
            },
            other @ (MemError::DuplicateKey { .. }
            | MemError::EmptyKey
            | MemError::FutureRevision { .. }
            | MemError::TtlTooLarge { .. }) => Error::Rejected {
                backend: BACKEND,
                source: Box::new(other),
            },
        }
    }
}
