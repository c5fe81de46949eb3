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
            flags.extend(args(&["--name", "w", "--no-addr"]));
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
        flags.extend(args(&["--endpoints", "http://127.0.0.1:1", "--no-addr"]));
        let mut proc = Proc::worker(&flags);
        let stderr = proc.exit_with(2).await;
        assert_error(&stderr, needles);
    }
    let mut evict = Proc::master(&args(&["evict", "a/b"]));
    assert_error(&evict.exit_with(2).await, &["invalid member name"]);
}

/// A case of bad input: flags, environment variables, what the error line must say.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

/// Runs muster-worker (with a valid name unless `flags` gives one) against an etcd that is
/// not there, with extra variables, and returns its stderr once it has exited with `code`.
async fn worker_exits(flags: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let mut all = args(flags);
    if !flags.contains(&"--name") {
        all.extend(args(&["--name", "w"]));
    }
    if !flags.iter().any(|f| f.starts_with("--endpoints"))
        && !env.iter().any(|(k, _)| *k == "MUSTER_ENDPOINTS")
    {
        all.extend(args(&["--endpoints", "http://127.0.0.1:1"]));
    }
    all.extend(args(&["--connect-timeout", "200ms"]));
    Proc::spawn(crate::support::WORKER, &all, env)
        .exit_with(code)
        .await
}

#[tokio::test]
async fn blank_endpoint_lists_are_refused_not_replaced_by_the_default() {
    let none = ["names no etcd endpoint", "e.g. http://127.0.0.1:2379"];
    let empty_entry = ["has an empty entry", "single commas"];
    let cases: &[Case] = &[
        (&["--endpoints="], &[], &none),
        (&["--endpoints", ""], &[], &none),
        (&["--endpoints", ","], &[], &none),
        (&["--endpoints", " , "], &[], &none),
        (&["--endpoints", "http://127.0.0.1:1,"], &[], &empty_entry),
        (
            &["--endpoints", "http://127.0.0.1:1,,http://127.0.0.1:2"],
            &[],
            &empty_entry,
        ),
        (&[], &[("MUSTER_ENDPOINTS", "")], &none),
        (&[], &[("MUSTER_ENDPOINTS", "  ")], &none),
        (&[], &[("MUSTER_ENDPOINTS", ",")], &none),
    ];
    for (flags, env, needles) in cases {
        let mut flags = flags.to_vec();
        flags.push("--no-addr");
        let stderr = worker_exits(&flags, env, 2).await;
        assert_error(&stderr, needles);
        assert_error(&stderr, &["MUSTER_ENDPOINTS"]);
        // The list itself is not repeated (an endpoint URL may carry credentials).
        assert!(!stderr.contains("127.0.0.1:1"), "{stderr}");
        // The master and its one-shots read the same flag.
        for sub in [&[][..], &["list"][..]] {
            let mut master = args(sub);
            master.extend(
                flags
                    .iter()
                    .filter(|f| **f != "--no-addr")
                    .map(|f| f.to_string()),
            );
            let stderr = Proc::spawn(crate::support::MASTER, &master, env)
                .exit_with(2)
                .await;
            assert_error(&stderr, needles);
        }
    }
}

