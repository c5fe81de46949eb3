//! The backend conformance suite: the [`Store`] contract as executable cases.
//!
//! muster's master and worker are only as correct as the store under them, and the
//! in-memory store is only useful if it behaves like etcd. So the contract of [`Store`] is
//! written down once, here, as `pub async fn` cases, and every backend runs all of them
//! (object_store's `integration.rs`, openraft's `Suite::test_all`): the memory store under
//! tokio's paused clock, the etcd store against a real etcd in a container, in real time.
//!
//! Each backend has one short test that runs everything, e.g. under
//! `#[tokio::test(start_paused = true)]` for the memory store:
//!
//! ```no_run
//! use muster_core::testing::{run_all, Settings};
//!
//! async fn conformance(store: impl muster_core::Store) {
//!     run_all(&store, &Settings::default()).await;
//! }
//! ```
//!
//! # Rules the cases follow
//!
//! - **No sleeping as synchronisation.** Cases wait for watch events with deadlines
//!   (`tokio::time::timeout`). The only sleeps are the passage of time a case tests (a lease
//!   running out), measured from instants taken around the calls, so the same case is exact
//!   under a paused clock and tolerant of etcd's ~0.5 s expiry tick in real time.
//! - **One prefix per case** ([`Settings::case_prefix`]), cleared when the case starts, so
//!   cases can share one store and a rerun against the same etcd starts clean. Leases a case
//!   grants are revoked before it returns, so no expiry lands in a later case.
//! - **Exclusive use.** Revision arithmetic is exact ("a failed transaction does not move
//!   the revision", "a put makes exactly one revision"), so nothing else may write to the
//!   store while the suite runs.
//! - Cases **panic** with a message naming the case and the step, like assertions.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::{sleep_until, timeout, Instant};

use crate::{
    Condition, Error, Event, EventKind, KeyValue, Lease, LeaseId, Result, Revision, Store, Txn,
    TxnOutcome, WatchBatch, WatchStream,
};

/// How long the suite waits for a keep-alive's answer (the caller's deadline, see
/// [`Store::keep_alive`]).
pub const KEEP_ALIVE_WITHIN: Duration = Duration::from_secs(5);

/// How the suite runs against one backend: the timings and capabilities that differ.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix every case writes under (each case under its own sub-prefix).
    pub prefix: String,
    /// The TTL requested for leases that must expire in a case. Default 2 s, etcd's minimum.
    pub lease_ttl: Duration,
    /// The store's minimum lease TTL: a smaller request must be raised to it (etcd: 2 s).
    /// `Duration::ZERO` skips that check.
    pub min_ttl: Duration,
    /// How late after its TTL an expiry may become visible. Default 1 s (etcd checks leases
    /// every ~0.5 s).
    pub expiry_grace: Duration,
    /// How long to wait for any expected watch event before failing. Default 5 s.
    pub event_timeout: Duration,
    /// Whether to run the compaction case. Compaction is store-wide: turn this off when the
    /// store is shared with something that must not see it.
    pub compaction: bool,
    /// The store's value size limit, if the oversized-value case should run.
    /// Default 1.5 MiB (etcd's default request limit).
    pub max_value_size: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "/muster-conformance/".to_owned(),
            lease_ttl: Duration::from_secs(2),
            min_ttl: Duration::from_secs(2),
            expiry_grace: Duration::from_secs(1),
            event_timeout: Duration::from_secs(5),
            compaction: true,
            max_value_size: Some(3 * 512 * 1024),
        }
    }
}

impl Settings {
    /// The prefix of one case: `{prefix}{case}/`.
    pub fn case_prefix(&self, case: &str) -> String {
        format!("{}{case}/", self.prefix)
    }
}

/// Runs every case, one after the other, on one store.
///
/// Takes about 12 s of (simulated or real) time, most of it waiting for leases to expire.
pub async fn run_all<S: Store + ?Sized>(store: &S, settings: &Settings) {
    key_metadata(store, settings).await;
    writes_that_change_nothing_keep_the_revision(store, settings).await;
    list_is_sorted_at_one_revision(store, settings).await;
    paged_list_is_the_list(store, settings).await;
    create_if_absent(store, settings).await;
    guarded_transactions(store, settings).await;
    duplicate_key_in_txn_is_rejected(store, settings).await;
    oversized_value_is_rejected(store, settings).await;
    gone_lease_is_not_found(store, settings).await;
    small_ttl_is_raised(store, settings).await;
    revoke_deletes_the_lease_keys(store, settings).await;
    expiry_deletes_only_the_leased_keys(store, settings).await;
    many_keys_of_one_lease_expire_in_one_revision(store, settings).await;
    expiry_not_before_ttl(store, settings).await;
    keep_alive_extends_the_lease(store, settings).await;
    watch_from_list_revision_replays_everything_after(store, settings).await;
    watch_from_future_revision_waits(store, settings).await;
    events_describe_puts_and_deletes(store, settings).await;
    txn_is_one_batch(store, settings).await;
    compaction_is_reported(store, settings).await;
    status_reports_the_current_revision(store, settings).await;
}

// ---------------------------------------------------------------------------------------
// Keys, revisions, transactions
// ---------------------------------------------------------------------------------------

