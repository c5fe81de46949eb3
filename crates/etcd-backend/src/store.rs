//! [`EtcdStore`]: the [`Store`] implementation over etcd-client.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions,
    Identity, PutOptions, TlsOptions, TxnOp,
};
use muster_core::{
    Condition, Error, KeyValue, Lease, LeaseId, Listing, Op, Result, Revision, Store, StoreStatus,
    Txn, TxnOutcome, WatchStream,
};

use crate::config::{ConfigError, EtcdConfig, TlsConfig};
use crate::error::{Ctx, ErrorMapper};
use crate::keepers::Keepers;
use crate::watch::{self, key_value};

/// The smallest page a listing shrinks to when pages of [`EtcdConfig::list_page`] keys are
/// larger than [`EtcdConfig::max_response_bytes`].
const MIN_LIST_PAGE: i64 = 10;

/// etcd-client's TLS options from muster's: the PEM files read now.
fn tls_options(tls: &TlsConfig) -> std::result::Result<TlsOptions, ConfigError> {
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(Certificate::from_pem(ca.load("CA bundle")?));
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        options = options.identity(Identity::from_pem(
            cert.load("client certificate")?,
            key.load("client key")?,
        ));
    }
    if let Some(name) = &tls.server_name {
        options = options.domain_name(name.clone());
    }
    Ok(options)
}

