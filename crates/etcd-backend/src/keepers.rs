//! Lease renewals: a few keep-alive streams per store, each carrying many leases' requests.
//!
//! etcd renews leases only over the bidirectional `LeaseKeepAlive` gRPC stream, and one
//! stream may carry renewals for any number of leases: each answer names the lease it is
//! for, and etcd answers the requests of one stream in order. So a store does not open a
//! stream per lease: it has up to [`EtcdConfig::keep_alive_streams`] (256) of them, shared by
//! all its clones, and renews each lease on the stream its id picks. Ten thousand workers in
//! one process sharing one [`EtcdStore`] cost etcd 256 streams, not 10,000, and no burst of
//! 10,000 stream set-ups when they all renew for the first time; a process with one lease
//! opens one stream. Why not one stream: etcd serves one stream's renewals one at a time,
//! and a renewal can wait inside etcd (on its lease lock while leases are granted or
//! revoked), so under a burst of registrations a single stream falls behind (measured in
//! BENCHMARKS.md, section 4).
//!
//! A background task per stream (its *driver*, spawned on first use, ending when the store's
//! last clone is dropped) owns it. [`Store::keep_alive`] sends it a request with a one-shot
//! reply channel and waits, as long as its caller said (`within`), for the answer routed
//! back by lease id.
//! Answers for one lease come back in the order of its requests, so each goes to the
//! oldest waiter of that lease; a caller that gave up (its timeout or its task cancelled)
//! simply does not take its answer, and later calls are not confused by it.
//!
//! The driver opens the stream when it has something to send, and drops it when it breaks
//! (etcd restarted, connection lost): the requests in flight fail as
//! [`Error::Unavailable`] and the next one opens a new stream. An answer with TTL 0 means
//! the lease is gone ([`Error::LeaseNotFound`]); the stream stays open for the others.
//!
//! [`EtcdStore`]: crate::EtcdStore
//! [`EtcdConfig::keep_alive_streams`]: crate::EtcdConfig::keep_alive_streams
//! [`Store::keep_alive`]: muster_core::Store::keep_alive

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{LeaseClient, LeaseKeepAliveStream, LeaseKeeper};
use muster_core::{Error, LeaseId, Result};
use tokio::sync::{mpsc, oneshot};

use crate::error::{cause, Ctx, ErrorMapper};

/// The store's side of its keep-alive streams: handles on their driver tasks.
pub(crate) struct Keepers {
    /// Where requests go, one slot per stream; a lease always uses the same one. `None`
    /// until that stream's first keep-alive, replaced if its driver ended (its runtime shut
    /// down).
    drivers: Vec<Mutex<Option<mpsc::UnboundedSender<Request>>>>,
    /// Everything the driver needs to open streams and word errors.
    client: LeaseClient,
    errors: ErrorMapper,
    /// How long a stream may take to open.
    timeout: Duration,
}

/// One renewal asked of the driver.
struct Request {
    lease: LeaseId,
    /// The lease's new TTL in seconds, or why there is none.
    reply: oneshot::Sender<Result<i64>>,
}

impl Keepers {
    /// Keepers opening up to `streams` streams through `client`, waiting at most `timeout`
    /// for a stream to open.
    pub(crate) fn new(
        client: LeaseClient,
        errors: ErrorMapper,
        timeout: Duration,
        streams: usize,
    ) -> Self {
        Keepers {
            drivers: (0..streams.max(1)).map(|_| Mutex::new(None)).collect(),
            client,
            errors,
            timeout,
        }
    }

