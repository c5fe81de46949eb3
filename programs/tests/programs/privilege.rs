//! The programs as least-privilege etcd users (etcd's auth on; users whose role covers one
//! group's prefix, [`Etcd::add_prefix_user`]): everything works inside the group, and a user
//! of another group is refused at once, exit status 2, with what to grant. The test starts
//! its own etcd.

use muster_testkit::etcd::{Access, Etcd};
use muster_testkit::tls::Certs;
use nix::sys::signal::Signal;

use crate::support::{args, Proc};

/// The password of etcd's `root` user here.
const ROOT_PASSWORD: &str = "r00t-pr0grams-Pa55";
/// The group.
const PREFIX: &str = "/programs/least/";
/// Another group.
const OTHER: &str = "/programs/other/";

/// Whether `lines` hold a `--json` transition of `kind` for `name`.
fn saw(lines: &[String], kind: &str, name: &str) -> bool {
    lines
        .iter()
        .any(|l| l.contains(&format!("\"kind\":\"{kind}\"")) && l.contains(&format!("\"{name}\"")))
}

/// Asserts that `stderr` is one clear "permission denied" for `user` on `key`, without
/// `password`.
fn assert_denied(stderr: &str, user: &str, key: &str, password: &str) {
    eprintln!("{stderr}");
    for part in [
        "permission denied",
        &format!("etcd user \"{user}\""),
        &format!("\"{key}"),
        "needs read on",
        &format!("etcdctl role grant-permission <role> --prefix=true readwrite {PREFIX}"),
    ] {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
    assert!(!stderr.contains(password), "the password leaked: {stderr}");
    assert!(
        !stderr.contains(ROOT_PASSWORD),
        "the password leaked: {stderr}"
    );
}

#[tokio::test]
async fn a_user_limited_to_the_group_runs_both_programs_and_another_groups_user_exits_2() {
    let etcd = Etcd::start().unwrap_or_else(|err| panic!("{err}"));
    etcd.enable_auth(ROOT_PASSWORD).expect("enable auth");
    let (mine, theirs) = ("m1ne-Pa55word", "the1rs-Pa55word");
    etcd.add_prefix_user(ROOT_PASSWORD, "least", mine, Access::ReadWrite, PREFIX)
        .unwrap_or_else(|err| panic!("{err}"));
    etcd.add_prefix_user(ROOT_PASSWORD, "other", theirs, Access::ReadWrite, OTHER)
        .unwrap_or_else(|err| panic!("{err}"));
    let dir = Certs::new().expect("a directory for the password files");
    let flags = |user: &str, password: &str| {
        let file = dir.dir().join(format!("{user}.password"));
        std::fs::write(&file, format!("{password}\n")).expect("write the password file");
        let mut flags = args(&[
            "--endpoints",
            &etcd.endpoint(),
            "--prefix",
            PREFIX,
            "--user",
            user,
            "--password-file",
        ]);
        flags.push(file.display().to_string());
        flags
    };
    let (least, other) = (flags("least", mine), flags("other", theirs));
    let with = |base: &[String], extra: &[&str]| {
        let mut all = base.to_vec();
        all.extend(args(extra));
        all
    };

    // A watching master (it reaps: readwrite) and a worker, both as `least`.
    let mut master = Proc::master(&with(&least, &["--json"]));
    master
        .wait_stdout("the synced line", |l| {
            l.iter().any(|l| l.contains("\"kind\":\"synced\""))
        })
        .await;
    let mut worker = Proc::worker(&with(
        &least,
        &["--name", "lp-1", "--no-addr", "--ttl", "2s"],
    ));
    master
        .wait_stdout("lp-1 joined", |l| saw(l, "joined", "lp-1"))
        .await;

    // `list` and `evict` as `least`.
    let mut list = Proc::master(&with(&least, &["list"]));
    list.exit_with(0).await;
    let table = list.stdout.borrow().join("\n");
    assert!(table.contains("lp-1"), "{table}");

    // `other` is refused at once, exit 2: `list`, and a worker.
    let mut list = Proc::master(&with(&other, &["list"]));
    let stderr = list.exit_with(2).await;
    assert_denied(&stderr, "other", PREFIX, theirs);
    let mut refused = Proc::worker(&with(
        &other,
        &["--name", "lp-2", "--no-addr", "--ttl", "2s"],
    ));
    let stderr = refused.exit_with(2).await;
    assert_denied(&stderr, "other", &format!("{PREFIX}alive/lp-2"), theirs);
    let mut evict = Proc::master(&with(&other, &["evict", "lp-1"]));
    let stderr = evict.exit_with(2).await;
    assert!(stderr.contains("permission denied"), "{stderr}");
    // A watching master as `other`: its first listing is refused, so it exits 2 at once
    // with etcd's words and the grant to make, instead of retrying forever.
    let mut watching = Proc::master(&with(&other, &["--json"]));
    let stderr = watching.exit_with(2).await;
    assert!(stderr.contains("cannot follow the group"), "{stderr}");
    assert_denied(&stderr, "other", PREFIX, theirs);

    let mut evict = Proc::master(&with(&least, &["evict", "lp-1"]));
    evict.exit_with(0).await;
    master
        .wait_stdout("lp-1 left", |l| saw(l, "left", "lp-1"))
        .await;
    let said = worker.exit_with(3).await;
    assert!(said.contains("lp-1 was evicted"), "{said}");
    master.signal(Signal::SIGTERM);
    let stderr = master.exit_with(0).await;
    assert!(!stderr.contains("permission denied"), "{stderr}");
}