/// A read whose answer exceeds [`EtcdConfig::max_response_bytes`] as `Ok(None)`: the page
/// must shrink.
fn too_large_as_none<T>(
    read: std::result::Result<T, etcd_client::Error>,
) -> std::result::Result<Option<T>, etcd_client::Error> {
    match read {
        Err(etcd_client::Error::GRpcStatus(status))
            if status.code() == tonic::Code::OutOfRange
                && status.message().contains("message length too large") =>
        {
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// One page of a listing being read in its own task; dropping it (a listing abandoned
/// half-way) stops the read.
struct PageRead(tokio::task::JoinHandle<Result<Option<etcd_client::GetResponse>>>);

impl PageRead {
    /// The page, once read.
    async fn finish(
        &mut self,
        errors: &ErrorMapper,
        ctx: &Ctx,
    ) -> Result<Option<etcd_client::GetResponse>> {
        match (&mut self.0).await {
            Ok(read) => read,
            Err(failed) => Err(errors.other(ctx, format!("reading a page failed: {failed}"))),
        }
    }
}

impl Drop for PageRead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// muster's [`Store`] on etcd v3.
///
/// Cheap to clone: clones share the connections and the lease keep-alive streams (at most
/// [`EtcdConfig::keep_alive_streams`] per store, carrying the renewals of all its leases).
/// Every unary call is bounded by [`EtcdConfig::request_timeout`] (plus the connect timeout),
/// so an unreachable etcd gives [`Error::Unavailable`] instead of a call that never returns.
#[derive(Clone)]
pub struct EtcdStore {
    /// etcd-client's handle; cloned per call (its methods take `&mut self`).
    client: Client,
    /// Timeouts and endpoints, as given.
    config: Arc<EtcdConfig>,
    /// Builds error messages naming the endpoints.
    errors: ErrorMapper,
    /// The few keep-alive streams every lease of this store (and its clones) is renewed on.
    keepers: Arc<Keepers>,
    /// The key [`Store::status`] reads: the prefix this store (or a clone) last listed or
    /// watched successfully, so a key its user may read. `None` until then. See the crate
    /// docs, "Least privilege".
    scope: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers and lets this client in, reading no key,
    /// so a user whose role covers only the group's prefix connects too (see the crate
    /// docs, "Least privilege"). With [`EtcdConfig::credentials`], etcd-client has already
    /// authenticated the user, and the check is etcd's maintenance `Status`. Without, it
    /// lists etcd's roles: etcd answers that to anyone while its auth is off, refuses it
    /// with "user name is empty" when auth is on and no user was given (a [`Error::Rejected`]
    /// saying to pass one), and with "permission denied" for a user it knows from a client
    /// certificate's common name who is not root, which counts as let in.
    ///
    /// Fails with [`Error::Unavailable`] when no endpoint answers within the timeouts, so a
    /// program can say so at start-up; use [`connect_lazy`](Self::connect_lazy) to start
    /// anyway and let the first calls fail and be retried.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let store = Self::connect_lazy(config).await?;
        let ctx = Ctx::new("connect");
        if store.config.credentials.is_some() {
            store.member_status(&ctx).await?;
        } else {
            store
                .call(&ctx, || {
                    let mut auth = store.client.auth_client();
                    async move {
                        match auth.role_list().await {
                            Err(etcd_client::Error::GRpcStatus(status))
                                if status.code() == tonic::Code::PermissionDenied =>
                            {
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        }
                    }
                })
                .await?;
        }
        Ok(store)
    }

    /// Sets up the client without contacting etcd, unless [`EtcdConfig::credentials`] are
    /// given: etcd-client authenticates when it connects, so a wrong password fails here.
    /// Fails for invalid settings (see [`EtcdConfig::validate`]; a malformed URL; a
    /// certificate, key or password file that cannot be read, named by its path).
    pub async fn connect_lazy(config: EtcdConfig) -> Result<Self> {
        let errors = ErrorMapper::new(
            &config.endpoints,
            config.tls.as_ref().is_some_and(|tls| tls.cert.is_none()),
        )
        .with_user(config.credentials.as_ref().map(|c| c.user.as_str()));
        let ctx = Ctx::new("connect");
        if let Err(invalid) = config.validate() {
            return Err(errors.rejected(&ctx, invalid));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
            .with_keep_alive_while_idle(config.keep_alive_while_idle)
            .with_require_leader(config.require_leader);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls).map_err(|e| errors.rejected(&ctx, e))?);
        }
        if let Some(credentials) = &config.credentials {
            let password = credentials
                .password
                .load()
                .map_err(|e| errors.rejected(&ctx, e))?;
            // Authenticates now (so a user given connects or fails here, also for
            // `connect_lazy`), and again when etcd says the token expired.
            options = options
                .with_user(credentials.user.clone(), password)
                .with_auto_token_refresh(true);
        }
        let connecting = Client::connect(&config.endpoints, Some(options));
        let client =
            match tokio::time::timeout(config.connect_timeout + config.request_timeout, connecting)
                .await
            {
                Ok(client) => client.map_err(|err| errors.map(&ctx, err))?,
                Err(_) => {
                    return Err(
                        errors.timeout(&ctx, config.connect_timeout + config.request_timeout)
                    )
                }
            };
        // A keep-alive stream may take as long to open as any other call: connecting, then
        // the request. (How long a renewal waits for its answer is the caller's `within`.)
        let keepers = Keepers::new(
            client.lease_client(),
            errors.clone(),
            config.connect_timeout + config.request_timeout,
            config.keep_alive_streams,
        );
        Ok(EtcdStore {
            client,
            config: Arc::new(config),
            errors,
            keepers: Arc::new(keepers),
            scope: Arc::new(Mutex::new(None)),
        })
    }

    /// etcd's maintenance `Status` of the member that answers: no key is read, so etcd checks
    /// no permission (etcd 3.4.23 answers it to anyone, even without a user), and it is not
    /// linearizable: the revision is that member's.
    async fn member_status(&self, ctx: &Ctx) -> Result<StoreStatus> {
        let reply = self
            .call(ctx, || {
                let mut maintenance = self.client.maintenance_client();
                async move { maintenance.status().await }
            })
            .await?;
        let header = reply.header();
        Ok(StoreStatus {
            revision: header.map_or(0, |h| h.revision()),
            cluster_id: header.map_or(0, |h| h.cluster_id()),
        })
    }

    /// Remembers `prefix` as a key range this store's user may read: [`Store::status`] reads
    /// there from now on.
    fn readable(&self, prefix: &str) {
        // A poisoned lock only means a panic elsewhere; the value is a plain string.
        let mut scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
        if scope.as_deref() != Some(prefix) {
            *scope = Some(prefix.to_owned());
        }
    }

    /// The settings this store was made with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }

    /// The longest a unary call may take: connecting, then the request.
    fn call_timeout(&self) -> Duration {
        self.config.connect_timeout + self.config.request_timeout
    }

    /// Runs one etcd call with the call timeout, mapping its error. `call` makes the request
    /// afresh for each attempt: a request that could not even be sent (the endpoint the
    /// balancer picked refuses connections, e.g. a dead cluster member) is tried again, up
    /// to once per endpoint plus one, within the same timeout. etcd-client's balancer keeps
    /// offering a dead endpoint, so without this one dead member of three fails a third of
    /// the calls. A request that reached a server is never repeated.
    async fn call<T, F, Fut>(&self, ctx: &Ctx, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let attempts = self.config.endpoints.len() + 1;
        let deadline = tokio::time::Instant::now() + self.call_timeout();
        let mut attempt = 1;
        loop {
            match tokio::time::timeout_at(deadline, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) if attempt < attempts && never_sent(&err) => {
                    tracing::debug!(attempt, error = %err, "etcd request not sent; trying another endpoint");
                    attempt += 1;
                }
                Ok(Err(err)) => return Err(self.errors.map(ctx, err)),
                Err(_) => return Err(self.errors.timeout(ctx, self.call_timeout())),
            }
        }
    }

    /// Reads every key under `prefix` in pages, all at the revision of the first page,
    /// handing each to `hand` as it arrives. Returns the revision.
    ///
    /// The next page is asked for before the current one is handed over (a page's last key
    /// tells where the next starts), in a task of its own: etcd reads and sends page n + 1
    /// while the caller folds page n in, so a listing costs about the longer of the two,
    /// not their sum.
    async fn list_pages(
        &self,
        ctx: &Ctx,
        prefix: &str,
        hand: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        let (start, end) = prefix_range(prefix);
        let mut revision: Option<Revision> = None;
        let mut limit = i64::from(self.config.list_page).max(MIN_LIST_PAGE);
        // The start of the page in flight, and the page.
        let mut from = start;
        let mut in_flight = self.read_page(ctx, &from, &end, limit, revision);
        loop {
            let Some(mut page) = in_flight.finish(&self.errors, ctx).await? else {
                if limit <= MIN_LIST_PAGE {
                    return Err(self.errors.other(
                        ctx,
                        format!(
                            "{MIN_LIST_PAGE} keys take more than {} bytes (EtcdConfig::max_response_bytes); the values under this prefix are far larger than member records",
                            self.config.max_response_bytes
                        ),
                    ));
                }
                limit = (limit / 4).max(MIN_LIST_PAGE);
                tracing::debug!(limit, "a list page was too large; reading smaller pages");
                in_flight = self.read_page(ctx, &from, &end, limit, revision);
                continue;
            };
            let page_revision = *revision.get_or_insert(page.header().map_or(0, |h| h.revision()));
            // The raw last key (not its UTF-8 reading) is where the next page starts.
            let next = match page.kvs().last() {
                Some(last) if page.more() => {
                    let mut next = last.key().to_vec();
                    next.push(0);
                    Some(next)
                }
                _ => None,
            };
            if let Some(next) = &next {
                in_flight = self.read_page(ctx, next, &end, limit, revision);
            }
            hand(Listing {
                revision: page_revision,
                kvs: page.take_kvs().into_iter().map(key_value).collect(),
            });
            match next {
                Some(next) => from = next,
                None => return Ok(page_revision),
            }
        }
    }

    /// Starts reading one page of a listing (`limit` keys from `from`, at `revision` or the
    /// current one) in a task of its own; `None` if the answer is too large for the client.
    fn read_page(
        &self,
        ctx: &Ctx,
        from: &[u8],
        end: &[u8],
        limit: i64,
        revision: Option<Revision>,
    ) -> PageRead {
        let store = self.clone();
        let ctx = ctx.clone().revision(revision.unwrap_or(0));
        let mut options = GetOptions::new().with_range(end.to_vec()).with_limit(limit);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let from = from.to_vec();
        PageRead(tokio::spawn(async move {
            store
                .call(&ctx, || {
                    let mut kv = store.kv();
                    let (from, options) = (from.clone(), options.clone());
                    async move { too_large_as_none(kv.get(from, Some(options)).await) }
                })
                .await
        }))
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(self.config.max_response_bytes)
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        let ctx = Ctx::new("lease grant");
        // etcd counts whole seconds: round up, so the lease lives at least `ttl`.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        let granted = self
            .call(&ctx, || {
                let mut leases = self.client.lease_client();
                async move { leases.grant(secs, None).await }
            })
            .await?;
        if !granted.error().is_empty() {
            return Err(self.errors.other(&ctx, granted.error()));
        }
        Ok(Lease {
            id: granted.id(),
            ttl: Duration::from_secs(granted.ttl().max(0).unsigned_abs()),
        })
    }

    async fn keep_alive(&self, lease: LeaseId, within: Duration) -> Result<Duration> {
        self.keepers.keep_alive(lease, within).await
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        let ctx = Ctx::new("lease revoke").lease(lease);
        let revoked = self
            .call(&ctx, || {
                let mut leases = self.client.lease_client();
                async move { leases.revoke(lease).await }
            })
            .await;
        match revoked {
            Ok(_) | Err(Error::LeaseNotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let mut ctx = Ctx::new("txn");
        ctx.key = txn.then.first().map(|op| match op {
            Op::Put { key, .. } | Op::Delete { key } => key.clone(),
        });
        ctx.lease = txn
            .then
            .iter()
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0);
        ctx.largest_value = txn
            .then
            .iter()
            .filter_map(|op| match op {
                Op::Put { key, value, .. } => Some((key.clone(), value.len())),
                Op::Delete { .. } => None,
            })
            .max_by_key(|(_, size)| *size);
        // What etcd's RBAC checks, for a "permission denied": read on every compared key,
        // write on every written one.
        ctx.reads = txn
            .when
            .iter()
            .map(|condition| match condition {
                Condition::Absent(key)
                | Condition::ModRevision(key, _)
                | Condition::LeaseIs(key, _) => key.clone(),
            })
            .collect();
        ctx.writes = txn
            .then
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => key.clone(),
            })
            .collect();

        let compares: Vec<Compare> = txn.when.into_iter().flat_map(compares).collect();
        let ops: Vec<TxnOp> = txn
            .then
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                    TxnOp::put(key, value, options)
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let response = self
            .call(&ctx, || {
                let mut kv = self.kv();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        Ok(TxnOutcome {
            succeeded: response.succeeded(),
            revision: response.header().map_or(0, |h| h.revision()),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let ctx = Ctx::new("get").key(key);
        let mut response = self
            .call(&ctx, || {
                let mut kv = self.kv();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(response.take_kvs().into_iter().next().map(key_value))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut listing = Listing {
            revision: 0,
            kvs: Vec::new(),
        };
        self.list_paged(prefix, &mut |page| {
            // A page at a new revision starts the listing over (see `list_paged`).
            if page.revision != listing.revision {
                listing = page;
            } else {
                listing.kvs.extend(page.kvs);
            }
        })
        .await?;
        Ok(listing)
    }

    async fn list_paged(
        &self,
        prefix: &str,
        page: &mut (dyn FnMut(Listing) + Send),
    ) -> Result<Revision> {
        let ctx = Ctx::new("list").key(prefix);
        // A compaction between two pages removes the revision the later pages read at:
        // then start over at the new revision (its first page tells the caller so).
        let mut attempts = 1;
        loop {
            match self.list_pages(&ctx, prefix, page).await {
                Err(Error::Compacted { .. }) if attempts < 3 => attempts += 1,
                Ok(revision) => {
                    self.readable(prefix);
                    return Ok(revision);
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let client = self
            .client
            .watch_client()
            .max_decoding_message_size(self.config.max_response_bytes);
        let stream = watch::open(
            client,
            prefix,
            from,
            self.call_timeout(),
            self.errors.clone(),
        )
        .await?;
        self.readable(prefix);
        Ok(stream)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let ctx = Ctx::new("compact").revision(revision);
        // Physical: return once the old revisions are really gone, so that a watch from
        // them fails right away.
        let options = CompactionOptions::new().with_physical();
        let compacted = self
            .call(&ctx, || {
                let mut kv = self.kv();
                let options = options.clone();
                async move { kv.compact(revision, Some(options)).await }
            })
            .await;
        match compacted {
            Ok(_) => Ok(()),
            // Compacting again up to (or below) what is already compacted changes nothing.
            Err(Error::Compacted { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn status(&self) -> Result<StoreStatus> {
        let scope = self.scope.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(prefix) = scope else {
            // Nothing listed or watched yet: no key is known to be readable.
            return self.member_status(&Ctx::new("status")).await;
        };
        // A count-only read of one key inside a prefix the user may read (the prefix
        // itself, so a role on the prefix covers it; "\0" for the whole keyspace):
        // linearizable, so the header is current, and cheap (a range over the whole prefix
        // would make etcd 3.4 count every key in it).
        let key = if prefix.is_empty() {
            vec![0u8]
        } else {
            prefix.as_bytes().to_vec()
        };
        let ctx = Ctx::new("status").key(String::from_utf8_lossy(&key));
        let reply = self
            .call(&ctx, || {
                let mut kv = self.kv();
                let options = GetOptions::new().with_count_only();
                let key = key.clone();
                async move { kv.get(key, Some(options)).await }
            })
            .await?;
        let header = reply.header();
        Ok(StoreStatus {
            revision: header.map_or(0, |h| h.revision()),
            cluster_id: header.map_or(0, |h| h.cluster_id()),
        })
    }
}

/// The etcd conditions for one muster condition.
///
/// etcd compares a missing key as if all its fields were 0, so "mod_revision == 0" or
/// "lease == 0" would hold for a key that does not exist; the contract says the key exists,
/// so those two also require `create_revision > 0`.
fn compares(condition: Condition) -> Vec<Compare> {
    match condition {
        Condition::Absent(key) => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
        Condition::ModRevision(key, revision) => {
            let mut list = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )];
            if revision == 0 {
                list.push(Compare::create_revision(key, CompareOp::Greater, 0));
            }
            list
        }
        Condition::LeaseIs(key, lease) => {
            let mut list = vec![Compare::lease(key.clone(), CompareOp::Equal, lease)];
            if lease == 0 {
                list.push(Compare::create_revision(key, CompareOp::Greater, 0));
            }
            list
        }
    }
}

/// The key range `[start, end)` holding every key that starts with `prefix`.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = prefix.as_bytes().to_vec();
    if start.is_empty() {
        // etcd's "from the smallest key to the end".
        return (vec![0], vec![0]);
    }
    let mut end = start.clone();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (start, end);
        }
    }
    (start, vec![0])
}

/// Whether a failed request was never sent: the connection to the endpoint the balancer
/// picked could not be made. Only then may a request that writes be repeated.
fn never_sent(err: &etcd_client::Error) -> bool {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.contains("tcp connect error") || text.contains("Connection refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        assert_eq!(prefix_range("a/"), (b"a/".to_vec(), b"a0".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
    }

    #[test]
    fn zero_valued_conditions_also_require_the_key() {
        assert_eq!(compares(Condition::LeaseIs("k".into(), 0)).len(), 2);
        assert_eq!(compares(Condition::ModRevision("k".into(), 0)).len(), 2);
        assert_eq!(compares(Condition::LeaseIs("k".into(), 5)).len(), 1);
        assert_eq!(compares(Condition::Absent("k".into())).len(), 1);
    }
}