    /// Renews `lease` once, waiting at most `within` for etcd's answer; returns the TTL etcd
    /// reports.
    pub(crate) async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        let ctx = Ctx::new("keep-alive").lease(lease);
        let (reply, answer) = oneshot::channel();
        self.send(Request { lease, reply });
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(Ok(ttl))) => Ok(Duration::from_secs(ttl.unsigned_abs())),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(self.errors.unavailable(
                &ctx,
                "the keep-alive task stopped (is the runtime shutting down?)",
            )),
            Err(_) => Err(self.errors.timeout(&ctx, within)),
        }
    }

    /// Hands `request` to its lease's driver, starting one if there is none (or it ended).
    fn send(&self, request: Request) {
        // etcd hands out lease ids from a counter, so consecutive leases spread evenly.
        let slot = request.lease.unsigned_abs() % self.drivers.len() as u64;
        let mut driver = self.drivers[slot as usize].lock().expect("keepers lock");
        let request = match driver.as_ref() {
            Some(sender) => match sender.send(request) {
                Ok(()) => return,
                Err(mpsc::error::SendError(request)) => request,
            },
            None => request,
        };
        let (sender, requests) = mpsc::unbounded_channel();
        let started = Driver {
            client: self.client.clone(),
            errors: self.errors.clone(),
            timeout: self.timeout,
            requests,
            sender: None,
            answers: None,
            unsent: VecDeque::new(),
            waiting: HashMap::new(),
        };
        tokio::spawn(started.run());
        // The receiver was just created and is owned by the task: this cannot fail.
        let _ = sender.send(request);
        *driver = Some(sender);
    }
}

/// The task owning the stream.
struct Driver {
    client: LeaseClient,
    errors: ErrorMapper,
    timeout: Duration,
    /// Requests from [`Keepers::keep_alive`]; closed when the store is dropped.
    requests: mpsc::UnboundedReceiver<Request>,
    /// The open stream's request side, if a stream is open: etcd-client's keeper, whose lease
    /// id is set before each request (its fields are public with etcd-client's
    /// `pub-response-field` feature).
    sender: Option<LeaseKeeper>,
    /// The open stream's answers.
    answers: Option<LeaseKeepAliveStream>,
    /// Requests not yet sent on a stream, oldest first.
    unsent: VecDeque<Request>,
    /// Requests sent and not yet answered, per lease, oldest first.
    waiting: HashMap<LeaseId, VecDeque<oneshot::Sender<Result<i64>>>>,
}

impl Driver {
    async fn run(mut self) {
        loop {
            if self.sender.is_none() && !self.unsent.is_empty() {
                // Callers that gave up while etcd was unreachable need no stream.
                self.unsent.retain(|request| !request.reply.is_closed());
                if !self.unsent.is_empty() {
                    self.open().await;
                }
                continue;
            }
            // A caller that gave up needs no renewal.
            while self
                .unsent
                .front()
                .is_some_and(|request| request.reply.is_closed())
            {
                self.unsent.pop_front();
            }
            let sending = match (self.unsent.front(), self.sender.as_mut()) {
                (Some(next), Some(keeper)) => {
                    keeper.id = next.lease;
                    true
                }
                _ => false,
            };
            tokio::select! {
                request = self.requests.recv() => match request {
                    Some(request) => self.unsent.push_back(request),
                    // The store is gone; nobody waits for anything.
                    None => return,
                },
                // Cancel-safe: when another branch wins, the request was not sent and stays
                // first in line.
                sent = send(&mut self.sender), if sending => match sent {
                    Ok(()) => {
                        let request = self.unsent.pop_front().expect("something to send");
                        self.waiting.entry(request.lease).or_default().push_back(request.reply);
                    }
                    Err(()) => self.broke("the keep-alive stream closed"),
                },
                answer = next_answer(&mut self.answers) => match answer {
                    Ok(Some((lease, ttl))) => self.answer(lease, ttl),
                    Ok(None) => self.broke("etcd closed the keep-alive stream"),
                    Err(err) => self.broke(&cause(&err)),
                },
            }
        }
    }

