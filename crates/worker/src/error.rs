//! The worker's error type.

use muster_core::Incarnation;

/// Everything a [`Worker`](crate::Worker) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The member's metadata (name, address, label keys) or the prefix was rejected before
    /// anything was written.
    #[error(transparent)]
    Invalid(muster_core::Error),

    /// The lease TTL is outside what a worker accepts
    /// ([`WorkerConfig::MIN_TTL`](crate::WorkerConfig::MIN_TTL) to
    /// [`WorkerConfig::MAX_TTL`](crate::WorkerConfig::MAX_TTL)).
    #[error("invalid lease TTL {ttl:?}: {reason}")]
    InvalidTtl {
        /// The TTL as given.
        ttl: std::time::Duration,
        /// Which bound it broke, and what to use instead.
        reason: &'static str,
    },

    /// Another live process holds the name.
    #[error("member name {name:?} is already held by a live process (incarnation {holder}); pick another name, stop that process, or use OnDuplicate::Wait to take over once its lease expires")]
    DuplicateName {
        /// The contested name.
        name: String,
        /// The incarnation of the process holding it.
        holder: Incarnation,
    },

    /// `update` tried to change the member's name.
    #[error("cannot rename member {from:?} to {to:?} with update; leave and register under the new name")]
    NameChanged {
        /// The registered name.
        from: String,
        /// The name in the update.
        to: String,
    },

    /// A store call failed.
    #[error("{during}: {source}")]
    Store {
        /// What the worker was doing.
        during: &'static str,
        /// The store's error.
        #[source]
        source: muster_core::Error,
    },

    /// An operator evicted this process: an eviction marker refuses its incarnation's
    /// registrations (see [`Status::Evicted`](crate::Status::Evicted)). The worker has stopped
    /// and does not retry; a new process (a new incarnation) may register under the name.
    #[error("member {name:?} (incarnation {incarnation}) was evicted by an operator at revision {revision} and has stopped; a new process may register under the name")]
    Evicted {
        /// The member's name.
        name: String,
        /// The evicted incarnation (this process's).
        incarnation: Incarnation,
        /// The revision of the eviction.
        revision: muster_core::Revision,
    },

    /// [`WorkerGroup::add`](crate::WorkerGroup::add) was given a name the group already
    /// holds.
    #[error("member {name:?} is already in this group; update it, or remove it first")]
    AlreadyInGroup {
        /// The name.
        name: String,
    },

    /// A [`WorkerGroup`](crate::WorkerGroup) call named a member the group does not hold
    /// (never added, removed, or evicted: see `WorkerGroup::members`).
    #[error("member {name:?} is not in this group (under {prefix}); add it first")]
    NotInGroup {
        /// The name.
        name: String,
        /// The group's prefix.
        prefix: String,
    },

    /// The worker's background task has stopped (it left, failed, or was abandoned).
    #[error("the worker has stopped; register again to rejoin")]
    Stopped,
}
