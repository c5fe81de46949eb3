//! Operator one-shots: read or change a group straight from the store, with no running
//! [`Master`](crate::Master).
//!
//! - [`list`]: the view any master starting now would rebuild, from one listing.
//! - [`evict`]: remove a member by name, and keep the evicted process out: both of its keys
//!   go in one transaction, so watching masters report `Left` (or `Failed` for a member that
//!   was already `Suspect`, which the keyspace cannot tell from a reap), and the same
//!   transaction leaves an eviction marker that blocks that incarnation's registrations for
//!   the hold time.

use std::time::{Duration, Instant};

use muster_core::{
    validate_name, EvictionMarker, Incarnation, KeyValue, Keyspace, LeaseId, MemberInfo,
    MemberState, Membership, Revision, Store, TransitionKind,
};

use crate::report::BadInputLog;
use crate::shared::View;

/// How many times [`evict`] re-reads and retries when the member's keys change between its
/// read and its guarded delete (the worker re-registered or updated its record meanwhile).
const EVICT_ATTEMPTS: u32 = 5;

/// How long an eviction holds unless the operator says otherwise (`evict`'s `hold`): one
/// hour.
///
/// The marker must outlive the time an evicted process that still runs can take to notice.
/// One that reaches the store notices at its next keep-alive, within its TTL; one that is
/// cut off (a partitioned `Suspect` member, or an `Alive` one cut off just as it was
/// evicted) notices only when it reaches the store again, and a hold that ended by then lets
/// it register again (`Joined`). An hour outlasts any partition the default reaping
/// (60 s) would wait for by far, while a marker costs the store one key and one lease, and
/// blocks nobody else: a new process under the name (a new incarnation) joins at once.
pub const DEFAULT_EVICTION_HOLD: Duration = Duration::from_secs(60 * 60);

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
    /// The eviction marker's key, `{prefix}evicted/{name}/{incarnation}`: while it exists,
    /// the evicted incarnation cannot register again.
    pub marker: String,
    /// The evicted incarnation (named by the marker): the live process's, for an `Alive`
    /// member, else the record's.
    pub blocked: Incarnation,
    /// How long the marker holds (the TTL of the lease it is bound to).
    pub hold: Duration,
    /// Whether the evicted process's lease was revoked, which is how a process that still
    /// runs learns of its eviction: at its next keep-alive. `false` for a `Suspect` member
    /// (it has no lease; it learns when it tries to register again), or when revoking failed
    /// (logged): then a running process notices only when it next writes its record or its
    /// lease is lost another way.
    pub lease_revoked: bool,
    /// Whether the evicted member's lease carries other members too (its liveness value
    /// says `"shared": true`: a `muster_worker::WorkerGroup`). Then the lease is left
    /// alone, so the evicted member's siblings stay alive, and `lease_revoked` is `false`:
    /// the group learns of the eviction from its marker, which it watches.
    pub lease_shared: bool,
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

/// Evicts member `name` from the group under `prefix` and keeps the evicted process out for
/// `hold`: in one transaction, guarded by both of its keys being unchanged since they were
/// read (it re-reads and retries a few times if they change), it deletes its record and its
/// liveness key and puts an eviction marker naming the evicted incarnation, bound to a lease
/// of `hold` granted here ([`DEFAULT_EVICTION_HOLD`] is the programs' default).
///
/// Watching masters report `Left` for a member that was `Alive`, `Failed` for one that was
/// `Suspect` (see [`Eviction::reported_as`]). Fails with [`OpsError::NotFound`] when there is
/// no such member.
///
/// The member's lease is revoked too, so a worker that still runs gets `LeaseNotFound` at its
/// next keep-alive; its registration again is refused by the marker (atomically: the marker's
/// absence is a condition of every registration), and it stops and reports
/// `Status::Evicted`. A member on a shared lease (`muster_worker::WorkerGroup`, its liveness
/// value says so) keeps its lease, which carries its siblings: its group watches the markers
/// and stops announcing it ([`Eviction::lease_shared`]). A new process under the name (a new incarnation) may join at once. A
/// store that raises short TTLs (etcd: to its minimum, 2 s by default) raises a short `hold`.
pub async fn evict<S: Store>(
    store: &S,
    prefix: &str,
    name: &str,
    hold: Duration,
) -> Result<Eviction, OpsError> {
    let keyspace = Keyspace::new(prefix).map_err(OpsError::Invalid)?;
    validate_name(name).map_err(OpsError::Invalid)?;
    let mut hold_lease = None;
    let result = evict_holding(store, &keyspace, name, hold, &mut hold_lease).await;
    if let (Err(_), Some(lease)) = (&result, hold_lease) {
        // Nothing holds the lease's marker: give it back (it would expire after `hold`).
        if let Err(error) = store.revoke(lease).await {
            tracing::debug!(name, %error, "revoking the unused hold lease failed");
        }
    }
    result
}