    /// Opens a stream for the oldest unsent request. etcd-client renews that lease once while
    /// opening (the answer is not handed out; the request is sent again on the new stream).
    async fn open(&mut self) {
        let lease = self.unsent[0].lease;
        let ctx = Ctx::new("keep-alive").lease(lease);
        let mut client = self.client.clone();
        // The mapped error for this lease, and the bare cause for the others' messages.
        let opened = match tokio::time::timeout(self.timeout, client.keep_alive(lease)).await {
            Ok(Ok((keeper, answers))) => Ok((keeper, answers)),
            Ok(Err(err)) => {
                let detail = cause(&err);
                Err((self.errors.map(&ctx, err), detail))
            }
            Err(_) => Err((
                self.errors.timeout(&ctx, self.timeout),
                format!(
                    "the keep-alive stream did not open within {:?}",
                    self.timeout
                ),
            )),
        };
        match opened {
            Ok((sender, answers)) => {
                self.sender = Some(sender);
                self.answers = Some(answers);
            }
            // Only this lease is gone: the others may open the stream.
            Err((Error::LeaseNotFound { .. }, _)) => {
                let (gone, others) = self
                    .unsent
                    .drain(..)
                    .partition(|request| request.lease == lease);
                self.unsent = others;
                for request in gone {
                    let _ = request.reply.send(Err(Error::LeaseNotFound { lease }));
                }
            }
            // etcd is unreachable: every request waiting to be sent fails alike, rather than
            // each waiting in turn for its own attempt to time out.
            Err((err, detail)) => {
                for request in self.unsent.drain(..) {
                    let ctx = Ctx::new("keep-alive").lease(request.lease);
                    let err = if request.lease == lease {
                        Err(err_again(&err, &self.errors, &ctx, &detail))
                    } else {
                        Err(self.errors.unavailable(&ctx, &detail))
                    };
                    let _ = request.reply.send(err);
                }
                tracing::debug!(lease, error = %detail, "opening the keep-alive stream failed");
            }
        }
    }

    /// Routes an answer to the oldest waiter of its lease.
    fn answer(&mut self, lease: LeaseId, ttl: i64) {
        let Some(waiters) = self.waiting.get_mut(&lease) else {
            // Not asked for on this stream (etcd-client reads the answer to the renewal it
            // makes while opening): nobody to tell.
            return;
        };
        if let Some(waiter) = waiters.pop_front() {
            let result = if ttl > 0 {
                Ok(ttl)
            } else {
                Err(Error::LeaseNotFound { lease })
            };
            // A waiter that gave up does not take its answer.
            let _ = waiter.send(result);
        }
        if waiters.is_empty() {
            self.waiting.remove(&lease);
        }
    }

    /// Drops a broken stream; its unanswered requests fail, unsent ones wait for a new one.
    fn broke(&mut self, detail: &str) {
        tracing::debug!(detail, "keep-alive stream broke");
        self.sender = None;
        self.answers = None;
        for (lease, waiters) in self.waiting.drain() {
            let ctx = Ctx::new("keep-alive").lease(lease);
            for waiter in waiters {
                let _ = waiter.send(Err(self.errors.unavailable(&ctx, detail)));
            }
        }
    }
}

/// Sends one renewal of the keeper's current lease on the open stream; pending forever
/// when there is no stream.
async fn send(keeper: &mut Option<LeaseKeeper>) -> std::result::Result<(), ()> {
    match keeper {
        Some(keeper) => keeper.keep_alive().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// The next answer on the open stream as (lease, TTL); pending forever when there is none.
async fn next_answer(
    answers: &mut Option<LeaseKeepAliveStream>,
) -> std::result::Result<Option<(LeaseId, i64)>, etcd_client::Error> {
    match answers {
        Some(answers) => Ok(answers
            .message()
            .await?
            .map(|answer| (answer.id(), answer.ttl()))),
        None => std::future::pending().await,
    }
}

/// The open error for the lease that tried to open, re-made for one waiter (the core error
/// type is not `Clone`): its kind is kept where it matters to the caller.
fn err_again(err: &Error, errors: &ErrorMapper, ctx: &Ctx, detail: &str) -> Error {
    match err {
        Error::Rejected { .. } => errors.rejected(ctx, detail),
        _ => errors.unavailable(ctx, detail),
    }
}
