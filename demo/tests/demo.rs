//! The embedded demo runs to the end and shows every transition kind.

use std::process::Command;

#[test]
fn the_embedded_demo_tells_the_whole_story() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-demo"))
        .output()
        .expect("run muster-demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in [
        "joined",
        "updated",
        "draining",
        "suspect",
        "recovered",
        "restarted",
        "left",
        "failed",
    ] {
        let shown = stdout
            .lines()
            .any(|line| line.contains(" rev ") && line.contains(&format!("  {kind} ")));
        assert!(
            shown,
            "no `{kind}` transition in the demo's output:\n{stdout}"
        );
    }
    assert!(stdout.contains("every transition kind shown"), "{stdout}");
}

#[test]
fn an_unknown_argument_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_muster-demo"))
        .arg("--bogus")
        .output()
        .expect("run muster-demo");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("usage: cargo xtask demo"), "{stderr}");
}
