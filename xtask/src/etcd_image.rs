//! An etcd container image for the integration tests.
//!
//! Real users pull the official image. Machines that reach no container registry build
//! `muster-etcd:local` instead: Debian's `etcd` and `etcdctl` binaries (packages `etcd-server`
//! and `etcd-client`) and the libraries `ldd` lists, packed into a tiny root filesystem and
//! loaded with `docker import` (which, unlike `docker build`, needs no BuildKit). etcdctl is
//! there for the interop test, which runs a shell worker's etcdctl inside the container.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The image used when `MUSTER_ETCD_IMAGE` is unset and it can be had.
pub const OFFICIAL_IMAGE: &str = "gcr.io/etcd-development/etcd:v3.5.17";
/// The image built from Debian's package when no other can be had.
pub const LOCAL_IMAGE: &str = "muster-etcd:local";
/// The variable that chooses the image, here and in the tests.
pub const IMAGE_VAR: &str = "MUSTER_ETCD_IMAGE";
/// A label on the local image saying what it was built from.
const SOURCE_LABEL: &str = "org.muster.etcd-source";

const DOCKER_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const PULL_TIMEOUT: Duration = Duration::from_secs(90);
const APT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const IMPORT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The image the tests will run.
pub struct EtcdImage {
    /// `name:tag`, to export as `MUSTER_ETCD_IMAGE`.
    pub name: String,
    /// Where it came from, for the progress line.
    pub origin: String,
}

/// Makes sure Docker answers and an etcd image is present; returns its name.
pub fn ensure(root: &Path) -> Result<EtcdImage> {
    check_docker()?;

    if let Some(name) = std::env::var(IMAGE_VAR).ok().filter(|n| !n.is_empty()) {
        if image_exists(&name) {
            let origin =
                image_origin(&name).unwrap_or_else(|| format!("present, from {IMAGE_VAR}"));
            return Ok(EtcdImage { name, origin });
        }
        if name == LOCAL_IMAGE {
            return build_local(root);
        }
        println!("xtask: etcd image {name} (from {IMAGE_VAR}) is not present; pulling it");
        pull(&name).with_context(|| {
            format!("etcd image {name}, chosen by {IMAGE_VAR}, is not present and cannot be pulled; pull or build it, or unset {IMAGE_VAR} so that xtask builds {LOCAL_IMAGE} from Debian's etcd-server")
        })?;
        return Ok(EtcdImage {
            name,
            origin: "pulled".into(),
        });
    }

    if image_exists(OFFICIAL_IMAGE) {
        return Ok(EtcdImage {
            name: OFFICIAL_IMAGE.into(),
            origin: "official, present".into(),
        });
    }
    if image_exists(LOCAL_IMAGE) {
        let origin = image_origin(LOCAL_IMAGE).unwrap_or_else(|| "present".into());
        return Ok(EtcdImage {
            name: LOCAL_IMAGE.into(),
            origin,
        });
    }
    println!("xtask: pulling {OFFICIAL_IMAGE}");
    match pull(OFFICIAL_IMAGE) {
        Ok(()) => Ok(EtcdImage {
            name: OFFICIAL_IMAGE.into(),
            origin: "official, pulled".into(),
        }),
        Err(err) => {
            println!("xtask: cannot pull {OFFICIAL_IMAGE} ({err:#}); building {LOCAL_IMAGE} from Debian's etcd-server instead");
            build_local(root)
        }
    }
}

/// Fails with instructions unless a Docker daemon answers.
fn check_docker() -> Result<()> {
    if cmd::find_on_path("docker").is_none() {
        bail!("the integration tests run etcd in Docker, but there is no `docker` on PATH; install Docker (Debian: apt-get install docker.io), start its daemon, and run `cargo xtask test` again");
    }
    let out = cmd::capture(
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
        DOCKER_CHECK_TIMEOUT,
    )
    .context("the Docker daemon does not answer; start it (e.g. `systemctl start docker` or `dockerd &`) or point DOCKER_HOST at one")?;
    if !out.status.success() {
        bail!(
            "the Docker daemon does not answer ({}); start it (e.g. `systemctl start docker` or `dockerd &`) or point DOCKER_HOST at one",
            out.stderr.trim()
        );
    }
    Ok(())
}

fn image_exists(name: &str) -> bool {
    cmd::capture(
        Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", name]),
        DOCKER_CHECK_TIMEOUT,
    )
    .map(|out| out.status.success())
    .unwrap_or(false)
}

