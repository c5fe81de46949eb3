//! `cargo xtask bench [--quick] [args]`: builds and runs the `muster-bench` program.
//!
//! The bench lives in `bench/` (it links the etcd backend, whose build needs `protoc`, so it
//! cannot be part of xtask). This task provides `protoc` and an etcd image, then runs the
//! program in release mode with the arguments that follow `bench` (see
//! `cargo xtask bench --help`). The report goes to `target/bench/report.json`
//! (`report-quick.json` with `--quick`).

use std::process::Command;

use anyhow::{bail, Result};

use crate::{cmd, etcd_image, protoc, repo_root};

/// Runs the bench with the arguments that follow `bench`.
pub fn run(args: &[String]) -> Result<()> {
    let root = repo_root();
    let protoc = protoc::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "muster-bench",
            "--",
        ])
        .args(args);
    if let Some(path) = protoc.env_value() {
        command.env("PROTOC", path);
    }
    if !args.iter().any(|a| a == "-h" || a == "--help") {
        let image = etcd_image::ensure(&root)?;
        println!("xtask: using etcd image {} ({})", image.name, image.origin);
        command.env(etcd_image::IMAGE_VAR, &image.name);
    }
    println!("xtask: running {}", cmd::describe(&command));
    let status = command.status()?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::describe(&command));
    }
    Ok(())
}