/// `create_revision`, `mod_revision`, `version` and `lease` behave as in etcd: a put makes
/// one new revision, an overwrite keeps `create_revision` and bumps `version`, a delete
/// removes the key, and a put after a delete starts over.
pub async fn key_metadata<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "key_metadata").await;
    let k = case.key("k");

    assert_eq!(
        case.get(&k).await,
        None,
        "{case}: a missing key reads as None"
    );
    let r0 = case.revision().await;
    let r1 = case.ok_txn(Txn::new().put(&k, b"v1".to_vec(), 0)).await;
    assert_eq!(r1, r0 + 1, "{case}: a put makes exactly one new revision");
    let kv = case.must_get(&k).await;
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease
        ),
        (&b"v1"[..], r1, r1, 1, 0),
        "{case}: first put: value, create_revision, mod_revision, version, lease"
    );

    let r2 = case.ok_txn(Txn::new().put(&k, b"v2".to_vec(), 0)).await;
    assert_eq!(
        r2,
        r1 + 1,
        "{case}: an overwrite makes exactly one new revision"
    );
    let kv = case.must_get(&k).await;
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.create_revision,
            kv.mod_revision,
            kv.version
        ),
        (&b"v2"[..], r1, r2, 2),
        "{case}: overwrite keeps create_revision, bumps mod_revision and version"
    );

    let r3 = case.ok_txn(Txn::new().delete(&k)).await;
    assert_eq!(
        r3,
        r2 + 1,
        "{case}: a delete makes exactly one new revision"
    );
    assert_eq!(case.get(&k).await, None, "{case}: deleted key is gone");

    let r4 = case.ok_txn(Txn::new().put(&k, b"v3".to_vec(), 0)).await;
    let kv = case.must_get(&k).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r4, r4, 1),
        "{case}: a put after a delete starts a new life: new create_revision, version 1"
    );
    assert_eq!(
        case.revision().await,
        r4,
        "{case}: reads do not move the revision"
    );
    case.finish().await;
}

/// A transaction that writes nothing (no ops, or only deletes of absent keys) succeeds
/// without making a revision.
pub async fn writes_that_change_nothing_keep_the_revision<S: Store + ?Sized>(
    store: &S,
    settings: &Settings,
) {
    let case = Case::start(store, settings, "writes_that_change_nothing").await;
    let r0 = case.revision().await;
    let out = case.txn(Txn::new()).await;
    assert_eq!(
        (out.succeeded, out.revision),
        (true, r0),
        "{case}: empty txn"
    );
    let out = case.txn(Txn::new().delete(case.key("absent"))).await;
    assert_eq!(
        (out.succeeded, out.revision),
        (true, r0),
        "{case}: deleting an absent key succeeds and makes no revision"
    );
    let out = case
        .txn(
            Txn::new()
                .delete(case.key("absent-1"))
                .delete(case.key("absent-2")),
        )
        .await;
    assert_eq!(
        (out.succeeded, out.revision),
        (true, r0),
        "{case}: two absent deletes"
    );
    assert_eq!(case.revision().await, r0, "{case}: revision unchanged");
    case.finish().await;
}

/// `list` returns every key under the prefix, sorted, nothing outside it, at the revision
/// of the last write.
pub async fn list_is_sorted_at_one_revision<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "list_is_sorted").await;
    // A key that shares the prefix's text but not its last `/`: must not be listed.
    let outside = format!("{}-outside", case.prefix.trim_end_matches('/'));
    for name in ["c", "a", "b/nested", "b"] {
        case.ok_txn(Txn::new().put(case.key(name), name.as_bytes().to_vec(), 0))
            .await;
    }
    let last = case
        .ok_txn(Txn::new().put(&outside, b"x".to_vec(), 0))
        .await;
    let listing = ok(&case, "list", store.list(&case.prefix).await);
    assert_eq!(
        listing.revision, last,
        "{case}: listing is at the current revision"
    );
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| case.rel(&kv.key)).collect();
    assert_eq!(
        keys,
        ["a", "b", "b/nested", "c"],
        "{case}: sorted, prefix only"
    );
    for kv in &listing.kvs {
        assert_eq!(
            Some(kv),
            case.get(&kv.key).await.as_ref(),
            "{case}: list matches get"
        );
    }
    case.ok_txn(Txn::new().delete(&outside)).await;
    case.finish().await;
}

/// `list_paged` hands over the same keys as `list`, at the same revision, in key order, in
/// one page or several, each page at the listing's revision; and it hands over a page (an
/// empty one) for an empty prefix, so a caller always learns the revision.
pub async fn paged_list_is_the_list<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "paged_list").await;
    let empty = case.key("nothing/");
    let mut pages = Vec::new();
    let revision = ok(
        &case,
        "list_paged of an empty prefix",
        store.list_paged(&empty, &mut |page| pages.push(page)).await,
    );
    assert!(
        !pages.is_empty() && pages.iter().all(|p| p.kvs.is_empty() && p.revision == revision),
        "{case}: an empty prefix gives empty pages at the listing's revision: {pages:?} (revision {revision})"
    );
    for i in 0..25 {
        case.ok_txn(Txn::new().put(case.key(&format!("k{i:02}")), vec![b'v'; i], 0))
            .await;
    }
    let listing = ok(&case, "list", store.list(&case.prefix).await);
    let mut pages = Vec::new();
    let revision = ok(
        &case,
        "list_paged",
        store
            .list_paged(&case.prefix, &mut |page| pages.push(page))
            .await,
    );
    assert_eq!(revision, listing.revision, "{case}: the same revision");
    assert!(
        pages.iter().all(|p| p.revision == revision),
        "{case}: every page at the listing's revision"
    );
    let kvs: Vec<KeyValue> = pages.into_iter().flat_map(|p| p.kvs).collect();
    assert_eq!(
        kvs, listing.kvs,
        "{case}: the pages, joined, are the listing"
    );
    case.finish().await;
}

