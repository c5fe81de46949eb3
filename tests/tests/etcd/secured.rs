//! A secured etcd: TLS with client certificates (`--client-cert-auth`), and etcd's auth
//! (`auth enable`, a user and a password). Certificates are made at test time
//! ([`muster_testkit::tls::Certs`]); auth is enabled over the client, as etcdctl would.
//! Each test starts its own etcd.

use std::time::{Duration, Instant};

use muster_core::{Error, TransitionKind};
use muster_etcd_backend::{Credentials, EtcdConfig, EtcdStore, Password, Pem, TlsConfig};
use muster_master::{Master, MasterConfig};
use muster_testkit::etcd::Etcd;
use muster_testkit::tls::Certs;
use muster_worker::{Worker, WorkerConfig};

use crate::support::{info, until, TTL};

/// The password of etcd's `root` user in these tests; never in any message.
const PASSWORD: &str = "s3cret-Pa55word";

/// A TLS etcd that requires client certificates; panics with the kit's instructions.
fn tls_etcd(certs: &Certs) -> Etcd {
    Etcd::start_tls(certs, &[]).unwrap_or_else(|err| panic!("{err}"))
}

/// A worker joins and leaves, a master sees both, all on `config`.
async fn lifecycle(config: EtcdConfig, prefix: &str) {
    let connect = Instant::now();
    let store = EtcdStore::connect(config.clone())
        .await
        .unwrap_or_else(|err| panic!("connect: {err}"));
    eprintln!("connected in {:?}", connect.elapsed());
    let master = Master::start(store, MasterConfig::new(prefix).reap_after(None))
        .unwrap_or_else(|err| panic!("start a master: {err}"));
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let worker_store = EtcdStore::connect(config)
        .await
        .unwrap_or_else(|err| panic!("connect the worker: {err}"));
    let worker = Worker::register(worker_store, info("a"), WorkerConfig::new(prefix).ttl(TTL))
        .await
        .unwrap_or_else(|err| panic!("register: {err}"));
    until(&mut events, TransitionKind::Joined, "a").await;
    worker.leave().await.expect("leave");
    until(&mut events, TransitionKind::Left, "a").await;
    assert!(master.member("a").is_none(), "a left");
    master.shutdown().await;
}

/// The error `EtcdStore::connect` gives for `config`, within a deadline.
async fn refused(config: EtcdConfig) -> Error {
    match tokio::time::timeout(Duration::from_secs(20), EtcdStore::connect(config)).await {
        Ok(Ok(_)) => panic!("connected, but should have been refused"),
        Ok(Err(err)) => err,
        Err(_) => panic!("connect neither succeeded nor failed within 20 s"),
    }
}

#[tokio::test]
async fn over_mutual_tls_a_worker_and_a_master_join_and_leave() {
    let certs = Certs::new().expect("certificates");
    let etcd = tls_etcd(&certs);
    assert!(
        etcd.endpoint().starts_with("https://"),
        "{}",
        etcd.endpoint()
    );
    lifecycle(etcd.config(), "/secured/mtls/").await;
}

#[tokio::test]
async fn with_a_user_and_password_file_a_worker_and_a_master_join_and_leave() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(PASSWORD).expect("enable auth");
    let certs = Certs::new().expect("a directory for the password file");
    let file = certs.dir().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).expect("write the password file");
    let config = EtcdConfig {
        credentials: Some(Credentials {
            user: "root".into(),
            password: Password::File(file),
        }),
        ..etcd.config()
    };
    lifecycle(config, "/secured/auth/").await;

    // Without credentials: refused, saying what to give.
    let err = refused(etcd.config()).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Rejected { .. }), "{text}");
    assert!(
        text.contains("--user") && text.contains("--password-file"),
        "{text}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_a_message_without_the_password() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(PASSWORD).expect("enable auth");
    let wrong = "not-the-Pa55word";
    for user in ["root", "nobody"] {
        let config = EtcdConfig {
            credentials: Some(Credentials {
                user: user.into(),
                password: Password::Value(wrong.into()),
            }),
            ..etcd.config()
        };
        assert!(
            !format!("{config:?}").contains(wrong),
            "Debug redacts the password"
        );
        let err = refused(config).await;
        let text = format!("{err} {err:?}");
        assert!(matches!(err, Error::Rejected { .. }), "{text}");
        assert!(!err.is_retryable(), "{text}");
        assert!(text.contains("wrong password or unknown user"), "{text}");
        assert!(!text.contains(wrong), "the password leaked: {text}");
    }
}

