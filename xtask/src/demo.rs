//! `cargo xtask demo [--etcd]`: builds and runs the `muster-demo` program.
//!
//! The demo itself lives in `demo/` (it links the etcd backend, whose build needs `protoc`,
//! so it cannot be part of xtask: xtask must build on a machine that has nothing). This task
//! provides `protoc`, and for `--etcd` without `MUSTER_ETCD_ENDPOINTS` an etcd image, then
//! runs the program.

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
        && std::env::var("MUSTER_ETCD_ENDPOINTS").map_or(true, |e| e.trim().is_empty());
    if wants_container {
        let image = etcd_image::ensure(&root)?;
        println!("xtask: using etcd image {} ({})", image.name, image.origin);
        command.env(etcd_image::IMAGE_VAR, &image.name);
    }
    let status = command.status()?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd::describe(&command));
    }
    Ok(())
}
