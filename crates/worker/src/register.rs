//! One registration attempt on a lease the caller holds, shared by [`Worker`](crate::Worker)
//! (one member, its own lease) and [`WorkerGroup`](crate::WorkerGroup) (many members, one
//! lease): send the register transaction and, when it is refused, find out why.

use muster_core::{Incarnation, Keyspace, LeaseId, Record, Revision, Store};

use crate::error::Error;

/// Why one registration attempt did not register.
pub(crate) enum Refused {
    /// Another live process holds the name.
    Duplicate(Incarnation),
    /// This incarnation was evicted: its eviction marker exists (created at this revision).
    Evicted(Revision),
    /// The store failed or was slow; retrying may work.
    Transient(Error),
    /// Retrying the same thing cannot work (e.g. the value is too large).
    Fatal(Error),
}

/// A registration that took.
pub(crate) enum Registered {
    /// The transaction wrote both keys at this revision.
    Now(Revision),
    /// The liveness key was already this incarnation's, on `lease` (an earlier attempt
    /// whose reply was lost, or the process's previous lease): written at `revision`.
    Already {
        /// The lease the existing liveness key is on.
        lease: LeaseId,
        /// Its last write.
        revision: Revision,
    },
}

/// Sends the register transaction of `record` on `lease` (`shared`: other members' keys are
/// on it too); on a refusal reads the eviction marker first (an eviction is final), then the
/// liveness key.
pub(crate) async fn register<S: Store>(
    store: &S,
    keyspace: &Keyspace,
    record: &Record,
    lease: LeaseId,
    shared: bool,
) -> Result<Registered, Refused> {
    let name = &record.info.name;
    let txn = if shared {
        keyspace.register_shared_txn(record, lease)
    } else {
        keyspace.register_txn(record, lease)
    };
    let outcome = call("registering", store.txn(txn)).await?;
    if outcome.succeeded {
        return Ok(Registered::Now(outcome.revision));
    }
    let marker_key = keyspace.eviction_key(name, record.incarnation);
    let marker = call("reading the eviction marker", store.get(&marker_key)).await?;
    if let Some(marker) = marker {
        return Err(Refused::Evicted(marker.create_revision));
    }
    let live_key = keyspace.liveness_key(name);
    let holder = call("reading the liveness key", store.get(&live_key)).await?;
    let Some(holder) = holder else {
        // It vanished in between: try again soon.
        return Err(Refused::Transient(Error::Store {
            during: "registering",
            source: muster_core::Error::Unavailable {
                backend: "muster",
                message: "the liveness key changed during registration; retrying".into(),
            },
        }));
    };
    match keyspace.decode_liveness(&holder) {
        Ok(live) if live.incarnation == record.incarnation => Ok(Registered::Already {
            lease: holder.lease,
            revision: holder.mod_revision,
        }),
        Ok(live) => Err(Refused::Duplicate(live.incarnation)),
        // An undecodable liveness value is still someone's key: never overwrite it.
        Err(_) => Err(Refused::Duplicate(Incarnation(0))),
    }
}

/// Runs one store call, naming what it was for in any error, sorted into "retry" or "give
/// up" by [`muster_core::Error::is_retryable`].
pub(crate) async fn call<T>(
    during: &'static str,
    call: impl std::future::Future<Output = muster_core::Result<T>>,
) -> Result<T, Refused> {
    call.await
        .map_err(|source| classify(Error::Store { during, source }))
}

/// Sorts a failed call into "retry" or "give up", by [`muster_core::Error::is_retryable`].
pub(crate) fn classify(error: Error) -> Refused {
    match &error {
        Error::Store { source, .. } if !source.is_retryable() => Refused::Fatal(error),
        _ => Refused::Transient(error),
    }
}
