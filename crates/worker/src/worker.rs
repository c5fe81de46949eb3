//! The [`Worker`] handle.

use std::sync::Arc;

use muster_core::{Incarnation, Keyspace, MemberInfo, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::WorkerConfig;
use crate::error::Error;
use crate::status::Status;
use crate::task::{Command, Core};

/// One registered member of a group, kept alive by a background task.
///
/// Dropping a `Worker` leaves the group gracefully in the background (the task deletes both
/// keys and revokes the lease); [`leave`](Worker::leave) does the same and waits for it.
/// [`abandon`](Worker::abandon) stops without leaving, as a crash would.
///
/// The handle does not name the store: [`register`](Worker::register) is generic over any
/// [`Store`], the handle is one plain type.
#[derive(Debug)]
pub struct Worker {
    /// The member's name (fixed for the worker's life).
    name: String,
    /// This process's incarnation.
    incarnation: Incarnation,
    /// Requests to the background task; closing it makes the task leave.
    commands: mpsc::UnboundedSender<Command>,
    /// The task's status reports.
    status: watch::Receiver<Status>,
    /// The background task, aborted by `abandon`.
    task: JoinHandle<()>,
}

impl Worker {
    /// Registers `info` under `config.prefix` and starts keeping it alive.
    ///
    /// Returns once the member is registered. Fails at once, writing nothing, on an invalid
    /// prefix or metadata ([`MemberInfo::validate`]: the name, an address that is neither
    /// `HOST:PORT` nor empty, a bad label key) and on a TTL outside 1 s to 1 hour
    /// ([`WorkerConfig::validate`]), and
    /// on a name held by another live process (unless [`OnDuplicate::Wait`](crate::OnDuplicate::Wait));
    /// retries an unreachable store with backoff for up to `config.register_timeout`.
    pub async fn register<S: Store>(
        store: S,
        info: MemberInfo,
        config: WorkerConfig,
    ) -> Result<Self, Error> {
        let keyspace = Keyspace::new(config.prefix.clone()).map_err(Error::Invalid)?;
        info.validate().map_err(Error::Invalid)?;
        config.validate()?;
        let incarnation = config.incarnation.unwrap_or_else(random_incarnation);
        let (status_tx, status) = watch::channel(Status::Registering);
        let name = info.name.clone();
        let mut core = Core::new(
            Arc::new(store),
            keyspace,
            config,
            info,
            incarnation,
            status_tx,
        );
        core.first_registration().await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(core.run(rx));
        Ok(Self {
            name,
            incarnation,
            commands,
            status,
            task,
        })
    }

    /// The member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// A receiver of the worker's status; `changed()` wakes on every change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Replaces the member's metadata (the name must stay the same; the rest is checked as
    /// [`register`](Self::register) checks it, before anything is written).
    ///
    /// The record is rewritten only while this process's liveness key is still its own. If
    /// the lease was lost, the new metadata is written by the automatic re-registration. If
    /// the store is unreachable, the error says so and the worker keeps retrying the write.
    pub async fn update(&self, info: MemberInfo) -> Result<(), Error> {
        if info.name != self.name {
            return Err(Error::NameChanged {
                from: self.name.clone(),
                to: info.name,
            });
        }
        info.validate().map_err(Error::Invalid)?;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Update(info, tx))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Announces that this member is about to leave: rewrites its record as draining (a
    /// guarded update, like [`update`](Self::update)). It stays a member and keeps its
    /// lease; the master reports `Draining`, and callers following the group
    /// (`muster_master::Filter`'s default, `muster-tonic`) stop sending it new work. Finish
    /// the work in flight, then [`leave`](Self::leave). Draining lasts until the leave:
    /// later updates keep it.
    ///
    /// ```no_run
    /// # async fn example(worker: muster_worker::Worker) -> Result<(), muster_worker::Error> {
    /// worker.drain().await?;
    /// // ... let the requests in flight finish ...
    /// worker.leave().await?;
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Drain(tx))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Leaves the group: deletes both keys in one transaction and revokes the lease. The
    /// master reports `Left`. After an eviction: [`Error::Evicted`] (there is nothing left to
    /// delete).
    pub async fn leave(self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Leave(tx))
            .map_err(|_| self.stopped())?;
        rx.await.map_err(|_| self.stopped())?
    }

    /// Why a call found the background task gone: [`Error::Evicted`] if it stopped because
    /// this process was evicted, else [`Error::Stopped`].
    fn stopped(&self) -> Error {
        match *self.status.borrow() {
            Status::Evicted { revision } => Error::Evicted {
                name: self.name.clone(),
                incarnation: self.incarnation,
                revision,
            },
            _ => Error::Stopped,
        }
    }

    /// Stops keeping the lease alive without leaving, as a crash would: the liveness key
    /// expires after the TTL and the master reports `Suspect`. For tests and for handing a
    /// name over to a new process.
    pub fn abandon(self) {
        self.task.abort();
    }
}

/// A fresh incarnation for this process: random enough that two starts never collide.
pub(crate) fn random_incarnation() -> Incarnation {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    Incarnation(hasher.finish())
}