/// Create-if-absent (`Condition::Absent`): the first creates, the second fails and writes
/// nothing; after a delete it works again.
pub async fn create_if_absent<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "create_if_absent").await;
    let k = case.key("k");
    let create = |v: &str| {
        Txn::new()
            .when(Condition::Absent(k.clone()))
            .put(&k, v.as_bytes().to_vec(), 0)
    };
    let first = case.txn(create("first")).await;
    assert!(first.succeeded, "{case}: first create succeeds");
    let second = case.txn(create("second")).await;
    assert_eq!(
        (second.succeeded, second.revision),
        (false, first.revision),
        "{case}: second create fails and makes no revision"
    );
    assert_eq!(
        case.must_get(&k).await.value,
        b"first",
        "{case}: value unchanged"
    );
    case.ok_txn(Txn::new().delete(&k)).await;
    let third = case.txn(create("third")).await;
    assert!(third.succeeded, "{case}: create after delete succeeds");
    let kv = case.must_get(&k).await;
    assert_eq!(
        (kv.create_revision, kv.version),
        (third.revision, 1),
        "{case}: new life"
    );
    case.finish().await;
}

/// Guarded multi-key transactions: `ModRevision` and `LeaseIs` guards hold exactly when
/// they should; a successful transaction writes all its keys at one revision; a failed one
/// writes nothing (no revision, no event); a put on a gone lease fails the whole
/// transaction with `LeaseNotFound`.
pub async fn guarded_transactions<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "guarded_transactions").await;
    let (a, b, c) = (case.key("a"), case.key("b"), case.key("c"));
    let lease = case.grant(settings.lease_ttl).await.id;
    let other = case.grant(settings.lease_ttl).await.id;

    let r1 = case
        .ok_txn(
            Txn::new()
                .put(&a, b"a1".to_vec(), lease)
                .put(&b, b"b1".to_vec(), 0),
        )
        .await;
    let (ka, kb) = (case.must_get(&a).await, case.must_get(&b).await);
    assert_eq!(
        (ka.mod_revision, kb.mod_revision),
        (r1, r1),
        "{case}: one revision"
    );
    assert_eq!(
        (ka.lease, kb.lease),
        (lease, 0),
        "{case}: leases as written"
    );

    // Every guard that should hold.
    let r2 = case
        .ok_txn(
            Txn::new()
                .when(Condition::ModRevision(a.clone(), r1))
                .when(Condition::LeaseIs(a.clone(), lease))
                .when(Condition::ModRevision(b.clone(), r1))
                .when(Condition::Absent(c.clone()))
                .put(&b, b"b2".to_vec(), 0)
                .put(&c, b"c2".to_vec(), 0)
                .delete(&a),
        )
        .await;
    assert_eq!(
        r2,
        r1 + 1,
        "{case}: a multi-key txn makes exactly one revision"
    );
    assert_eq!(case.get(&a).await, None, "{case}: a deleted");
    assert_eq!(case.must_get(&b).await.mod_revision, r2, "{case}: b at r2");
    assert_eq!(case.must_get(&c).await.mod_revision, r2, "{case}: c at r2");

    // Guards that must fail, each alone with otherwise-valid writes.
    let r3 = case.ok_txn(Txn::new().put(&a, b"a3".to_vec(), lease)).await;
    let mut watch = case.watch(r3 + 1).await;
    let failing = [
        (
            "ModRevision with a stale revision",
            Condition::ModRevision(b.clone(), r1),
        ),
        (
            "ModRevision of a missing key",
            Condition::ModRevision(case.key("missing"), r2),
        ),
        (
            "LeaseIs with another lease",
            Condition::LeaseIs(a.clone(), other),
        ),
        (
            "LeaseIs on a key without lease",
            Condition::LeaseIs(b.clone(), lease),
        ),
        (
            "LeaseIs of a missing key",
            Condition::LeaseIs(case.key("missing"), lease),
        ),
        ("Absent of an existing key", Condition::Absent(b.clone())),
    ];
    for (what, condition) in failing {
        let out = case
            .txn(
                Txn::new()
                    .when(Condition::ModRevision(a.clone(), r3))
                    .when(condition)
                    .put(&b, b"never".to_vec(), 0)
                    .delete(&c),
            )
            .await;
        assert_eq!(
            (out.succeeded, out.revision),
            (false, r3),
            "{case}: {what}: the txn fails and makes no revision"
        );
    }

    // A put on a gone lease fails the whole transaction.
    case.revoke(other).await;
    let err = store
        .txn(
            Txn::new()
                .put(&b, b"never".to_vec(), 0)
                .put(case.key("d"), b"d".to_vec(), other),
        )
        .await
        .expect_err("a put on a revoked lease must fail");
    assert!(
        matches!(err, Error::LeaseNotFound { lease } if lease == other),
        "{case}: put on a revoked lease: want LeaseNotFound, got {err}"
    );
    assert_eq!(
        case.revision().await,
        r3,
        "{case}: failed txns make no revision"
    );

    // Nothing was written: the first event after r3 is the sentinel.
    let sentinel = case
        .ok_txn(Txn::new().put(case.key("sentinel"), Vec::new(), 0))
        .await;
    let events = watch.events_until(sentinel).await;
    assert_eq!(
        case.describe(&events),
        [format!("put sentinel= @{sentinel}")],
        "{case}: failed transactions produce no events"
    );
    assert_eq!(case.must_get(&b).await.value, b"b2", "{case}: b unchanged");
    assert!(case.get(&c).await.is_some(), "{case}: c not deleted");
    case.finish().await;
}

/// A transaction that writes one key twice (put+put or put+delete) is rejected, as etcd
/// does ("duplicate key given in txn request"), even when its conditions would fail, and
/// writes nothing.
pub async fn duplicate_key_in_txn_is_rejected<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "duplicate_key_in_txn").await;
    let (k, other) = (case.key("k"), case.key("other"));
    let r0 = case.revision().await;
    let txns = [
        (
            "put twice",
            Txn::new()
                .put(&k, b"1".to_vec(), 0)
                .put(&k, b"2".to_vec(), 0),
        ),
        (
            "put and delete",
            Txn::new()
                .put(&other, b"1".to_vec(), 0)
                .put(&k, b"1".to_vec(), 0)
                .delete(&k),
        ),
        (
            "put twice behind a failing condition",
            Txn::new()
                .when(Condition::ModRevision(other.clone(), r0 + 100))
                .put(&k, b"1".to_vec(), 0)
                .put(&k, b"2".to_vec(), 0),
        ),
    ];
    for (what, txn) in txns {
        match store.txn(txn).await {
            Err(Error::Unavailable { .. }) | Ok(_) => {
                panic!("{case}: {what}: the store must reject a txn writing one key twice")
            }
            Err(_) => {}
        }
    }
    assert_eq!(
        case.revision().await,
        r0,
        "{case}: rejected txns make no revision"
    );
    assert_eq!(case.get(&k).await, None, "{case}: nothing written");
    assert_eq!(case.get(&other).await, None, "{case}: nothing written");
    case.finish().await;
}

