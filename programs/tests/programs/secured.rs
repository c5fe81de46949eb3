//! The programs against a secured etcd: TLS with a client certificate (etcdctl's
//! `--cacert`, `--cert`, `--key`), and etcd's auth (`--user`, `--password-file`). Each test
//! starts its own etcd; certificates are made at test time.

use std::time::Duration;

use muster_core::MemberState;
use muster_testkit::etcd::Etcd;
use muster_testkit::tls::Certs;
use nix::sys::signal::Signal;

use crate::support::{args, Proc, DEADLINE};

/// The password of etcd's `root` user in these tests; never in any output.
const PASSWORD: &str = "pr0grams-Pa55word";

/// Polls etcd (through `store`, every 50 ms, up to [`DEADLINE`]) until `name` is in
/// `state` under `prefix`, or gone when `state` is `None`.
async fn wait_member(etcd: &Etcd, prefix: &str, name: &str, state: Option<MemberState>) {
    let store = etcd.store().await;
    let poll = async {
        loop {
            let view = muster_master::list(&store, prefix)
                .await
                .unwrap_or_else(|err| panic!("list {prefix}: {err}"));
            if view.state_of(name) == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("{name} never became {state:?} within {DEADLINE:?}"));
}

#[tokio::test]
async fn worker_registers_over_mutual_tls_and_leaves_on_sigterm() {
    let certs = Certs::new().expect("certificates");
    let etcd = Etcd::start_tls(&certs, &[]).unwrap_or_else(|err| panic!("{err}"));
    let prefix = "/programs/secured-tls/";
    let path = |name: &str| certs.path(name).display().to_string();
    let mut flags = args(&[
        "--endpoints",
        &etcd.endpoint(),
        "--prefix",
        prefix,
        "--name",
        "tls-1",
        "--no-addr",
        "--ttl",
        "2s",
        "--cacert",
        &path("ca.pem"),
        "--cert",
        &path("client.pem"),
    ]);
    // The key from the variable, as a container spec would give it.
    let key = path("client-key.pem");
    let mut worker = Proc::spawn(crate::support::WORKER, &flags, &[("MUSTER_KEY", &key)]);
    wait_member(&etcd, prefix, "tls-1", Some(MemberState::Alive)).await;
    worker.signal(Signal::SIGTERM);
    worker.exit_with(0).await;
    wait_member(&etcd, prefix, "tls-1", None).await;

    // The same without --cacert: bad input (exit 2), saying what to give.
    flags.truncate(flags.len() - 4);
    let mut refused = Proc::worker(&flags);
    let stderr = refused.exit_with(2).await;
    assert!(stderr.contains("--cacert"), "{stderr}");

    // `muster-master list` shares the flags.
    let mut list = Proc::master(&args(&[
        "list",
        "--endpoints",
        &etcd.endpoint(),
        "--prefix",
        prefix,
        "--cacert",
        &path("ca.pem"),
        "--cert",
        &path("client.pem"),
        "--key",
        &key,
    ]));
    list.exit_with(0).await;
}

#[tokio::test]
async fn auth_errors_exit_2_and_never_show_the_password() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(PASSWORD).expect("enable auth");
    let certs = Certs::new().expect("a directory for the password files");
    let right = certs.dir().join("password");
    std::fs::write(&right, format!("{PASSWORD}\n")).expect("write");
    let wrong = certs.dir().join("wrong");
    let wrong_password = "wr0ng-Pa55word";
    std::fs::write(&wrong, wrong_password).expect("write");
    let prefix = "/programs/secured-auth/";
    let base = args(&[
        "--endpoints",
        &etcd.endpoint(),
        "--prefix",
        prefix,
        "--name",
        "auth-1",
        "--no-addr",
        "--ttl",
        "2s",
    ]);

    // Right user and password file: registers.
    let mut flags = base.clone();
    flags.extend(args(&["--user", "root", "--password-file"]));
    flags.push(right.display().to_string());
    let mut worker = Proc::worker(&flags);
    // The test's own store has no credentials: read etcd as root too.
    let store = muster_testkit::etcd::connect(muster_etcd_backend::EtcdConfig {
        credentials: Some(muster_etcd_backend::Credentials {
            user: "root".into(),
            password: muster_etcd_backend::Password::Value(PASSWORD.into()),
        }),
        ..etcd.config()
    })
    .await;
    let poll = async {
        while muster_master::list(&store, prefix)
            .await
            .expect("list")
            .state_of("auth-1")
            != Some(MemberState::Alive)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("auth-1 registered");
    worker.signal(Signal::SIGTERM);
    worker.exit_with(0).await;

    // A wrong password, no credentials, `--user root:password`: exit 2, no password shown.
    let mut wrong_flags = base.clone();
    wrong_flags.extend(args(&["--user", "root", "--password-file"]));
    wrong_flags.push(wrong.display().to_string());
    let mut in_user = base.clone();
    in_user.extend(args(&["--user", &format!("root:{wrong_password}")]));
    for (flags, says) in [
        (wrong_flags, "wrong password or unknown user"),
        (base.clone(), "--password-file"),
        (in_user, "never a password"),
    ] {
        let mut proc = Proc::worker(&flags);
        let stderr = proc.exit_with(2).await;
        eprintln!("{stderr}");
        assert!(stderr.contains(says), "{says:?} not in {stderr}");
        assert!(
            !stderr.contains(wrong_password),
            "the password leaked: {stderr}"
        );
        assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    }
}
