//! [`WorkerGroup`]: many members of one process on one lease.
//!
//! A [`Worker`](crate::Worker) owns a lease per member. A process that hosts thousands of
//! members (job slots, shards) would cost etcd thousands of leases to renew, and one etcd
//! node carries only some 10–20k before renewals fall behind (DESIGN.md). A group grants
//! **one** lease, renews it with one keep-alive, and binds every member's liveness key to
//! it: the two-key contract is unchanged, and when the process dies all its members turn
//! `Suspect` in one revision (etcd deletes a lease's keys together).
//!
//! Members are still added, updated, drained and removed one by one, each with its own
//! guarded transaction. Their liveness values say `"shared": true`, so an eviction leaves the
//! lease (and the siblings on it) alone; the group watches `{prefix}evicted/` instead and
//! stops announcing an evicted member at once ([`MemberStatus::Evicted`]).
//!
//! One loop owns the state, as in the worker: commands, renewals, re-registration after a
//! lost lease and the eviction watch never interleave half-way. A member's leave (in
//! [`WorkerGroup::remove`] and [`WorkerGroup::leave`]) is retried as a worker's is
//! (`retry::LeaveRetry`: for up to a TTL, backed off).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use muster_core::{
    Backoff, EventKind, Incarnation, KeyKind, Keyspace, LeaseId, MemberInfo, Record, Revision,
    Store, WatchStream,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{OnDuplicate, WorkerConfig};
use crate::error::Error;
use crate::register::{call, register, Refused, Registered};
use crate::retry::{self, could_not_leave, Leave, LeaveRetry};
use crate::status::Status;

/// How many registrations (or leaves) a group has in flight at once: enough to keep a
/// store busy, few enough not to bury a renewal behind them.
const IN_FLIGHT: usize = 64;

/// How many members one registration pass sends before the group's task turns back to its
/// lease and its commands. Without a bound, adding 10,000 members while etcd was busy with
/// nine other groups held the task past the lease's TTL: the lease expired unrenewed
/// mid-batch and every member had to register again (seen at 100,000 members in 10 groups).
const REGISTER_CHUNK: usize = 1024;

/// One member of a [`WorkerGroup`], as [`WorkerGroup::members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberStatus {
    /// Registering: being added, or registering again on a new lease after the group's
    /// lease was lost.
    Registering,
    /// Registered on the group's lease, at this revision.
    Registered {
        /// The revision of the registration.
        revision: Revision,
    },
    /// The name is held by another live process; the group registers the member once that
    /// process's liveness key is gone ([`OnDuplicate::Wait`]).
    WaitingForName {
        /// The incarnation holding the name.
        holder: Incarnation,
    },
    /// An operator evicted the member; the group no longer announces it (see
    /// [`Status::Evicted`] for what an eviction is).
    Evicted {
        /// The revision of the eviction (the marker's creation).
        revision: Revision,
    },
    /// Registering again was refused for good (the name was taken over by another live
    /// process with [`OnDuplicate::Fail`], or the store rejects the record); the group no
    /// longer announces it.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Many members of one process, on one lease and one keep-alive.
///
/// ```no_run
/// # async fn example(store: impl muster_core::Store) -> Result<(), muster_worker::Error> {
/// use muster_core::MemberInfo;
/// use muster_worker::{WorkerConfig, WorkerGroup};
///
/// let group = WorkerGroup::start(store, WorkerConfig::new("/muster/jobs/")).await?;
/// let slots = (0..1000).map(|i| MemberInfo::new(format!("slot-{i}"), "10.0.0.5:8080"));
/// for result in group.add_many(slots).await {
///     result?;
/// }
/// group.drain("slot-7").await?;
/// group.remove("slot-7").await?;
/// // ... serve ...
/// group.leave().await?; // every member leaves, then the lease is revoked
/// # Ok(()) }
/// ```
///
/// Settings are a [`WorkerConfig`]'s: its TTL is the lease's, its duplicate-name policy
/// applies to every member, its `register_timeout` bounds how long [`add`](Self::add) retries
/// an unreachable store, and its incarnation is the process's, shared by all its members.
///
/// Dropping the group leaves in the background, as [`leave`](Self::leave) does;
/// [`abandon`](Self::abandon) stops as a crash would (every member turns `Suspect` in one
/// revision when the lease expires).
#[derive(Debug)]
pub struct WorkerGroup {
    /// This process's incarnation, every member's.
    incarnation: Incarnation,
    /// Requests to the background task; closing it makes the task leave.
    commands: mpsc::UnboundedSender<Command>,
    /// The group's status: its lease.
    status: watch::Receiver<Status>,
    /// Each member's status.
    members: watch::Receiver<BTreeMap<String, MemberStatus>>,
    /// The background task, aborted by `abandon`.
    task: JoinHandle<()>,
}