/// A value over the store's limit fails with `Error::ValueTooLarge` and writes nothing.
/// Skipped when [`Settings::max_value_size`] is `None`.
pub async fn oversized_value_is_rejected<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let Some(limit) = settings.max_value_size else {
        return;
    };
    let case = Case::start(store, settings, "oversized_value").await;
    let k = case.key("big");
    let r0 = case.revision().await;
    let err = store
        .txn(Txn::new().put(&k, vec![b'x'; limit + 1], 0))
        .await
        .expect_err("an oversized value must be rejected");
    assert!(
        matches!(&err, Error::ValueTooLarge { key, size, .. } if *key == k && *size == limit + 1),
        "{case}: want ValueTooLarge for {k:?} of {} bytes, got {err}",
        limit + 1
    );
    assert_eq!(case.revision().await, r0, "{case}: nothing written");
    assert_eq!(case.get(&k).await, None, "{case}: nothing written");
    case.ok_txn(Txn::new().put(&k, vec![b'x'; 1024], 0)).await;
    case.finish().await;
}

// ---------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------

/// A revoked (or never granted) lease is gone: `keep_alive` reports `LeaseNotFound` with
/// its id, a put on it fails the same way, and revoking it again is fine.
pub async fn gone_lease_is_not_found<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "gone_lease_is_not_found").await;
    let lease = case.grant(settings.lease_ttl).await;
    let ttl = ok(
        &case,
        "keep_alive",
        store.keep_alive(lease.id, KEEP_ALIVE_WITHIN).await,
    );
    assert_eq!(ttl, lease.ttl, "{case}: keep_alive returns the granted TTL");
    case.revoke(lease.id).await;
    let err = store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .expect_err("keep_alive on a revoked lease");
    assert!(
        matches!(err, Error::LeaseNotFound { lease: l } if l == lease.id),
        "{case}: keep_alive on a revoked lease: want LeaseNotFound, got {err}"
    );
    let err = store
        .txn(Txn::new().put(case.key("k"), Vec::new(), lease.id))
        .await
        .expect_err("put on a revoked lease");
    assert!(
        matches!(err, Error::LeaseNotFound { lease: l } if l == lease.id),
        "{case}: put on a revoked lease: want LeaseNotFound, got {err}"
    );
    ok(
        &case,
        "revoking a revoked lease",
        store.revoke(lease.id).await,
    );
    // An id this run never granted (ids are store-chosen; this one is just unlikely).
    let never = 0x0bad_1ea5e;
    let err = store
        .keep_alive(never, KEEP_ALIVE_WITHIN)
        .await
        .expect_err("keep_alive on a never-granted lease");
    assert!(
        matches!(err, Error::LeaseNotFound { lease: l } if l == never),
        "{case}: keep_alive on a never-granted lease: want LeaseNotFound, got {err}"
    );
    case.finish().await;
}

/// A TTL below the store's minimum is raised to it (etcd: 2 s).
/// Skipped when [`Settings::min_ttl`] is zero.
pub async fn small_ttl_is_raised<S: Store + ?Sized>(store: &S, settings: &Settings) {
    if settings.min_ttl.is_zero() {
        return;
    }
    let case = Case::start(store, settings, "small_ttl_is_raised").await;
    let lease = case.grant(settings.min_ttl / 2).await;
    assert!(
        lease.ttl >= settings.min_ttl,
        "{case}: asked for {:?}, got {:?}, below the minimum {:?}",
        settings.min_ttl / 2,
        lease.ttl,
        settings.min_ttl
    );
    case.finish().await;
}

/// Revoking a lease deletes exactly the keys bound to it *now*, all in one revision, as one
/// batch of deletes. A key re-put without the lease survives.
pub async fn revoke_deletes_the_lease_keys<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "revoke_deletes_keys").await;
    let lease = case.grant(settings.lease_ttl).await.id;
    case.ok_txn(
        Txn::new()
            .put(case.key("a"), b"a".to_vec(), lease)
            .put(case.key("b"), b"b".to_vec(), lease)
            .put(case.key("rebound"), b"old".to_vec(), lease)
            .put(case.key("plain"), b"p".to_vec(), 0),
    )
    .await;
    // Re-put without the lease: the key is no longer the lease's.
    let r2 = case
        .ok_txn(Txn::new().put(case.key("rebound"), b"new".to_vec(), 0))
        .await;
    let mut watch = case.watch(r2 + 1).await;
    case.revoke(lease).await;
    let r3 = r2 + 1;
    let batch = watch.next_batch(settings.event_timeout).await;
    assert_eq!(
        case.describe(&batch.events),
        [format!("delete a @{r3}"), format!("delete b @{r3}")],
        "{case}: both keys of the lease deleted in one revision, in one batch"
    );
    let left: Vec<String> = case.list_rel().await;
    assert_eq!(left, ["plain", "rebound"], "{case}: unleased keys survive");
    let err = store
        .keep_alive(lease, KEEP_ALIVE_WITHIN)
        .await
        .expect_err("keep_alive after revoke");
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{case}: {err}");
    case.finish().await;
}

