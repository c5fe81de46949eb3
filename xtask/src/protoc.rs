//! A `protoc` for etcd-client's build script, which needs one and finds it through `PROTOC`
//! or `PATH`. A fresh machine has none, so we fall back to the binary that the
//! `protoc-bin-vendored` crate ships.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cmd;

/// Where `protoc` comes from for this run.
pub enum Protoc {
    /// `PROTOC` is already set: the child cargo inherits it.
    FromEnv(PathBuf),
    /// A `protoc` on `PATH`: etcd-client's build finds it there.
    OnPath(PathBuf),
    /// The vendored binary: pass it as `PROTOC` to the child cargo.
    Vendored(PathBuf),
}

impl Protoc {
    /// The value to set as `PROTOC` for child processes, if one must be set.
    pub fn env_value(&self) -> Option<&PathBuf> {
        match self {
            Protoc::Vendored(path) => Some(path),
            Protoc::FromEnv(_) | Protoc::OnPath(_) => None,
        }
    }

    /// A short description for progress lines.
    pub fn describe(&self) -> String {
        match self {
            Protoc::FromEnv(path) => format!("{} (from PROTOC)", path.display()),
            Protoc::OnPath(path) => format!("{} (on PATH)", path.display()),
            Protoc::Vendored(path) => format!("{} (protoc-bin-vendored)", path.display()),
        }
    }
}

/// Finds a `protoc`: `PROTOC`, then `PATH`, then the vendored one.
pub fn ensure() -> Result<Protoc> {
    if let Some(path) = std::env::var_os("PROTOC").filter(|p| !p.is_empty()) {
        return Ok(Protoc::FromEnv(PathBuf::from(path)));
    }
    if let Some(path) = cmd::find_on_path("protoc") {
        return Ok(Protoc::OnPath(path));
    }
    let path = protoc_bin_vendored::protoc_bin_path()
        .context("no protoc on PATH and protoc-bin-vendored has none for this platform; install protoc (Debian: apt-get install protobuf-compiler) or set PROTOC")?;
    Ok(Protoc::Vendored(path))
}
