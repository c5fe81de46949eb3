//! etcd-client failures mapped into [`muster_core::Error`].
//!
//! Every message names the endpoints and what the call was doing (the key, the lease), so a
//! person reading a log line knows where to look. etcd-client's own error type never leaves
//! this crate: the catch-all [`Error::Backend`] carries a private [`EtcdFailure`].

use std::fmt;
use std::time::Duration;

use muster_core::{Error, LeaseId, Revision};
use tonic::Code;

/// The message of etcd's `ErrCompacted` (mvcc): a read or compaction at a revision
/// compaction already removed.
const ETCD_COMPACTED: &str = "required revision has been compacted";

/// The backend name in [`Error::Unavailable`] and [`Error::Backend`].
pub(crate) const BACKEND: &str = "etcd";

/// etcd's default `--max-request-bytes`, reported as the limit in
/// [`Error::ValueTooLarge`] (the server does not tell its own setting).
pub(crate) const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// What a call was doing, for error messages and for the variants that need it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ctx {
    /// The operation, e.g. `"get"`, `"txn"`, `"keep-alive"`.
    pub op: &'static str,
    /// The key or prefix it was about, if any.
    pub key: Option<String>,
    /// The lease it was about (or wrote keys on), `0` if none.
    pub lease: LeaseId,
    /// The largest value it wrote: key and size, for [`Error::ValueTooLarge`].
    pub largest_value: Option<(String, usize)>,
    /// The revision it read at or compacted to, `0` if none: for [`Error::Compacted`].
    pub revision: Revision,
    /// A transaction's compared keys: etcd's RBAC wants read on each.
    pub reads: Vec<String>,
    /// A transaction's written (put or deleted) keys: etcd's RBAC wants write on each.
    pub writes: Vec<String>,
}

impl Ctx {
    pub(crate) fn new(op: &'static str) -> Self {
        Ctx {
            op,
            ..Ctx::default()
        }
    }

    pub(crate) fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub(crate) fn lease(mut self, lease: LeaseId) -> Self {
        self.lease = lease;
        self
    }

    pub(crate) fn revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    fn what(&self) -> String {
        let mut what = self.op.to_string();
        if let Some(key) = &self.key {
            what.push_str(&format!(" {key:?}"));
        }
        if self.lease != 0 {
            what.push_str(&format!(" (lease {:x})", self.lease));
        }
        what
    }

    /// What etcd's RBAC checks for this call, for a "permission denied" (measured on etcd
    /// 3.4.23: it checks key ranges only; see the crate docs, "Least privilege").
    fn permission_needed(&self) -> String {
        let key = self.key.as_deref().unwrap_or_default();
        match self.op {
            "get" => format!("reading {key:?} needs read on that key"),
            "list" | "watch" => format!(
                "a {} of the prefix {key:?} needs read on that prefix",
                self.op
            ),
            "status" => format!(
                "the store's status reads {key:?} (the prefix it last listed or watched) and needs read on it"
            ),
            "txn" => {
                let mut needs = format!(
                    "this transaction needs read on the keys it compares ({}) and write on the keys it writes ({})",
                    quoted(&self.reads),
                    quoted(&self.writes)
                );
                if self.lease != 0 {
                    needs.push_str(&format!(
                        ", and, since it puts a key on lease {:x}, write on every key already on that lease",
                        self.lease
                    ));
                }
                needs
            }
            "lease revoke" => format!(
                "revoking lease {:x} needs write on every key attached to it",
                self.lease
            ),
            "keep-alive" => format!(
                "renewing lease {:x} needs write on every key attached to it (etcd 3.4.42+, 3.5.28+)",
                self.lease
            ),
            _ => "the call needs a permission on the group's prefix".to_string(),
        }
    }

    /// The prefix to suggest granting: a listed, watched or status-read prefix itself, or
    /// what a transaction's keys share up to a `/` (its group's prefix); `None` when the
    /// call names one key only.
    fn grant_prefix(&self) -> Option<String> {
        match self.op {
            "list" | "watch" | "status" => self.key.clone(),
            "txn" => {
                let keys: Vec<&String> = self.reads.iter().chain(&self.writes).collect();
                let first = keys.first()?;
                if keys.iter().all(|key| key == first) {
                    return None;
                }
                let mut shared = first.len();
                for key in &keys[1..] {
                    shared = first
                        .bytes()
                        .zip(key.bytes())
                        .take(shared)
                        .take_while(|(a, b)| a == b)
                        .count();
                }
                // Cut after a '/', an ASCII byte: always a character boundary.
                let cut = first.as_bytes()[..shared]
                    .iter()
                    .rposition(|&b| b == b'/')?
                    + 1;
                Some(first[..cut].to_string())
            }
            _ => None,
        }
    }
}