#[tokio::test]
async fn tls_mistakes_are_refused_with_clear_messages() {
    let certs = Certs::new().expect("certificates");
    let etcd = tls_etcd(&certs);

    // A CA that did not sign etcd's certificate.
    let wrong_ca = EtcdConfig {
        tls: Some(TlsConfig {
            ca: Some(Pem::File(certs.path("other-ca.pem"))),
            ..certs.client_tls()
        }),
        ..etcd.config()
    };
    let err = refused(wrong_ca).await;
    let text = err.to_string();
    eprintln!("wrong CA: {text}");
    assert!(matches!(err, Error::Rejected { .. }), "{text}");
    assert!(
        text.contains("TLS with etcd failed") && text.contains("--cacert"),
        "{text}"
    );

    // No client certificate, where etcd requires one.
    let no_cert = EtcdConfig {
        tls: Some(TlsConfig {
            cert: None,
            key: None,
            ..certs.client_tls()
        }),
        ..etcd.config()
    };
    let err = refused(no_cert).await;
    eprintln!("no client certificate: {err}");
    assert!(err.to_string().contains("--cert"), "{err}");

    // A server name the certificate does not carry.
    let wrong_name = EtcdConfig {
        tls: Some(TlsConfig {
            server_name: Some("etcd.elsewhere".into()),
            ..certs.client_tls()
        }),
        ..etcd.config()
    };
    let err = refused(wrong_name).await;
    eprintln!("wrong server name: {err}");
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("--tls-server-name"), "{err}");

    // Plain http:// to the TLS port.
    let plain = EtcdConfig::new([format!("http://127.0.0.1:{}", etcd.port())]);
    let plain = EtcdConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..plain
    };
    let err = refused(plain).await;
    eprintln!("http:// to the TLS port: {err}");
    assert!(err.to_string().contains("https://"), "{err}");

    // A certificate file that does not exist: named, refused before any connection.
    let missing = certs.dir().join("missing.pem");
    let err = refused(EtcdConfig {
        tls: Some(TlsConfig {
            ca: Some(Pem::File(missing.clone())),
            ..certs.client_tls()
        }),
        ..etcd.config()
    })
    .await;
    assert!(matches!(err, Error::Rejected { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

/// etcd's simple tokens live in its memory: a restart invalidates every token a client
/// holds. The master's watch, re-opened after the restart, must authenticate again (etcd
/// refuses the stale token by cancelling the new watch, not with a gRPC error), and resume
/// from its revision: nothing lost, and no endless retry.
#[tokio::test]
async fn after_an_etcd_restart_with_auth_on_the_master_authenticates_again_and_misses_nothing() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(PASSWORD).expect("enable auth");
    let config = EtcdConfig {
        credentials: Some(Credentials {
            user: "root".into(),
            password: Password::Value(PASSWORD.into()),
        }),
        ..etcd.config()
    };
    let prefix = "/secured/restart/";
    let connect = || async {
        EtcdStore::connect(config.clone())
            .await
            .unwrap_or_else(|err| panic!("connect: {err}"))
    };
    let master = Master::start(connect().await, MasterConfig::new(prefix).reap_after(None))
        .unwrap_or_else(|err| panic!("start a master: {err}"));
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");
    let a = Worker::register(
        connect().await,
        info("a"),
        WorkerConfig::new(prefix).ttl(TTL),
    )
    .await
    .unwrap_or_else(|err| panic!("register a: {err}"));
    until(&mut events, TransitionKind::Joined, "a").await;

    etcd.stop().expect("stop etcd");
    etcd.restart().expect("start etcd again");
    // A fresh client joins b; the master (holding a token from before the restart) must see it.
    let b = Worker::register(
        connect().await,
        info("b"),
        WorkerConfig::new(prefix).ttl(TTL),
    )
    .await
    .unwrap_or_else(|err| panic!("register b: {err}"));
    until(&mut events, TransitionKind::Joined, "b").await;
    // a's client holds a stale token too: its leave goes through, and the master sees it.
    a.leave().await.expect("a leaves after the restart");
    until(&mut events, TransitionKind::Left, "a").await;
    let health = master.health();
    assert!(health.watching, "{health:?}");
    b.leave().await.expect("b leaves");
    master.shutdown().await;
}

/// A token that etcd stops accepting while the master runs (expired, or forgotten: here by
/// `user passwd` with the same password): once the master's watch breaks and is opened
/// again with the old token, it must authenticate again and resume, nothing lost.
#[tokio::test]
async fn a_master_whose_token_is_forgotten_authenticates_again_when_its_watch_reopens() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(PASSWORD).expect("enable auth");
    let proxy = muster_testkit::proxy::Proxy::start(&etcd.endpoint())
        .await
        .expect("a proxy");
    let credentials = Some(Credentials {
        user: "root".into(),
        password: Password::Value(PASSWORD.into()),
    });
    let direct = EtcdConfig {
        credentials: credentials.clone(),
        ..etcd.config()
    };
    let through_proxy = EtcdConfig {
        endpoints: vec![proxy.endpoint()],
        credentials,
        ..etcd.config()
    };
    let prefix = "/secured/token/";
    let store = EtcdStore::connect(through_proxy)
        .await
        .unwrap_or_else(|err| panic!("connect the master: {err}"));
    let master = Master::start(store, MasterConfig::new(prefix).reap_after(None))
        .unwrap_or_else(|err| panic!("start a master: {err}"));
    let mut events = master.subscribe();
    master.ready().await.expect("the master stopped");

    proxy.cut();
    etcd.invalidate_tokens(PASSWORD, "root", PASSWORD)
        .expect("invalidate root's tokens");
    let worker_store = EtcdStore::connect(direct)
        .await
        .unwrap_or_else(|err| panic!("connect the worker: {err}"));
    let a = Worker::register(worker_store, info("a"), WorkerConfig::new(prefix).ttl(TTL))
        .await
        .unwrap_or_else(|err| panic!("register a: {err}"));
    proxy.heal();
    // Joined while the master was cut off and its token forgotten: seen once it is back.
    until(&mut events, TransitionKind::Joined, "a").await;
    a.leave().await.expect("a leaves");
    until(&mut events, TransitionKind::Left, "a").await;
    let health = master.health();
    assert!(health.watching, "{health:?}");
    master.shutdown().await;
}
