//! How to reach etcd and how long to wait for it.

use std::time::Duration;

/// The one environment variable that names etcd's endpoints (comma-separated), for the
/// library ([`EtcdConfig::from_env`]) and the programs (`--endpoints`) alike.
pub const ENDPOINTS_VAR: &str = "MUSTER_ENDPOINTS";

/// What is wrong with a list of etcd endpoints: the one error type of this crate's own (its
/// store calls fail with [`muster_core::Error`]; [`EtcdStore::connect`](crate::EtcdStore::connect)
/// reports these as [`muster_core::Error::Rejected`]).
///
/// A blank list is an error, never a fallback to the default: a variable set to nothing
/// (a template that did not fill it in) must not quietly point muster at whatever etcd
/// runs on `127.0.0.1:2379`. Only a list that is absent altogether means the default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The list names no endpoint: it is empty, blank, or only commas and spaces.
    #[error("{from} names no etcd endpoint (it is blank or only commas); give one or more comma-separated etcd client URLs, e.g. http://127.0.0.1:2379, or give none at all (not a blank one) to use that default")]
    NoEndpoints {
        /// Where the list came from (a variable, a flag, a field).
        from: String,
    },
    /// One entry of the list is blank (`a,,b`, a leading or trailing comma).
    #[error("{from} has an empty entry (entry {entry} of {entries}); separate etcd client URLs with single commas, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379")]
    EmptyEndpoint {
        /// Where the list came from.
        from: String,
        /// Which entry is blank, counting from 1.
        entry: usize,
        /// How many entries the list has.
        entries: usize,
    },
    /// The variable is set but its value is not UTF-8.
    #[error("{from} is not valid UTF-8; set it to comma-separated etcd client URLs, e.g. http://127.0.0.1:2379")]
    NotUnicode {
        /// The variable.
        from: String,
    },
}

/// Parses a comma-separated list of etcd client URLs, as `MUSTER_ENDPOINTS` and the
/// programs' `--endpoints` give it: entries are trimmed; a list with no endpoint
/// ([`ConfigError::NoEndpoints`]) or with a blank entry ([`ConfigError::EmptyEndpoint`]) is
/// an error. `from` names the list's source in the error (e.g. `"MUSTER_ENDPOINTS"`).
///
/// The URLs themselves are checked by [`EtcdStore::connect`](crate::EtcdStore::connect).
/// Errors never repeat the list (an endpoint could carry credentials); they say which entry.
///
/// ```
/// use muster_etcd_backend::{parse_endpoints, ConfigError};
/// assert_eq!(
///     parse_endpoints(" http://a:2379, http://b:2379 ", "test"),
///     Ok(vec!["http://a:2379".to_string(), "http://b:2379".to_string()])
/// );
/// assert!(matches!(parse_endpoints("", "test"), Err(ConfigError::NoEndpoints { .. })));
/// assert!(matches!(parse_endpoints(",", "test"), Err(ConfigError::NoEndpoints { .. })));
/// assert!(matches!(
///     parse_endpoints("http://a:2379,,http://b:2379", "test"),
///     Err(ConfigError::EmptyEndpoint { entry: 2, entries: 3, .. })
/// ));
/// ```
pub fn parse_endpoints(list: &str, from: &str) -> Result<Vec<String>, ConfigError> {
    let entries: Vec<String> = list.split(',').map(|e| e.trim().to_owned()).collect();
    check_endpoints(&entries, from)?;
    Ok(entries)
}