#[tokio::test]
async fn an_address_is_host_and_port_or_explicitly_none() {
    let what_to_do = "use HOST:PORT";
    let cases: &[Case] = &[
        (
            &[],
            &[],
            &["no member address", "--addr HOST:PORT", "--no-addr"],
        ),
        (
            &["--addr", ""],
            &[],
            &["the address is empty", what_to_do, "--no-addr"],
        ),
        (
            &[],
            &[("MUSTER_ADDR", "")],
            &["the address is empty", "--no-addr"],
        ),
        (
            &["--addr", "not-an-addr"],
            &[],
            &["\"not-an-addr\"", "no port", what_to_do],
        ),
        (
            &["--addr", "10.0.0.1"],
            &[],
            &["\"10.0.0.1\"", "no port", what_to_do],
        ),
        (
            &["--addr", ":99999"],
            &[],
            &["\":99999\"", "over 65535", what_to_do],
        ),
        (&["--addr", ":8080"], &[], &["no host", what_to_do]),
        (&["--addr", "::1:8080"], &[], &["brackets", what_to_do]),
        (&["--addr", "h:1", "--no-addr"], &[], &["contradict"]),
        (
            &["--addr", "h:1"],
            &[("MUSTER_NO_ADDR", "true")],
            &["contradict"],
        ),
    ];
    for (flags, env, needles) in cases {
        let stderr = worker_exits(flags, env, 2).await;
        assert_error(&stderr, needles);
    }
    // The address in a metadata file is checked the same way.
    let dir = std::env::temp_dir().join(format!("muster-addr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (json, needles) in [
        (
            r#"{"addr": "10.0.0.1"}"#,
            &["invalid member address", "no port"][..],
        ),
        (
            r#"{"addr": ""}"#,
            &["\"addr\" in the --metadata file is empty", "--no-addr"][..],
        ),
    ] {
        let file = dir.join("meta.json");
        std::fs::write(&file, json).unwrap();
        let stderr = worker_exits(&["--metadata", file.to_str().unwrap()], &[], 2).await;
        assert_error(&stderr, needles);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Valid addresses and --no-addr get as far as connecting (and fail there: exit 1).
    for flags in [
        &["--addr", "10.0.0.5:8080"][..],
        &["--addr", "[::1]:8080"],
        &["--addr", "api.internal:443"],
        &["--no-addr"],
    ] {
        let stderr = worker_exits(flags, &[], 1).await;
        assert_error(&stderr, &["gave up after"]);
    }
}

#[tokio::test]
async fn a_member_without_an_address_registers_with_no_addr() {
    let group = Group::new("no-addr");
    let mut worker = Proc::worker(&worker_flags(&group, "batch-1"));
    let view = group.wait_state("batch-1", MemberState::Alive).await;
    assert_eq!(view.get("batch-1").unwrap().info.addr, "");
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    worker.exit_with(0).await;
}

#[tokio::test]
async fn the_ttl_is_bounded() {
    for (flags, env, needles) in [
        (
            &["--ttl", "100000h"][..],
            &[][..],
            &["too long", "at most 1h"][..],
        ),
        (&["--ttl", "61m"], &[], &["too long", "at most 1h"]),
        (&[], &[("MUSTER_TTL", "2h")], &["too long", "at most 1h"]),
        (&["--ttl", "999ms"], &[], &["too short", "at least 1s"]),
    ] {
        let mut flags = flags.to_vec();
        flags.push("--no-addr");
        assert_error(&worker_exits(&flags, env, 2).await, needles);
    }
    // Both bounds themselves are accepted (the worker gets as far as connecting).
    for ttl in ["1s", "1h", "60m"] {
        let stderr = worker_exits(&["--ttl", ttl, "--no-addr"], &[], 1).await;
        assert_error(&stderr, &["gave up after"]);
    }
}

#[tokio::test]
async fn the_name_limit_is_128_characters_not_bytes() {
    // 128 two-byte characters (256 bytes) is a valid name: the worker gets as far as
    // connecting. One more is bad input.
    let at_limit = "é".repeat(128);
    let stderr = worker_exits(&["--name", &at_limit, "--no-addr"], &[], 1).await;
    assert_error(&stderr, &["gave up after"]);
    let over = "é".repeat(129);
    let stderr = worker_exits(&["--name", &over, "--no-addr"], &[], 2).await;
    assert_error(&stderr, &["longer than 128 characters", "not bytes"]);
}

#[tokio::test]
async fn a_label_key_given_twice_is_refused() {
    for (flags, env) in [
        (&["--label", "zone=a", "--label", "zone=b"][..], &[][..]),
        (
            &[
                "--label", "zone=a", "--label", "tier=web", "--label", "zone=a",
            ],
            &[],
        ),
        (&[], &[("MUSTER_LABELS", "zone=a,zone=b")]),
    ] {
        let mut flags = flags.to_vec();
        flags.push("--no-addr");
        let stderr = worker_exits(&flags, env, 2).await;
        assert_error(
            &stderr,
            &["label key \"zone\" is given twice", "give each key once"],
        );
    }
    // A flag still overrides the metadata file's label of the same key (documented).
    let dir = std::env::temp_dir().join(format!("muster-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("meta.json");
    std::fs::write(&file, r#"{"labels": {"zone": "a", "a=b": "c"}}"#).unwrap();
    let stderr = worker_exits(
        &[
            "--metadata",
            file.to_str().unwrap(),
            "--no-addr",
            "--label",
            "zone=b",
        ],
        &[],
        2,
    )
    .await;
    assert_error(&stderr, &["invalid label key \"a=b\"", "'='"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_record_too_large_for_etcd_is_bad_input() {
    let group = Group::new("too-large");
    let dir = std::env::temp_dir().join(format!("muster-large-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("meta.json");
    // 18 labels of 100,000 bytes: over etcd's default request limit (1.5 MiB).
    let labels: serde_json::Map<String, serde_json::Value> = (0..18)
        .map(|i| (format!("k{i}"), "x".repeat(100_000).into()))
        .collect();
    let json = serde_json::json!({ "name": "big", "labels": labels });
    std::fs::write(&file, json.to_string()).unwrap();
    let mut flags = group.flags();
    flags.extend(args(&["--metadata", file.to_str().unwrap(), "--no-addr"]));
    let stderr = Proc::worker(&flags).exit_with(2).await;
    assert_error(
        &stderr,
        &["\"big\"", "too large for etcd", "fewer or shorter labels"],
    );
    assert!(group.truth().await.members.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn logs_on_a_pipe_have_no_colour_codes() {
    // Debug logs of a worker retrying an etcd that is not there, on a pipe (not a
    // terminal). `NO_COLOR` is set empty, which means "not set", so that the test does not
    // depend on the environment it runs in.
    let stderr = worker_exits(
        &["--no-addr"],
        &[("RUST_LOG", "muster_programs=debug"), ("NO_COLOR", "")],
        1,
    )
    .await;
    assert!(
        stderr.contains("DEBUG") && stderr.contains("etcd not reachable yet"),
        "no debug log lines: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes on a pipe: {stderr:?}"
    );
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
