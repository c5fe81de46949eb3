//! How to reach etcd and how long to wait for it.

use std::time::Duration;

/// The one environment variable that names etcd's endpoints (comma-separated), for the
/// library ([`EtcdConfig::from_env`]) and the programs (`--endpoints`) alike.
pub const ENDPOINTS_VAR: &str = "MUSTER_ENDPOINTS";

/// Connection settings for [`EtcdStore`](crate::EtcdStore).
///
/// Start from [`EtcdConfig::new`] or [`Default`] (`http://127.0.0.1:2379`) and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://10.0.0.1:2379`. Requests are balanced across them, so
    /// one dead member of a cluster does not stop the store.
    pub endpoints: Vec<String>,
    /// How long to wait for a TCP connection to an endpoint.
    pub connect_timeout: Duration,
    /// How long one unary call (get, list page, txn, grant, revoke, compact, one
    /// keep-alive round trip, opening a watch) may take before it fails as unavailable.
    pub request_timeout: Duration,
    /// How often an HTTP/2 ping is sent on a connection with open streams. With the timeout
    /// below, this is what makes a watch or keep-alive stream to a *hung* etcd (stopped
    /// process, black-holed network) fail instead of waiting forever. etcd's default
    /// `--grpc-keepalive-min-time` is 5 s: pinging more often gets the connection closed
    /// with "too many pings", so keep this above 5 s unless the server allows less.
    pub keep_alive_interval: Duration,
    /// How long to wait for a ping's answer before the connection is considered dead.
    pub keep_alive_timeout: Duration,
    /// Whether to ping connections that have no open stream. Off by default: etcd does
    /// not permit pings without streams (`PermitWithoutStream = false`) and closes such a
    /// connection after a few pings (seen: an idle client pinging every second was on a new
    /// connection 20 s later). That reconnect is harmless but pointless: an idle connection
    /// needs no pings, since every unary call has [`request_timeout`](Self::request_timeout).
    pub keep_alive_while_idle: bool,
    /// Whether requests and watches must fail when the etcd member has no leader (it was cut
    /// off from its cluster's quorum), rather than wait or serve stale data. Sends etcd's
    /// `hasleader` metadata: etcd then also cancels watches when the member loses its leader.
    pub require_leader: bool,
    /// How many keys one page of a listing asks for at first (default 10,000). Large pages
    /// matter: etcd counts every remaining key of the range for each page, so a listing
    /// costs etcd about keys² / page; a 10,000-member group (20,000 keys) lists in 2–3
    /// pages. A page whose answer exceeds [`max_response_bytes`](Self::max_response_bytes)
    /// is read again at a quarter of the size (down to 10 keys), so very large records cost
    /// more pages, never a failed listing.
    pub list_page: u32,
    /// How many lease keep-alive streams the store may open (default 256). Every lease of the
    /// store is renewed on one of them, chosen by lease id, so a process with thousands of
    /// leases (many workers sharing one store) opens at most this many streams instead of
    /// one per lease, and a process with one lease opens one. More than one because etcd
    /// answers one stream's renewals one at a time, and a renewal can wait inside etcd (on
    /// its lease lock while leases are granted and revoked): with 10,000 workers registering
    /// at once, 1 stream and 16 streams fell behind far more than 256 (BENCHMARKS.md).
    pub keep_alive_streams: usize,
    /// The largest single answer accepted from etcd, in bytes (default 64 MiB): a list page,
    /// or a watch response (etcd sends each revision whole, so this must hold the largest
    /// transaction under the prefix).
    pub max_response_bytes: usize,
}

impl EtcdConfig {
    /// Settings for these endpoints, with the default timeouts.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }

    /// Settings whose endpoints come from `MUSTER_ENDPOINTS` (comma-separated), or
    /// `http://127.0.0.1:2379` when it is unset or empty.
    pub fn from_env() -> Self {
        match std::env::var(ENDPOINTS_VAR) {
            Ok(list) if !list.trim().is_empty() => EtcdConfig::new(
                list.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(String::from),
            ),
            _ => EtcdConfig::default(),
        }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            keep_alive_while_idle: false,
            require_leader: true,
            list_page: 10_000,
            keep_alive_streams: 256,
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keeps_default_timeouts() {
        let config = EtcdConfig::new(["http://a:2379", "http://b:2379"]);
        assert_eq!(config.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(
            config.request_timeout,
            EtcdConfig::default().request_timeout
        );
    }
}
