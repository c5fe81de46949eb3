//! `EtcdStore` behaviour beyond the shared conformance suite: what only a large or real
//! etcd shows.

use muster_core::{Store, Txn};
use muster_etcd_backend::EtcdStore;
use muster_tests::etcd::Etcd;

/// A listing larger than one page (1000 keys) is complete, sorted, and at one revision.
#[tokio::test]
async fn large_listing_is_complete_and_consistent() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    let store = EtcdStore::connect(etcd.config()).await.expect("connect");
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
}