type Reply = oneshot::Sender<Result<(), Error>>;

/// A request from the handle.
#[derive(Debug)]
enum Command {
    /// Register new members.
    Add(Vec<(MemberInfo, Reply)>),
    /// Replace one member's metadata.
    Update(MemberInfo, Reply),
    /// Mark one member draining.
    Drain(String, Reply),
    /// One member leaves.
    Remove(String, Reply),
    /// Every member leaves, and the group stops.
    Leave(Reply),
}

impl WorkerGroup {
    /// Grants the group's lease (retrying an unreachable store for up to
    /// `config.register_timeout`) and starts keeping it alive. Members come with
    /// [`add`](Self::add). Fails at once on an invalid prefix or TTL
    /// ([`WorkerConfig::validate`]).
    pub async fn start<S: Store>(store: S, config: WorkerConfig) -> Result<Self, Error> {
        let keyspace = Keyspace::new(config.prefix.clone()).map_err(Error::Invalid)?;
        config.validate()?;
        let incarnation = config
            .incarnation
            .unwrap_or_else(crate::worker::random_incarnation);
        let (status_tx, status) = watch::channel(Status::Registering);
        let (members_tx, members) = watch::channel(BTreeMap::new());
        let mut core = Core {
            store: Arc::new(store),
            keyspace,
            backoff: Backoff::new(config.retry_initial, config.retry_max(), incarnation.0),
            config,
            incarnation,
            status: status_tx,
            members: members_tx,
            lease: None,
            infos: BTreeMap::new(),
            unregistered: BTreeMap::new(),
            dirty: Vec::new(),
            failing_since: None,
            next: Instant::now(),
            register_from: None,
            evictions_from: 0,
        };
        core.start().await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(core.run(rx));
        Ok(Self {
            incarnation,
            commands,
            status,
            members,
            task,
        })
    }

    /// This process's incarnation (every member's).
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// The group's status: its lease (`Registered`, `Reregistered` after a lost lease was
    /// replaced, `Reconnecting` while the store is unreachable, `Left`). The revision in
    /// `Registered`/`Reregistered` is the group's last registration (0 before any).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Every member the group holds or held, with its status; `changed()` wakes on every
    /// change. A removed member is gone from it; an evicted or failed one stays, so the
    /// application can see why.
    pub fn members(&self) -> watch::Receiver<BTreeMap<String, MemberStatus>> {
        self.members.clone()
    }

    /// Adds one member, on the group's lease; returns once it is registered (or, with
    /// [`OnDuplicate::Wait`], waiting for its name: see [`members`](Self::members)). Fails,
    /// writing nothing, on invalid metadata ([`MemberInfo::validate`]) or a name already in
    /// the group ([`Error::AlreadyInGroup`]); with [`Error::DuplicateName`] when another live
    /// process holds the name (and the policy is to fail); with the store's error when it
    /// stayed unreachable for `register_timeout`.
    pub async fn add(&self, info: MemberInfo) -> Result<(), Error> {
        let mut results = self.add_many([info]).await;
        results.pop().unwrap_or(Err(Error::Stopped))
    }

    /// Adds many members at once, registering up to 64 concurrently; one result per member,
    /// in order, each as [`add`](Self::add)'s. Registration goes in passes of 1,024 members
    /// with the lease renewed between them, so a large batch to a busy store never holds
    /// the lease past its TTL; members waiting their turn while the store answers are not
    /// refused by `register_timeout`, which counts only while the store does not answer.
    pub async fn add_many(
        &self,
        infos: impl IntoIterator<Item = MemberInfo>,
    ) -> Vec<Result<(), Error>> {
        let mut batch = Vec::new();
        let mut replies = Vec::new();
        for info in infos {
            let (tx, rx) = oneshot::channel();
            batch.push((info, tx));
            replies.push(rx);
        }
        if self.commands.send(Command::Add(batch)).is_err() {
            return replies.iter().map(|_| Err(Error::Stopped)).collect();
        }
        let mut results = Vec::with_capacity(replies.len());
        for rx in replies {
            results.push(rx.await.unwrap_or(Err(Error::Stopped)));
        }
        results
    }

