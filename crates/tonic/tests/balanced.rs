//! A balanced channel against real parts: tonic servers on loopback, workers and a master
//! on the etcd shared by this test binary (in Docker, from the test kit), tonic's client.
//!
//! The service is the smallest gRPC service there is: `muster.test.Who/Name` answers the
//! name of the server that took the call, so the tests see where each request went. It is
//! written against tonic's server and client APIs with a text codec, no code generation.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use muster_core::{Incarnation, MemberInfo, MemberState};
use muster_master::{Filter, Master, MasterConfig};
use muster_testkit::group::Group;
use muster_testkit::wait::{view_until, within};
use muster_tonic::{balanced_channel, http_endpoint, Follower};
use muster_worker::{Worker, WorkerConfig};
use tokio::sync::{oneshot, watch};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const TTL: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(30);
const PATH: &str = "/muster.test.Who/Name";

/// UTF-8 text as a gRPC message.
#[derive(Debug, Clone, Copy, Default)]
struct Text;

impl Codec for Text {
    type Encode = String;
    type Decode = String;
    type Encoder = Text;
    type Decoder = Text;

    fn encoder(&mut self) -> Text {
        Text
    }

    fn decoder(&mut self) -> Text {
        Text
    }
}

impl Encoder for Text {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Text {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

/// The service: answers its name and counts the calls it took.
#[derive(Clone)]
struct Who {
    name: String,
    calls: Arc<AtomicU64>,
}

impl UnaryService<String> for Who {
    type Response = String;
    type Future = std::future::Ready<Result<Response<String>, Status>>;

    fn call(&mut self, _: Request<String>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(Response::new(self.name.clone())))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Who {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let who = self.clone();
        Box::pin(async move {
            if req.uri().path() != PATH {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            Ok(tonic::server::Grpc::new(Text).unary(who, req).await)
        })
    }
}

impl NamedService for Who {
    const NAME: &'static str = "muster.test.Who";
}

/// One running server.
struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    _stop: oneshot::Sender<()>,
}

async fn serve(name: &str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let who = Who {
        name: name.to_owned(),
        calls: calls.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(who)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .expect("the test server runs");
    });
    Server {
        addr,
        calls,
        _stop: stop,
    }
}

/// One call through the channel: who answered.
async fn who(channel: &Channel) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        grpc.unary(
            Request::new(String::new()),
            http::uri::PathAndQuery::from_static(PATH),
            Text,
        )
        .await
    };
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => panic!("a call through the balanced channel took over {DEADLINE:?}"),
    }
}

/// `n` calls; how many each server answered.
async fn spread(channel: &Channel, n: usize) -> BTreeMap<String, usize> {
    let mut answered = BTreeMap::new();
    for _ in 0..n {
        let name = who(channel).await.expect("every call succeeds");
        *answered.entry(name).or_default() += 1;
    }
    answered
}

/// Waits until the follower has handed exactly `names` to the channel.
async fn handed(follower: &Follower, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    let mut members: watch::Receiver<BTreeSet<String>> = follower.members();
    let last = members.borrow().clone();
    within(
        DEADLINE,
        format_args!("the channel never held exactly {want:?}"),
        move || format!("it held {last:?}"),
        members.wait_for(|m| *m == want),
    )
    .await
    .expect("the follower is running");
}

async fn register(group: &Group, name: &str, addr: &str, incarnation: u64) -> Worker {
    let config = WorkerConfig::new(group.prefix.as_str())
        .ttl(TTL)
        .incarnation(Incarnation(incarnation));
    Worker::register(group.store().await, MemberInfo::new(name, addr), config)
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
}