/// Checks that `endpoints` names at least one endpoint and has no blank entry.
fn check_endpoints(endpoints: &[String], from: &str) -> Result<(), ConfigError> {
    if endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err(ConfigError::NoEndpoints {
            from: from.to_owned(),
        });
    }
    match endpoints.iter().position(|e| e.trim().is_empty()) {
        Some(blank) => Err(ConfigError::EmptyEndpoint {
            from: from.to_owned(),
            entry: blank + 1,
            entries: endpoints.len(),
        }),
        None => Ok(()),
    }
}

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

    /// Settings whose endpoints come from `MUSTER_ENDPOINTS` (comma-separated, parsed by
    /// [`parse_endpoints`]), or `http://127.0.0.1:2379` when it is unset. Set but blank, only
    /// commas, with an empty entry or not UTF-8, it is an error: a blank variable must not
    /// quietly mean the local default.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), muster_etcd_backend::ConfigError> {
    /// let config = muster_etcd_backend::EtcdConfig::from_env()?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var(ENDPOINTS_VAR) {
            Ok(list) => Ok(EtcdConfig::new(parse_endpoints(&list, ENDPOINTS_VAR)?)),
            Err(std::env::VarError::NotPresent) => Ok(EtcdConfig::default()),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode {
                from: ENDPOINTS_VAR.to_owned(),
            }),
        }
    }

    /// Checks the endpoints: at least one, none blank (what
    /// [`EtcdStore::connect`](crate::EtcdStore::connect) requires before it tries them).
    ///
    /// ```
    /// use muster_etcd_backend::EtcdConfig;
    /// assert!(EtcdConfig::default().validate().is_ok());
    /// assert!(EtcdConfig::new(Vec::<String>::new()).validate().is_err());
    /// assert!(EtcdConfig::new(["http://a:2379", " "]).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_endpoints(&self.endpoints, "EtcdConfig::endpoints")
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
    fn blank_endpoint_lists_are_errors_not_the_default() {
        for blank in ["", " ", ",", " , ", ",,,"] {
            let err = parse_endpoints(blank, ENDPOINTS_VAR).unwrap_err();
            assert!(
                matches!(err, ConfigError::NoEndpoints { .. }),
                "{blank:?}: {err}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with("MUSTER_ENDPOINTS names no etcd endpoint"),
                "{text}"
            );
            assert!(text.contains("e.g. http://127.0.0.1:2379"), "{text}");
        }
        for (list, entry, entries) in [
            ("http://a:2379,", 2, 2),
            (",http://a:2379", 1, 2),
            ("http://a:2379, ,http://b:2379", 2, 3),
        ] {
            let err = parse_endpoints(list, "--endpoints").unwrap_err();
            assert_eq!(
                err,
                ConfigError::EmptyEndpoint {
                    from: "--endpoints".into(),
                    entry,
                    entries
                }
            );
            let text = err.to_string();
            assert!(text.contains("empty entry"), "{text}");
            // The list itself is not repeated: an endpoint may carry credentials.
            assert!(!text.contains("http://a:2379"), "{text}");
        }
        assert_eq!(
            parse_endpoints("http://a:2379", "x").unwrap(),
            ["http://a:2379"]
        );
        assert!(EtcdConfig::new([""]).validate().is_err());
        assert!(EtcdConfig::new(["http://a:2379"]).validate().is_ok());
    }

    /// `from_env` in a child process of this test binary (so that setting the variable
    /// races no other test): unset is the default, blank or with an empty entry an error.
    #[test]
    fn from_env_uses_the_default_only_when_the_variable_is_unset() {
        const NAME: &str =
            "config::tests::from_env_uses_the_default_only_when_the_variable_is_unset";
        const CHILD: &str = "MUSTER_FROM_ENV_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            match EtcdConfig::from_env() {
                Ok(config) => println!("from_env: ok {}", config.endpoints.join(" ")),
                Err(err) => println!("from_env: err {err}"),
            }
            return;
        }
        for (value, expect) in [
            (None, "ok http://127.0.0.1:2379"),
            (Some("http://a:1, http://b:2"), "ok http://a:1 http://b:2"),
            (Some(""), "err MUSTER_ENDPOINTS names no etcd endpoint"),
            (Some("  "), "err MUSTER_ENDPOINTS names no etcd endpoint"),
            (Some(","), "err MUSTER_ENDPOINTS names no etcd endpoint"),
            (
                Some("http://a:1,"),
                "err MUSTER_ENDPOINTS has an empty entry",
            ),
        ] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1");
            match value {
                None => child.env_remove(ENDPOINTS_VAR),
                Some(value) => child.env(ENDPOINTS_VAR, value),
            };
            let output = child.output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let said = stdout
                .lines()
                .find_map(|line| line.split_once("from_env: ").map(|(_, said)| said))
                .unwrap_or_else(|| panic!("{value:?}: the child said nothing: {stdout}"));
            assert!(said.starts_with(expect), "{value:?}: {said}");
        }
    }

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
