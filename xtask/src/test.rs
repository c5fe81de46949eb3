//! `cargo xtask test`: every test of the workspace, including those against real etcd.
//!
//! It provides what a fresh machine lacks — `protoc` for etcd-client's build, an etcd
//! image, and Chromium with chromedriver for the web page's browser test — then checks formatting (`cargo fmt --check`), lints (`cargo clippy
//! --all-targets -D warnings`) and that the library crates package for crates.io (`cargo
//! package`), and runs `cargo test` over all targets and the doc tests, then the runnable
//! example of a balanced tonic channel (`cargo run -p muster-tonic --example balanced`).
//! Without Docker, or without a browser it can install, it fails with instructions; it
//! never skips the etcd or browser tests silently.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use crate::{browser, cmd, etcd_image, protoc, repo_root};

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
    let browser = browser::ensure()?;
    println!(
        "xtask: using {} and {} ({})",
        browser.chromium.display(),
        browser.chromedriver.display(),
        browser.origin
    );

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
            .envs(browser.env())
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
    // their own from what they ship. Cargo treats a registry crate of one version as immutable, and verifying builds each
    // crate against the others as if they came from a registry: the extracted sources and
    // the build of `muster-core 0.1.0` an earlier run left behind would be reused against
    // today's sources, and a dependent crate would fail to verify against yesterday's API.
    // So: fresh packages, fresh extracted sources, and the verification in a target
    // directory of its own whose muster builds are forgotten (its dependencies are kept).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let verify = target.join("package-verify");
    let _ = std::fs::remove_dir_all(verify.join("package"));
    forget_packaged_sources();
    forget_muster_builds(&verify.join("debug"));
    let verify = verify.display().to_string();
    let mut package = vec!["package", "--allow-dirty", "--target-dir", verify.as_str()];
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

/// Removes cargo's extracted copies of muster's own packaged crates. `cargo package` verifies
/// a crate against its packaged dependencies through a local registry whose sources cargo
/// extracts under `$CARGO_HOME/registry/src/<hash>/` once and never again (a registry
/// version is immutable), so a second run with a changed `muster-core` would verify
/// `muster-worker` against the first run's core. Only muster's crates in registries other
/// than crates.io are removed.
fn forget_packaged_sources() {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let Some(src) = home.map(|h| h.join("registry").join("src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(&src) else {
        return;
    };
    for registry in registries.flatten() {
        if registry.file_name().to_string_lossy().starts_with("index.") {
            continue; // crates.io (and other remote registries): not ours
        }
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for krate in crates.flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            if PUBLISHED.iter().any(|p| name.starts_with(&format!("{p}-"))) {
                let _ = std::fs::remove_dir_all(krate.path());
            }
        }
    }
}

/// Removes every build of a muster crate under `profile_dir` (fingerprints and outputs), so
/// that cargo builds them again from the sources it is given.
fn forget_muster_builds(profile_dir: &std::path::Path) {
    for sub in [".fingerprint", "deps", "build"] {
        let Ok(entries) = std::fs::read_dir(profile_dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("muster-")
                || name.starts_with("muster_")
                || name.starts_with("libmuster_")
            {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
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
