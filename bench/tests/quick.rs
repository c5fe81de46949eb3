//! `muster-bench --quick` runs end to end and produces numbers.
//!
//! This is how `cargo xtask test` exercises the bench: for breakage, never for speed. No
//! figure is compared with a goal here; the test checks that the program exits 0, that the
//! JSON report holds every section, and that each headline figure is a finite number.
//! Like every etcd test it needs Docker and `MUSTER_ETCD_IMAGE` (set by `cargo xtask test`).

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_bench_runs_and_reports_numbers() {
    let dir = std::env::temp_dir().join(format!("muster-bench-quick-{}", std::process::id()));
    let out = dir.join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "muster-bench --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("the report was written"))
            .expect("the report is JSON");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(report["format"], "muster-bench/1");
    for section in [
        "join",
        "detect",
        "write",
        "scale_200",
        "core_observations",
        "core_simulation",
        "callers",
        "fanout",
    ] {
        assert!(
            report["sections"][section].is_object(),
            "section {section} is missing:\n{report:#}"
        );
    }
    let headline = report["headline"].as_array().expect("a headline table");
    let ids: Vec<&str> = headline.iter().filter_map(|r| r["id"].as_str()).collect();
    for id in [
        "join.p50_ms",
        "join.p99_ms",
        "detect.max_ms",
        "write.proposals_per_worker_min",
        "write.v2_proposals_per_key_min",
        "scale200.cold_start_ms",
        "scale200.master_bytes_per_member",
        "scale200.keep_alive_failures",
        "core.observations_per_s",
        "core.simulation_wall_ms",
        "callers.rolling_failed",
        "callers.crash_window_ms",
        "callers.crash_failed_after_removal",
        "callers.join_first_served_ms",
        "fanout.subscribers_p99_ms",
        "fanout.sse_p99_ms",
        "fanout.cpu_sse_us",
        "fanout.stuck_rss_second_half_bytes",
        "fanout.stuck_healthy_complete",
    ] {
        assert!(ids.contains(&id), "headline row {id} is missing: {ids:?}");
    }
    for row in headline {
        let value = row["value"].as_f64();
        assert!(
            value.is_some_and(f64::is_finite),
            "headline row without a number: {row}"
        );
        if let Some(floor) = row["floor"].as_f64() {
            assert!(floor > 0.0, "a floor must be positive: {row}");
            assert!(row["ratio"].as_f64().is_some_and(f64::is_finite), "{row}");
        }
    }
    // Numbers, not zeros: the latencies and rates that must be positive are.
    for id in [
        "join.p50_ms",
        "detect.max_ms",
        "scale200.cold_start_ms",
        "core.observations_per_s",
        "callers.crash_window_ms",
        "callers.join_first_served_ms",
    ] {
        let row = headline.iter().find(|r| r["id"] == id).expect("listed");
        assert!(row["value"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert!(stdout.contains("| section | figure |"), "{stdout}");
}
