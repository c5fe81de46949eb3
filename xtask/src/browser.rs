//! A browser for the web page's test (`programs/tests/programs/page.rs`): Chromium and its
//! chromedriver.
//!
//! Why xtask provides it: that test drives a real headless Chromium, which a fresh machine
//! does not have, and it must fail rather than skip without one (a page nobody loaded in a
//! browser is untested). So, as for protoc and the etcd image, `cargo xtask test` finds
//! them (`MUSTER_CHROMIUM` and `MUSTER_CHROMEDRIVER` if set, else `chromium` and
//! `chromedriver` on `PATH`), installs Debian's `chromium` and `chromium-driver` when it
//! runs as root on Debian and they are missing, and otherwise stops with what to install.
//! The paths it settled on are passed to the tests in the same two variables.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The variable naming the Chromium binary, here and in the test.
pub const CHROMIUM_VAR: &str = "MUSTER_CHROMIUM";
/// The variable naming the chromedriver binary, here and in the test.
pub const CHROMEDRIVER_VAR: &str = "MUSTER_CHROMEDRIVER";

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const APT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// What to do by hand when xtask cannot install the browser itself.
const INSTRUCTIONS: &str = "install Chromium and its chromedriver (Debian: `apt-get install \
     chromium chromium-driver`; other systems: a Chromium or Chrome and the chromedriver of the \
     same version), put them on PATH or set MUSTER_CHROMIUM and MUSTER_CHROMEDRIVER to their \
     paths, and run `cargo xtask test` again";

/// The browser the web page's test will drive.
pub struct Browser {
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// The chromedriver binary.
    pub chromedriver: PathBuf,
    /// Where they came from, for the progress line.
    pub origin: &'static str,
}

impl Browser {
    /// The variables to set for the tests.
    pub fn env(&self) -> [(&'static str, &Path); 2] {
        [
            (CHROMIUM_VAR, self.chromium.as_path()),
            (CHROMEDRIVER_VAR, self.chromedriver.as_path()),
        ]
    }
}

/// Finds Chromium and chromedriver, installing Debian's packages as root if they are missing.
pub fn ensure() -> Result<Browser> {
    if let Some((chromium, chromedriver)) = find()? {
        return Ok(Browser {
            chromium,
            chromedriver,
            origin: "present",
        });
    }
    install_debian_chromium()?;
    match find()? {
        Some((chromium, chromedriver)) => Ok(Browser {
            chromium,
            chromedriver,
            origin: "installed from Debian's chromium and chromium-driver",
        }),
        None => bail!(
            "installed Debian's chromium and chromium-driver, but `chromium` and \
             `chromedriver` are still not on PATH; {INSTRUCTIONS}"
        ),
    }
}

/// Both binaries, if both are there; an error for a variable naming no file.
fn find() -> Result<Option<(PathBuf, PathBuf)>> {
    let chromium = locate(CHROMIUM_VAR, "chromium")?;
    let chromedriver = locate(CHROMEDRIVER_VAR, "chromedriver")?;
    Ok(chromium.zip(chromedriver))
}

/// `var`'s path when set (it must be a file), else `program` on `PATH`.
fn locate(var: &str, program: &str) -> Result<Option<PathBuf>> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "{var}={} is not a file; point it at the {program} binary or unset it",
                    path.display()
                );
            }
            Ok(Some(path))
        }
        None => Ok(cmd::find_on_path(program)),
    }
}

fn install_debian_chromium() -> Result<()> {
    let uid = cmd::stdout_ok(Command::new("id").arg("-u"), CHECK_TIMEOUT)?;
    if uid.trim() != "0" || !Path::new("/etc/debian_version").exists() {
        bail!(
            "the web page's test drives a real browser, but `chromium` or `chromedriver` is \
             missing, and xtask installs them only as root on Debian; {INSTRUCTIONS}"
        );
    }
    println!("xtask: installing Debian's chromium and chromium-driver (for the web page's test)");
    let apt = |args: &[&str]| cmd::apt_get(args, APT_TIMEOUT);
    apt(&["update", "-q"])
        .and_then(|()| {
            apt(&[
                "install",
                "-y",
                "-q",
                "-o",
                "Dpkg::Use-Pty=0",
                "chromium",
                "chromium-driver",
            ])
        })
        .with_context(|| format!("could not install the web page test's browser; {INSTRUCTIONS}"))
}
