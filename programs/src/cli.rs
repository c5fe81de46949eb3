//! What both programs' command lines share: the etcd connection (endpoints, TLS, user) and
//! the group's prefix, and
//! the parsers for endpoint lists, durations, `key=value` labels and member addresses.
//!
//! Every flag can also come from an environment variable (`MUSTER_*`), so a program runs the
//! same from a shell, a systemd unit or a container spec.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use muster_etcd_backend::{EtcdConfig, Security};

use crate::fatal::Fatal;

/// The default key prefix: the group named `default`.
pub const DEFAULT_PREFIX: &str = "/muster/default/";

/// Flags both programs take: where etcd is, how to prove who we are to it (TLS, a user),
/// which group, how long to wait for etcd. The TLS and auth flags are etcdctl's names.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// etcd client URLs, comma-separated [default: http://127.0.0.1:2379]. A blank list
    /// (or a blank MUSTER_ENDPOINTS) is an error, not the default.
    ///
    /// Kept as given and parsed by [`endpoints`](Self::endpoints), not by clap, so that an
    /// error never repeats the list (clap's would quote the whole value).
    #[arg(
        long,
        env = muster_etcd_backend::ENDPOINTS_VAR,
        value_name = "URLS",
        global = true
    )]
    pub endpoints: Vec<String>,

    /// The group's key prefix in etcd (a trailing '/' is added when missing).
    #[arg(
        long,
        env = "MUSTER_PREFIX",
        default_value = DEFAULT_PREFIX,
        value_name = "PREFIX",
        global = true
    )]
    pub prefix: String,

    /// How long to keep trying to reach etcd at start-up before giving up (e.g. 5s, 500ms).
    #[arg(
        long,
        env = "MUSTER_CONNECT_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration,
        value_name = "DURATION",
        global = true
    )]
    pub connect_timeout: Duration,

    /// The CA bundle (PEM) that signed etcd's server certificate; needs https:// endpoints.
    #[arg(long, env = muster_etcd_backend::CACERT_VAR, value_name = "PATH", global = true)]
    pub cacert: Option<PathBuf>,

    /// A client certificate (PEM) for etcd's --client-cert-auth; with --key.
    #[arg(long, env = muster_etcd_backend::CERT_VAR, value_name = "PATH", global = true)]
    pub cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); with --cert.
    #[arg(long, env = muster_etcd_backend::KEY_VAR, value_name = "PATH", global = true)]
    pub key: Option<PathBuf>,

    /// The name etcd's certificate must carry, when it is not the endpoints' host.
    #[arg(
        long,
        env = muster_etcd_backend::TLS_SERVER_NAME_VAR,
        value_name = "NAME",
        global = true
    )]
    pub tls_server_name: Option<String>,

    /// The etcd user (the name only: `name:password` is refused), for etcd with auth
    /// enabled; with --password-file.
    #[arg(long, env = muster_etcd_backend::USER_VAR, value_name = "NAME", global = true)]
    pub user: Option<String>,

    /// A file holding the etcd user's password (one trailing newline is ignored). There is
    /// no flag or variable holding the password itself.
    #[arg(
        long,
        env = muster_etcd_backend::PASSWORD_FILE_VAR,
        value_name = "PATH",
        global = true
    )]
    pub password_file: Option<PathBuf>,
}

impl CommonArgs {
    /// The endpoints to use: every `--endpoints` list (or `MUSTER_ENDPOINTS`, the variable
    /// the library's `EtcdConfig::from_env` reads too), each parsed by
    /// [`parse_endpoint_list`], else `http://127.0.0.1:2379` when neither is given. A blank
    /// list, only commas or an empty entry is bad input (exit status 2), never the default.
    pub fn endpoints(&self) -> Result<Vec<String>, Fatal> {
        let mut given = Vec::new();
        for list in &self.endpoints {
            given.extend(parse_endpoint_list(list).map_err(Fatal::usage)?);
        }
        if given.is_empty() {
            Ok(EtcdConfig::default().endpoints)
        } else {
            Ok(given)
        }
    }

