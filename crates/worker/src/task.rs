//! The worker's background task: keep the lease alive, re-register when it is lost, apply
//! updates, leave.
//!
//! One loop owns all state, so a command (update, leave) is never interleaved with a
//! half-done registration. Every retry goes through one [`Backoff`], so an outage costs a
//! bounded, observable number of calls (see [`Status::Reconnecting`]).

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use muster_core::{Backoff, Incarnation, Keyspace, LeaseId, MemberInfo, Record, Revision, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{OnDuplicate, WorkerConfig};
use crate::error::Error;
use crate::register::{classify, register, Refused, Registered};
use crate::retry::{self, could_not_leave, Leave, LeaveRetry};
use crate::status::Status;

/// A request from the [`Worker`](crate::Worker) handle.
#[derive(Debug)]
pub(crate) enum Command {
    /// Replace the metadata.
    Update(MemberInfo, oneshot::Sender<Result<(), Error>>),
    /// Mark the member draining.
    Drain(oneshot::Sender<Result<(), Error>>),
    /// Leave and stop.
    Leave(oneshot::Sender<Result<(), Error>>),
}

/// The state the background task owns.
pub(crate) struct Core<S> {
    /// The store, shared so many workers can use one client.
    store: Arc<S>,
    /// Where the keys live.
    keyspace: Keyspace,
    /// Settings.
    config: WorkerConfig,
    /// The current metadata: what registration and re-registration write.
    info: MemberInfo,
    /// This process's identity.
    incarnation: Incarnation,
    /// Where status changes go.
    status: watch::Sender<Status>,
    /// Retry pacing for every failure.
    backoff: Backoff,
    /// The lease our liveness key is bound to; `None` when we must (re-)register.
    lease: Option<LeaseId>,
    /// The revision of the last successful registration.
    registered_at: Revision,
    /// When the current streak of failures started.
    failing_since: Option<std::time::Instant>,
    /// The metadata changed but could not be written yet.
    dirty: bool,
    /// When the loop next renews the lease or retries.
    next: Instant,
}

impl<S: Store> Core<S> {
    pub(crate) fn new(
        store: Arc<S>,
        keyspace: Keyspace,
        config: WorkerConfig,
        info: MemberInfo,
        incarnation: Incarnation,
        status: watch::Sender<Status>,
    ) -> Self {
        let backoff = Backoff::new(config.retry_initial, config.retry_max(), incarnation.0);
        Self {
            store,
            keyspace,
            config,
            info,
            incarnation,
            status,
            backoff,
            lease: None,
            registered_at: 0,
            failing_since: None,
            dirty: false,
            next: Instant::now(),
        }
    }

    /// Registers for the first time, retrying transient failures until `register_timeout`.
    pub(crate) async fn first_registration(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.register_timeout;
        loop {
            let error = match self.try_register().await {
                Ok(()) => {
                    // Failures before the first registration must not slow the first
                    // retries after it.
                    self.backoff.reset();
                    self.failing_since = None;
                    self.set_status(Status::Registered {
                        lease: self.lease.unwrap_or_default(),
                        revision: self.registered_at,
                    });
                    return Ok(());
                }
                Err(Refused::Duplicate(holder))
                    if self.config.on_duplicate == OnDuplicate::Fail =>
                {
                    let error = Error::DuplicateName {
                        name: self.info.name.clone(),
                        holder,
                    };
                    self.set_status(Status::Failed {
                        error: error.to_string(),
                    });
                    return Err(error);
                }
                Err(Refused::Duplicate(holder)) => {
                    self.set_status(Status::WaitingForName { holder });
                    None
                }
                Err(Refused::Evicted(revision)) => return Err(self.evicted(revision)),
                Err(Refused::Fatal(error)) => {
                    self.set_status(Status::Failed {
                        error: error.to_string(),
                    });
                    return Err(error);
                }
                Err(Refused::Transient(error)) => Some(error),
            };
            let delay = self.backoff.next_delay();
            if let Some(error) = error {
                if Instant::now() + delay > deadline {
                    self.set_status(Status::Failed {
                        error: error.to_string(),
                    });
                    return Err(error);
                }
                self.note_failure(&error);
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// The loop. Ends after a leave, or when the handle is dropped (after leaving).
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.next = Instant::now() + self.config.keep_alive_interval();
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None => {
                        let _ = self.leave().await;
                        return;
                    }
                    Some(Command::Leave(reply)) => {
                        let _ = reply.send(self.leave().await);
                        return;
                    }
                    Some(Command::Update(info, reply)) => {
                        let _ = reply.send(self.update(info).await);
                    }
                    Some(Command::Drain(reply)) => {
                        let info = self.info.clone().draining(true);
                        let _ = reply.send(self.update(info).await);
                    }
                },
                _ = tokio::time::sleep_until(self.next) => {
                    if !self.tick().await {
                        return;
                    }
                }
            }
        }
    }

    /// Renews the lease, or re-registers if it is lost. Returns `false` when the worker
    /// must stop (it was evicted, or the name was taken over and the policy is to fail).
    async fn tick(&mut self) -> bool {
        let Some(lease) = self.lease else {
            return self.reregister().await;
        };
        if self.dirty {
            // A failed write of new metadata: try again before renewing.
            if let Err(error) = self.write_record(lease).await {
                tracing::debug!(name = %self.info.name, %error, "record write failed again");
            }
            if self.lease.is_none() {
                return self.reregister().await;
            }
        }
        let within = self.config.renew_timeout();
        match self
            .call("renewing the lease", self.store.keep_alive(lease, within))
            .await
        {
            Ok(_) => {
                if self.failing_since.take().is_some() {
                    self.set_status(Status::Registered {
                        lease,
                        revision: self.registered_at,
                    });
                }
                self.backoff.reset();
                self.next = Instant::now() + self.config.keep_alive_interval();
            }
            Err(Error::Store {
                source: muster_core::Error::LeaseNotFound { .. },
                ..
            }) => {
                tracing::info!(name = %self.info.name, lease, "lease lost; registering again");
                self.lease = None;
                return self.reregister().await;
            }
            Err(error) => self.retry_later(&error),
        }
        true
    }

    /// Registers again after the lease was lost, with the current metadata.
    async fn reregister(&mut self) -> bool {
        match self.try_register().await {
            Ok(()) => {
                self.failing_since = None;
                self.backoff.reset();
                self.set_status(Status::Reregistered {
                    lease: self.lease.unwrap_or_default(),
                    revision: self.registered_at,
                });
                self.next = Instant::now() + self.config.keep_alive_interval();
            }
            Err(Refused::Duplicate(holder)) => {
                if self.config.on_duplicate == OnDuplicate::Fail {
                    let error = Error::DuplicateName {
                        name: self.info.name.clone(),
                        holder,
                    };
                    tracing::warn!(%error, "name taken over while this worker was away");
                    self.set_status(Status::Failed {
                        error: error.to_string(),
                    });
                    return false;
                }
                self.set_status(Status::WaitingForName { holder });
                self.next = Instant::now() + self.backoff.next_delay();
            }
            Err(Refused::Evicted(revision)) => {
                let error = self.evicted(revision);
                tracing::warn!(%error, "evicted; stopping");
                return false;
            }
            Err(Refused::Transient(error)) => self.retry_later(&error),
            Err(Refused::Fatal(error)) => {
                self.set_status(Status::Failed {
                    error: error.to_string(),
                });
                self.next = Instant::now() + self.config.retry_max();
            }
        }
        true
    }

    /// Reports the eviction (created at `revision`) and returns its error.
    fn evicted(&self, revision: Revision) -> Error {
        self.set_status(Status::Evicted { revision });
        Error::Evicted {
            name: self.info.name.clone(),
            incarnation: self.incarnation,
            revision,
        }
    }

    /// One registration attempt: grant a lease, then register on it ([`register`]: the
    /// liveness key only if absent and only if this incarnation was not evicted, with the
    /// record, in one transaction). A refused lease is given back.
    async fn try_register(&mut self) -> Result<(), Refused> {
        let lease = self
            .call("granting a lease", self.store.grant(self.config.ttl))
            .await
            .map_err(classify)?;
        let result = register(
            &*self.store,
            &self.keyspace,
            &self.record(),
            lease.id,
            false,
        )
        .await;
        if !matches!(result, Ok(Registered::Now(_))) {
            // Evicted, or someone holds the liveness key: our lease is of no use.
            let _ = self
                .call("revoking an unused lease", self.store.revoke(lease.id))
                .await;
        }
        match result? {
            Registered::Now(revision) => {
                self.lease = Some(lease.id);
                self.registered_at = revision;
                self.dirty = false;
                Ok(())
            }
            Registered::Already {
                lease: held,
                revision,
            } => {
                // Our own earlier registration (e.g. a transaction whose reply was lost):
                // adopt its lease and make sure the record is current.
                self.lease = Some(held);
                self.registered_at = revision;
                self.dirty = true;
                let _ = self.write_record(held).await;
                if self.lease.is_some() {
                    Ok(())
                } else {
                    // The adopted lease vanished under us: register again on a new one.
                    Err(Refused::Transient(Error::Store {
                        during: "adopting the lease of this process's earlier registration",
                        source: muster_core::Error::LeaseNotFound { lease: held },
                    }))
                }
            }
        }
    }

    /// Writes the current record, guarded by "the liveness key is still on our lease".
    /// Clears `lease` if it is not.
    async fn write_record(&mut self, lease: LeaseId) -> Result<(), Error> {
        let txn = self.keyspace.update_txn(&self.record(), lease);
        match self
            .call(
                "writing the updated record (kept; the worker writes it again automatically)",
                self.store.txn(txn),
            )
            .await
        {
            Ok(outcome) => {
                self.dirty = false;
                if !outcome.succeeded {
                    // Our liveness key is gone: re-registration writes the new record.
                    self.lease = None;
                    self.next = Instant::now();
                }
                Ok(())
            }
            Err(error) => {
                self.dirty = true;
                Err(error)
            }
        }
    }

    /// Replaces the metadata; a draining member stays draining (draining is one-way for a
    /// process: it ends with the leave).
    async fn update(&mut self, mut info: MemberInfo) -> Result<(), Error> {
        info.draining |= self.info.draining;
        self.info = info;
        match self.lease {
            Some(lease) => self.write_record(lease).await,
            None => Ok(()),
        }
    }

    /// Deletes both keys (guarded by our lease) and revokes the lease. If the lease is
    /// already gone, deletes the record only if no other process holds the name. A failed
    /// attempt is retried as [`LeaveRetry`] says.
    async fn leave(&mut self) -> Result<(), Error> {
        match LeaveRetry::starting_now(&self.config).run(self).await {
            Ok(()) => {
                self.set_status(Status::Left);
                Ok(())
            }
            Err(error) => {
                self.set_status(Status::Failed {
                    error: could_not_leave(&error),
                });
                Err(error)
            }
        }
    }

    async fn leave_once(&mut self) -> Result<(), Error> {
        if let Some(lease) = self.lease {
            let txn = self.keyspace.leave_txn(&self.info.name, lease);
            let outcome = self.call("leaving", self.store.txn(txn)).await?;
            if outcome.succeeded {
                self.lease = None;
                let _ = self
                    .call("revoking the lease", self.store.revoke(lease))
                    .await;
                return Ok(());
            }
            self.lease = None;
        }
        let txn = self.keyspace.leave_without_lease_txn(&self.info.name);
        self.call("leaving", self.store.txn(txn)).await?;
        Ok(())
    }

    fn retry_later(&mut self, error: &Error) {
        self.note_failure(error);
        self.next = Instant::now() + self.backoff.next_delay();
    }

    fn note_failure(&mut self, error: &Error) {
        tracing::debug!(name = %self.info.name, %error, "store call failed; retrying");
        retry::note_failure(&mut self.failing_since, &self.backoff, &self.status, error);
    }

    fn set_status(&self, status: Status) {
        self.status.send_replace(status);
    }

    fn record(&self) -> Record {
        Record {
            info: self.info.clone(),
            incarnation: self.incarnation,
        }
    }

    /// Runs one store call, naming what it was for in any error. The store bounds how long
    /// it takes (its request timeout; a renewal: the deadline passed to it).
    async fn call<T>(
        &self,
        during: &'static str,
        call: impl Future<Output = muster_core::Result<T>>,
    ) -> Result<T, Error> {
        call.await.map_err(|source| Error::Store { during, source })
    }
}

/// The worker's leave, for [`LeaveRetry`]: a failure says `Reconnecting`, as any other.
impl<S: Store> Leave for Core<S> {
    fn attempt(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.leave_once())
    }

    fn failed(&mut self, error: &Error) {
        self.note_failure(error);
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}