/// Lease expiry deletes the lease's keys (and only them) in one revision, as one batch of
/// deletes; afterwards `keep_alive` reports `LeaseNotFound`.
pub async fn expiry_deletes_only_the_leased_keys<S: Store + ?Sized>(
    store: &S,
    settings: &Settings,
) {
    let case = Case::start(store, settings, "expiry_deletes_only_leased_keys").await;
    let lease = case.grant(settings.lease_ttl).await;
    let r1 = case
        .ok_txn(
            Txn::new()
                .put(case.key("a"), b"a".to_vec(), lease.id)
                .put(case.key("b"), b"b".to_vec(), lease.id)
                .put(case.key("plain"), b"p".to_vec(), 0),
        )
        .await;
    let granted = Instant::now();
    let mut watch = case.watch(r1 + 1).await;
    let wait =
        (granted + lease.ttl + settings.expiry_grace).saturating_duration_since(Instant::now());
    let batch = watch.next_batch(wait).await;
    let r2 = r1 + 1;
    assert_eq!(
        case.describe(&batch.events),
        [format!("delete a @{r2}"), format!("delete b @{r2}")],
        "{case}: both keys of the expired lease deleted in one revision, in one batch"
    );
    assert_eq!(
        case.list_rel().await,
        ["plain"],
        "{case}: the unleased key survives"
    );
    let err = store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .expect_err("keep_alive after expiry");
    assert!(
        matches!(err, Error::LeaseNotFound { lease: l } if l == lease.id),
        "{case}: keep_alive on an expired lease: want LeaseNotFound, got {err}"
    );
    case.finish().await;
}

/// Many keys put on one lease, each by its own transaction at its own revision (a process
/// hosting many members on one lease: `muster_worker::WorkerGroup`), are all deleted in one
/// revision when the lease expires, in one batch.
pub async fn many_keys_of_one_lease_expire_in_one_revision<S: Store + ?Sized>(
    store: &S,
    settings: &Settings,
) {
    const KEYS: usize = 100;
    let case = Case::start(store, settings, "many_keys_of_one_lease").await;
    let lease = case.grant(settings.lease_ttl).await;
    let mut last = 0;
    for i in 0..KEYS {
        let key = case.key(&format!("k{i:03}"));
        last = case
            .ok_txn(Txn::new().when(Condition::Absent(key.clone())).put(
                key,
                b"v".to_vec(),
                lease.id,
            ))
            .await;
    }
    // Renewed after the puts, so that slow puts cannot run it out half-way.
    let renewed = Instant::now();
    let ttl = store
        .keep_alive(lease.id, KEEP_ALIVE_WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{case}: keep_alive: {e}"));
    let mut watch = case.watch(last + 1).await;
    let wait = (renewed + ttl.max(lease.ttl) + settings.expiry_grace)
        .saturating_duration_since(Instant::now());
    let batch = watch.next_batch(wait).await;
    assert_eq!(
        batch.events.len(),
        KEYS,
        "{case}: every key of the lease in the first batch after expiry"
    );
    assert!(
        batch
            .events
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == last + 1),
        "{case}: all deletes at revision {}: {:?}",
        last + 1,
        case.describe(&batch.events[..3])
    );
    assert!(case.list_rel().await.is_empty(), "{case}: nothing left");
    case.finish().await;
}

/// Expiry is not early: a leased key still exists shortly before the TTL has run out since
/// the grant, and its delete arrives no earlier than the TTL and within the grace after.
pub async fn expiry_not_before_ttl<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "expiry_not_before_ttl").await;
    let k = case.key("k");
    let before_grant = Instant::now();
    let lease = case.grant(settings.lease_ttl).await;
    let after_grant = Instant::now();
    let r1 = case.ok_txn(Txn::new().put(&k, Vec::new(), lease.id)).await;
    let mut watch = case.watch(r1 + 1).await;

    let margin = (lease.ttl / 4).min(Duration::from_millis(500));
    sleep_until(before_grant + lease.ttl - margin).await;
    assert!(
        case.get(&k).await.is_some(),
        "{case}: the key must exist {margin:?} before the TTL ({:?}) has run out",
        lease.ttl
    );
    let wait =
        (after_grant + lease.ttl + settings.expiry_grace).saturating_duration_since(Instant::now());
    let batch = watch.next_batch(wait).await;
    let arrived = Instant::now();
    assert_eq!(
        case.describe(&batch.events),
        [format!("delete k @{}", r1 + 1)]
    );
    assert!(
        arrived >= before_grant + lease.ttl,
        "{case}: expired after {:?}, before its TTL of {:?}",
        arrived - before_grant,
        lease.ttl
    );
    assert_eq!(case.get(&k).await, None, "{case}: gone after the TTL");
    case.finish().await;
}

/// `keep_alive` restarts the TTL: the key outlives the first deadline, and expires no
/// earlier than one TTL after the keep-alive.
pub async fn keep_alive_extends_the_lease<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "keep_alive_extends").await;
    let k = case.key("k");
    let before_grant = Instant::now();
    let lease = case.grant(settings.lease_ttl).await;
    let r1 = case.ok_txn(Txn::new().put(&k, Vec::new(), lease.id)).await;
    let mut watch = case.watch(r1 + 1).await;

    sleep_until(before_grant + lease.ttl / 2).await;
    let before_keep_alive = Instant::now();
    let ttl = ok(
        &case,
        "keep_alive",
        store.keep_alive(lease.id, KEEP_ALIVE_WITHIN).await,
    );
    let after_keep_alive = Instant::now();
    assert_eq!(ttl, lease.ttl, "{case}: keep_alive returns the granted TTL");

    let margin = (lease.ttl / 4).min(Duration::from_millis(500));
    sleep_until(before_grant + lease.ttl + margin).await;
    assert!(
        case.get(&k).await.is_some(),
        "{case}: the key must outlive the first deadline after a keep-alive"
    );
    let wait = (after_keep_alive + lease.ttl + settings.expiry_grace)
        .saturating_duration_since(Instant::now());
    let batch = watch.next_batch(wait).await;
    let arrived = Instant::now();
    assert_eq!(
        case.describe(&batch.events),
        [format!("delete k @{}", r1 + 1)]
    );
    assert!(
        arrived >= before_keep_alive + lease.ttl,
        "{case}: expired {:?} after the keep-alive, before its TTL of {:?}",
        arrived - before_keep_alive,
        lease.ttl
    );
    case.finish().await;
}

