//! A TCP proxy in front of etcd that a test (or the demo) can cut and heal: a network
//! partition between one client and etcd, without touching etcd or the other clients.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let proxy = muster_testkit::proxy::Proxy::start("127.0.0.1:2379").await?;
//! let endpoint = proxy.endpoint(); // give this to one client
//! proxy.cut();  // every connection through it is closed, new ones are refused
//! proxy.heal(); // connections go through again
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP proxy on 127.0.0.1. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    local: SocketAddr,
    /// `true` while cut; every connection task watches it.
    cut: Arc<watch::Sender<bool>>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`, or an `http://host:port` URL) on a free
    /// local port.
    pub async fn start(upstream: &str) -> std::io::Result<Proxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let cut = Arc::new(watch::channel(false).0);
        let task = tokio::spawn(accept_loop(listener, upstream, cut.clone()));
        Ok(Proxy { local, cut, task })
    }

    /// The endpoint to give a client, as an `http://` URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.local)
    }

    /// Cuts the link: closes every open connection and refuses new ones until healed.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Heals the link: new connections go through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Closes every connection task too.
        self.cut.send_replace(true);
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, cut: Arc<watch::Sender<bool>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *cut.borrow() {
            drop(client);
            continue;
        }
        let mut cut_rx = cut.subscribe();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = copy_bidirectional(&mut client, &mut server) => {}
                _ = cut_rx.wait_for(|cut| *cut) => {}
            }
        });
    }
}
