//! What a worker is doing, for applications that want to react rather than read logs.

use std::time::Instant;

use muster_core::{Incarnation, LeaseId, Revision};

/// A worker's status, published on a `tokio::sync::watch` channel by
/// [`Worker::status`](crate::Worker::status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Registering for the first time.
    Registering,
    /// Registered and keeping the lease alive.
    Registered {
        /// The lease the liveness key is bound to.
        lease: LeaseId,
        /// The revision of the registration.
        revision: Revision,
    },
    /// The store is unreachable or slow; retrying with backoff. The lease may still be alive.
    Reconnecting {
        /// When the first failure of this streak happened.
        since: Instant,
        /// How many retries so far.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The lease was lost (expired during an outage or the store restarted) and the worker
    /// registered again, with its current metadata, on a new lease.
    Reregistered {
        /// The new lease.
        lease: LeaseId,
        /// The revision of the new registration.
        revision: Revision,
    },
    /// The name is held by another live process; waiting for it to go ([`OnDuplicate::Wait`](crate::OnDuplicate::Wait)).
    WaitingForName {
        /// The incarnation holding the name.
        holder: Incarnation,
    },
    /// Left the group gracefully.
    Left,
    /// An operator evicted this process (`muster_master::evict`, `muster-master evict`): its
    /// keys were deleted and an eviction marker naming its incarnation refuses its
    /// registrations. The worker noticed (its lease was revoked, or its record write was
    /// refused, and registering again met the marker), stopped announcing itself, and does
    /// not retry: its handle's calls return [`Error::Evicted`](crate::Error::Evicted). A new
    /// process (a new incarnation) may register under the name.
    Evicted {
        /// The revision of the eviction (the marker's creation).
        revision: Revision,
    },
    /// A registration was refused in a way retrying the same request cannot fix (the name
    /// was taken over by another live process with `OnDuplicate::Fail`, a value over the
    /// store's limit, a request the store rejects), or the first registration ran out of
    /// `register_timeout`. During [`Worker::register`](crate::Worker::register) this ends the
    /// call with the error. Later, when the name was taken over, the worker stops for good
    /// (its handle's calls return `Error::Stopped`); for the other causes it tries again every
    /// `retry_max` (an operator may fix the cause) and reports `Reregistered` if that works.
    Failed {
        /// What went wrong.
        error: String,
    },
}

impl Status {
    /// Whether the member is currently registered (first time or again).
    pub fn is_registered(&self) -> bool {
        matches!(
            self,
            Status::Registered { .. } | Status::Reregistered { .. }
        )
    }
}
