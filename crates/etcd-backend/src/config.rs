//! How to reach etcd, how to prove who we are to it, and how long to wait for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The one environment variable that names etcd's endpoints (comma-separated), for the
/// library ([`EtcdConfig::from_env`]) and the programs (`--endpoints`) alike.
pub const ENDPOINTS_VAR: &str = "MUSTER_ENDPOINTS";

/// The CA bundle (PEM file) that signed etcd's server certificate (etcdctl's `--cacert`).
pub const CACERT_VAR: &str = "MUSTER_CACERT";
/// The client certificate (PEM file) for mutual TLS (etcdctl's `--cert`).
pub const CERT_VAR: &str = "MUSTER_CERT";
/// The client certificate's private key (PEM file) (etcdctl's `--key`).
pub const KEY_VAR: &str = "MUSTER_KEY";
/// The name etcd's certificate must carry, when it is not the endpoints' host.
pub const TLS_SERVER_NAME_VAR: &str = "MUSTER_TLS_SERVER_NAME";
/// The etcd user name (etcdctl's `--user`, without its `:password` form).
pub const USER_VAR: &str = "MUSTER_USER";
/// A file holding the etcd user's password (the programs' `--password-file`). There is no
/// variable holding the password itself, see [`EtcdConfig::from_env`].
pub const PASSWORD_FILE_VAR: &str = "MUSTER_PASSWORD_FILE";

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
    /// An endpoint is `https://` but no TLS settings are given.
    #[error("etcd endpoint {entry} of {entries} is https:// but no CA bundle is given; pass the CA that signed etcd's certificate with --cacert ({CACERT_VAR}) (and --cert/--key if etcd asks for a client certificate), or use http:// if etcd does not serve TLS")]
    HttpsWithoutTls {
        /// Which endpoint, counting from 1.
        entry: usize,
        /// How many endpoints there are.
        entries: usize,
    },
    /// TLS settings are given but an endpoint is `http://`.
    #[error("TLS settings (--cacert/--cert/--key) are given but etcd endpoint {entry} of {entries} is http://; use https:// endpoints for an etcd that serves TLS, or drop the TLS settings")]
    TlsWithHttp {
        /// Which endpoint, counting from 1.
        entry: usize,
        /// How many endpoints there are.
        entries: usize,
    },
    /// TLS settings without a CA bundle: nothing could verify etcd's certificate.
    #[error("TLS settings are given without a CA bundle; pass the CA that signed etcd's server certificate with --cacert ({CACERT_VAR})")]
    NoCa,
    /// A client certificate without its key, or a key without its certificate.
    #[error("{given} is given without {missing}; a client certificate needs both the certificate (--cert, {CERT_VAR}) and its private key (--key, {KEY_VAR})")]
    HalfIdentity {
        /// What was given.
        given: &'static str,
        /// What is missing.
        missing: &'static str,
    },
    /// A user name with no password, or a password with no user.
    #[error("{0}")]
    HalfCredentials(&'static str),
    /// `--user name:password`: muster takes the password only from a file.
    #[error("{from} holds a ':' followed by something: muster takes only the user name there, never a password (a command line and an environment show in `ps` and `/proc`); put the password in a file readable only by this user and pass --password-file ({PASSWORD_FILE_VAR})")]
    PasswordInUser {
        /// Where the user name came from.
        from: String,
    },
    /// A certificate, key or password file that cannot be read (its content is never shown).
    #[error("cannot read the {what} file {path}: {reason}", path = path.display())]
    Unreadable {
        /// Which file it is (`CA bundle`, `client certificate`, `password`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why (the IO error).
        reason: String,
    },
    /// A file that holds nothing (an empty password, an empty PEM file).
    #[error("the {what} file {path} is empty", path = path.display())]
    EmptyFile {
        /// Which file it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
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

/// PEM data: a file read when the store connects, or the bytes themselves.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file, read at [`EtcdStore::connect`](crate::EtcdStore::connect).
    File(PathBuf),
    /// PEM bytes.
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Pem {
    /// A path as is; bytes only by their length (they may be a private key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            Pem::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

impl Pem {
    /// The PEM bytes; a file that cannot be read or is empty is an error naming its path.
    pub(crate) fn load(&self, what: &'static str) -> Result<Vec<u8>, ConfigError> {
        match self {
            Pem::Bytes(bytes) => Ok(bytes.clone()),
            Pem::File(path) => {
                let bytes = read_file(path, what)?;
                Ok(bytes)
            }
        }
    }
}

/// Reads a secret or certificate file; the error names the path, never the content.
fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|err| ConfigError::Unreadable {
        what,
        path: path.to_owned(),
        reason: err.to_string(),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::EmptyFile {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// TLS to etcd: the CA bundle that verifies etcd's certificate and, for mutual TLS, a client
/// certificate and its key. Needs `https://` endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificates (PEM) that signed etcd's server certificate. Required: there is
    /// no fallback to the system's roots (etcd clusters run their own CA).
    pub ca: Option<Pem>,
    /// The client certificate (PEM), for etcd's `--client-cert-auth`.
    pub cert: Option<Pem>,
    /// The client certificate's private key (PEM).
    pub key: Option<Pem>,
    /// The name etcd's certificate must carry, when it is not the endpoints' host (e.g. the
    /// endpoints are IP addresses and the certificate names `etcd.internal`).
    pub server_name: Option<String>,
}

/// The etcd user's password: given in the process, or a file read when the store connects.
/// Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// The password itself.
    Value(String),
    /// A file holding it (one trailing newline is not part of it).
    File(PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Value(_) => f.write_str("Value(<redacted>)"),
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Password {
    /// The password; a file that cannot be read, is empty or not UTF-8 is an error naming
    /// its path (never its content).
    pub(crate) fn load(&self) -> Result<String, ConfigError> {
        match self {
            Password::Value(password) => Ok(password.clone()),
            Password::File(path) => {
                let bytes = read_file(path, "password")?;
                let text = String::from_utf8(bytes).map_err(|_| ConfigError::Unreadable {
                    what: "password",
                    path: path.clone(),
                    reason: "not UTF-8".into(),
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(text.to_owned())
            }
        }
    }
}

/// An etcd user and its password, for etcd with `auth enable`. The store authenticates when
/// it connects and again when etcd says its token expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// Its password (redacted in `Debug`).
    pub password: Password,
}

/// Connection settings for [`EtcdStore`](crate::EtcdStore).
///
/// Start from [`EtcdConfig::new`] or [`Default`] (`http://127.0.0.1:2379`) and change fields.
/// `Debug` shows no secret: passwords are redacted, PEM bytes shown by length.
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
    /// TLS settings; `None` for plain `http://` endpoints.
    pub tls: Option<TlsConfig>,
    /// The etcd user to authenticate as; `None` when etcd's auth is off (or when a client
    /// certificate's common name is the user, with `--client-cert-auth`).
    pub credentials: Option<Credentials>,
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

    /// Settings from the environment, the variables the programs read too:
    ///
    /// - `MUSTER_ENDPOINTS`: comma-separated endpoints (parsed by [`parse_endpoints`]), or
    ///   `http://127.0.0.1:2379` when unset. Set but blank, only commas, with an empty entry
    ///   or not UTF-8, it is an error: a blank variable must not quietly mean the default.
    /// - `MUSTER_CACERT`, `MUSTER_CERT`, `MUSTER_KEY`: PEM files for TLS ([`TlsConfig`]);
    ///   `MUSTER_TLS_SERVER_NAME`: the name etcd's certificate must carry.
    /// - `MUSTER_USER` and `MUSTER_PASSWORD_FILE`: an etcd user and a file holding its
    ///   password. There is deliberately no variable holding a password: a process's
    ///   environment is readable in `/proc/<pid>/environ`, shown by `docker inspect`, and
    ///   inherited by children. `MUSTER_USER=name:password` is refused for the same reason.
    ///
    /// Blank variables count as unset, except `MUSTER_ENDPOINTS`. Files are read when the
    /// store connects, not here.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), muster_etcd_backend::ConfigError> {
    /// let config = muster_etcd_backend::EtcdConfig::from_env()?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = match std::env::var(ENDPOINTS_VAR) {
            Ok(list) => EtcdConfig::new(parse_endpoints(&list, ENDPOINTS_VAR)?),
            Err(std::env::VarError::NotPresent) => EtcdConfig::default(),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::NotUnicode {
                    from: ENDPOINTS_VAR.to_owned(),
                })
            }
        };
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        let user = match std::env::var(USER_VAR) {
            Ok(user) if !user.trim().is_empty() => Some(user),
            Ok(_) | Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::NotUnicode {
                    from: USER_VAR.to_owned(),
                })
            }
        };
        let server_name = std::env::var(TLS_SERVER_NAME_VAR)
            .ok()
            .filter(|name| !name.trim().is_empty());
        config.set_security(
            Security {
                cacert: var(CACERT_VAR),
                cert: var(CERT_VAR),
                key: var(KEY_VAR),
                server_name,
                user,
                password_file: var(PASSWORD_FILE_VAR),
            },
            USER_VAR,
        )?;
        Ok(config)
    }

    /// Sets [`tls`](Self::tls) and [`credentials`](Self::credentials) from file paths, as
    /// etcdctl's flags give them (the programs' `--cacert`, `--cert`, `--key`,
    /// `--tls-server-name`, `--user`, `--password-file`). `user_from` names where the user
    /// came from, for the error when it holds `name:password`.
    ///
    /// ```
    /// use muster_etcd_backend::{EtcdConfig, Security};
    /// let mut config = EtcdConfig::new(["https://etcd:2379"]);
    /// config.set_security(
    ///     Security { cacert: Some("ca.pem".into()), ..Security::default() },
    ///     "--user",
    /// ).unwrap();
    /// assert!(config.tls.is_some());
    /// let refused = config.set_security(
    ///     Security { user: Some("root:secret".into()), password_file: Some("pw".into()), ..Security::default() },
    ///     "--user",
    /// ).unwrap_err();
    /// assert!(!refused.to_string().contains("secret"));
    /// ```
    pub fn set_security(&mut self, given: Security, user_from: &str) -> Result<(), ConfigError> {
        let Security {
            cacert,
            cert,
            key,
            server_name,
            user,
            password_file,
        } = given;
        self.tls = if cacert.is_some() || cert.is_some() || key.is_some() || server_name.is_some() {
            Some(TlsConfig {
                ca: cacert.map(Pem::File),
                cert: cert.map(Pem::File),
                key: key.map(Pem::File),
                server_name,
            })
        } else {
            None
        };
        self.credentials = match (user, password_file) {
            (Some(user), _) if user.contains(':') => {
                return Err(ConfigError::PasswordInUser {
                    from: user_from.to_owned(),
                })
            }
            (Some(user), Some(file)) => Some(Credentials {
                user,
                password: Password::File(file),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::HalfCredentials(
                    "an etcd user is given without a password; put the password in a file readable only by this user and pass --password-file (MUSTER_PASSWORD_FILE)",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::HalfCredentials(
                    "a password file is given without an etcd user; pass the user name with --user (MUSTER_USER)",
                ))
            }
        };
        self.validate()
    }

    /// Checks the settings without reading any file: at least one endpoint, none blank
    /// (what [`EtcdStore::connect`](crate::EtcdStore::connect) requires before it tries
    /// them); `https://` endpoints if and only if there are TLS settings, and then with a CA
    /// bundle; a client certificate with its key.
    ///
    /// ```
    /// use muster_etcd_backend::{EtcdConfig, Pem, TlsConfig};
    /// assert!(EtcdConfig::default().validate().is_ok());
    /// assert!(EtcdConfig::new(Vec::<String>::new()).validate().is_err());
    /// assert!(EtcdConfig::new(["http://a:2379", " "]).validate().is_err());
    /// assert!(EtcdConfig::new(["https://a:2379"]).validate().is_err());
    /// let tls = TlsConfig { ca: Some(Pem::File("ca.pem".into())), ..TlsConfig::default() };
    /// let config = EtcdConfig { tls: Some(tls), ..EtcdConfig::new(["https://a:2379"]) };
    /// assert!(config.validate().is_ok());
    /// assert!(EtcdConfig { endpoints: vec!["http://a:2379".into()], ..config }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_endpoints(&self.endpoints, "EtcdConfig::endpoints")?;
        let entries = self.endpoints.len();
        let scheme = |prefix: &str| {
            self.endpoints
                .iter()
                .position(|e| e.trim().to_ascii_lowercase().starts_with(prefix))
                .map(|at| at + 1)
        };
        match &self.tls {
            None => {
                if let Some(entry) = scheme("https://") {
                    return Err(ConfigError::HttpsWithoutTls { entry, entries });
                }
            }
            Some(tls) => {
                if let Some(entry) = scheme("http://") {
                    return Err(ConfigError::TlsWithHttp { entry, entries });
                }
                if tls.ca.is_none() {
                    return Err(ConfigError::NoCa);
                }
                match (&tls.cert, &tls.key) {
                    (Some(_), None) => {
                        return Err(ConfigError::HalfIdentity {
                            given: "a client certificate",
                            missing: "its key",
                        })
                    }
                    (None, Some(_)) => {
                        return Err(ConfigError::HalfIdentity {
                            given: "a client key",
                            missing: "its certificate",
                        })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// TLS and auth settings as file paths, the way etcdctl's flags and muster's environment
/// variables give them; see [`EtcdConfig::set_security`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `--cacert`: the CA bundle.
    pub cacert: Option<PathBuf>,
    /// `--cert`: the client certificate.
    pub cert: Option<PathBuf>,
    /// `--key`: the client certificate's key.
    pub key: Option<PathBuf>,
    /// `--tls-server-name`: the name etcd's certificate must carry.
    pub server_name: Option<String>,
    /// `--user`: the etcd user (the name only).
    pub user: Option<String>,
    /// `--password-file`: a file holding the user's password.
    pub password_file: Option<PathBuf>,
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
            tls: None,
            credentials: None,
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

    /// `from_env` with the TLS and auth variables, in a child process as above.
    #[test]
    fn from_env_reads_the_tls_and_auth_variables() {
        const NAME: &str = "config::tests::from_env_reads_the_tls_and_auth_variables";
        const CHILD: &str = "MUSTER_FROM_ENV_SECURITY_CHILD";
        if std::env::var_os(CHILD).is_some() {
            match EtcdConfig::from_env() {
                Ok(config) => println!(
                    "from_env: ok tls={} user={}",
                    config.tls.is_some(),
                    config.credentials.map(|c| c.user).unwrap_or_default()
                ),
                Err(err) => println!("from_env: err {err}"),
            }
            return;
        }
        let https = [(ENDPOINTS_VAR, "https://a:2379")];
        for (vars, expect) in [
            (&[(CACERT_VAR, "ca.pem")][..], "err TLS settings"),
            (
                &[(ENDPOINTS_VAR, "https://a:2379")][..],
                "err etcd endpoint 1 of 1 is https://",
            ),
            (&[https[0], (CACERT_VAR, "ca.pem")][..], "ok tls=true user="),
            (
                &[(USER_VAR, "muster"), (PASSWORD_FILE_VAR, "pw")][..],
                "ok tls=false user=muster",
            ),
            (
                &[(USER_VAR, "muster")][..],
                "err an etcd user is given without a password",
            ),
            (
                &[(USER_VAR, "muster:hunter2"), (PASSWORD_FILE_VAR, "pw")][..],
                "err MUSTER_USER holds a ':'",
            ),
            (
                &[(CACERT_VAR, ""), (USER_VAR, "")][..],
                "ok tls=false user=",
            ),
        ] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env(CHILD, "1");
            for var in [
                ENDPOINTS_VAR,
                CACERT_VAR,
                CERT_VAR,
                KEY_VAR,
                TLS_SERVER_NAME_VAR,
                USER_VAR,
                PASSWORD_FILE_VAR,
            ] {
                child.env_remove(var);
            }
            child.envs(vars.iter().copied());
            let output = child.output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let said = stdout
                .lines()
                .find_map(|line| line.split_once("from_env: ").map(|(_, said)| said))
                .unwrap_or_else(|| panic!("{vars:?}: the child said nothing: {stdout}"));
            assert!(said.starts_with(expect), "{vars:?}: {said}");
            assert!(!said.contains("hunter2"), "{said}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let config = EtcdConfig {
            tls: Some(TlsConfig {
                ca: Some(Pem::File("ca.pem".into())),
                cert: Some(Pem::Bytes(b"-----BEGIN CERTIFICATE-----".to_vec())),
                key: Some(Pem::Bytes(
                    b"-----BEGIN PRIVATE KEY----- secret-key".to_vec(),
                )),
                server_name: None,
            }),
            credentials: Some(Credentials {
                user: "root".into(),
                password: Password::Value("hunter2".into()),
            }),
            ..EtcdConfig::new(["https://a:2379"])
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("secret-key"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("ca.pem"),
            "{text}"
        );
    }

    #[test]
    fn security_settings_must_agree_with_the_endpoints_and_each_other() {
        let with = |endpoint: &str, given: Security| {
            let mut config = EtcdConfig::new([endpoint]);
            config.set_security(given, "--user").map(|()| config)
        };
        let ca = || Some(PathBuf::from("ca.pem"));
        let err = with("https://a:2379", Security::default()).unwrap_err();
        assert!(
            matches!(err, ConfigError::HttpsWithoutTls { entry: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--cacert"), "{err}");
        let tls = Security {
            cacert: ca(),
            ..Security::default()
        };
        let err = with("http://a:2379", tls.clone()).unwrap_err();
        assert!(matches!(err, ConfigError::TlsWithHttp { .. }), "{err}");
        assert!(with("https://a:2379", tls).unwrap().tls.is_some());
        let err = with(
            "https://a:2379",
            Security {
                cert: Some("c.pem".into()),
                ..Security::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NoCa), "{err}");
        let err = with(
            "https://a:2379",
            Security {
                cacert: ca(),
                cert: Some("c.pem".into()),
                ..Security::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::HalfIdentity { .. }), "{err}");
        let err = with(
            "http://a:2379",
            Security {
                user: Some("root".into()),
                ..Security::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--password-file"), "{err}");
        let err = with(
            "http://a:2379",
            Security {
                user: Some("root:hunter2".into()),
                password_file: Some("pw".into()),
                ..Security::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::PasswordInUser { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn password_files_lose_one_trailing_newline_and_errors_name_the_path() {
        let dir = std::env::temp_dir().join(format!("muster-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        assert_eq!(Password::File(file.clone()).load().unwrap(), "hunter2");
        std::fs::write(&file, "\n").unwrap();
        let err = Password::File(file.clone()).load().unwrap_err();
        assert!(matches!(err, ConfigError::EmptyFile { .. }), "{err}");
        let missing = dir.join("missing");
        let err = Password::File(missing.clone()).load().unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
