//! A real gRPC service for tests and benchmarks of callers: `muster.test.Who/Name` answers
//! the name of the server that took the call, so a test sees where each request went.
//!
//! Written against tonic's server and client APIs with a text codec: no code generation,
//! so no `protoc` and no build script. [`serve`] starts one on loopback; [`who`] calls it
//! through any `Channel` (a balanced one, typically).
//!
//! ```no_run
//! # async fn example() {
//! let server = muster_testkit::grpc::serve("a").await;
//! let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
//!     .unwrap()
//!     .connect_lazy();
//! assert_eq!(muster_testkit::grpc::who(&channel).await.unwrap(), "a");
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut};
use tokio::sync::oneshot;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The one method's path.
pub const PATH: &str = "/muster.test.Who/Name";

/// How long one call may take before [`who`] gives up with `DeadlineExceeded`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// UTF-8 text as a gRPC message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

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

/// One running server; dropping it stops the server (connections in flight are closed).
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many calls it has answered.
    pub calls: Arc<AtomicU64>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    /// How many calls it has answered so far.
    pub fn answered(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Starts a `Who` server named `name` on `127.0.0.1`, on a port of the system's choosing.
pub async fn serve(name: &str) -> Server {
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

/// One call through `channel`: the name of the server that answered. A call that takes
/// longer than [`CALL_TIMEOUT`] fails with `DeadlineExceeded`.
pub async fn who(channel: &Channel) -> Result<String, Status> {
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
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}
