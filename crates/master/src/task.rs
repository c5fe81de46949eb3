//! The master's loop: list, watch, resume, resync, reap.
//!
//! All decisions are made by the state machine (`muster_core::Membership`, kept in
//! [`Shared`] beside the subscribers); this loop only moves observations in and
//! reaps out, and retries with [`Backoff`] when the store fails.

use std::sync::Arc;

use futures::StreamExt;
use muster_core::{Backoff, Error as StoreError, Keyspace, Revision, Store, WatchStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::MasterConfig;
use crate::shared::{Epoch, Shared};

/// What ended one watch.
enum WatchEnd {
    /// The master was told to stop.
    Shutdown,
    /// The revision we need is compacted: list again.
    Relist,
    /// The watch broke: resume from the last revision applied, after a backoff delay.
    Resume,
    /// The watch was healthy but is being replaced: re-open it now.
    Reopen,
}

pub(crate) struct Task<S> {
    /// The store.
    store: S,
    /// Where the keys live.
    keyspace: Keyspace,
    /// Settings.
    config: MasterConfig,
    /// What the handle reads, with the pure state machine holding the view.
    shared: Arc<Shared>,
    /// Retry pacing.
    backoff: Backoff,
    /// The identity of the store the view was built from (`None` before the first list).
    cluster_id: Option<u64>,
    /// What sets this master's epoch apart from the cluster id: `0` until the store is
    /// replaced without a new cluster id (see [`Epoch`]).
    salt: Epoch,
    /// The epoch of the view (and of every position published).
    epoch: Epoch,
}

impl<S: Store> Task<S> {
    pub(crate) fn new(
        store: S,
        keyspace: Keyspace,
        config: MasterConfig,
        shared: Arc<Shared>,
    ) -> Self {
        let backoff = Backoff::new(config.retry_initial, config.retry_max, config.seed);
        Self {
            store,
            keyspace,
            config,
            shared,
            backoff,
            cluster_id: None,
            salt: Epoch(0),
            epoch: Epoch(0),
        }
    }

    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        'list: loop {
            if !self.list(&mut stop).await {
                return;
            }
            loop {
                match self.watch(&mut stop).await {
                    WatchEnd::Shutdown => return,
                    WatchEnd::Relist => continue 'list,
                    WatchEnd::Reopen => {}
                    WatchEnd::Resume => {
                        if !self.pause(&mut stop).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Lists the prefix (retrying until it works) and resyncs the machine. `false` on stop.
    async fn list(&mut self, stop: &mut oneshot::Receiver<()>) -> bool {
        loop {
            let prefix = self.keyspace.prefix().to_owned();
            // Each page is folded into the resync as it arrives: the master never holds the
            // whole listing, only its decoded keys.
            let mut relisting = self.shared.relisting();
            let listed = match self.store.status().await {
                Ok(status) => {
                    self.cluster_id = Some(status.cluster_id);
                    self.epoch = Epoch(status.cluster_id ^ self.salt.0);
                    self.store
                        .list_paged(&prefix, &mut |page| relisting.add(&page))
                        .await
                }
                Err(error) => Err(error),
            };
            match listed {
                Ok(_) => {
                    self.shared.finish_resync(relisting, now(), self.epoch);
                    self.backoff.reset();
                    return true;
                }
                Err(error) => {
                    self.shared.failing(
                        &format!("listing {prefix}: {error}"),
                        false,
                        !error.is_retryable(),
                    );
                    if !self.pause(stop).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Watches from the revision after the last one applied until the watch ends.
    async fn watch(&mut self, stop: &mut oneshot::Receiver<()>) -> WatchEnd {
        let from: Revision = self.shared.revision() + 1;
        let prefix = self.keyspace.prefix().to_owned();
        // Is this still the store the view came from? A store restored empty has a new
        // cluster id, and its revisions start again: watching from ours would wait forever.
        let mut seen = match self.store.status().await {
            Ok(status) if self.replaced(&status) => {
                return self.store_replaced(&status, stop).await;
            }
            Ok(status) => status.revision,
            Err(error) => return self.broken(error, from),
        };
        let mut stream: WatchStream = match self.store.watch(&prefix, from).await {
            Ok(stream) => stream,
            Err(error) => return self.broken(error, from),
        };
        self.shared.healthy(true);
        let mut check_at = Instant::now() + self.config.stall_check;
        loop {
            let deadline = self.shared.poll_timeout().map(Instant::from_std);
            // The end of the bad-input log's window, for its summary line.
            let log_due = self.shared.log_due();
            tokio::select! {
                biased;
                _ = &mut *stop => return WatchEnd::Shutdown,
                item = stream.next() => match item {
                    Some(Ok(batch)) => {
                        seen = seen.max(batch.revision);
                        check_at = Instant::now() + self.config.stall_check;
                        self.shared.apply(&batch, now(), self.epoch);
                        self.backoff.reset();
                    }
                    Some(Err(error)) => {
                        let from = self.shared.revision() + 1;
                        return self.broken(error, from);
                    }
                    None => {
                        self.shared.failing("the watch stream ended", true, false);
                        return WatchEnd::Resume;
                    }
                },
                _ = sleep_until(deadline) => self.reap().await,
                _ = sleep_until(log_due) => self.shared.log_tick(),
                _ = tokio::time::sleep_until(check_at) => {
                    // The watch has been quiet for a while. Quiet is normal; stalled is not:
                    // ask the store where it is.
                    match self.store.status().await {
                        Err(error) => {
                            self.shared.failing(
                                &format!("the watch is quiet and the store does not answer: {error}"),
                                true,
                                !error.is_retryable(),
                            );
                            return WatchEnd::Resume;
                        }
                        Ok(status) if self.replaced(&status) => {
                            return self.store_replaced(&status, stop).await;
                        }
                        Ok(status) if status.revision > seen => {
                            // The store moved on while the watch said nothing. Maybe only
                            // other keys changed; maybe the watch is stuck on a member cut
                            // off from its cluster. Re-opening from the last applied
                            // revision costs little and is right either way.
                            tracing::debug!(seen, store = status.revision, "quiet watch behind the store; re-opening it");
                            self.shared.watch_refreshed();
                            return WatchEnd::Reopen;
                        }
                        Ok(_) => check_at = Instant::now() + self.config.stall_check,
                    }
                }
            }
        }
    }

    /// Whether `status` is from another store than the one the view was built from: a new
    /// cluster id, or revisions behind what was already applied.
    fn replaced(&self, status: &muster_core::StoreStatus) -> bool {
        self.cluster_id.is_some_and(|id| id != status.cluster_id)
            || status.revision < self.shared.revision()
    }

    /// Tries every reap that is due. Of several masters, the guarded transaction lets
    /// exactly one win; the `Failed` transition comes from the watch like any other.
    async fn reap(&mut self) {
        for reap in self.shared.handle_timeout(now()) {
            match self.store.txn(reap.txn(&self.keyspace)).await {
                Ok(outcome) if outcome.succeeded => {
                    tracing::info!(name = %reap.name, revision = outcome.revision, "reaped suspect member");
                    self.shared.reaped();
                }
                Ok(_) => {
                    tracing::debug!(name = %reap.name, "reap lost: the member changed or another master reaped it")
                }
                Err(error) => tracing::warn!(name = %reap.name, %error, "reap failed; will retry"),
            }
        }
    }

    /// The store was replaced: wait for workers to re-register, forget the old revisions,
    /// and list again, in a new epoch (the new cluster id, or, if the id stayed, one derived
    /// from the old epoch and the revision reached).
    async fn store_replaced(
        &mut self,
        status: &muster_core::StoreStatus,
        stop: &mut oneshot::Receiver<()>,
    ) -> WatchEnd {
        let revision = status.revision;
        self.salt = if self.cluster_id == Some(status.cluster_id) {
            Epoch(self.epoch.next(self.shared.revision()).0 ^ status.cluster_id)
        } else {
            Epoch(0)
        };
        let message = format!(
            "the store was replaced (new cluster id, or revision {revision} behind the {} \
             already seen): its data was lost; listing again in {:?}, once workers re-registered",
            self.shared.revision(),
            self.config.store_replaced_grace,
        );
        tracing::warn!("{message}");
        self.shared.store_replaced(&message);
        tokio::select! {
            biased;
            _ = &mut *stop => return WatchEnd::Shutdown,
            _ = tokio::time::sleep(self.config.store_replaced_grace) => {}
        }
        self.shared.forget_revisions();
        WatchEnd::Relist
    }

    fn broken(&mut self, error: StoreError, from: Revision) -> WatchEnd {
        match error {
            StoreError::Compacted { compacted, .. } => {
                tracing::info!(from, compacted, "watch revision compacted; listing again");
                WatchEnd::Relist
            }
            error => {
                self.shared.failing(
                    &format!("watching from revision {from}: {error}"),
                    true,
                    !error.is_retryable(),
                );
                WatchEnd::Resume
            }
        }
    }

    /// Sleeps the next backoff delay (reaping meanwhile if due). `false` on stop.
    async fn pause(&mut self, stop: &mut oneshot::Receiver<()>) -> bool {
        let wake = Instant::now() + self.backoff.next_delay();
        loop {
            let deadline = self.shared.poll_timeout().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = &mut *stop => return false,
                _ = tokio::time::sleep_until(wake) => return true,
                _ = sleep_until(deadline) => {
                    // Reaps need the store too; try them, the guard keeps them safe.
                    self.reap().await;
                }
            }
        }
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
