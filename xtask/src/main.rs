//! muster's developer tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! # Layout
//!
//! - `test`: everything CI runs — provides `protoc`, an etcd image and a browser, then runs
//!   every test of the workspace (unit, integration against real etcd in Docker, the web
//!   page in headless Chromium, doc tests).
//! - `demo`: runs the `muster-demo` program (in-memory, or `--etcd`), providing protoc and
//!   an etcd image first.
//! - `bench`: runs the `muster-bench` program in release mode (protoc and an etcd image
//!   provided first); `--quick` for the small sizes.
//! - `etcd-image`: only the image step of `test`, for running the etcd tests by hand.
//! - `cmd`, `protoc`, `etcd_image`, `browser`: helpers of `test`, one concern each
//!   (`browser`: Chromium and chromedriver on PATH, installed from Debian as root).
//! - `tidy`: tests that the docs match the tree (ARCHITECTURE.md's crate map, every crate's
//!   `# Layout`), run by `cargo test` like any other.

mod bench;
mod browser;
mod cmd;
mod demo;
mod etcd_image;
mod protoc;
mod test;
mod tidy;

use std::path::PathBuf;

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  test    provide protoc, an etcd image and Chromium with chromedriver, then run every
          test of the workspace (env: MUSTER_ETCD_IMAGE to choose the etcd image, PROTOC
          to choose protoc, MUSTER_CHROMIUM and MUSTER_CHROMEDRIVER the browser)
  demo    one master and five workers telling the whole membership story on the
          in-memory backend; `demo --etcd` runs it on a real etcd (a container, or
          MUSTER_ENDPOINTS)
  bench   measure muster against the raw etcd floor (join propagation, failure detection,
          write cost, 10,000 workers, the core); `bench --quick` in about a minute; report
          in target/bench/report.json (`cargo xtask bench --help` for the options)
  etcd-image
          only make sure an etcd image is present (pull, or build muster-etcd:local)
";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("etcd-image") => etcd_image::ensure(&repo_root()).map(|image| {
            println!("xtask: etcd image {} ({})", image.name, image.origin);
            println!("export MUSTER_ETCD_IMAGE={}", image.name);
        }),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no task given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The repository root: the parent of this crate's directory.
fn repo_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}
