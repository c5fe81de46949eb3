//! Statistics, printing, the JSON report and the headline table.
//!
//! Every headline figure carries its floor (what raw etcd, or the physics of the setup, gives
//! in the same run), the ratio to it, the goal from the issue, and whether the goal is met.
//! The JSON report holds the same rows with raw numbers, plus each section's details, so
//! `--baseline` can compare two runs figure by figure.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::args::Args;

/// Order statistics of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Stats {
    /// Nearest-rank percentiles. `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |q: f64| {
            let i = (q * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        let total: Duration = sorted.iter().sum();
        Some(Stats {
            n: sorted.len(),
            min: sorted[0],
            p50: rank(0.50),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
            mean: total / sorted.len() as u32,
        })
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "min_ms": ms(self.min),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "mean_ms": ms(self.mean),
        })
    }
}

/// A duration in milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A duration for people: µs, ms or s with three significant digits.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{} ms", sig3(s * 1e3))
    } else {
        format!("{} s", sig3(s))
    }
}

/// A number with three significant digits (no exponent).
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = x.abs().log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    format!("{x:.decimals$}")
}

/// A count with thousands separators.
pub fn count(n: f64) -> String {
    let int = n.round() as i64;
    let text = int.abs().to_string();
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && (text.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if int < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// One row of the headline table.
#[derive(Debug, Clone)]
pub struct Headline {
    /// Stable id for comparisons, e.g. `join.p50_ms`.
    pub id: String,
    /// The section, e.g. `1. join`.
    pub section: &'static str,
    /// What is measured, for people.
    pub metric: String,
    /// The figure as a number, in `unit`.
    pub value: f64,
    /// The figure for people.
    pub shown: String,
    pub unit: &'static str,
    /// The floor, in `unit`, and for people.
    pub floor: Option<(f64, String)>,
    /// The goal from the issue, for people.
    pub goal: String,
    /// Whether the goal is met (`None`: no goal).
    pub met: Option<bool>,
}

impl Headline {
    pub fn ratio(&self) -> Option<f64> {
        self.floor
            .as_ref()
            .filter(|(f, _)| *f > 0.0)
            .map(|(f, _)| self.value / f)
    }
}

/// The whole run.
pub struct Report {
    meta: Map<String, Value>,
    sections: Map<String, Value>,
    headline: Vec<Headline>,
}

impl Report {
    pub fn new(args: &Args) -> Report {
        let mut meta = Map::new();
        meta.insert("command".into(), json!(args.command));
        meta.insert("quick".into(), json!(args.quick));
        meta.insert("date".into(), json!(utc_now()));
        meta.insert("cores".into(), json!(cores()));
        meta.insert("cpu".into(), json!(cpu_model()));
        meta.insert(
            "etcd_image".into(),
            json!(muster_testkit::etcd::image().to_string()),
        );
        meta.insert(
            "sizes".into(),
            json!({
                "joins": args.joins,
                "detection_samples": args.samples,
                "write_workers": args.write_workers,
                "write_window_s": args.window.as_secs_f64(),
                "scale_sizes": args.sizes,
                "soak_s": args.soak.as_secs_f64(),
                "register_concurrency": args.register_concurrency,
                "sim_workers": args.sim,
                "observations": args.observations,
                "callers_rate": args.rate,
                "callers_drain_grace_s": args.drain_grace.as_secs_f64(),
                "callers_crash_after_s": args.crash_after.as_secs_f64(),
                "fanout_subscribers": args.fanout_subscribers,
                "fanout_sse": args.fanout_sse,
                "fanout_stuck": args.fanout_stuck,
                "fanout_transitions": args.fanout_transitions,
                "fanout_streamed": args.fanout_streamed,
            }),
        );
        Report {
            meta,
            sections: Map::new(),
            headline: Vec::new(),
        }
    }

    pub fn print_preamble(&self) {
        println!(
            "muster-bench {} — {} — {} core(s), {} — etcd image {}",
            if self.meta["quick"] == json!(true) {
                "--quick"
            } else {
                "(full)"
            },
            self.meta["date"].as_str().unwrap_or("?"),
            self.meta["cores"],
            self.meta["cpu"].as_str().unwrap_or("?"),
            self.meta["etcd_image"].as_str().unwrap_or("?"),
        );
        println!(
            "every figure is printed with its floor (raw etcd in the same run) and the ratio\n"
        );
    }

    /// Records a section's details.
    pub fn section(&mut self, name: &str, details: Value) {
        self.sections.insert(name.into(), details);
    }

    /// Records a metadata item (e.g. the etcd version seen).
    pub fn meta(&mut self, key: &str, value: Value) {
        self.meta.insert(key.into(), value);
    }

    /// Adds a headline row and prints it.
    pub fn headline(&mut self, row: Headline) {
        let ratio = row
            .ratio()
            .map(|r| format!("  ratio {r:.2}x"))
            .unwrap_or_default();
        let floor = row
            .floor
            .as_ref()
            .map(|(_, shown)| format!("  floor {shown}"))
            .unwrap_or_default();
        let met = match row.met {
            Some(true) => "  [goal met]",
            Some(false) => "  [goal MISSED]",
            None => "",
        };
        println!(
            "   > {}: {}{floor}{ratio}  goal: {}{met}",
            row.metric, row.shown, row.goal
        );
        self.headline.push(row);
    }

    pub fn finish(&mut self, took: Duration) {
        self.meta
            .insert("took_s".into(), json!(took.as_secs_f64().round()));
    }

    /// The headline table, as Markdown (it goes into BENCHMARKS.md as printed).
    pub fn print_headline(&self) {
        println!(
            "## Headline ({})\n",
            self.meta["date"].as_str().unwrap_or("?")
        );
        println!("| section | figure | muster | floor | ratio | goal | met |");
        println!("|---|---|---|---|---|---|---|");
        for row in &self.headline {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.section,
                row.metric,
                row.shown,
                row.floor.as_ref().map_or("—", |(_, s)| s.as_str()),
                row.ratio().map_or("—".into(), |r| format!("{r:.2}x")),
                row.goal,
                match row.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "—",
                },
            );
        }
        println!(
            "\n(run took {} s)",
            self.meta.get("took_s").cloned().unwrap_or(json!("?"))
        );
    }

    pub fn to_json(&self) -> Value {
        let headline: Vec<Value> = self
            .headline
            .iter()
            .map(|row| {
                json!({
                    "id": row.id,
                    "section": row.section,
                    "metric": row.metric,
                    "value": row.value,
                    "unit": row.unit,
                    "floor": row.floor.as_ref().map(|(f, _)| *f),
                    "ratio": row.ratio(),
                    "goal": row.goal,
                    "met": row.met,
                })
            })
            .collect();
        json!({
            "format": "muster-bench/1",
            "meta": self.meta,
            "headline": headline,
            "sections": self.sections,
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
        Ok(())
    }

    /// Prints each headline figure next to the same figure of an earlier report.
    pub fn compare(&self, baseline: &Path) -> Result<()> {
        let text = std::fs::read_to_string(baseline)
            .with_context(|| format!("reading {}", baseline.display()))?;
        let old: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON report", baseline.display()))?;
        let rows = old["headline"].as_array().cloned().unwrap_or_default();
        println!(
            "\ncompared with {} ({}):",
            baseline.display(),
            old["meta"]["date"].as_str().unwrap_or("?")
        );
        println!("| figure | then | now | change | ratio then | ratio now |");
        println!("|---|---|---|---|---|---|");
        for row in &self.headline {
            let Some(then) = rows.iter().find(|r| r["id"] == json!(row.id)) else {
                continue;
            };
            let then_value = then["value"].as_f64().unwrap_or(f64::NAN);
            let change = if then_value != 0.0 {
                format!("{:+.0}%", (row.value / then_value - 1.0) * 100.0)
            } else {
                "—".into()
            };
            println!(
                "| {} | {} {} | {} {} | {} | {} | {} |",
                row.metric,
                sig3(then_value),
                row.unit,
                sig3(row.value),
                row.unit,
                change,
                then["ratio"]
                    .as_f64()
                    .map_or("—".into(), |r| format!("{r:.2}x")),
                row.ratio().map_or("—".into(), |r| format!("{r:.2}x")),
            );
        }
        Ok(())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let stats = Stats::of(&samples).unwrap();
        assert_eq!(stats.p50, Duration::from_millis(50));
        assert_eq!(stats.p99, Duration::from_millis(99));
        assert_eq!(stats.max, Duration::from_millis(100));
        assert_eq!(stats.min, Duration::from_millis(1));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(sig3(0.6123), "0.612");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1234.6), "1235");
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(human(Duration::from_micros(250)), "250 µs");
        assert_eq!(human(Duration::from_millis(2600)), "2.60 s");
    }
}