/// What the local image's label says it was built from, if it has the label.
fn image_origin(name: &str) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{SOURCE_LABEL}\"}}}}");
    let out = cmd::stdout_ok(
        Command::new("docker").args(["image", "inspect", "--format", &format, name]),
        DOCKER_CHECK_TIMEOUT,
    )
    .ok()?;
    let origin = out.trim();
    (!origin.is_empty() && origin != "<no value>").then(|| origin.to_string())
}

fn pull(name: &str) -> Result<()> {
    let out = cmd::capture(Command::new("docker").args(["pull", name]), PULL_TIMEOUT)?;
    if !out.status.success() {
        bail!("{}", out.stderr.trim());
    }
    Ok(())
}

/// Builds [`LOCAL_IMAGE`] from the host's etcd and etcdctl, installing Debian's packages if
/// needed.
fn build_local(root: &Path) -> Result<EtcdImage> {
    let etcd = match find_etcd() {
        Some(path) => path,
        None => {
            install_debian_etcd()?;
            find_etcd().context("installed etcd-server, but there is still no etcd binary")?
        }
    };
    let version = etcd_version(&etcd)?;
    let package = cmd::stdout_ok(
        Command::new("dpkg-query").args(["-W", "-f=${Version}", "etcd-server"]),
        DOCKER_CHECK_TIMEOUT,
    )
    .ok()
    .filter(|v| !v.trim().is_empty());
    let origin = match &package {
        Some(pkg) => format!("built from Debian etcd-server {}", pkg.trim()),
        None => format!("built from {} (etcd {version})", etcd.display()),
    };
    println!(
        "xtask: building {LOCAL_IMAGE} from {} (etcd {version})",
        etcd.display()
    );

    let work = root.join("target").join("xtask");
    let rootfs = work.join("etcd-rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)
            .with_context(|| format!("cannot clear {}", rootfs.display()))?;
    }
    fs::create_dir_all(&rootfs)?;

    let etcdctl = match find_etcdctl(&etcd) {
        Some(path) => path,
        None => {
            install_debian_etcd()?;
            find_etcdctl(&etcd)
                .context("installed etcd-client, but there is still no etcdctl beside etcd")?
        }
    };
    let binaries = [etcd.clone(), etcdctl];
    for binary in &binaries {
        let name = binary.file_name().expect("a binary has a file name");
        copy_into(&rootfs, binary, &Path::new("/usr/bin").join(name))?;
        for lib in shared_libraries(binary)? {
            copy_into(&rootfs, &lib, &lib)?;
        }
    }
    write_skeleton(&rootfs)?;

    let tarball = work.join("etcd-rootfs.tar");
    cmd::stdout_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
        IMPORT_TIMEOUT,
    )?;
    let label = format!("LABEL {SOURCE_LABEL}=\"{origin}\"");
    cmd::stdout_ok(
        Command::new("docker")
            .args(["import"])
            .args(["--change", r#"ENTRYPOINT ["/usr/bin/etcd"]"#])
            .args(["--change", "WORKDIR /var/lib/etcd"])
            .args(["--change", "ENV ETCDCTL_API=3"])
            .args(["--change", "EXPOSE 2379 2380"])
            .args(["--change", &label])
            .arg(&tarball)
            .arg(LOCAL_IMAGE),
        IMPORT_TIMEOUT,
    )?;
    let _ = fs::remove_file(&tarball);

    // The image must run: a missing library shows up here, not as a container that dies.
    let out = cmd::stdout_ok(
        Command::new("docker").args(["run", "--rm", LOCAL_IMAGE, "--version"]),
        DOCKER_CHECK_TIMEOUT,
    )
    .with_context(|| format!("the freshly built {LOCAL_IMAGE} does not run"))?;
    if !out.contains(&version) {
        bail!("the freshly built {LOCAL_IMAGE} reports {out:?}, expected etcd {version}");
    }
    cmd::stdout_ok(
        Command::new("docker").args([
            "run",
            "--rm",
            "--entrypoint",
            "/usr/bin/etcdctl",
            LOCAL_IMAGE,
            "version",
        ]),
        DOCKER_CHECK_TIMEOUT,
    )
    .with_context(|| format!("etcdctl in the freshly built {LOCAL_IMAGE} does not run"))?;
    Ok(EtcdImage {
        name: LOCAL_IMAGE.into(),
        origin,
    })
}

fn find_etcd() -> Option<PathBuf> {
    cmd::find_on_path("etcd").or_else(|| {
        let path = PathBuf::from("/usr/bin/etcd");
        path.is_file().then_some(path)
    })
}

/// The `etcdctl` beside `etcd` (Debian's etcd-client puts both in /usr/bin).
fn find_etcdctl(etcd: &Path) -> Option<PathBuf> {
    etcd.parent()
        .map(|dir| dir.join("etcdctl"))
        .filter(|p| p.is_file())
}

/// `etcd --version`'s version number, e.g. `3.4.23`.
fn etcd_version(etcd: &Path) -> Result<String> {
    let out = cmd::stdout_ok(Command::new(etcd).arg("--version"), DOCKER_CHECK_TIMEOUT)?;
    out.lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .with_context(|| {
            format!(
                "cannot read a version from `{} --version`: {out:?}",
                etcd.display()
            )
        })
}

/// Installs Debian's etcd-server and etcd-client without letting them start a host etcd.
fn install_debian_etcd() -> Result<()> {
    let uid = cmd::stdout_ok(Command::new("id").arg("-u"), DOCKER_CHECK_TIMEOUT)?;
    if uid.trim() != "0" || !Path::new("/etc/debian_version").exists() {
        bail!("no etcd image can be pulled and there are no etcd and etcdctl binaries to build {LOCAL_IMAGE} from; install etcd and etcdctl (Debian: apt-get install etcd-server etcd-client) or set {IMAGE_VAR} to an etcd image you have");
    }
    println!("xtask: installing Debian's etcd-server and etcd-client (for their binaries only)");
    let port_was_open = port_2379_open();
    // invoke-rc.d and deb-systemd-invoke ask policy-rc.d; 101 means "do not start services".
    let _policy = PolicyRcD::forbid_service_starts()?;
    let apt = |args: &[&str]| cmd::apt_get(args, APT_TIMEOUT);
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "-o",
        "Dpkg::Use-Pty=0",
        "--no-install-recommends",
        "etcd-server",
        "etcd-client",
    ])?;

    // Where systemd runs, the package enabled a unit for the next boot: switch it off.
    if Path::new("/run/systemd/system").exists() {
        let _ = cmd::capture(
            Command::new("systemctl").args(["disable", "--now", "etcd"]),
            DOCKER_CHECK_TIMEOUT,
        );
    }
    if !port_was_open && port_2379_open() {
        let _ = cmd::capture(
            Command::new("service").args(["etcd", "stop"]),
            DOCKER_CHECK_TIMEOUT,
        );
        std::thread::sleep(Duration::from_secs(1));
        if port_2379_open() {
            bail!("installing etcd-server started an etcd on this host (port 2379) and it could not be stopped; stop it (`systemctl disable --now etcd`) and run again");
        }
    }
    Ok(())
}