async fn master(group: &Group) -> Master {
    let master = Master::start(
        group.store().await,
        MasterConfig::new(group.prefix.as_str()),
    )
    .expect("start the master");
    within(
        DEADLINE,
        "the master's first listing",
        String::new,
        master.ready(),
    )
    .await
    .expect("the master runs");
    master
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_every_alive_member_and_none_once_it_is_suspect() {
    let group = Group::new("tonic", "spread");
    let servers = [serve("a").await, serve("b").await, serve("c").await];
    let mut workers = Vec::new();
    for (i, (name, server)) in ["a", "b", "c"].iter().zip(&servers).enumerate() {
        workers.push(register(&group, name, &server.addr.to_string(), i as u64 + 1).await);
    }
    let master = master(&group).await;
    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a", "b", "c"]).await;
    let answered = spread(&channel, 60).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "every member takes calls: {answered:?}"
    );

    // b crashes (its lease lapses) but its server still answers: once the master says
    // suspect, the channel stops sending to it.
    let b = workers.remove(1);
    b.abandon();
    view_until(&master, DEADLINE, "b suspect", |v| {
        v.state_of("b") == Some(MemberState::Suspect)
    })
    .await;
    handed(&follower, &["a", "c"]).await;
    let b_calls = servers[1].calls.load(Ordering::Relaxed);
    let answered = spread(&channel, 60).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["a", "c"],
        "{answered:?}"
    );
    assert_eq!(
        servers[1].calls.load(Ordering::Relaxed),
        b_calls,
        "no call reaches a suspect member"
    );

    // A fourth member is served once it joins; one that leaves takes no more calls.
    let d_server = serve("d").await;
    let _d = register(&group, "d", &d_server.addr.to_string(), 4).await;
    handed(&follower, &["a", "c", "d"]).await;
    let answered = spread(&channel, 60).await;
    assert!(answered.contains_key("d"), "{answered:?}");
    workers.remove(0).leave().await.expect("a leaves");
    handed(&follower, &["c", "d"]).await;
    let answered = spread(&channel, 40).await;
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["c", "d"],
        "{answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_selects_by_label_and_members_without_an_address_are_left_out() {
    let group = Group::new("tonic", "filter");
    let a_server = serve("a").await;
    let b_server = serve("b").await;
    let config = |i| {
        WorkerConfig::new(group.prefix.as_str())
            .ttl(TTL)
            .incarnation(Incarnation(i))
    };
    let _a = Worker::register(
        group.store().await,
        MemberInfo::new("a", a_server.addr.to_string()).label("zone", "z1"),
        config(1),
    )
    .await
    .unwrap();
    let _b = Worker::register(
        group.store().await,
        MemberInfo::new("b", b_server.addr.to_string()).label("zone", "z2"),
        config(2),
    )
    .await
    .unwrap();
    // A batch worker in zone z1 with no address: nothing to connect to.
    let _batch = Worker::register(
        group.store().await,
        MemberInfo::new("batch", "").label("zone", "z1"),
        config(3),
    )
    .await
    .unwrap();
    let master = master(&group).await;
    let (channel, follower) =
        balanced_channel(&master, Filter::alive().label("zone", "z1"), http_endpoint);
    handed(&follower, &["a"]).await;
    let answered = spread(&channel, 20).await;
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["a"], "{answered:?}");

    let error = http_endpoint(&master.member("batch").unwrap()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "member \"batch\" has no address; register it with HOST:PORT to receive requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_ends_when_the_channel_is_dropped_or_the_master_stops() {
    let group = Group::new("tonic", "ends");
    let server = serve("a").await;
    let _a = register(&group, "a", &server.addr.to_string(), 1).await;
    let master = master(&group).await;

    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a"]).await;
    assert_eq!(who(&channel).await.unwrap(), "a");
    let clone = channel.clone();
    drop(channel);
    assert!(!follower.is_finished(), "a clone still uses it");
    drop(clone);
    within(
        DEADLINE,
        "the follower ending after the last channel",
        String::new,
        follower.finished(),
    )
    .await;

    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a"]).await;
    master.shutdown().await;
    within(
        DEADLINE,
        "the follower ending with the master",
        String::new,
        follower.finished(),
    )
    .await;
    // The channel keeps the endpoints it had.
    assert_eq!(who(&channel).await.unwrap(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_member_takes_no_new_calls_while_it_is_still_a_member() {
    let group = Group::new("tonic", "drain");
    let a_server = serve("a").await;
    let b_server = serve("b").await;
    let a = register(&group, "a", &a_server.addr.to_string(), 1).await;
    let _b = register(&group, "b", &b_server.addr.to_string(), 2).await;
    let master = master(&group).await;
    let (channel, follower) = balanced_channel(&master, Filter::alive(), http_endpoint);
    handed(&follower, &["a", "b"]).await;
    assert_eq!(spread(&channel, 40).await.len(), 2);

    a.drain().await.expect("a drains");
    handed(&follower, &["b"]).await;
    let a_calls = a_server.calls.load(Ordering::Relaxed);
    let answered = spread(&channel, 40).await;
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["b"], "{answered:?}");
    assert_eq!(a_server.calls.load(Ordering::Relaxed), a_calls);
    let a_now = master.member("a").expect("a is still a member");
    assert_eq!(a_now.state, MemberState::Alive);
    assert!(a_now.info.draining);
    a.leave().await.expect("a leaves");
}