/// `"a", "b"`, or `none`.
fn quoted(keys: &[String]) -> String {
    if keys.is_empty() {
        return "none".to_string();
    }
    keys.iter()
        .map(|key| format!("{key:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The source of [`Error::Backend`] for etcd: a message, no etcd-client type.
#[derive(Debug)]
pub(crate) struct EtcdFailure(String);

impl fmt::Display for EtcdFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EtcdFailure {}

/// Maps failures of one store's calls; knows its endpoints for the messages.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMapper {
    /// `[http://a:2379, http://b:2379]`, as shown in messages.
    endpoints: String,
    /// Whether some endpoint is plain `http://`: a connection broken at once may then be a
    /// TLS port (etcd closes a plaintext HTTP/2 connection to its TLS listener).
    plain: bool,
    /// Whether TLS is set up without a client certificate: a connection broken at once may
    /// then be etcd's `--client-cert-auth` refusing it. Under TLS 1.3 the server checks the
    /// client's certificate after the client considers the handshake done, so the refusal
    /// reaches the client either as a `certificate required` alert or, racing it, as a
    /// broken pipe; muster cannot tell the second from a crash, so it only hints.
    tls_without_cert: bool,
    /// The etcd user the store authenticates as (never its password), for a "permission
    /// denied"; `None` without credentials (a client certificate's common name, or no auth).
    user: Option<String>,
}

impl ErrorMapper {
    /// `tls_without_cert`: TLS is configured with no client certificate.
    pub(crate) fn new(endpoints: &[String], tls_without_cert: bool) -> Self {
        ErrorMapper {
            endpoints: format!("[{}]", endpoints.join(", ")),
            plain: endpoints
                .iter()
                .any(|e| e.trim().to_ascii_lowercase().starts_with("http://")),
            tls_without_cert,
            user: None,
        }
    }

    /// Names `user` in "permission denied" messages.
    pub(crate) fn with_user(mut self, user: Option<&str>) -> Self {
        self.user = user.map(str::to_owned);
        self
    }

    /// etcd could not be reached, or the connection broke.
    pub(crate) fn unavailable(&self, ctx: &Ctx, detail: impl fmt::Display) -> Error {
        let detail = detail.to_string();
        let broken = [
            "broken pipe",
            "connection reset",
            "connection closed",
            "h2 protocol error",
        ];
        let is_broken = broken.iter().any(|b| detail.contains(b));
        let tls_hint = if self.plain && is_broken {
            "; if etcd serves TLS on this port, use https:// endpoints and --cacert (MUSTER_CACERT)"
        } else if self.tls_without_cert && is_broken {
            "; if etcd requires client certificates (--client-cert-auth), pass --cert and --key (MUSTER_CERT, MUSTER_KEY)"
        } else {
            ""
        };
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "cannot reach etcd at {} ({}): {detail}; is etcd running? check the endpoints (--endpoints / {}){tls_hint}",
                self.endpoints,
                ctx.what(),
                crate::ENDPOINTS_VAR,
            ),
        }
    }

    /// A call did not finish in time.
    pub(crate) fn timeout(&self, ctx: &Ctx, after: Duration) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "etcd at {} did not answer {} within {after:?}; it may be down, hung, overloaded or cut off from its cluster; check the endpoints (--endpoints / {})",
                self.endpoints,
                ctx.what(),
                crate::ENDPOINTS_VAR,
            ),
        }
    }

    /// A failure that fits no meaning-bearing variant.
    pub(crate) fn other(&self, ctx: &Ctx, detail: impl fmt::Display) -> Error {
        Error::Backend {
            backend: BACKEND,
            source: Box::new(EtcdFailure(format!(
                "{} at {} failed: {detail}",
                ctx.what(),
                self.endpoints
            ))),
        }
    }

    /// A request etcd (or the client) refuses as malformed: retrying cannot help.
    pub(crate) fn rejected(&self, ctx: &Ctx, detail: impl fmt::Display) -> Error {
        Error::Rejected {
            backend: BACKEND,
            source: Box::new(EtcdFailure(format!(
                "{} at {} failed: {detail}",
                ctx.what(),
                self.endpoints
            ))),
        }
    }

    /// Maps an etcd-client error.
    pub(crate) fn map(&self, ctx: &Ctx, err: etcd_client::Error) -> Error {
        use etcd_client::Error as E;
        match &err {
            E::GRpcStatus(status) => self.map_status(ctx, status.code(), &status_detail(status)),
            E::LeaseKeepAliveError(message) if message.contains("lease not found") => {
                Error::LeaseNotFound { lease: ctx.lease }
            }
            // A broken stream (its request half is gone) or connection: unreachable.
            E::TransportError(_) | E::IoError(_) if tls_failure(&cause(&err)) => {
                self.tls_refused(ctx, cause(&err))
            }
            E::LeaseKeepAliveError(_) | E::WatchError(_) | E::TransportError(_) | E::IoError(_) => {
                self.unavailable(ctx, cause(&err))
            }
            E::InvalidUri(err) => self.rejected(
                ctx,
                format!("invalid endpoint URL: {err}; endpoints look like http://127.0.0.1:2379"),
            ),
            other => self.other(ctx, chain(other)),
        }
    }

    /// etcd refusing who we are (auth) or the TLS handshake failing: bad settings, which
    /// retrying cannot fix, each with what to do. etcd's messages never hold the password.
    fn refused_auth(&self, ctx: &Ctx, message: &str) -> Option<Error> {
        let advice = if message.contains("authentication failed") {
            "etcd refused the user name or password (wrong password or unknown user); check --user (MUSTER_USER) and the file given to --password-file (MUSTER_PASSWORD_FILE)"
        } else if message.contains("user name is empty") {
            "etcd has authentication enabled and no user was given; pass --user (MUSTER_USER) and --password-file (MUSTER_PASSWORD_FILE), or a client certificate whose common name is an etcd user"
        } else if message.contains("authentication is not enabled") {
            "a user and password are given but etcd's authentication is off; drop --user/--password-file, or enable auth in etcd"
        } else if message.contains("permission denied") {
            return Some(self.permission_denied(ctx, message));
        } else if tls_failure(message) {
            return Some(self.tls_refused(ctx, message));
        } else {
            return None;
        };
        Some(self.rejected(ctx, format!("{message}: {advice}")))
    }

    /// etcd's RBAC refused the call: who was refused, on which keys, and what to grant.
    pub(crate) fn permission_denied(&self, ctx: &Ctx, message: &str) -> Error {
        let who = match &self.user {
            Some(user) => format!("etcd user {user:?}"),
            None => "the etcd user (the client certificate's common name)".to_string(),
        };
        let grant = match ctx.grant_prefix() {
            Some(prefix) => {
                format!("etcdctl role grant-permission <role> --prefix=true readwrite {prefix}")
            }
            None => {
                "etcdctl role grant-permission <role> --prefix=true readwrite <the group's prefix>"
                    .to_string()
            }
        };
        self.rejected(
            ctx,
            format!(
                "{message}: {who} may not do this: {}; grant a role of that user the permission, e.g. {grant} (README, \"Secured etcd\", lists the minimal roles)",
                ctx.permission_needed()
            ),
        )
    }

    /// The TLS handshake with etcd failed.
    pub(crate) fn tls_refused(&self, ctx: &Ctx, detail: impl fmt::Display) -> Error {
        self.rejected(
            ctx,
            format!("TLS with etcd failed: {detail}; check that --cacert (MUSTER_CACERT) is the CA that signed etcd's server certificate, that the certificate names the endpoint's host (or pass --tls-server-name), and that --cert/--key are a client certificate etcd's --trusted-ca-file signed"),
        )
    }

    fn map_status(&self, ctx: &Ctx, code: Code, message: &str) -> Error {
        if message.contains("request is too large")
            || (code == Code::ResourceExhausted && message.contains("larger than max"))
        {
            let (key, size) = ctx
                .largest_value
                .clone()
                .or_else(|| ctx.key.clone().map(|key| (key, 0)))
                .unwrap_or_default();
            return Error::ValueTooLarge {
                key,
                size,
                limit: DEFAULT_MAX_REQUEST_BYTES,
            };
        }
        // etcd's ErrCompacted: gRPC OutOfRange with its canonical message (OutOfRange also
        // covers a future revision, which is a different error). A unary reply does not say
        // the compaction revision; it is past the requested one, so everything below
        // `requested + 1` is gone: that much is known.
        if code == Code::OutOfRange && message.contains(ETCD_COMPACTED) {
            return Error::Compacted {
                requested: ctx.revision,
                compacted: ctx.revision + 1,
            };
        }
        if message.contains("requested lease not found") {
            return Error::LeaseNotFound { lease: ctx.lease };
        }
        if let Some(refused) = self.refused_auth(ctx, message) {
            return refused;
        }
        if message.contains("no leader") {
            return self.unavailable(
                ctx,
                format!("{message} (this etcd member is cut off from its cluster's quorum)"),
            );
        }
        match code {
            Code::Unavailable => self.unavailable(ctx, message),
            Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
                self.unavailable(ctx, format!("{message} ({code:?})"))
            }
            // tonic reports transport failures it cannot classify as Unknown.
            Code::Unknown if message.contains("transport") || message.contains("connect") => {
                self.unavailable(ctx, message)
            }
            // etcd refuses the request itself (a key written twice in one txn, an empty
            // key, ...): retrying the same request cannot succeed.
            Code::InvalidArgument => self.rejected(ctx, format!("{message} ({code:?})")),
            _ => self.other(ctx, format!("{message} ({code:?})")),
        }
    }
}