    /// The store settings: [`endpoints`](Self::endpoints) and the TLS and auth flags
    /// (`--cacert`, `--cert`, `--key`, `--tls-server-name`, `--user`, `--password-file`).
    /// A contradiction (https:// without `--cacert`, TLS flags with http://, `--cert`
    /// without `--key`, `--user` without `--password-file`, `--user name:password`) is bad
    /// input (exit status 2). Files are read when connecting.
    pub fn config(&self) -> Result<EtcdConfig, Fatal> {
        let mut config = EtcdConfig::new(self.endpoints()?);
        let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let text = |t: &Option<String>| t.clone().filter(|t| !t.trim().is_empty());
        config
            .set_security(
                Security {
                    cacert: path(&self.cacert),
                    cert: path(&self.cert),
                    key: path(&self.key),
                    server_name: text(&self.tls_server_name),
                    user: text(&self.user),
                    password_file: path(&self.password_file),
                },
                "--user (MUSTER_USER)",
            )
            .map_err(|err| Fatal::usage(err.to_string()))?;
        Ok(config)
    }
}

/// Parses one `--endpoints` (or `MUSTER_ENDPOINTS`) value with the library's rule
/// ([`muster_etcd_backend::parse_endpoints`]): blank, only commas, or an empty entry is an
/// error, never the default. The error says which entry, without repeating the list.
///
/// ```
/// use muster_programs::cli::parse_endpoint_list;
/// assert_eq!(parse_endpoint_list("http://a:2379,http://b:2379").unwrap().len(), 2);
/// assert!(parse_endpoint_list("").is_err());
/// assert!(parse_endpoint_list(",").is_err());
/// ```
pub fn parse_endpoint_list(text: &str) -> Result<Vec<String>, String> {
    muster_etcd_backend::parse_endpoints(
        text,
        "the etcd endpoint list (--endpoints or MUSTER_ENDPOINTS)",
    )
    .map_err(|e| e.to_string())
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`), e.g. `10s`, `1.5s`,
/// `500ms`, `2m`. A bare number means seconds.
///
/// ```
/// use std::time::Duration;
/// use muster_programs::cli::parse_duration;
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
/// assert!(parse_duration("ten").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && scale.is_finite() => {
            Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{text:?}: {e}"))
        }
        _ => Err(format!(
            "{text:?} is not a duration; use a number with a unit, e.g. 10s, 500ms, 2m"
        )),
    }
}

/// Parses a label `KEY=VALUE`. The key must be non-empty; the value may be empty or contain
/// `=`.
///
/// ```
/// use muster_programs::cli::parse_label;
/// assert_eq!(parse_label("zone=a"), Ok(("zone".to_string(), "a".to_string())));
/// assert!(parse_label("zone").is_err());
/// ```
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        Some(_) => Err(format!(
            "{text:?} has an empty key; use KEY=VALUE, e.g. zone=a"
        )),
        None => Err(format!("{text:?} is not KEY=VALUE; use e.g. zone=a")),
    }
}

/// Parses a member address (`--addr`): `HOST:PORT` by
/// [`muster_core::validate_addr`]'s rules. An empty one is an error here: a member without
/// an address is asked for with `--no-addr`.
///
/// ```
/// use muster_programs::cli::parse_addr;
/// assert!(parse_addr("10.0.0.5:8080").is_ok());
/// assert!(parse_addr("[::1]:8080").is_ok());
/// for bad in ["", "not-an-addr", "10.0.0.1", ":99999"] {
///     assert!(parse_addr(bad).is_err(), "{bad}");
/// }
/// ```
pub fn parse_addr(text: &str) -> Result<String, String> {
    const WHAT_TO_DO: &str = "use HOST:PORT with a DNS name, an IPv4 address or a bracketed IPv6 address and a port from 1 to 65535, e.g. 10.0.0.5:8080 or [::1]:8080; or pass --no-addr to register without an address";
    if text.is_empty() {
        return Err(format!("the address is empty; {WHAT_TO_DO}"));
    }
    match muster_core::validate_addr(text) {
        Ok(()) => Ok(text.to_owned()),
        Err(muster_core::Error::InvalidAddr { reason, .. }) => Err(format!(
            "{text:?} is not a member address: {reason}; {WHAT_TO_DO}"
        )),
        Err(other) => Err(other.to_string()),
    }
}

/// Parses a member name, with muster's rules (1 to 128 printable characters, counted as
/// characters rather than bytes; no '/', no whitespace).
pub fn parse_name(text: &str) -> Result<String, String> {
    muster_core::validate_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a key prefix the way the library will use it.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    muster_core::Keyspace::new(text)
        .map(|ks| ks.prefix().to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "-1s", "10x", "1e3s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_label("version=a=b"),
            Ok(("version".to_string(), "a=b".to_string()))
        );
        assert_eq!(parse_label("k="), Ok(("k".to_string(), String::new())));
        assert!(parse_label("=v").unwrap_err().contains("empty key"));
        assert!(parse_label("zone").unwrap_err().contains("KEY=VALUE"));
    }
}