// ---------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------

/// The master's pattern: list at revision R, then watch from R+1. Every write made between
/// the list and the watch is delivered, in order, none from before R+1, nothing outside the
/// prefix, no revision split across batches; then live events follow.
pub async fn watch_from_list_revision_replays_everything_after<S: Store + ?Sized>(
    store: &S,
    settings: &Settings,
) {
    let case = Case::start(store, settings, "list_then_watch").await;
    let outside = format!("{}-outside", case.prefix.trim_end_matches('/'));
    let r0 = case
        .ok_txn(Txn::new().put(case.key("a"), b"a0".to_vec(), 0))
        .await;
    let listing = ok(&case, "list", store.list(&case.prefix).await);
    let r = listing.revision;
    assert_eq!(r, r0, "{case}: listing at the last write");

    // Writes the watch has not seen yet.
    let r1 = case
        .ok_txn(Txn::new().put(case.key("b"), b"b1".to_vec(), 0))
        .await;
    let r2 = case
        .ok_txn(Txn::new().put(case.key("a"), b"a2".to_vec(), 0).put(
            case.key("c"),
            b"c2".to_vec(),
            0,
        ))
        .await;
    let r3 = case.ok_txn(Txn::new().delete(case.key("b"))).await;
    let r4 = case
        .ok_txn(Txn::new().put(&outside, b"x".to_vec(), 0))
        .await;
    let r5 = case
        .ok_txn(Txn::new().put(case.key("a"), b"a5".to_vec(), 0))
        .await;
    assert_eq!(
        [r1, r2, r3, r4, r5],
        [r + 1, r + 2, r + 3, r + 4, r + 5],
        "{case}: one revision each"
    );

    let mut watch = case.watch(r + 1).await;
    let replayed = watch.events_until(r5).await;
    let mut want = vec![
        format!("put b=b1 @{r1}"),
        format!("put a=a2 @{r2}"),
        format!("put c=c2 @{r2}"),
        format!("delete b @{r3}"),
        format!("put a=a5 @{r5}"),
    ];
    assert_eq!(
        sorted_within_revisions(case.describe(&replayed)),
        sorted_within_revisions(want.clone()),
        "{case}: replay from R+1"
    );

    let r6 = case.ok_txn(Txn::new().delete(case.key("c"))).await;
    let live = watch.events_until(r6).await;
    want = vec![format!("delete c @{r6}")];
    assert_eq!(
        case.describe(&live),
        want,
        "{case}: live events follow the replay"
    );
    case.ok_txn(Txn::new().delete(&outside)).await;
    case.finish().await;
}

/// A watch from a revision the store has not reached yet waits for it and skips the
/// revisions before it.
pub async fn watch_from_future_revision_waits<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "watch_from_future").await;
    let r = case.revision().await;
    let mut watch = case.watch(r + 2).await;
    let r1 = case
        .ok_txn(Txn::new().put(case.key("early"), b"1".to_vec(), 0))
        .await;
    let r2 = case
        .ok_txn(Txn::new().put(case.key("late"), b"2".to_vec(), 0))
        .await;
    assert_eq!((r1, r2), (r + 1, r + 2), "{case}: one revision each");
    let events = watch.events_until(r2).await;
    assert_eq!(
        case.describe(&events),
        [format!("put late=2 @{r2}")],
        "{case}: only revisions from the requested one"
    );
    case.finish().await;
}

/// A put's event carries the key as written (its version counting the writes since it was
/// created); a delete's carries the key with an empty value at the delete's revision. No
/// event carries the previous value (see [`Event`](crate::Event)).
pub async fn events_describe_puts_and_deletes<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "events_describe_puts_and_deletes").await;
    let k = case.key("k");
    let r = case.revision().await;
    let mut watch = case.watch(r + 1).await;
    let r1 = case.ok_txn(Txn::new().put(&k, b"v1".to_vec(), 0)).await;
    let r2 = case.ok_txn(Txn::new().put(&k, b"v2".to_vec(), 0)).await;
    let r3 = case.ok_txn(Txn::new().delete(&k)).await;
    let events = watch.events_until(r3).await;
    assert_eq!(
        events.len(),
        3,
        "{case}: three events: {:?}",
        case.describe(&events)
    );
    let (create, update, delete) = (&events[0], &events[1], &events[2]);

    assert_eq!(
        (create.kind, create.revision()),
        (EventKind::Put, r1),
        "{case}: create"
    );
    assert_eq!(
        (
            create.kv.value.as_slice(),
            create.kv.version,
            create.kv.create_revision
        ),
        (&b"v1"[..], 1, r1),
        "{case}: a create's kv"
    );

    assert_eq!(
        (update.kind, update.revision()),
        (EventKind::Put, r2),
        "{case}: update"
    );
    assert_eq!(
        (update.kv.value.as_slice(), update.kv.create_revision),
        (&b"v2"[..], r1),
        "{case}: an update keeps the create revision"
    );
    assert_eq!(update.kv.version, 2, "{case}: update's version");

    assert_eq!(
        (delete.kind, delete.revision()),
        (EventKind::Delete, r3),
        "{case}: delete"
    );
    assert_eq!(
        (
            delete.kv.key.as_str(),
            delete.kv.value.as_slice(),
            delete.kv.mod_revision
        ),
        (k.as_str(), &b""[..], r3),
        "{case}: a delete's kv: key, empty value, mod_revision = the delete's revision"
    );
    case.finish().await;
}