/// Whether a transport failure is a TLS handshake failure (rustls' and webpki's wording).
fn tls_failure(message: &str) -> bool {
    [
        "invalid peer certificate",
        "UnknownIssuer",
        "NotValidForName",
        "certificate required",
        "CertificateRequired",
        "bad certificate",
        "BadCertificate",
        "Expired",
        "handshake",
        "InvalidContentType",
        "invalid certificate",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

/// What went wrong in `err`, without muster's context (endpoints, call, advice): for a
/// message that [`ErrorMapper::unavailable`] wraps once, e.g. when one broken keep-alive
/// stream fails the renewals of many leases.
pub(crate) fn cause(err: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => format!("{} ({:?})", status_detail(status), status.code()),
        E::LeaseKeepAliveError(message) | E::WatchError(message) => {
            format!("stream broken: {message}")
        }
        E::TransportError(err) => chain(err),
        E::IoError(err) => chain(err),
        other => chain(other),
    }
}

/// A gRPC status's message, with the transport failure tonic keeps in its source
/// ("connection refused") when the message does not already say it.
fn status_detail(status: &tonic::Status) -> String {
    let mut detail = status.message().to_string();
    if let Some(root) = root_cause(status) {
        let root = root.to_string();
        if !detail.contains(&root) {
            detail = format!("{detail}: {root}");
        }
    }
    detail
}

/// The innermost source of `err`, if it has any.
fn root_cause<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Option<&'e (dyn std::error::Error + 'static)> {
    let mut cause = err.source()?;
    while let Some(deeper) = cause.source() {
        cause = deeper;
    }
    Some(cause)
}