fn port_2379_open() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 2379));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Keeps `/usr/sbin/policy-rc.d` saying "no" while it lives, if there was none before.
struct PolicyRcD {
    /// Set when we wrote the file and must remove it again.
    written: Option<PathBuf>,
}

impl PolicyRcD {
    fn forbid_service_starts() -> Result<Self> {
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Ok(PolicyRcD { written: None });
        }
        fs::write(
            &path,
            "#!/bin/sh\n# written by muster's cargo xtask while installing etcd-server\nexit 101\n",
        )?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(PolicyRcD {
            written: Some(path),
        })
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        if let Some(path) = &self.written {
            let _ = fs::remove_file(path);
        }
    }
}

/// The absolute paths of the shared libraries (and the dynamic loader) `binary` needs.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::capture(Command::new("ldd").arg(binary), DOCKER_CHECK_TIMEOUT)?;
    if !out.status.success() {
        if out.stdout.contains("not a dynamic executable")
            || out.stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", binary.display(), out.stderr.trim());
    }
    let mut libs = Vec::new();
    for line in out.stdout.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
        // or "linux-vdso.so.1 (0x...)" (in the kernel, nothing to copy).
        let target = match line.split_once("=>") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!(
                "`ldd {}` cannot find a library: {}",
                binary.display(),
                line.trim()
            );
        }
    }
    Ok(libs)
}

/// Copies `source` (following symlinks) to `dest` (an absolute path) inside `rootfs`.
fn copy_into(rootfs: &Path, source: &Path, dest: &Path) -> Result<()> {
    let target = rootfs.join(dest.strip_prefix("/").unwrap_or(dest));
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(source, &target)
        .with_context(|| format!("cannot copy {} into the image", source.display()))?;
    Ok(())
}

/// The few files and directories besides the binaries that a process expects.
fn write_skeleton(rootfs: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in ["tmp", "var/lib/etcd", "etc"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/usr/bin/etcd\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    )?;
    fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    Ok(())
}
