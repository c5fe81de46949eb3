//! `EtcdStore` behaviour beyond the shared conformance suite: what only a large or real
//! etcd shows.

use std::time::Duration;

use muster_core::testing::KEEP_ALIVE_WITHIN;
use muster_core::{Error, LeaseId, Store, Txn};
use muster_etcd_backend::{EtcdConfig, EtcdStore};
use muster_testkit::etcd::Etcd;

use crate::support::keep_alive_streams_opened;

/// A listing of several pages (2,500 keys in pages of 1,000) is complete, sorted, and at one
/// revision, and `list_paged` hands the same keys over as each page is read.
#[tokio::test]
async fn large_listing_is_complete_and_consistent() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let config = EtcdConfig {
        list_page: 1000,
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let prefix = "/store/large/";
    let mut last = 0;
    // 2,500 keys in transactions of 100 puts (etcd allows 128 operations per transaction).
    for chunk in 0..25 {
        let mut txn = Txn::new();
        for i in 0..100 {
            txn = txn.put(format!("{prefix}{:05}", chunk * 100 + i), b"v".to_vec(), 0);
        }
        last = store.txn(txn).await.expect("txn").revision;
    }
    // Keys just outside the prefix must not show up.
    store
        .txn(Txn::new().put("/store/large0", b"x".to_vec(), 0))
        .await
        .expect("txn");

    let listing = store.list(prefix).await.expect("list");
    assert_eq!(listing.kvs.len(), 2500);
    let keys: Vec<&str> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "the listing is sorted by key");
    assert_eq!(keys[0], "/store/large/00000");
    assert_eq!(keys[2499], "/store/large/02499");
    assert_eq!(
        listing.revision,
        last + 1,
        "the listing's revision is the store's"
    );

    // Read page by page, the same keys arrive as they are read: three pages of (at most)
    // 1,000, each at the listing's revision.
    let mut pages = Vec::new();
    let revision = store
        .list_paged(prefix, &mut |page| pages.push(page))
        .await
        .expect("list_paged");
    assert_eq!(revision, listing.revision);
    let sizes: Vec<usize> = pages.iter().map(|p| p.kvs.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500], "pages as read");
    assert!(pages.iter().all(|p| p.revision == revision));
    let joined: Vec<_> = pages.into_iter().flat_map(|p| p.kvs).collect();
    assert_eq!(joined, listing.kvs, "the pages, joined, are the listing");
}

/// A listing is not bounded by one call's deadline: each page is. 60 keys in pages of 10,
/// handed to a caller that takes 1.2 s over the first page, list completely with a call
/// deadline of 1 s (connect 500 ms + request 500 ms): a listing under one fixed deadline
/// would fail at the first page read after it (the master's used to be under one 5 s
/// timeout, too short for a very large group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_longer_than_one_call_deadline_completes_page_by_page() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let config = EtcdConfig {
        list_page: 10,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let prefix = "/store/slow/";
    let mut txn = Txn::new();
    for i in 0..60 {
        txn = txn.put(format!("{prefix}{i:02}"), b"v".to_vec(), 0);
    }
    store.txn(txn).await.expect("txn");

    let started = std::time::Instant::now();
    let mut keys = 0;
    let mut pages = 0;
    store
        .list_paged(prefix, &mut |page| {
            // A slow consumer (the work a caller does with a page), not a wait for an event.
            if pages == 0 {
                std::thread::sleep(Duration::from_millis(1200));
            }
            keys += page.kvs.len();
            pages += 1;
        })
        .await
        .expect("a listing that outlasts one call deadline");
    assert_eq!((keys, pages), (60, 6));
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the listing took longer than one call deadline, as the test means it to"
    );
}

/// Keys that are not UTF-8 (written by something other than muster) do not derail paging:
/// each page resumes after the raw bytes of its last key, not after their UTF-8 reading
/// (which would read the same keys again), so 30 such keys in pages of 10 list once each.
#[tokio::test]
async fn a_listing_pages_past_keys_that_are_not_utf8() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let config = EtcdConfig {
        list_page: 10,
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("a bare client");
    let prefix = "/store/bytes/";
    for i in 0..30u8 {
        let mut key = prefix.as_bytes().to_vec();
        key.extend([b'k', 0xff, b'0' + i]);
        client.put(key, b"v".to_vec(), None).await.expect("put");
    }

    let listing = store.list(prefix).await.expect("list");
    assert_eq!(listing.kvs.len(), 30, "each key once: {:?}", listing.kvs);
    assert!(listing
        .kvs
        .iter()
        .all(|kv| kv.key.starts_with("/store/bytes/k\u{fffd}")));
}

/// A page whose answer is larger than the client accepts is read again in smaller pages:
/// 100 values of 1 KiB with a 16 KiB answer limit still list completely (in pages of 15).
#[tokio::test]
async fn pages_too_large_for_the_client_shrink_instead_of_failing() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let config = EtcdConfig {
        max_response_bytes: 16 * 1024,
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let prefix = "/store/big/";
    let mut txn = Txn::new();
    for i in 0..100 {
        txn = txn.put(format!("{prefix}{i:03}"), vec![b'x'; 1024], 0);
    }
    let written = store.txn(txn).await.expect("txn").revision;

    let listing = store.list(prefix).await.expect("list");
    assert_eq!(listing.kvs.len(), 100);
    assert!(listing.kvs.iter().all(|kv| kv.value.len() == 1024));
    assert_eq!(listing.kvs[99].key, "/store/big/099");
    assert_eq!(listing.revision, written);
}