/// [`Store::status`] reports the current revision (the one a write just made, the one a
/// listing was taken at) and an identity that does not change while the data lives.
pub async fn status_reports_the_current_revision<S: Store + ?Sized>(
    store: &S,
    settings: &Settings,
) {
    let case = Case::start(store, settings, "status_reports_the_current_revision").await;
    let before = store.status().await.expect("status");
    let written = case
        .ok_txn(Txn::new().put(case.key("s"), b"s".to_vec(), 0))
        .await;
    let after = store.status().await.expect("status");
    assert_eq!(after.revision, written, "{case}: status after a write");
    assert!(before.revision < written, "{case}: status before a write");
    assert_eq!(
        after.cluster_id, before.cluster_id,
        "{case}: the identity is stable"
    );
    let listing = store.list(&case.key("")).await.expect("list");
    let now = store.status().await.expect("status");
    assert_eq!(
        now.revision, listing.revision,
        "{case}: status and listing agree"
    );
    case.finish().await;
}

/// All events of one transaction arrive in one batch (a revision is never split).
pub async fn txn_is_one_batch<S: Store + ?Sized>(store: &S, settings: &Settings) {
    let case = Case::start(store, settings, "txn_is_one_batch").await;
    let r0 = case
        .ok_txn(Txn::new().put(case.key("z"), b"z".to_vec(), 0))
        .await;
    let mut watch = case.watch(r0 + 1).await;
    let r1 = case
        .ok_txn(
            Txn::new()
                .put(case.key("x"), b"x".to_vec(), 0)
                .put(case.key("y"), b"y".to_vec(), 0)
                .delete(case.key("z")),
        )
        .await;
    let batch = watch.next_batch(settings.event_timeout).await;
    assert_eq!(
        sorted_within_revisions(case.describe(&batch.events)),
        [
            format!("delete z @{r1}"),
            format!("put x=x @{r1}"),
            format!("put y=y @{r1}"),
        ],
        "{case}: the whole transaction in the first batch"
    );
    assert!(
        batch.revision >= r1,
        "{case}: batch revision {} < {r1}",
        batch.revision
    );
    case.finish().await;
}

/// After `compact(C)`, a watch from a revision below `C` reports `Error::Compacted` with
/// the requested and compaction revisions (from `watch` or as the stream's first item) and
/// ends; a watch from after `C` works; compacting to a future revision is an error.
/// Skipped when [`Settings::compaction`] is off.
pub async fn compaction_is_reported<S: Store + ?Sized>(store: &S, settings: &Settings) {
    if !settings.compaction {
        return;
    }
    let case = Case::start(store, settings, "compaction").await;
    let k = case.key("k");
    let r1 = case.ok_txn(Txn::new().put(&k, b"1".to_vec(), 0)).await;
    let r2 = case.ok_txn(Txn::new().put(&k, b"2".to_vec(), 0)).await;
    let r3 = case.ok_txn(Txn::new().put(&k, b"3".to_vec(), 0)).await;
    ok(&case, "compact", store.compact(r2).await);

    let check = |err: Error| {
        assert!(
            matches!(err, Error::Compacted { requested, compacted } if requested == r1 && compacted == r2),
            "{case}: watch from {r1} after compact({r2}): want Compacted {{ requested: {r1}, compacted: {r2} }}, got {err}"
        );
    };
    match store.watch(&case.prefix, r1).await {
        Err(err) => check(err),
        Ok(mut stream) => {
            match timeout(settings.event_timeout, stream.next()).await {
                Ok(Some(Err(err))) => check(err),
                Ok(Some(Ok(batch))) => {
                    panic!("{case}: watch from a compacted revision delivered {batch:?}")
                }
                Ok(None) => panic!("{case}: watch from a compacted revision ended silently"),
                Err(_) => panic!("{case}: watch from a compacted revision reported nothing"),
            }
            match timeout(settings.event_timeout, stream.next()).await {
                Ok(None) => {}
                Ok(Some(item)) => panic!("{case}: the stream must end after Compacted: {item:?}"),
                Err(_) => panic!("{case}: the stream did not end after Compacted"),
            }
        }
    }

    let mut watch = case.watch(r3).await;
    let events = watch.events_until(r3).await;
    assert_eq!(
        case.describe(&events),
        [format!("put k=3 @{r3}")],
        "{case}: a watch from after the compaction replays"
    );

    let future = case.revision().await + 1000;
    assert!(
        store.compact(future).await.is_err(),
        "{case}: compacting to a future revision must fail"
    );
    case.finish().await;
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One running case: its name, prefix, store and the leases to revoke at the end.
struct Case<'a, S: ?Sized> {
    /// The store under test.
    store: &'a S,
    /// The case's name, in every message.
    name: &'static str,
    /// `{settings.prefix}{name}/`.
    prefix: String,
    /// How long to wait for watch events.
    event_timeout: Duration,
    /// Leases granted by the case, revoked by `finish`.
    leases: std::sync::Mutex<Vec<LeaseId>>,
}

impl<S: ?Sized> std::fmt::Display for Case<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conformance case {}", self.name)
    }
}

impl<'a, S: Store + ?Sized> Case<'a, S> {
    /// Starts a case: deletes whatever an earlier run left under its prefix.
    async fn start(store: &'a S, settings: &Settings, name: &'static str) -> Self {
        let case = Self {
            store,
            name,
            prefix: settings.case_prefix(name),
            event_timeout: settings.event_timeout,
            leases: std::sync::Mutex::new(Vec::new()),
        };
        let leftovers = ok(&case, "list leftovers", store.list(&case.prefix).await);
        for kv in leftovers.kvs {
            ok(
                &case,
                "delete leftovers",
                store.txn(Txn::new().delete(kv.key)).await,
            );
        }
        case
    }