    /// Replaces one member's metadata (found by its name), as
    /// [`Worker::update`](crate::Worker::update) does: checked first, written only while the
    /// member's liveness key is still on the group's lease, kept and written again when the
    /// store is unreachable. [`Error::NotInGroup`] for a name the group does not hold.
    pub async fn update(&self, info: MemberInfo) -> Result<(), Error> {
        info.validate().map_err(Error::Invalid)?;
        self.ask(|tx| Command::Update(info, tx)).await
    }

    /// Marks one member draining, as [`Worker::drain`](crate::Worker::drain) does.
    pub async fn drain(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.ask(|tx| Command::Drain(name, tx)).await
    }

    /// One member leaves: both its keys are deleted in one transaction (masters report
    /// `Left`); the lease and the other members stay. A failed attempt is retried as
    /// [`Worker::leave`](crate::Worker::leave) retries, for up to a TTL, backed off (the
    /// group keeps renewing its lease meanwhile; other commands wait). If it still fails,
    /// the store's error is returned and the member stays in the group, announced (call
    /// again).
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.ask(|tx| Command::Remove(name, tx)).await
    }

    /// Every member leaves (each its own transaction: masters report `Left` for each), then
    /// the lease is revoked and the group stops. A member's failed attempt is retried as
    /// [`Worker::leave`](crate::Worker::leave) retries: backed off, until a TTL after the
    /// group's leave started. A member whose leave still failed goes with the lease
    /// (`Suspect`, then `Failed` when a master reaps it) and stays in
    /// [`members`](Self::members) as [`MemberStatus::Failed`], saying so; the first such
    /// error is returned.
    pub async fn leave(self) -> Result<(), Error> {
        self.ask(Command::Leave).await
    }

    /// Stops renewing the lease without leaving, as a crash would: when the lease expires
    /// every member turns `Suspect`, in one revision.
    pub fn abandon(self) {
        self.task.abort();
    }

    async fn ask(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

/// A member not registered on the current lease, and who waits to hear of it.
struct Unregistered {
    /// The `add` call to answer (`None` once answered, or for a re-registration).
    reply: Option<Reply>,
    /// When an `add` gives up on an unreachable store.
    deadline: Instant,
}

/// The state the background task owns.
struct Core<S> {
    store: Arc<S>,
    keyspace: Keyspace,
    config: WorkerConfig,
    incarnation: Incarnation,
    status: watch::Sender<Status>,
    members: watch::Sender<BTreeMap<String, MemberStatus>>,
    backoff: Backoff,
    /// The group's lease; `None` when it must be granted (again).
    lease: Option<LeaseId>,
    /// Every member the group announces, with its current metadata.
    infos: BTreeMap<String, MemberInfo>,
    /// The members of `infos` not registered on `lease` (yet, or since it was lost).
    unregistered: BTreeMap<String, Unregistered>,
    /// Members whose new metadata could not be written yet.
    dirty: Vec<String>,
    /// When the current streak of failures started.
    failing_since: Option<std::time::Instant>,
    /// When the loop next renews the lease or retries.
    next: Instant,
    /// Where the registration pass under way goes on (the first name not yet tried), if it
    /// stopped at [`REGISTER_CHUNK`] members; `None` between passes.
    register_from: Option<String>,
    /// The revision the eviction watch resumes from.
    evictions_from: Revision,
}

impl<S: Store> Core<S> {
    /// Grants the first lease and notes where the eviction watch starts.
    async fn start(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.register_timeout;
        loop {
            let error = match self.grant().await {
                Ok(()) => {
                    self.backoff.reset();
                    self.failing_since = None;
                    self.set_status(Status::Registered {
                        lease: self.lease.unwrap_or_default(),
                        revision: 0,
                    });
                    return Ok(());
                }
                Err(Refused::Transient(error)) => error,
                Err(Refused::Fatal(error)) => {
                    self.set_status(Status::Failed {
                        error: error.to_string(),
                    });
                    return Err(error);
                }
                Err(Refused::Duplicate(_) | Refused::Evicted(_)) => {
                    unreachable!("granting a lease refuses no name")
                }
            };
            let delay = self.backoff.next_delay();
            if Instant::now() + delay > deadline {
                self.set_status(Status::Failed {
                    error: error.to_string(),
                });
                return Err(error);
            }
            self.note_failure(&error);
            tokio::time::sleep(delay).await;
        }
    }

    /// Grants a lease; the first time, also reads where the eviction watch starts.
    async fn grant(&mut self) -> Result<(), Refused> {
        if self.evictions_from == 0 {
            let status = call("reading the store's revision", self.store.status()).await?;
            self.evictions_from = status.revision + 1;
        }
        let lease = call(
            "granting the group's lease",
            self.store.grant(self.config.ttl),
        )
        .await?;
        self.lease = Some(lease.id);
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.next = Instant::now() + self.config.keep_alive_interval();
        let mut evictions: Option<WatchStream> = None;
        // Whether to (re)open the eviction watch when it is not open: at once after it
        // broke, after the next tick when opening it failed. Never by sleeping here:
        // commands are served meanwhile.
        let mut watch_due = true;
        loop {
            if evictions.is_none() && watch_due {
                evictions = self.watch_evictions().await;
                watch_due = false;
            }
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
                    Some(Command::Add(batch)) => self.add(batch).await,
                    Some(Command::Update(info, reply)) => {
                        let _ = reply.send(self.update(info).await);
                    }
                    Some(Command::Drain(name, reply)) => {
                        let result = match self.infos.get(&name) {
                            Some(info) => self.update(info.clone().draining(true)).await,
                            None => Err(self.not_in_group(name)),
                        };
                        let _ = reply.send(result);
                    }
                    Some(Command::Remove(name, reply)) => {
                        let _ = reply.send(self.remove(name).await);
                    }
                },
                batch = next_batch(&mut evictions) => match batch {
                    Some(Ok(batch)) => {
                        for event in batch.events {
                            self.evictions_from = self.evictions_from.max(event.kv.mod_revision + 1);
                            if event.kind == EventKind::Put {
                                self.marker_seen(&event.kv.key, event.kv.create_revision);
                            }
                        }
                    }
                    Some(Err(muster_core::Error::Compacted { .. })) => {
                        evictions = None;
                        watch_due = true;
                        self.relist_evictions().await;
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "the group's eviction watch broke; watching again");
                        evictions = None;
                        watch_due = true;
                    }
                    None => {
                        evictions = None;
                        watch_due = true;
                    }
                },
                _ = tokio::time::sleep_until(self.next) => {
                    self.tick().await;
                    watch_due = true;
                }
            }
        }
    }

    /// Opens the watch on `{prefix}evicted/` from where it stopped; `None` when the store
    /// refuses (the loop tries again after its next tick, serving commands meanwhile).
    async fn watch_evictions(&mut self) -> Option<WatchStream> {
        let prefix = format!("{}{}", self.keyspace.prefix(), KeyKind::Evicted.dir());
        match self.store.watch(&prefix, self.evictions_from).await {
            Ok(stream) => Some(stream),
            Err(muster_core::Error::Compacted { .. }) => {
                self.relist_evictions().await;
                None
            }
            Err(error) => {
                tracing::debug!(%error, "watching the group's eviction markers failed");
                None
            }
        }
    }

    /// After a compaction: reads every marker instead of the events it missed.
    async fn relist_evictions(&mut self) {
        let prefix = format!("{}{}", self.keyspace.prefix(), KeyKind::Evicted.dir());
        match self.store.list(&prefix).await {
            Ok(listing) => {
                self.evictions_from = listing.revision + 1;
                for kv in listing.kvs {
                    self.marker_seen(&kv.key, kv.create_revision);
                }
            }
            Err(error) => tracing::debug!(%error, "listing the group's eviction markers failed"),
        }
    }

    /// An eviction marker at `key`: if it names one of our members with our incarnation,
    /// that member is evicted.
    fn marker_seen(&mut self, key: &str, revision: Revision) {
        let Some((name, incarnation)) = self.keyspace.parse_eviction(key) else {
            return;
        };
        if incarnation != self.incarnation || !self.infos.contains_key(name) {
            return;
        }
        let name = name.to_owned();
        tracing::warn!(member = %name, revision, "evicted by an operator; no longer announced");
        let error = Error::Evicted {
            name: name.clone(),
            incarnation: self.incarnation,
            revision,
        };
        self.drop_member(&name, MemberStatus::Evicted { revision }, error);
    }

    /// Stops announcing `name`, answering its pending `add` with `error`.
    fn drop_member(&mut self, name: &str, status: MemberStatus, error: Error) {
        self.infos.remove(name);
        self.dirty.retain(|n| n != name);
        if let Some(Unregistered {
            reply: Some(reply), ..
        }) = self.unregistered.remove(name)
        {
            let _ = reply.send(Err(error));
        }
        self.set_member(name, status);
    }

    /// Renews the lease (granting a new one and registering every member again if it was
    /// lost), retries what is unregistered or unwritten.
    async fn tick(&mut self) {
        self.next = Instant::now() + self.config.keep_alive_interval();
        if self.lease.is_none() {
            match self.grant().await {
                Ok(()) => self.lease_replaced(),
                Err(Refused::Transient(error) | Refused::Fatal(error)) => {
                    return self.retry_later(&error)
                }
                Err(_) => return,
            }
        }
        let Some(lease) = self.lease else { return };
        if !self.unregistered.is_empty() {
            self.register_unregistered().await;
            self.expire_adds();
        }
        for name in std::mem::take(&mut self.dirty) {
            if let Some(info) = self.infos.get(&name).cloned() {
                let _ = self.write_record(info).await;
            }
        }
        let within = self.config.renew_timeout();
        match self.store.keep_alive(lease, within).await {
            Ok(_) => {
                if self.failing_since.take().is_some() {
                    self.set_status(Status::Registered {
                        lease,
                        revision: self.last_revision(),
                    });
                }
                if self.register_from.is_some() {
                    // A registration pass under way: its next chunk at once.
                    self.next = Instant::now();
                } else if self.unregistered.is_empty() {
                    self.backoff.reset();
                } else {
                    self.next = Instant::now() + self.backoff.next_delay();
                }
            }
            Err(muster_core::Error::LeaseNotFound { .. }) => {
                tracing::info!(
                    lease,
                    "the group's lease was lost; registering every member again"
                );
                self.lease = None;
                self.next = Instant::now();
            }
            Err(source) => self.retry_later(&Error::Store {
                during: "renewing the group's lease",
                source,
            }),
        }
    }

    /// A new lease: every member must register on it.
    fn lease_replaced(&mut self) {
        let deadline = Instant::now() + self.config.register_timeout;
        let names: Vec<String> = self.infos.keys().cloned().collect();
        for name in names {
            self.unregistered
                .entry(name.clone())
                .or_insert(Unregistered {
                    reply: None,
                    deadline,
                });
            self.set_member(&name, MemberStatus::Registering);
        }
    }

    /// Registers what is unregistered on the current lease, [`IN_FLIGHT`] at a time.
    async fn register_unregistered(&mut self) {
        let Some(lease) = self.lease else { return };
        // One chunk of the pass, from where the last one stopped; the rest at once after the
        // lease has been renewed (see `tick`), or in the next pass.
        let from = self.register_from.take();
        let mut names = self
            .unregistered
            .keys()
            .filter(|name| from.as_deref().map_or(true, |from| name.as_str() >= from));
        let records: Vec<Record> = names
            .by_ref()
            .take(REGISTER_CHUNK)
            .filter_map(|name| self.infos.get(name))
            .map(|info| Record {
                info: info.clone(),
                incarnation: self.incarnation,
            })
            .collect();
        self.register_from = names.next().cloned();
        let (store, keyspace) = (&*self.store, &self.keyspace);
        let results: Vec<(String, Result<Registered, Refused>)> = futures::stream::iter(records)
            .map(|record| async move {
                let result = register(store, keyspace, &record, lease, true).await;
                (record.info.name, result)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut registered_any = false;
        for (name, result) in results {
            match result {
                Ok(Registered::Now(revision)) => {
                    registered_any = true;
                    self.registered(&name, revision);
                }
                Ok(Registered::Already {
                    lease: held,
                    revision,
                }) if held == lease => self.registered(&name, revision),
                // Our liveness key on an earlier lease of ours, about to expire: wait.
                Ok(Registered::Already { .. }) => {}
                Err(Refused::Duplicate(holder)) => self.duplicate(&name, holder),
                Err(Refused::Evicted(revision)) => {
                    let error = Error::Evicted {
                        name: name.clone(),
                        incarnation: self.incarnation,
                        revision,
                    };
                    self.drop_member(&name, MemberStatus::Evicted { revision }, error);
                }
                Err(Refused::Transient(Error::Store {
                    source: muster_core::Error::LeaseNotFound { .. },
                    ..
                })) => {
                    // The group's lease is gone: the next tick grants another.
                    self.lease = None;
                    self.next = Instant::now();
                }
                Err(Refused::Transient(error)) => self.note_failure(&error),
                Err(Refused::Fatal(error)) => {
                    let status = MemberStatus::Failed {
                        error: error.to_string(),
                    };
                    self.drop_member(&name, status, error);
                }
            }
        }
        if registered_any && self.unregistered.is_empty() && self.failing_since.is_some() {
            self.failing_since = None;
            self.set_status(Status::Reregistered {
                lease,
                revision: self.last_revision(),
            });
        }
    }

    fn registered(&mut self, name: &str, revision: Revision) {
        if let Some(Unregistered {
            reply: Some(reply), ..
        }) = self.unregistered.remove(name)
        {
            let _ = reply.send(Ok(()));
        }
        self.set_member(name, MemberStatus::Registered { revision });
    }

    fn duplicate(&mut self, name: &str, holder: Incarnation) {
        let error = Error::DuplicateName {
            name: name.to_owned(),
            holder,
        };
        if self.config.on_duplicate == OnDuplicate::Fail {
            let status = MemberStatus::Failed {
                error: error.to_string(),
            };
            return self.drop_member(name, status, error);
        }
        // Waiting: answer the `add` now, keep trying at every tick.
        if let Some(entry) = self.unregistered.get_mut(name) {
            // Answered, it no longer expires (`expire_adds`): it waits as long as it takes.
            if let Some(reply) = entry.reply.take() {
                let _ = reply.send(Ok(()));
            }
        }
        self.set_member(name, MemberStatus::WaitingForName { holder });
    }

    /// Answers and drops every `add` whose `register_timeout` ran out on an unreachable
    /// store.
    fn expire_adds(&mut self) {
        // Members still waiting their turn in a long pass to a store that answers are not
        // refused: only a failure streak (a store that does not answer) expires adds.
        if self.failing_since.is_none() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<String> = self
            .unregistered
            .iter()
            .filter(|(_, u)| u.reply.is_some() && u.deadline <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            let error = Error::Store {
                during: "registering",
                source: muster_core::Error::Unavailable {
                    backend: "muster",
                    message: format!(
                        "the store stayed unreachable for the register timeout ({:?})",
                        self.config.register_timeout
                    ),
                },
            };
            self.infos.remove(&name);
            self.unregistered
                .remove(&name)
                .and_then(|u| u.reply)
                .map(|r| r.send(Err(error)));
            self.members.send_modify(|m| {
                m.remove(&name);
            });
        }
    }

    async fn add(&mut self, batch: Vec<(MemberInfo, Reply)>) {
        let deadline = Instant::now() + self.config.register_timeout;
        for (info, reply) in batch {
            if let Err(error) = info.validate() {
                let _ = reply.send(Err(Error::Invalid(error)));
                continue;
            }
            if self.infos.contains_key(&info.name) {
                let _ = reply.send(Err(Error::AlreadyInGroup { name: info.name }));
                continue;
            }
            let name = info.name.clone();
            self.infos.insert(name.clone(), info);
            self.unregistered.insert(
                name.clone(),
                Unregistered {
                    reply: Some(reply),
                    deadline,
                },
            );
            self.set_member(&name, MemberStatus::Registering);
        }
        self.register_unregistered().await;
        if self.register_from.is_some() {
            // More to register: the next chunk after the lease's renewal, at once.
            self.next = Instant::now();
        } else if !self.unregistered.is_empty() {
            // Unreachable, or waiting for names: retry soon.
            self.next = self.next.min(Instant::now() + self.backoff.next_delay());
        }
    }

    async fn update(&mut self, mut info: MemberInfo) -> Result<(), Error> {
        let Some(old) = self.infos.get(&info.name) else {
            return Err(self.not_in_group(info.name));
        };
        info.draining |= old.draining;
        self.infos.insert(info.name.clone(), info.clone());
        if self.unregistered.contains_key(&info.name) {
            // Registering writes the new metadata.
            return Ok(());
        }
        self.write_record(info).await
    }

    /// Writes a member's record, guarded by its liveness key still being on our lease.
    async fn write_record(&mut self, info: MemberInfo) -> Result<(), Error> {
        let Some(lease) = self.lease else {
            return Ok(());
        };
        let name = info.name.clone();
        let record = Record {
            info,
            incarnation: self.incarnation,
        };
        let txn = self.keyspace.update_txn(&record, lease);
        match self.store.txn(txn).await {
            Ok(outcome) if outcome.succeeded => Ok(()),
            Ok(_) => {
                // Its liveness key is gone (evicted, or deleted by hand): register it again,
                // which the eviction marker refuses if it was evicted.
                self.unregistered.insert(
                    name.clone(),
                    Unregistered {
                        reply: None,
                        deadline: Instant::now() + self.config.register_timeout,
                    },
                );
                self.set_member(&name, MemberStatus::Registering);
                self.next = Instant::now();
                Ok(())
            }
            Err(source) => {
                if !self.dirty.contains(&name) {
                    self.dirty.push(name);
                }
                Err(Error::Store {
                    during:
                        "writing the updated record (kept; the group writes it again automatically)",
                    source,
                })
            }
        }
    }

    async fn remove(&mut self, name: String) -> Result<(), Error> {
        if !self.infos.contains_key(&name) {
            return Err(self.not_in_group(name));
        }
        let retry = LeaveRetry::starting_now(&self.config);
        let backoff = self.leave_backoff(0);
        let mut removal = Removal {
            core: self,
            name: name.clone(),
            backoff,
        };
        retry.run(&mut removal).await?;
        self.infos.remove(&name);
        self.dirty.retain(|n| *n != name);
        if let Some(Unregistered {
            reply: Some(reply), ..
        }) = self.unregistered.remove(&name)
        {
            let _ = reply.send(Err(Error::Stopped));
        }
        self.members.send_modify(|m| {
            m.remove(&name);
        });
        Ok(())
    }

    /// Every member leaves, [`IN_FLIGHT`] at a time, each retried on its own backoff until
    /// one deadline (a TTL from now); then the lease is revoked.
    async fn leave(&mut self) -> Result<(), Error> {
        let retry = LeaveRetry::starting_now(&self.config);
        let names: Vec<(String, Backoff)> = (self.infos.keys().zip(0..))
            .map(|(name, i)| (name.clone(), self.leave_backoff(i)))
            .collect();
        let (store, keyspace, lease) = (&*self.store, &self.keyspace, self.lease);
        // Set when a member's leave failed for good, which is only past the deadline: the
        // members not started by then are not tried (on a hung store each attempt would
        // take a request timeout, [`IN_FLIGHT`] at a time).
        let gave_up = AtomicBool::new(false);
        let gave_up = &gave_up;
        let failed: Vec<(String, Error)> = futures::stream::iter(names)
            .map(|(name, backoff)| async move {
                if gave_up.load(Ordering::Relaxed) {
                    return (name, Err(not_tried()));
                }
                let mut leave = MemberLeave {
                    store,
                    keyspace,
                    name,
                    lease,
                    backoff,
                };
                let result = retry.run(&mut leave).await;
                if result.is_err() {
                    gave_up.store(true, Ordering::Relaxed);
                }
                (leave.name, result)
            })
            .buffer_unordered(IN_FLIGHT)
            .filter_map(|(name, result)| std::future::ready(result.err().map(|e| (name, e))))
            .collect()
            .await;
        if let Some(lease) = self.lease.take() {
            if let Err(error) = self.store.revoke(lease).await {
                tracing::debug!(%error, lease, "revoking the group's lease failed; it expires after its TTL");
            }
        }
        for (_, unregistered) in std::mem::take(&mut self.unregistered) {
            if let Some(reply) = unregistered.reply {
                let _ = reply.send(Err(Error::Stopped));
            }
        }
        self.infos.clear();
        self.members.send_modify(|members| {
            members.clear();
            for (name, error) in &failed {
                tracing::warn!(member = %name, %error, "could not leave");
                let error = could_not_leave(error);
                members.insert(name.clone(), MemberStatus::Failed { error });
            }
        });
        self.set_status(Status::Left);
        match failed.into_iter().next() {
            None => Ok(()),
            Some((_, error)) => Err(error),
        }
    }

    /// The backoff of one member's leave (the `i`th of the group's leave), with its own
    /// jitter so that members retrying together spread out.
    fn leave_backoff(&self, i: u64) -> Backoff {
        let seed = self.incarnation.0 ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Backoff::new(self.config.retry_initial, self.config.retry_max(), seed)
    }

    fn not_in_group(&self, name: String) -> Error {
        Error::NotInGroup {
            name,
            prefix: self.keyspace.prefix().to_owned(),
        }
    }

    fn last_revision(&self) -> Revision {
        self.members
            .borrow()
            .values()
            .filter_map(|s| match s {
                MemberStatus::Registered { revision } => Some(*revision),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn retry_later(&mut self, error: &Error) {
        self.note_failure(error);
        self.next = Instant::now() + self.backoff.next_delay();
    }

    fn note_failure(&mut self, error: &Error) {
        tracing::debug!(%error, "store call failed; retrying");
        retry::note_failure(&mut self.failing_since, &self.backoff, &self.status, error);
    }

    fn set_status(&self, status: Status) {
        self.status.send_replace(status);
    }

    fn set_member(&self, name: &str, status: MemberStatus) {
        self.members.send_modify(|m| {
            m.insert(name.to_owned(), status);
        });
    }
}

/// One member leaves: both keys, guarded by our lease; if its liveness key is not on our
/// lease any more, its record only, guarded by no process holding the name.
async fn leave_one<S: Store>(
    store: &S,
    keyspace: &Keyspace,
    name: &str,
    lease: Option<LeaseId>,
) -> Result<(), Error> {
    let store_error = |source| Error::Store {
        during: "leaving",
        source,
    };
    if let Some(lease) = lease {
        let outcome = store
            .txn(keyspace.leave_txn(name, lease))
            .await
            .map_err(store_error)?;
        if outcome.succeeded {
            return Ok(());
        }
    }
    store
        .txn(keyspace.leave_without_lease_txn(name))
        .await
        .map_err(store_error)?;
    Ok(())
}

/// The error of a member the group's leave did not try: another's failed for a TTL.
fn not_tried() -> Error {
    Error::Store {
        during: "leaving",
        source: muster_core::Error::Unavailable {
            backend: "muster",
            message: "not tried: the store failed the group's other leaves for a TTL".into(),
        },
    }
}

/// One member's leave in the group's leave, for [`LeaveRetry`]: members leave concurrently,
/// each on its own backoff; the group stops renewing its lease meanwhile, as a leaving
/// worker does.
struct MemberLeave<'a, S> {
    store: &'a S,
    keyspace: &'a Keyspace,
    name: String,
    lease: Option<LeaseId>,
    backoff: Backoff,
}

impl<S: Store> Leave for MemberLeave<'_, S> {
    fn attempt(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(leave_one(self.store, self.keyspace, &self.name, self.lease))
    }

    fn failed(&mut self, error: &Error) {
        tracing::debug!(member = %self.name, %error, "leaving failed; retrying");
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}

/// One member's leave in [`WorkerGroup::remove`], for [`LeaveRetry`]: the group goes on
/// between attempts (a tick due during a wait runs), so a retried removal never holds up
/// the renewal of the lease its siblings are on.
struct Removal<'a, S> {
    core: &'a mut Core<S>,
    name: String,
    backoff: Backoff,
}

impl<S: Store> Leave for Removal<'_, S> {
    fn attempt(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        let core = &*self.core;
        Box::pin(leave_one(
            &*core.store,
            &core.keyspace,
            &self.name,
            core.lease,
        ))
    }

    fn failed(&mut self, error: &Error) {
        tracing::debug!(member = %self.name, %error, "removing failed; retrying");
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }

    fn wait(&mut self, delay: Duration) -> BoxFuture<'_, ()> {
        let until = Instant::now() + delay;
        Box::pin(async move {
            while self.core.next < until {
                tokio::time::sleep_until(self.core.next).await;
                self.core.tick().await;
            }
            tokio::time::sleep_until(until).await;
        })
    }
}

async fn next_batch(
    stream: &mut Option<WatchStream>,
) -> Option<muster_core::Result<muster_core::WatchBatch>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}
