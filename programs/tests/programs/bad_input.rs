//! Bad input gets one clear error line and a non-zero exit, and changes nothing in etcd.

use std::time::{Duration, Instant};

use muster_core::MemberState;

use crate::support::{args, free_port, worker_flags, Group, Proc};

/// The error line: the first stderr line, which must say `{program}: error:` or `error:`
/// (clap's usage errors) and contain every one of `needles`.
fn assert_error(stderr: &str, needles: &[&str]) {
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains("error:"),
        "the first stderr line is not an error: {stderr:?}"
    );
    for needle in needles {
        assert!(first.contains(needle), "{needle:?} not in {first:?}");
    }
}

#[tokio::test]
async fn unreachable_endpoints_fail_after_the_connect_timeout_naming_them() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for program in [crate::support::WORKER, crate::support::MASTER] {
        let mut flags = args(&["--endpoints", &endpoint, "--connect-timeout", "1s"]);
        if program == crate::support::WORKER {
            flags.extend(args(&["--name", "w"]));
        }
        let started = Instant::now();
        let mut proc = Proc::spawn(program, &flags, &[]);
        let stderr = proc.exit_with(1).await;
        let took = started.elapsed();
        assert_error(&stderr, &[&endpoint, "gave up after 1s"]);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(10),
            "gave up after {took:?}"
        );
    }
    // The one-shots too, and the variable form of the flag.
    let mut list = Proc::spawn(
        crate::support::MASTER,
        &args(&["list"]),
        &[
            ("MUSTER_ENDPOINTS", endpoint.as_str()),
            ("MUSTER_CONNECT_TIMEOUT", "500ms"),
        ],
    );
    assert_error(&list.exit_with(1).await, &[&endpoint]);
}

#[tokio::test]
async fn invalid_names_labels_and_flags_are_usage_errors() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--name", "a/b"], &["invalid member name", "'/'"]),
        (&["--name", "a b"], &["invalid member name"]),
        (&["--name", ""], &["invalid member name", "empty"]),
        (
            &["--name", "w", "--label", "zone"],
            &["'zone'", "KEY=VALUE"],
        ),
        (&["--name", "w", "--label", "=a"], &["empty key"]),
        (&["--name", "w", "--ttl", "ten"], &["not a duration"]),
        (&["--name", "w", "--ttl", "100ms"], &["too short"]),
        (&[], &["no member name", "--name"]),
        (
            &["--name", "w", "--wait-ready"],
            &["--wait-ready needs --addr"],
        ),
        (&["--name", "w", "--prefix", ""], &["invalid key prefix"]),
    ];
    for (flags, needles) in cases {
        // No etcd needed: all of these are refused before connecting.
        let mut flags = args(flags);
        flags.extend(args(&["--endpoints", "http://127.0.0.1:1"]));
        let mut proc = Proc::worker(&flags);
        let stderr = proc.exit_with(2).await;
        assert_error(&stderr, needles);
    }
    let mut evict = Proc::master(&args(&["evict", "a/b"]));
    assert_error(&evict.exit_with(2).await, &["invalid member name"]);
}

#[tokio::test]
async fn metadata_files_are_checked() {
    let dir = std::env::temp_dir().join(format!("muster-programs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.json");
    std::fs::write(&typo, r#"{"name": "w", "lables": {"zone": "a"}}"#).unwrap();
    let bad_name = dir.join("bad-name.json");
    std::fs::write(&bad_name, r#"{"name": "a/b"}"#).unwrap();
    let missing = dir.join("missing.json");
    for (file, needles) in [
        (&typo, &["unknown field `lables`"][..]),
        (&bad_name, &["invalid member name"][..]),
        (&missing, &["cannot read --metadata"][..]),
    ] {
        let mut proc = Proc::worker(&args(&[
            "--metadata",
            file.to_str().unwrap(),
            "--endpoints",
            "http://127.0.0.1:1",
        ]));
        assert_error(&proc.exit_with(2).await, needles);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_duplicate_name_is_refused_and_the_holder_stays() {
    let group = Group::new("duplicate");
    let mut holder = Proc::worker(&worker_flags(&group, "dup"));
    let before = group.wait_state("dup", MemberState::Alive).await;

    let mut second = Proc::worker(&worker_flags(&group, "dup"));
    let stderr = second.exit_with(1).await;
    assert_error(&stderr, &["\"dup\"", "already held", "--on-duplicate"]);

    let after = group.truth().await;
    assert_eq!(
        after.get("dup").map(|m| (m.state, m.incarnation)),
        before.get("dup").map(|m| (m.state, m.incarnation)),
        "the second process must not touch the holder's member"
    );
    holder.signal(nix::sys::signal::Signal::SIGTERM);
    holder.exit_with(0).await;
}

#[tokio::test]
async fn a_port_in_use_is_refused_before_anything_else() {
    let group = Group::new("port-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut flags = group.flags();
    flags.extend(args(&["--http", &addr]));
    let mut master = Proc::master(&flags);
    let stderr = master.exit_with(1).await;
    assert_error(&stderr, &[&addr, "in use"]);
    let mut flags = group.flags();
    flags.extend(args(&["--http", "not-an-address"]));
    assert_error(
        &Proc::master(&flags).exit_with(2).await,
        &["invalid --http address"],
    );
}

#[tokio::test]
async fn one_shots_say_when_a_member_does_not_exist() {
    let group = Group::new("evict-missing");
    let mut flags = group.flags();
    flags.extend(args(&["evict", "nobody"]));
    let stderr = Proc::master(&flags).exit_with(1).await;
    assert_error(&stderr, &["no member named \"nobody\"", &group.prefix]);
}

#[tokio::test]
async fn a_sidecar_command_that_cannot_run_registers_nothing() {
    let group = Group::new("sidecar-missing");
    let mut flags = worker_flags(&group, "ghost");
    flags.extend(args(&["--", "./no-such-program", "--port", "1"]));
    let stderr = Proc::worker(&flags).exit_with(127).await;
    assert_error(&stderr, &["no-such-program"]);
    let mut flags = worker_flags(&group, "ghost");
    flags.extend(args(&["--", "no-such-program-on-path"]));
    Proc::worker(&flags).exit_with(127).await;
    assert!(group.truth().await.members.is_empty());
}