/// [`evict`]'s attempts; `hold_lease` is the lease granted for the marker, once granted.
async fn evict_holding<S: Store>(
    store: &S,
    keyspace: &Keyspace,
    name: &str,
    hold: Duration,
    hold_lease: &mut Option<LeaseId>,
) -> Result<Eviction, OpsError> {
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
        let liveness = live
            .as_ref()
            .and_then(|kv| keyspace.decode_liveness(kv).ok());
        let live_incarnation = liveness.map(|l| l.incarnation);
        let lease_shared = liveness.is_some_and(|l| l.shared);
        let was = match live_incarnation {
            Some(_) => MemberState::Alive,
            None => MemberState::Suspect,
        };
        let blocked = live_incarnation.unwrap_or(decoded.incarnation);
        let lease = match *hold_lease {
            Some(lease) => lease,
            None => {
                let granted = store.grant(hold).await.map_err(|source| OpsError::Store {
                    during: "granting the eviction marker's lease",
                    source,
                })?;
                *hold_lease = Some(granted.id);
                granted.id
            }
        };
        let marker = EvictionMarker {
            incarnation: blocked,
            at_unix_ms: unix_ms(),
            hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
        };
        let txn = keyspace.evict_txn(
            name,
            record.mod_revision,
            live.as_ref().map(|kv| kv.mod_revision),
            &marker,
            lease,
        );
        let outcome = store.txn(txn).await.map_err(|source| OpsError::Store {
            during: "deleting the member's keys and writing the eviction marker",
            source,
        })?;
        if outcome.succeeded {
            // Revoke the worker's lease too, so a worker that still runs learns of the
            // eviction at its next keep-alive (`LeaseNotFound`), and its registration again
            // meets the marker. The marker is on the hold lease, not this one.
            // A shared lease carries the evicted member's siblings: leave it alone.
            let lease = live.as_ref().map(|kv| kv.lease).filter(|l| *l != 0);
            let lease_revoked = match lease {
                Some(lease) if !lease_shared => revoke_evicted(store, name, lease).await,
                _ => false,
            };
            return Ok(Eviction {
                info: decoded.info,
                incarnation: decoded.incarnation,
                was,
                revision: outcome.revision,
                marker: keyspace.eviction_key(name, blocked),
                blocked,
                hold,
                lease_revoked,
                lease_shared,
            });
        }
        tracing::debug!(name, "member changed during eviction; reading it again");
    }
    Err(OpsError::Contended {
        name: name.to_owned(),
        attempts: EVICT_ATTEMPTS,
    })
}

/// Revokes the evicted process's lease, retrying a retryable failure a few times (the keys
/// are gone and the marker is written whatever happens here). Whether it was revoked.
async fn revoke_evicted<S: Store>(store: &S, name: &str, lease: LeaseId) -> bool {
    for _ in 0..EVICT_ATTEMPTS {
        match store.revoke(lease).await {
            Ok(()) => return true,
            Err(error) if error.is_retryable() => {
                tracing::debug!(name, %error, "revoking the evicted member's lease failed; again");
            }
            Err(error) => {
                tracing::warn!(name, %error, "revoking the evicted member's lease failed");
                return false;
            }
        }
    }
    tracing::warn!(name, "revoking the evicted member's lease kept failing");
    false
}

/// Milliseconds since the Unix epoch, by this process's clock (0 before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
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