    /// Ends a case: revokes its leases so none expires during a later case.
    async fn finish(self) {
        let leases = std::mem::take(&mut *self.leases.lock().unwrap_or_else(|e| e.into_inner()));
        for lease in leases {
            ok(&self, "revoke at the end", self.store.revoke(lease).await);
        }
    }

    /// `{prefix}{name}`.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A key relative to the prefix, for messages.
    fn rel<'k>(&self, key: &'k str) -> &'k str {
        key.strip_prefix(self.prefix.as_str()).unwrap_or(key)
    }

    /// The store's current revision.
    async fn revision(&self) -> Revision {
        ok(self, "list", self.store.list(&self.prefix).await).revision
    }

    /// The keys under the prefix, relative.
    async fn list_rel(&self) -> Vec<String> {
        let listing = ok(self, "list", self.store.list(&self.prefix).await);
        listing
            .kvs
            .iter()
            .map(|kv| self.rel(&kv.key).to_owned())
            .collect()
    }

    /// Reads a key.
    async fn get(&self, key: &str) -> Option<KeyValue> {
        ok(self, "get", self.store.get(key).await)
    }

    /// Reads a key that must exist.
    async fn must_get(&self, key: &str) -> KeyValue {
        self.get(key)
            .await
            .unwrap_or_else(|| panic!("{self}: key {key:?} must exist"))
    }

    /// Runs a transaction that must not fail.
    async fn txn(&self, txn: Txn) -> TxnOutcome {
        ok(self, "txn", self.store.txn(txn).await)
    }

    /// Runs a transaction that must succeed; returns its revision.
    async fn ok_txn(&self, txn: Txn) -> Revision {
        let out = self.txn(txn).await;
        assert!(out.succeeded, "{self}: the txn's conditions must hold");
        out.revision
    }

    /// Grants a lease, revoked by `finish`.
    async fn grant(&self, ttl: Duration) -> Lease {
        let lease = ok(self, "grant", self.store.grant(ttl).await);
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lease.id);
        lease
    }

    /// Revokes a lease.
    async fn revoke(&self, lease: LeaseId) {
        ok(self, "revoke", self.store.revoke(lease).await);
    }

    /// Watches the case's prefix from `from`.
    async fn watch(&self, from: Revision) -> Watch {
        let stream = ok(self, "watch", self.store.watch(&self.prefix, from).await);
        Watch {
            stream,
            what: format!("{self}: watch from {from}"),
            timeout: self.event_timeout,
            last: 0,
        }
    }

    /// Events as short strings with keys relative to the prefix:
    /// `put k=v @rev` / `delete k @rev`.
    fn describe(&self, events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let key = self.rel(&e.kv.key);
                match e.kind {
                    EventKind::Put => format!(
                        "put {key}={} @{}",
                        String::from_utf8_lossy(&e.kv.value),
                        e.revision()
                    ),
                    EventKind::Delete => format!("delete {key} @{}", e.revision()),
                }
            })
            .collect()
    }
}

/// Sorts described events within each revision (the `@rev` part), keeping revision order:
/// the contract orders revisions, not the events inside one.
fn sorted_within_revisions(mut described: Vec<String>) -> Vec<String> {
    let rev = |s: &String| -> Revision {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix('@'))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    };
    described.sort_by(|a, b| rev(a).cmp(&rev(b)).then_with(|| a.cmp(b)));
    described
}

/// A watch under test: every batch is checked against the contract as it arrives.
struct Watch {
    /// The stream.
    stream: WatchStream,
    /// What it is, for messages.
    what: String,
    /// How long to wait for one batch, by default.
    timeout: Duration,
    /// The revision of the last event seen: the next batch must start after it.
    last: Revision,
}

impl Watch {
    /// The next batch with events, within `wait`. Progress batches (no events) are skipped.
    async fn next_batch(&mut self, wait: Duration) -> WatchBatch {
        let deadline = Instant::now() + wait;
        loop {
            let item = match timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.stream.next(),
            )
            .await
            {
                Err(_) => panic!("{}: no event within {wait:?}", self.what),
                Ok(None) => panic!("{}: the stream ended", self.what),
                Ok(Some(item)) => item,
            };
            let batch = item.unwrap_or_else(|err| panic!("{}: error: {err}", self.what));
            if batch.events.is_empty() {
                continue;
            }
            self.check(&batch);
            return batch;
        }
    }

    /// Every event up to and including revision `rev`, across batches.
    async fn events_until(&mut self, rev: Revision) -> Vec<Event> {
        let mut events = Vec::new();
        while self.last < rev {
            let batch = self.next_batch(self.timeout).await;
            events.extend(batch.events);
        }
        events
    }

    /// Revisions ascend within the batch and start after the previous batch (so no
    /// revision is split or repeated); the batch's revision covers its events.
    fn check(&mut self, batch: &WatchBatch) {
        let mut prev = self.last;
        for (i, event) in batch.events.iter().enumerate() {
            let rev = event.revision();
            if i == 0 {
                assert!(
                    rev > prev,
                    "{}: batch starts at revision {rev}, not after the previous batch's {prev} (a split or repeated revision)",
                    self.what
                );
            } else {
                assert!(
                    rev >= prev,
                    "{}: revisions out of order in a batch: {prev} then {rev}",
                    self.what
                );
            }
            prev = rev;
        }
        assert!(
            batch.revision >= prev,
            "{}: batch revision {} below its last event's {prev}",
            self.what,
            batch.revision
        );
        self.last = prev;
    }
}

/// Unwraps a store result, panicking with the case and the step.
fn ok<T, S: ?Sized>(case: &Case<'_, S>, what: &str, result: Result<T>) -> T {
    result.unwrap_or_else(|err| panic!("{case}: {what} failed: {err}"))
}
