//! Running external programs: with a time limit, with their output captured or shown.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a finished command printed.
pub struct Captured {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

/// A short human-readable form of a command, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` with no standard input, capturing its output, killing it after `timeout`.
///
/// `Ok` means it ran to the end (whatever its exit status); `Err` means it could not be
/// started or ran out of time.
pub fn capture(cmd: &mut Command, timeout: Duration) -> Result<Captured> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    // Readers on their own threads so that a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = wait_until(&mut child, timeout, &what)?;
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Captured {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Runs `cmd` with no standard input and its output shown, killing it after `timeout`.
pub fn show(cmd: &mut Command, timeout: Duration) -> Result<ExitStatus> {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start `{what}`"))?;
    wait_until(&mut child, timeout, &what)
}

/// Runs `cmd` with no standard input and its output shown; fails unless it exits with 0.
pub fn show_ok(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let what = describe(cmd);
    let status = show(cmd, timeout)?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// Like [`capture`], but fails unless the command exits with 0, and returns its stdout.
pub fn stdout_ok(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let what = describe(cmd);
    let out = capture(cmd, timeout)?;
    if !out.status.success() {
        bail!("`{what}` failed ({}): {}", out.status, out.stderr.trim());
    }
    Ok(out.stdout)
}

fn wait_until(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {timeout:?}; stopped it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finds `program` on `PATH`, like `which`.
pub fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs `apt-get ARGS` non-interactively with its output shown; fails unless it exits 0.
pub fn apt_get(args: &[&str], timeout: Duration) -> Result<()> {
    show_ok(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        timeout,
    )
}
