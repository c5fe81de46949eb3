//! Least privilege on real etcd with auth enabled: users whose role covers only one group's
//! prefix ([`Etcd::add_user`]). A user with readwrite on the prefix runs everything
//! muster does (a worker's register, update and leave; a master's list, watch, status
//! reads and reaps; the `list` and `evict` one-shots); a user with read only lists and
//! watches; a user whose role covers another group is refused with a message that names
//! the key and the permission. Each test starts its own etcd.

use std::time::Duration;

use muster_core::{Error, MemberState, Store, TransitionKind};
use muster_etcd_backend::{Credentials, EtcdConfig, EtcdStore, Password};
use muster_master::{Master, MasterConfig, OpsError};
use muster_testkit::etcd::{Access, Etcd, Keys};
use muster_testkit::tls::Certs;
use muster_worker::{Status, Worker, WorkerConfig};

use crate::support::{info, status_until, until, wait, DEADLINE, TTL};

/// The password of etcd's `root` user in these tests.
const ROOT_PASSWORD: &str = "r00t-Pa55word";
/// The group the users below are meant for.
const GROUP: &str = "/lp/group-a/";
/// Another group.
const OTHER_GROUP: &str = "/lp/group-b/";

/// A user's grants.
type Grants<'a> = &'a [(Access, Keys<'a>)];

/// An etcd with auth on, and a user per `(name, password, grants)`, each with a role of its
/// own holding exactly those grants.
fn etcd_with_users(users: &[(&str, &str, Grants<'_>)]) -> (Etcd, Certs) {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(ROOT_PASSWORD).expect("enable auth");
    for (user, password, grants) in users {
        etcd.add_user(ROOT_PASSWORD, user, password, grants)
            .unwrap_or_else(|err| panic!("{err}"));
    }
    // A directory for the password files.
    let dir = Certs::new().expect("a temporary directory");
    (etcd, dir)
}

/// Store settings for `user`, its password in a file, as the programs take it.
fn config_for(etcd: &Etcd, dir: &Certs, user: &str, password: &str) -> EtcdConfig {
    let file = dir.dir().join(format!("{user}.password"));
    std::fs::write(&file, format!("{password}\n")).expect("write the password file");
    EtcdConfig {
        credentials: Some(Credentials {
            user: user.into(),
            password: Password::File(file),
        }),
        ..etcd.config()
    }
}

/// Connects as `config`'s user; panics with the error.
async fn connect(config: &EtcdConfig) -> EtcdStore {
    EtcdStore::connect(config.clone())
        .await
        .unwrap_or_else(|err| panic!("connect: {err}"))
}

/// The error of a call that should have been refused; panics saying `what` happened.
fn refused<T, E>(result: Result<T, E>, what: &str) -> E {
    match result {
        Ok(_) => panic!("{what}"),
        Err(err) => err,
    }
}

/// Asserts that `text` is a clear "permission denied": it says so, names `user` and `key`,
/// says which permission `needs`, and does not contain `password`.
fn assert_denied(text: &str, user: &str, key: &str, needs: &str, password: &str) {
    eprintln!("refused: {text}");
    for part in [
        "permission denied",
        &format!("etcd user {user:?}"),
        &format!("{key:?}"),
        needs,
        "etcdctl role grant-permission",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert!(!text.contains(password), "the password leaked: {text}");
    assert!(
        !text.contains(ROOT_PASSWORD),
        "root's password leaked: {text}"
    );
}

#[tokio::test]
async fn a_user_with_readwrite_on_the_prefix_only_runs_workers_a_master_and_the_one_shots() {
    let password = "gr0up-a-Pa55word";
    let (etcd, dir) = etcd_with_users(&[(
        "group-a",
        password,
        &[(Access::ReadWrite, Keys::Prefix(GROUP))],
    )]);
    let config = config_for(&etcd, &dir, "group-a", password);

    // Nothing read yet: the status comes from etcd's maintenance call, which reads no key.
    let store = connect(&config).await;
    let first = store.status().await.expect("status before any listing");

    // A master that reaps: list + watch, status reads before every watch, reaping.
    let master = Master::start(
        connect(&config).await,
        MasterConfig::new(GROUP)
            .reap_after(Some(Duration::from_secs(1)))
            .stall_check(Duration::from_millis(500)),
    )
    .unwrap_or_else(|err| panic!("start a master: {err}"));
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");

    // A worker registers, updates, leaves.
    let worker_config = WorkerConfig::new(GROUP).ttl(TTL);
    let a = Worker::register(connect(&config).await, info("a"), worker_config.clone())
        .await
        .unwrap_or_else(|err| panic!("register a: {err}"));
    until(&mut events, TransitionKind::Joined, "a").await;
    let mut changed = info("a");
    changed.labels.insert("zone", "b");
    a.update(changed).await.expect("update a");
    until(&mut events, TransitionKind::Updated, "a").await;
    a.leave().await.expect("leave a");
    until(&mut events, TransitionKind::Left, "a").await;

    // A worker that crashes: suspect, then reaped by the master (a guarded delete).
    let b = Worker::register(connect(&config).await, info("b"), worker_config.clone())
        .await
        .unwrap_or_else(|err| panic!("register b: {err}"));
    until(&mut events, TransitionKind::Joined, "b").await;
    b.abandon();
    until(&mut events, TransitionKind::Suspect, "b").await;
    until(&mut events, TransitionKind::Failed, "b").await;

    // The one-shots: `list` sees c; `evict` removes it and holds (its lease revoked, a
    // marker on a lease of its own).
    let c = Worker::register(connect(&config).await, info("c"), worker_config)
        .await
        .unwrap_or_else(|err| panic!("register c: {err}"));
    until(&mut events, TransitionKind::Joined, "c").await;
    let view = muster_master::list(&store, GROUP)
        .await
        .unwrap_or_else(|err| panic!("list: {err}"));
    assert_eq!(view.state_of("c"), Some(MemberState::Alive), "{view:?}");
    assert_eq!(view.state_of("a"), None, "{view:?}");
    let eviction = muster_master::evict(&store, GROUP, "c", Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("evict: {err}"));
    assert!(eviction.lease_revoked, "{eviction:?}");
    until(&mut events, TransitionKind::Left, "c").await;
    status_until(&c, "evicted", |s| matches!(s, Status::Evicted { .. })).await;

    // The stall check's status reads (inside the prefix once listed) never failed, and the
    // master never lost its watch.
    let health = master.health();
    assert_eq!(health.last_error, None, "{health:#?}");
    assert_eq!(health.reconnects, 0, "{health:#?}");
    assert_eq!(health.reaps, 1, "{health:#?}");
    let now = store.status().await.expect("status after a listing");
    assert_eq!(now.cluster_id, first.cluster_id);
    assert!(now.revision > first.revision, "{now:?} after {first:?}");
    master.shutdown().await;
}

#[tokio::test]
async fn a_user_of_another_group_is_refused_naming_the_key_and_the_permission() {
    let password = "gr0up-b-Pa55word";
    let (etcd, dir) = etcd_with_users(&[(
        "group-b",
        password,
        &[(Access::ReadWrite, Keys::Prefix(OTHER_GROUP))],
    )]);
    let config = config_for(&etcd, &dir, "group-b", password);
    // Connecting reads no key: it works; the refusals come with the first call on GROUP.
    let store = connect(&config).await;

    // Leases are outside etcd's RBAC (3.4.23): granting, renewing and revoking a lease
    // without keys need no permission.
    let lease = store.grant(TTL).await.expect("grant");
    store
        .keep_alive(lease.id, DEADLINE)
        .await
        .expect("keep-alive");
    store.revoke(lease.id).await.expect("revoke");

    // A worker: its registration transaction.
    let worker_err = refused(
        Worker::register(store.clone(), info("x"), WorkerConfig::new(GROUP).ttl(TTL)).await,
        "registered under another group's prefix",
    );
    let text = worker_err.to_string();
    assert!(
        matches!(
            &worker_err,
            muster_worker::Error::Store {
                source: Error::Rejected { .. },
                ..
            }
        ),
        "{text}"
    );
    assert_denied(
        &text,
        "group-b",
        &format!("{GROUP}alive/x"),
        "needs read on the keys it compares",
        password,
    );
    assert!(text.contains(&format!("readwrite {GROUP}")), "{text}");

    // `list`: the listing (its status read needs no key before anything was listed).
    let err = refused(
        muster_master::list(&store, GROUP).await,
        "listed another group",
    );
    assert!(
        matches!(
            &err,
            OpsError::Store {
                source: Error::Rejected { .. },
                ..
            }
        ),
        "{err}"
    );
    assert_denied(
        &err.to_string(),
        "group-b",
        GROUP,
        "needs read on that prefix",
        password,
    );

    // `evict`: it reads the member's record first.
    let err = refused(
        muster_master::evict(&store, GROUP, "x", Duration::from_secs(60)).await,
        "evicted in another group",
    );
    assert_denied(
        &err.to_string(),
        "group-b",
        &format!("{GROUP}members/x"),
        "needs read on that key",
        password,
    );

    // A watch: etcd cancels it at once.
    let err = refused(store.watch(GROUP, 1).await, "watched another group");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert_denied(
        &err.to_string(),
        "group-b",
        GROUP,
        "needs read on that prefix",
        password,
    );

    // A master reports it as its last error (and keeps retrying with backoff).
    let master = Master::start(store, MasterConfig::new(GROUP).reap_after(None))
        .unwrap_or_else(|err| panic!("start a master: {err}"));
    let health = muster_testkit::wait::health_until(&master, DEADLINE, "the refusal", |h| {
        h.last_error.is_some()
    })
    .await;
    assert_denied(
        health.last_error.as_deref().unwrap_or_default(),
        "group-b",
        GROUP,
        "needs read on that prefix",
        password,
    );
    master.shutdown().await;
}

#[tokio::test]
async fn a_read_only_master_and_one_shot_list_follow_a_worker_with_the_minimal_worker_role() {
    let (writer, reader) = ("gr0up-w-Pa55word", "gr0up-r-Pa55word");
    // The writer is a worker's minimal role: its group's records and liveness keys, and
    // read on the eviction markers its registrations check. The named one may use one name
    // only.
    let members = format!("{GROUP}members/");
    let alive = format!("{GROUP}alive/");
    let evicted = format!("{GROUP}evicted/");
    let worker_role = [
        (Access::ReadWrite, Keys::Prefix(&members)),
        (Access::ReadWrite, Keys::Prefix(&alive)),
        (Access::Read, Keys::Prefix(&evicted)),
    ];
    let (n_record, n_alive, n_evicted) = (
        format!("{GROUP}members/n"),
        format!("{GROUP}alive/n"),
        format!("{GROUP}evicted/n/"),
    );
    let named_role = [
        (Access::ReadWrite, Keys::Exact(&n_record)),
        (Access::ReadWrite, Keys::Exact(&n_alive)),
        (Access::Read, Keys::Prefix(&n_evicted)),
    ];
    let named = "n4med-Pa55word";
    let (etcd, dir) = etcd_with_users(&[
        ("writer", writer, &worker_role),
        ("named", named, &named_role),
        ("reader", reader, &[(Access::Read, Keys::Prefix(GROUP))]),
    ]);
    let writes = config_for(&etcd, &dir, "writer", writer);
    let reads = config_for(&etcd, &dir, "reader", reader);
    let store = connect(&reads).await;

    // A master that does not reap: it sees a worker (registered by the writer) come and go.
    let master = Master::start(
        connect(&reads).await,
        MasterConfig::new(GROUP)
            .reap_after(None)
            .stall_check(Duration::from_millis(500)),
    )
    .unwrap_or_else(|err| panic!("start a master: {err}"));
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let worker = Worker::register(
        connect(&writes).await,
        info("w"),
        WorkerConfig::new(GROUP).ttl(TTL),
    )
    .await
    .unwrap_or_else(|err| panic!("register w: {err}"));
    until(&mut events, TransitionKind::Joined, "w").await;
    let mut changed = info("w");
    changed.cpus = 3;
    worker.update(changed).await.expect("update w");
    until(&mut events, TransitionKind::Updated, "w").await;
    // A role for one name: that worker registers, updates and leaves; another name is
    // refused.
    let names = config_for(&etcd, &dir, "named", named);
    let n = Worker::register(
        connect(&names).await,
        info("n"),
        WorkerConfig::new(GROUP).ttl(TTL),
    )
    .await
    .unwrap_or_else(|err| panic!("register n: {err}"));
    until(&mut events, TransitionKind::Joined, "n").await;
    let mut changed = info("n");
    changed.cpus = 5;
    n.update(changed).await.expect("update n");
    until(&mut events, TransitionKind::Updated, "n").await;
    n.leave().await.expect("leave n");
    until(&mut events, TransitionKind::Left, "n").await;
    let err = refused(
        Worker::register(
            connect(&names).await,
            info("m"),
            WorkerConfig::new(GROUP).ttl(TTL),
        )
        .await,
        "a role for n registered m",
    );
    assert_denied(
        &err.to_string(),
        "named",
        &format!("{GROUP}alive/m"),
        "write on the keys it writes",
        named,
    );

    // The worker's role cannot list the whole group.
    let err = refused(
        muster_master::list(&connect(&writes).await, GROUP).await,
        "a worker's role listed the group",
    );
    assert_denied(
        &err.to_string(),
        "writer",
        GROUP,
        "needs read on that prefix",
        writer,
    );
    let view = muster_master::list(&store, GROUP)
        .await
        .unwrap_or_else(|err| panic!("list: {err}"));
    assert_eq!(view.state_of("w"), Some(MemberState::Alive), "{view:?}");

    // It cannot evict (the transaction's writes) ...
    let err = refused(
        muster_master::evict(&store, GROUP, "w", Duration::from_secs(60)).await,
        "a reader evicted",
    );
    assert_denied(
        &err.to_string(),
        "reader",
        &format!("{GROUP}members/w"),
        "write on the keys it writes",
        reader,
    );
    // ... nor register a worker.
    let err = refused(
        Worker::register(store.clone(), info("r"), WorkerConfig::new(GROUP).ttl(TTL)).await,
        "a reader registered",
    );
    assert_denied(
        &err.to_string(),
        "reader",
        &format!("{GROUP}alive/r"),
        "write on the keys it writes",
        reader,
    );
    // ... nor reap: a master's guarded delete of a record is refused.
    let keyspace = muster_core::Keyspace::new(GROUP).expect("a valid prefix");
    let record = store
        .get(&keyspace.record_key("w"))
        .await
        .expect("read w's record")
        .expect("w has a record");
    let err = refused(
        store.txn(keyspace.reap_txn("w", record.mod_revision)).await,
        "a reader reaped",
    );
    assert_denied(
        &err.to_string(),
        "reader",
        &format!("{GROUP}members/w"),
        "write on the keys it writes",
        reader,
    );
    // The failed eviction and reap changed nothing.
    wait(&master, "w still alive", |v| {
        v.state_of("w") == Some(MemberState::Alive)
    })
    .await;
    worker.leave().await.expect("leave w");
    until(&mut events, TransitionKind::Left, "w").await;
    let health = master.health();
    assert_eq!(health.last_error, None, "{health:#?}");
    master.shutdown().await;
}