/// An error and its sources, joined by ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapper() -> ErrorMapper {
        ErrorMapper::new(&["http://127.0.0.1:2379".to_string()], false)
    }

    #[test]
    fn a_broken_tls_connection_without_a_client_certificate_hints_at_one() {
        let tls = ErrorMapper::new(&["https://127.0.0.1:2379".to_string()], true);
        let text = tls
            .unavailable(&Ctx::new("connect"), "transport error: broken pipe")
            .to_string();
        assert!(text.contains("--cert and --key"), "{text}");
        let refused = tls
            .unavailable(&Ctx::new("connect"), "connection refused")
            .to_string();
        assert!(!refused.contains("--cert"), "{refused}");
        let with_cert = ErrorMapper::new(&["https://127.0.0.1:2379".to_string()], false)
            .unavailable(&Ctx::new("connect"), "transport error: broken pipe")
            .to_string();
        assert!(!with_cert.contains("--cert"), "{with_cert}");
    }

    #[test]
    fn too_large_names_the_key_and_size() {
        let ctx = Ctx {
            largest_value: Some(("k".into(), 2_000_000)),
            ..Ctx::new("txn")
        };
        let err = mapper().map_status(
            &ctx,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        assert!(
            matches!(&err, Error::ValueTooLarge { key, size: 2_000_000, .. } if key == "k"),
            "{err}"
        );
    }

    #[test]
    fn compaction_is_recognised_by_etcds_code_and_message() {
        let ctx = Ctx::new("list").revision(40);
        let err = mapper().map_status(
            &ctx,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert!(
            matches!(
                err,
                Error::Compacted {
                    requested: 40,
                    compacted: 41
                }
            ),
            "{err}"
        );
        // The same code for a future revision is another error.
        let err = mapper().map_status(
            &ctx,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        assert!(!matches!(err, Error::Compacted { .. }), "{err}");
    }

    #[test]
    fn lease_not_found_carries_the_lease() {
        let ctx = Ctx::new("txn").lease(7);
        let err = mapper().map_status(
            &ctx,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        assert!(matches!(err, Error::LeaseNotFound { lease: 7 }), "{err}");
    }

    #[test]
    fn unavailable_names_endpoints_key_and_remedy() {
        let ctx = Ctx::new("get").key("muster/members/a");
        let err = mapper().map_status(&ctx, Code::Unavailable, "connection refused");
        let text = err.to_string();
        assert!(matches!(err, Error::Unavailable { .. }), "{text}");
        assert!(text.contains("http://127.0.0.1:2379"), "{text}");
        assert!(text.contains("muster/members/a"), "{text}");
        assert!(text.contains("MUSTER_ENDPOINTS"), "{text}");
    }

    #[test]
    fn auth_refusals_are_rejected_and_say_what_to_do() {
        for (message, says) in [
            (
                "etcdserver: authentication failed, invalid user ID or password",
                "--password-file",
            ),
            ("etcdserver: user name is empty", "--user"),
            (
                "etcdserver: authentication is not enabled",
                "authentication is off",
            ),
            (
                "etcdserver: permission denied",
                "etcdctl role grant-permission",
            ),
        ] {
            let err = mapper().map_status(&Ctx::new("connect"), Code::InvalidArgument, message);
            assert!(matches!(err, Error::Rejected { .. }), "{err}");
            assert!(err.to_string().contains(says), "{says:?} not in {err}");
        }
        let err = mapper().map_status(
            &Ctx::new("connect"),
            Code::Unknown,
            "transport error: invalid peer certificate: UnknownIssuer",
        );
        assert!(matches!(err, Error::Rejected { .. }), "{err}");
        assert!(err.to_string().contains("--cacert"), "{err}");
    }

    #[test]
    fn refused_requests_are_rejected_errors_without_etcd_client_types() {
        let err = mapper().map_status(
            &Ctx::new("txn"),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        assert!(!err.is_retryable(), "{err}");
        let Error::Rejected { source, .. } = &err else {
            panic!("{err}")
        };
        assert!(source.downcast_ref::<EtcdFailure>().is_some(), "{err}");
        assert!(err.to_string().contains("duplicate key"), "{err}");
    }

    #[test]
    fn permission_denied_names_the_user_the_keys_and_what_to_grant() {
        let mapper = mapper().with_user(Some("group-b"));
        let txn = Ctx {
            reads: vec!["/g/alive/x".into(), "/g/evicted/x/00ff".into()],
            writes: vec!["/g/alive/x".into(), "/g/members/x".into()],
            ..Ctx::new("txn").key("/g/alive/x").lease(0xab)
        };
        let err = mapper.map_status(
            &txn,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        let text = err.to_string();
        assert!(matches!(err, Error::Rejected { .. }), "{text}");
        for part in [
            "permission denied",
            "etcd user \"group-b\"",
            "read on the keys it compares (\"/g/alive/x\", \"/g/evicted/x/00ff\")",
            "write on the keys it writes (\"/g/alive/x\", \"/g/members/x\")",
            "write on every key already on that lease",
            "--prefix=true readwrite /g/ ",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }

        let list = mapper.permission_denied(
            &Ctx::new("list").key("/g/"),
            "etcdserver: permission denied",
        );
        let text = list.to_string();
        assert!(
            text.contains("a list of the prefix \"/g/\" needs read on that prefix"),
            "{text}"
        );
        assert!(text.contains("readwrite /g/ "), "{text}");

        // One key: no prefix to guess.
        let get = mapper.permission_denied(
            &Ctx::new("get").key("/g/evicted/x/00ff"),
            "etcdserver: permission denied",
        );
        let text = get.to_string();
        assert!(
            text.contains("reading \"/g/evicted/x/00ff\" needs read on that key"),
            "{text}"
        );
        assert!(text.contains("<the group's prefix>"), "{text}");

        // Without credentials the user is the certificate's common name.
        let text = super::ErrorMapper::new(&["https://e:2379".to_string()], false)
            .permission_denied(
                &Ctx::new("lease revoke").lease(7),
                "etcdserver: permission denied",
            )
            .to_string();
        assert!(text.contains("client certificate's common name"), "{text}");
        assert!(
            text.contains("revoking lease 7 needs write on every key attached to it"),
            "{text}"
        );
    }

    #[test]
    fn a_transaction_on_one_key_suggests_no_prefix() {
        let ctx = Ctx {
            writes: vec!["/g/members/x".into()],
            ..Ctx::new("txn")
        };
        assert_eq!(ctx.grant_prefix(), None);
        let ctx = Ctx {
            reads: vec!["/g/é/a".into()],
            writes: vec!["/g/é/b".into(), "/g/è".into()],
            ..Ctx::new("txn")
        };
        assert_eq!(ctx.grant_prefix().as_deref(), Some("/g/"));
    }
}