/// All the leases of one store and its clones share its keep-alive streams: with
/// `keep_alive_streams: 1`, 200 leases kept alive at once (each through its own clone),
/// twice, open exactly one stream at etcd, each renewal answered
/// for its own lease, and a revoked lease among them is reported gone without disturbing
/// the others.
#[tokio::test]
async fn the_leases_of_a_store_share_its_keep_alive_streams() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let config = EtcdConfig {
        keep_alive_streams: 1,
        ..etcd.config()
    };
    let store = EtcdStore::connect(config).await.expect("connect");
    let mut leases = Vec::new();
    for _ in 0..200 {
        leases.push(
            store
                .grant(Duration::from_secs(30))
                .await
                .expect("grant")
                .id,
        );
    }
    let before = keep_alive_streams_opened(&etcd);
    for round in 0..2 {
        let renewals = leases.iter().map(|&lease| {
            let store = store.clone();
            async move { (lease, store.keep_alive(lease, KEEP_ALIVE_WITHIN).await) }
        });
        for (lease, renewed) in futures::future::join_all(renewals).await {
            let ttl = renewed.unwrap_or_else(|err| panic!("round {round}, lease {lease:x}: {err}"));
            assert_eq!(ttl, Duration::from_secs(30), "lease {lease:x}");
        }
    }
    assert_eq!(
        keep_alive_streams_opened(&etcd) - before,
        1.0,
        "400 renewals of 200 leases must travel on one stream"
    );

    let gone = leases[7];
    store.revoke(gone).await.expect("revoke");
    let renewals = leases.iter().map(|&lease| {
        let store = store.clone();
        async move { (lease, store.keep_alive(lease, KEEP_ALIVE_WITHIN).await) }
    });
    for (lease, renewed) in futures::future::join_all(renewals).await {
        if lease == gone {
            assert!(
                matches!(renewed, Err(Error::LeaseNotFound { lease }) if lease == gone),
                "the revoked lease: {renewed:?}"
            );
        } else {
            assert_eq!(renewed.expect("a live lease"), Duration::from_secs(30));
        }
    }
    assert_eq!(
        keep_alive_streams_opened(&etcd) - before,
        1.0,
        "a gone lease does not cost the stream"
    );

    // A store with 8 streams opens at most 8 for its 199 leases.
    let before = keep_alive_streams_opened(&etcd);
    let eight = EtcdStore::connect(EtcdConfig {
        keep_alive_streams: 8,
        ..etcd.config()
    })
    .await
    .expect("connect");
    let live: Vec<_> = leases.iter().copied().filter(|&l| l != gone).collect();
    let renewals = live.iter().map(|&lease| {
        let store = eight.clone();
        async move { store.keep_alive(lease, KEEP_ALIVE_WITHIN).await }
    });
    for renewed in futures::future::join_all(renewals).await {
        renewed.expect("a live lease");
    }
    let opened = keep_alive_streams_opened(&etcd) - before;
    assert!(
        (1.0..=8.0).contains(&opened),
        "199 leases on a store with 8 streams opened {opened}"
    );
}

/// An etcd of its own (the tests pause it), a store, and a 30 s lease renewed once.
async fn renewed_lease() -> (Etcd, EtcdStore, LeaseId) {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let store = EtcdStore::connect(etcd.config()).await.expect("connect");
    let lease = store
        .grant(Duration::from_secs(30))
        .await
        .expect("grant")
        .id;
    store
        .keep_alive(lease, KEEP_ALIVE_WITHIN)
        .await
        .expect("first keep-alive");
    (etcd, store, lease)
}

/// A keep-alive the caller gave up on (its timeout fired while etcd was frozen) leaves no
/// stale answer behind: once the lease is revoked, the next keep-alive says it is gone
/// instead of reading the old answer of the abandoned call.
#[tokio::test]
async fn an_abandoned_keep_alive_leaves_no_stale_answer() {
    let (etcd, store, lease) = renewed_lease().await;

    etcd.pause().unwrap_or_else(|err| panic!("{err}"));
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        store.keep_alive(lease, KEEP_ALIVE_WITHIN),
    )
    .await;
    etcd.unpause().unwrap_or_else(|err| panic!("{err}"));
    assert!(abandoned.is_err(), "etcd was frozen: {abandoned:?}");

    store.revoke(lease).await.expect("revoke");
    let after = store.keep_alive(lease, KEEP_ALIVE_WITHIN).await;
    assert!(
        matches!(after, Err(Error::LeaseNotFound { .. })),
        "a revoked lease must be reported gone, not renewed by a stale answer: {after:?}"
    );
}

/// A renewal waits as long as its caller says (`within`), not the store's request timeout:
/// on a frozen etcd it fails after 300 ms, saying so.
#[tokio::test]
async fn a_keep_alive_waits_as_long_as_its_caller_says() {
    let (etcd, store, lease) = renewed_lease().await;

    etcd.pause().unwrap_or_else(|err| panic!("{err}"));
    let late = store.keep_alive(lease, Duration::from_millis(300)).await;
    etcd.unpause().unwrap_or_else(|err| panic!("{err}"));
    assert!(
        matches!(&late, Err(Error::Unavailable { message, .. }) if message.contains("within 300ms")),
        "etcd was frozen: {late:?}"
    );
    store
        .keep_alive(lease, KEEP_ALIVE_WITHIN)
        .await
        .expect("renewed once etcd answers again");
}
