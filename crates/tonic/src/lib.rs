//! # muster-tonic
//!
//! A tonic [`Channel`] that always sends to the live members of a muster group:
//! [`balanced_channel`] follows a [`Master`]'s view through
//! [`Master::discover`](muster_master::Master::discover) and hands each change to tonic's
//! balancer (`Channel::balance_channel`), so a member is added when it joins, recovers or
//! restarts, and dropped the moment it turns `suspect`, leaves or fails — before a caller
//! burns retries on a dead endpoint.
//!
//! ```no_run
//! # async fn example(master: muster_master::Master) {
//! use muster_master::Filter;
//!
//! // Every alive member of zone a, at http://{addr}.
//! let (channel, _follower) =
//!     muster_tonic::balanced_channel(&master, Filter::alive().label("zone", "a"), muster_tonic::http_endpoint);
//! // let mut client = MyServiceClient::new(channel); // any tonic client
//! # drop(channel);
//! # }
//! ```
//!
//! Its own crate, so the other muster crates never depend on tonic. A runnable example, with
//! three real gRPC servers, a drain and a redeploy: `cargo run -p muster-tonic --example
//! balanced` (`examples/balanced.rs`; `cargo xtask test` runs it).
//!
//! # Layout
//!
//! - this file: [`balanced_channel`], its [`Follower`], the default endpoint
//!   ([`http_endpoint`]) and [`Error`].
//!
//! # What it does, exactly
//!
//! - The channel starts empty and fills in at the master's first listing; until then a
//!   request waits (bound it with a timeout, as with any tonic channel).
//! - A member is handed to tonic again only when its address or its incarnation changes
//!   (a label update does not reconnect); tonic replaces the old connection once the new
//!   one is ready.
//! - A member whose endpoint cannot be built (no address, an address that is no URI) is
//!   left out, with one warning per such change; it is never guessed at.
//! - The [`Follower`] ends when every clone of the channel is dropped, or when the master
//!   stops. After the master stops the channel keeps its last set of endpoints (tonic's
//!   balancer waits for changes that no longer come): stop the callers before the master.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use futures::StreamExt;
use muster_core::{Incarnation, Member};
use muster_master::{Change, Filter, Master};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::channel::Change as TonicChange;
use tonic::transport::{Channel, Endpoint};

/// How many changes may wait for tonic's balancer before the follower waits for it.
const CHANGES_BUFFERED: usize = 1024;

/// Why a member's endpoint could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The member registered without an address (a batch worker, say): there is nothing
    /// to connect to.
    #[error("member {member:?} has no address; register it with HOST:PORT to receive requests")]
    NoAddress {
        /// The member's name.
        member: String,
    },
    /// The address does not make a URI.
    #[error("member {member:?} has address {addr:?}, which makes no URI ({reason}); register it as HOST:PORT")]
    BadAddress {
        /// The member's name.
        member: String,
        /// Its address as registered.
        addr: String,
        /// What the URI parser said.
        reason: String,
    },
}

/// The default endpoint of a member: `http://{addr}` (plain HTTP/2, as tonic's servers
/// speak without TLS). For TLS, timeouts or other settings, pass a function of your own
/// that starts from this one or from `Endpoint::from_shared`.
///
/// ```
/// use muster_core::{Incarnation, Member, MemberInfo, MemberState};
/// let member = Member {
///     info: MemberInfo::new("api-1", "10.0.0.1:8080").into(),
///     state: MemberState::Alive,
///     incarnation: Incarnation(1),
///     record_revision: 1,
///     since: 1,
///     suspect_since: None,
/// };
/// let endpoint = muster_tonic::http_endpoint(&member).unwrap();
/// assert_eq!(endpoint.uri(), "http://10.0.0.1:8080/");
/// ```
pub fn http_endpoint(member: &Member) -> Result<Endpoint, Error> {
    let addr = &member.info.addr;
    if addr.is_empty() {
        return Err(Error::NoAddress {
            member: member.name().to_owned(),
        });
    }
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| Error::BadAddress {
        member: member.name().to_owned(),
        addr: addr.clone(),
        reason: std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string()),
    })
}

/// A tonic [`Channel`] balanced over the members `filter` selects, kept up to date by a
/// background task (the returned [`Follower`]). `endpoint` builds each member's
/// [`Endpoint`] ([`http_endpoint`] for `http://{addr}`). Must be called inside a tokio
/// runtime. See the crate docs for the exact behaviour.
pub fn balanced_channel<F, E>(master: &Master, filter: Filter, endpoint: F) -> (Channel, Follower)
where
    F: FnMut(&Member) -> Result<Endpoint, E> + Send + 'static,
    E: fmt::Display + 'static,
{
    let (channel, changes) = Channel::balance_channel::<String>(CHANGES_BUFFERED);
    let discover = master.discover(filter);
    let (handed, members) = watch::channel(BTreeSet::new());
    let task = tokio::spawn(follow(discover, changes, endpoint, handed));
    (channel, Follower { task, members })
}

/// The task that keeps a [`balanced_channel`] up to date. Dropping it leaves the task
/// running (the channel keeps following); it ends by itself when every clone of the
/// channel is gone or the master stops.
#[derive(Debug)]
pub struct Follower {
    task: JoinHandle<()>,
    members: watch::Receiver<BTreeSet<String>>,
}

impl Follower {
    /// The names of the members handed to the channel, as of the last change tonic's
    /// balancer accepted: a request sent after a change shows here goes by the new set.
    pub fn members(&self) -> watch::Receiver<BTreeSet<String>> {
        self.members.clone()
    }

    /// Whether it has ended (the channel no longer follows the group).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until it has ended.
    pub async fn finished(self) {
        let _ = self.task.await;
    }

    /// Stops it now: the channel keeps the endpoints it has.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// What a member was handed to tonic as: a change of either means a new connection.
type Given = (String, Incarnation);

async fn follow<F, E>(
    mut discover: muster_master::Discover,
    changes: tokio::sync::mpsc::Sender<TonicChange<String, Endpoint>>,
    mut endpoint: F,
    handed: watch::Sender<BTreeSet<String>>,
) where
    F: FnMut(&Member) -> Result<Endpoint, E>,
    E: fmt::Display,
{
    let mut given: HashMap<String, Given> = HashMap::new();
    loop {
        let change = tokio::select! {
            change = discover.next() => change,
            () = changes.closed() => {
                tracing::debug!("every clone of the balanced channel is gone; stop following");
                return;
            }
        };
        let send = match change {
            None => {
                tracing::debug!("the master stopped; the balanced channel keeps its endpoints");
                return;
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "discovery failed; the balanced channel keeps its endpoints");
                continue;
            }
            Some(Ok(Change::Insert(name, member))) => {
                let key = (member.info.addr.clone(), member.incarnation);
                if given.get(&name) == Some(&key) {
                    continue;
                }
                match endpoint(&member) {
                    Ok(endpoint) => {
                        given.insert(name.clone(), key);
                        TonicChange::Insert(name, endpoint)
                    }
                    Err(error) => {
                        tracing::warn!(member = %name, %error, "leaving a member out of the balanced channel");
                        if given.remove(&name).is_none() {
                            continue;
                        }
                        TonicChange::Remove(name)
                    }
                }
            }
            Some(Ok(Change::Remove(name))) => {
                if given.remove(&name).is_none() {
                    continue;
                }
                TonicChange::Remove(name)
            }
        };
        if changes.send(send).await.is_err() {
            tracing::debug!("every clone of the balanced channel is gone; stop following");
            return;
        }
        handed.send_replace(given.keys().cloned().collect());
    }
}
