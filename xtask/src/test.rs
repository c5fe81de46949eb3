//! `cargo xtask test`: every test of the workspace, including those against real etcd.
//!
//! It provides what a fresh machine lacks — `protoc` for etcd-client's build and an etcd
//! image — then checks formatting (`cargo fmt --check`), lints (`cargo clippy
//! --all-targets -D warnings`) and that the library crates package for crates.io (`cargo
//! package`), and runs `cargo test` over all targets and the doc tests, then the runnable
//! example of a balanced tonic channel (`cargo run -p muster-tonic --example balanced`).
//! Without Docker it fails with instructions; it never skips the etcd tests silently.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use crate::{cmd, etcd_image, protoc, repo_root};

/// The variable, and the container label, that tie test containers to one run, so that
/// leftovers of a crashed test process are removed at the end without touching others.
const RUN_ID_VAR: &str = "MUSTER_TEST_RUN_ID";
const RUN_LABEL: &str = "org.muster.test-run";

/// The crates meant for crates.io, which `cargo package` must accept.
const PUBLISHED: [&str; 6] = [
    "muster-core",
    "muster-mem-backend",
    "muster-etcd-backend",
    "muster-master",
    "muster-worker",
    "muster-tonic",
];

/// Runs the task; `args` are passed on to each `cargo test` (e.g. `-- --nocapture`).
pub fn run(args: &[String]) -> Result<()> {
    let root = repo_root();
    let protoc = protoc::ensure()?;
    println!("xtask: using protoc {}", protoc.describe());
    let image = etcd_image::ensure(&root)?;
    println!("xtask: using etcd image {} ({})", image.name, image.origin);

    let run_id = format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_test = |extra: &[&str]| -> Result<()> {
        let mut command = Command::new(&cargo);
        command
            .current_dir(&root)
            .arg("test")
            .args(extra)
            .args(args)
            .env(etcd_image::IMAGE_VAR, &image.name)
            .env(RUN_ID_VAR, &run_id);
        if let Some(path) = protoc.env_value() {
            command.env("PROTOC", path);
        }
        println!("xtask: running {}", cmd::describe(&command));
        let status = command.status()?;
        if !status.success() {
            bail!("`{}` failed ({status})", cmd::describe(&command));
        }
        Ok(())
    };
    // The house rules first: formatted, and clippy-clean with warnings as errors.
    let lint = |extra: &[&str]| -> Result<()> {
        let mut command = Command::new(&cargo);
        command.current_dir(&root).args(extra);
        if let Some(path) = protoc.env_value() {
            command.env("PROTOC", path);
        }
        println!("xtask: running {}", cmd::describe(&command));
        let status = command.status()?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); fix it, then run `cargo xtask test` again",
                cmd::describe(&command)
            );
        }
        Ok(())
    };
    lint(&["fmt", "--all", "--check"])?;
    lint(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The library crates must stay publishable: metadata complete, packages that build on
    // their own from what they ship.
    let mut package = vec!["package", "--allow-dirty"];
    for krate in PUBLISHED {
        package.extend(["-p", krate]);
    }
    lint(&package)?;

    let result = cargo_test(&["--workspace", "--all-targets"])
        .and_then(|()| cargo_test(&["--workspace", "--doc"]))
        // The runnable example of a balanced tonic channel (built above, in the test
        // profile): it fails if a call fails.
        .and_then(|()| {
            lint(&[
                "run",
                "-q",
                "--profile",
                "test",
                "-p",
                "muster-tonic",
                "--example",
                "balanced",
            ])
        });
    remove_leftover_containers(&run_id);
    result?;
    println!("xtask: all tests passed");
    Ok(())
}

/// Removes the containers and networks this run's tests left behind (a test process that
/// was killed cannot remove its own).
fn remove_leftover_containers(run_id: &str) {
    let filter = format!("label={RUN_LABEL}={run_id}");
    for (kind, list, remove) in [
        ("container", &["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
        (
            "network",
            &["network", "ls", "-q"][..],
            &["network", "rm"][..],
        ),
    ] {
        let Ok(ids) = cmd::stdout_ok(
            Command::new("docker")
                .args(list)
                .args(["--filter", &filter]),
            Duration::from_secs(30),
        ) else {
            continue;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            continue;
        }
        println!("xtask: removing {} leftover test {kind}(s)", ids.len());
        let _ = cmd::capture(
            Command::new("docker").args(remove).args(&ids),
            Duration::from_secs(60),
        );
    }
}
