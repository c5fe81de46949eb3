//! `cargo xtask demo [--etcd]`: builds and runs the `muster-demo` program.
//!
//! The demo itself lives in `demo/` (it links the etcd backend, whose build needs `protoc`,
//! so it cannot be part of xtask: xtask must build on a machine that has nothing). This task
//! provides `protoc`, and for `--etcd` without `MUSTER_ENDPOINTS` an etcd image; for
//! `--etcd` it also builds the `muster-worker` and `muster-master` programs, whose processes
//! the story drives (`MUSTER_BIN_DIR`). Then it runs the demo.

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cmd, etcd_image, protoc, repo_root};

/// Runs the demo with the arguments that follow `demo`.
pub fn run(args: &[String]) -> Result<()> {
    let root = repo_root();
    let protoc = protoc::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["run", "--quiet", "--package", "muster-demo", "--"])
        .args(args);
    if let Some(path) = protoc.env_value() {
        command.env("PROTOC", path);
    }
    let wants_container = args.iter().any(|a| a == "--etcd")
        && std::env::var("MUSTER_ENDPOINTS").map_or(true, |e| e.trim().is_empty());
    if wants_container {
        let image = etcd_image::ensure(&root)?;
        println!("xtask: using etcd image {} ({})", image.name, image.origin);
        command.env(etcd_image::IMAGE_VAR, &image.name);
    }
    if args.first().is_some_and(|a| a == "--etcd") && !args.iter().any(|a| a == "--in-process") {
        // The story runs the real programs: build them and say where they are.
        let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        build.current_dir(&root).args([
            "build",
            "--quiet",
            "--package",
            "muster-programs",
            "--bins",
        ]);
        if let Some(path) = protoc.env_value() {
            build.env("PROTOC", path);
        }
        println!("xtask: building muster-worker and muster-master");
        let status = build.status()?;
        if !status.success() {
            bail!("`{}` failed ({status})", cmd::describe(&build));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        command.env("MUSTER_BIN_DIR", target.join("debug"));
    }
    let status = command.status()?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::describe(&command));
    }
    Ok(())
}
