//! Operator one-shots: read or change a group straight from the store, with no running
//! [`Master`](crate::Master).
//!
//! - [`list`]: the view any master starting now would rebuild, from one listing.
//! - [`evict`]: remove a member by name, gracefully: both of its keys go in one transaction,
//!   so watching masters report `Left` (or `Failed` for a member that was already `Suspect`,
//!   which the keyspace cannot tell from a reap).

use std::time::Instant;

use muster_core::{
    validate_name, Incarnation, KeyValue, Keyspace, MemberInfo, MemberState, Membership, Revision,
    Store, TransitionKind,
};

use crate::report::BadInputLog;
use crate::shared::View;

/// How many times [`evict`] re-reads and retries when the member's keys change between its
/// read and its guarded delete (the worker re-registered or updated its record meanwhile).
const EVICT_ATTEMPTS: u32 = 5;

/// What an operator one-shot can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The prefix or the member name was rejected before anything was read.
    #[error(transparent)]
    Invalid(muster_core::Error),

    /// A store call failed.
    #[error("{during}: {source}")]
    Store {
        /// What the one-shot was doing.
        during: &'static str,
        /// The store's error.
        #[source]
        source: muster_core::Error,
    },

    /// There is no member of that name (it never joined, it left, or it was reaped).
    #[error(
        "no member named {name:?} under {prefix}: it never joined, or it already left or failed"
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// The group's prefix.
        prefix: String,
    },

    /// The member's record exists but cannot be decoded, so it is not a member as far as any
    /// master is concerned; it is left untouched.
    #[error("the record at {key:?} is not a valid muster record ({reason}); masters ignore it. Remove it with `etcdctl del {key}` if it is garbage")]
    Undecodable {
        /// The record key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },

    /// The member's keys kept changing under the eviction (a worker re-registering or
    /// updating in a tight loop).
    #[error("member {name:?} changed {attempts} times while being evicted; try again")]
    Contended {
        /// The member's name.
        name: String,
        /// How many guarded deletes were tried.
        attempts: u32,
    },
}

/// What [`evict`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The member's metadata as it was.
    pub info: MemberInfo,
    /// The incarnation of the process that last wrote the record.
    pub incarnation: Incarnation,
    /// Its state just before the eviction: `Alive` or `Suspect`.
    pub was: MemberState,
    /// The store revision of the delete.
    pub revision: Revision,
}

impl Eviction {
    /// The transition watching masters report for it: `Left` for a member that was
    /// `Alive`, `Failed` for one that was already `Suspect`.
    pub fn reported_as(&self) -> TransitionKind {
        match self.was {
            MemberState::Alive => TransitionKind::Left,
            _ => TransitionKind::Failed,
        }
    }
}

/// The group under `prefix` as any master starting now would see it: one listing at one
/// revision, decoded by [`Membership::resync`]. Undecodable values and bad keys are skipped
/// (and logged, rate-limited), exactly as a master skips them.
///
/// The view is marked `synced`; its `revision` is the listing's, its `epoch` the store's
/// cluster id (the epoch of a master that never saw the store replaced).
pub async fn list<S: Store>(store: &S, prefix: &str) -> Result<View, OpsError> {
    let keyspace = Keyspace::new(prefix).map_err(OpsError::Invalid)?;
    let status = store.status().await.map_err(|source| OpsError::Store {
        during: "asking the store for its identity",
        source,
    })?;
    let listing = store
        .list(keyspace.prefix())
        .await
        .map_err(|source| OpsError::Store {
            during: "listing the group",
            source,
        })?;
    let mut machine = Membership::new(keyspace, None);
    let step = machine.resync(&listing, Instant::now());
    // Logged as a master logs them: the first few one by one, then one summary line.
    let mut log = BadInputLog::default();
    let now = tokio::time::Instant::now();
    for skip in &step.skipped {
        log.skipped(now, skip);
    }
    for bad in &step.bad_keys {
        log.bad_key(now, bad);
    }
    log.flush(now);
    Ok(View {
        epoch: crate::Epoch(status.cluster_id),
        revision: listing.revision,
        synced: true,
        members: machine.view().clone(),
    })
}

/// Evicts member `name` from the group under `prefix`: deletes its record and its liveness
/// key in one transaction, guarded by both keys being unchanged since they were read (it
/// re-reads and retries a few times if they change).
///
/// Watching masters report `Left` for a member that was `Alive`, `Failed` for one that was
/// `Suspect` (see [`Eviction::reported_as`]). Fails with [`OpsError::NotFound`] when there is
/// no such member.
///
/// The member's lease is revoked too. A worker process that still runs therefore notices at
/// its next keep-alive and registers again (`Joined` follows), as a kubelet re-creates a
/// deleted Node: eviction removes a member that is gone or stuck; to keep a live process
/// out, stop it.
pub async fn evict<S: Store>(store: &S, prefix: &str, name: &str) -> Result<Eviction, OpsError> {
    let keyspace = Keyspace::new(prefix).map_err(OpsError::Invalid)?;
    validate_name(name).map_err(OpsError::Invalid)?;
    let record_key = keyspace.record_key(name);
    let live_key = keyspace.liveness_key(name);
    for _ in 0..EVICT_ATTEMPTS {
        let record = get(store, &record_key, "reading the member's record").await?;
        let Some(record) = record else {
            return Err(OpsError::NotFound {
                name: name.to_owned(),
                prefix: keyspace.prefix().to_owned(),
            });
        };
        let decoded = match keyspace.decode_record(name, &record) {
            Ok(decoded) => decoded,
            Err(muster_core::Error::Decode { reason, .. }) => {
                return Err(OpsError::Undecodable {
                    key: record_key,
                    reason,
                })
            }
            Err(error) => {
                return Err(OpsError::Undecodable {
                    key: record_key,
                    reason: error.to_string(),
                })
            }
        };
        let live = get(store, &live_key, "reading the member's liveness key").await?;
        let was = match &live {
            Some(kv) if keyspace.decode_liveness(kv).is_ok() => MemberState::Alive,
            _ => MemberState::Suspect,
        };
        let txn = keyspace.evict_txn(
            name,
            record.mod_revision,
            live.as_ref().map(|kv| kv.mod_revision),
        );
        let outcome = store.txn(txn).await.map_err(|source| OpsError::Store {
            during: "deleting the member's keys",
            source,
        })?;
        if outcome.succeeded {
            // Revoke the worker's lease too, so a worker that still runs learns of the
            // eviction at its next keep-alive (`LeaseNotFound`) instead of renewing a lease
            // that holds nothing. Best effort: the keys are gone either way.
            if let Some(lease) = live.as_ref().map(|kv| kv.lease).filter(|l| *l != 0) {
                if let Err(error) = store.revoke(lease).await {
                    tracing::debug!(name, %error, "revoking the evicted member's lease failed");
                }
            }
            return Ok(Eviction {
                info: decoded.info,
                incarnation: decoded.incarnation,
                was,
                revision: outcome.revision,
            });
        }
        tracing::debug!(name, "member changed during eviction; reading it again");
    }
    Err(OpsError::Contended {
        name: name.to_owned(),
        attempts: EVICT_ATTEMPTS,
    })
}

async fn get<S: Store>(
    store: &S,
    key: &str,
    during: &'static str,
) -> Result<Option<KeyValue>, OpsError> {
    store
        .get(key)
        .await
        .map_err(|source| OpsError::Store { during, source })
}
