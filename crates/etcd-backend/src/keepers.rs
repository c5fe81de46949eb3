//! One lease keep-alive stream per lease, opened on first use and kept for the next calls.
//!
//! etcd renews leases only over the bidirectional `LeaseKeepAlive` stream. Opening one per
//! [`Store::keep_alive`](muster_core::Store::keep_alive) call would cost a stream setup and
//! an extra round trip every time; instead each lease keeps its stream here. A stream that
//! broke (etcd restarted, connection lost, timed out) is dropped and reopened once within the
//! same call. A lease that is gone, or revoked through the store, loses its stream.
//!
//! A lease that is simply abandoned (never revoked, never kept alive again) keeps its idle
//! stream until the store is dropped: revoke leases you are done with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use muster_core::{Error, LeaseId, Result};

use crate::error::{Ctx, ErrorMapper};

/// The open streams, by lease.
#[derive(Default)]
pub(crate) struct Keepers {
    /// One slot per lease that has been kept alive. The async mutex serialises round trips
    /// on one stream (answers come back in order, one per request); `None` means "no open
    /// stream, open one".
    slots: Mutex<HashMap<LeaseId, Arc<tokio::sync::Mutex<Option<Keeper>>>>>,
}

/// An open keep-alive stream: the request sender and the response stream.
struct Keeper {
    sender: LeaseKeeper,
    responses: LeaseKeepAliveStream,
}

impl Keepers {
    /// Renews `lease` once on its cached stream; returns the TTL etcd reports.
    pub(crate) async fn keep_alive(
        &self,
        client: &LeaseClient,
        lease: LeaseId,
        timeout: Duration,
        errors: &ErrorMapper,
    ) -> Result<Duration> {
        let ctx = Ctx::new("keep-alive").lease(lease);
        let slot = self.slot(lease);
        let mut keeper = slot.lock().await;
        // A cached stream may have broken since its last use: then try once more on a new one.
        let mut reopened = false;
        loop {
            if keeper.is_none() {
                let opened = open(client.clone(), lease, timeout, &ctx, errors).await;
                match opened {
                    Ok(fresh) => *keeper = Some(fresh),
                    Err(err) => {
                        if matches!(err, Error::LeaseNotFound { .. }) {
                            self.forget_slot(lease, &slot);
                        }
                        return Err(err);
                    }
                }
                reopened = true;
            }
            let open_keeper = keeper.as_mut().expect("just opened");
            match round_trip(open_keeper, timeout, &ctx, errors).await {
                Ok(ttl) if ttl > 0 => return Ok(Duration::from_secs(ttl.unsigned_abs())),
                Ok(_) => {
                    *keeper = None;
                    self.forget_slot(lease, &slot);
                    return Err(Error::LeaseNotFound { lease });
                }
                Err(err) => {
                    *keeper = None;
                    if reopened {
                        return Err(err);
                    }
                    tracing::debug!(lease, error = %err, "keep-alive stream broke; reopening it");
                }
            }
        }
    }

    /// Closes the stream of `lease`, if any (after a revoke).
    pub(crate) fn forget(&self, lease: LeaseId) {
        self.slots.lock().expect("keepers lock").remove(&lease);
    }

    fn slot(&self, lease: LeaseId) -> Arc<tokio::sync::Mutex<Option<Keeper>>> {
        self.slots
            .lock()
            .expect("keepers lock")
            .entry(lease)
            .or_default()
            .clone()
    }

    /// Removes `slot` for `lease`, unless another call has replaced it meanwhile.
    fn forget_slot(&self, lease: LeaseId, slot: &Arc<tokio::sync::Mutex<Option<Keeper>>>) {
        let mut slots = self.slots.lock().expect("keepers lock");
        if slots
            .get(&lease)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            slots.remove(&lease);
        }
    }
}

/// Opens a keep-alive stream. etcd-client's open already renews the lease once and fails
/// with "lease not found" for a lease that is gone.
async fn open(
    mut client: LeaseClient,
    lease: LeaseId,
    timeout: Duration,
    ctx: &Ctx,
    errors: &ErrorMapper,
) -> Result<Keeper> {
    match tokio::time::timeout(timeout, client.keep_alive(lease)).await {
        Ok(Ok((sender, responses))) => Ok(Keeper { sender, responses }),
        Ok(Err(err)) => Err(errors.map(ctx, err)),
        Err(_) => Err(errors.timeout(ctx, timeout)),
    }
}

/// One request and its answer: the lease's new TTL in seconds, `<= 0` if it is gone.
async fn round_trip(
    keeper: &mut Keeper,
    timeout: Duration,
    ctx: &Ctx,
    errors: &ErrorMapper,
) -> Result<i64> {
    let exchange = async {
        keeper
            .sender
            .keep_alive()
            .await
            .map_err(|err| errors.map(ctx, err))?;
        match keeper.responses.message().await {
            Ok(Some(answer)) => Ok(answer.ttl()),
            Ok(None) => Err(errors.unavailable(ctx, "etcd closed the keep-alive stream")),
            Err(err) => Err(errors.map(ctx, err)),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(errors.timeout(ctx, timeout)),
    }
}
