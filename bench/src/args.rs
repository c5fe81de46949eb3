//! The command line, and the sizes of a full run and of `--quick`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const USAGE: &str = "\
usage: muster-bench [--quick] [options]     (normally: cargo xtask bench [--quick] [options])

Measures muster against the raw etcd floor on real etcd (a Docker container per section,
image from MUSTER_ETCD_IMAGE) and prints every figure with its floor and the ratio.

  --quick              small sizes, about a minute: for CI and for checking the bench runs
  --only LIST          only these sections, comma-separated: join,detect,write,scale,groups,core,callers,fanout
  --out PATH           where to write the JSON report
                       (default target/bench/report.json, or report-quick.json with --quick)
  --baseline PATH      compare with an earlier JSON report
  --joins N            section 1: joins to time (default 1000; quick 100)
  --samples N          section 2: failure-detection samples (default 20; quick 5)
  --write-workers N    section 3: workers during the write-cost window (default 1000; quick 200)
  --window SECS        section 3: write-cost window, also the v2 loop's (default 60; quick 10)
  --sizes LIST         section 4: worker counts, comma-separated (default 1000,10000; quick 200)
  --soak SECS          section 4: keep-alive soak per size (default 300; quick 10)
  --group-sizes LIST   section 4b: members on shared leases (WorkerGroups of up to 10,000),
                       comma-separated (default 10000,100000; quick 200); the soak is --soak
  --register-concurrency N
                       section 4: registrations in flight at once (default 256)
  --sim N              section 5: simulated workers (default 10000; quick 1000)
  --observations N     section 5: state-machine observations to time (default 2000000; quick 100000)
  --rate N             section 6: requests per second the client sends (default 2000; quick 500)
  --drain-grace SECS   section 6: wait after drain before a server stops (default 3; quick 1)
  --crash-after SECS   section 6: how long to keep sending after the crashed server's
                       removal (default 5; quick 2)
  --fanout-subscribers N
                       section 7: in-process subscribers of one master (default 1000; quick 20)
  --fanout-sse N       section 7: SSE clients of its HTTP API (default 1000; quick 20)
  --fanout-stuck N     section 7: SSE clients that never read (default 100; quick 5)
  --fanout-transitions N
                       section 7: timed transitions per phase (default 1000; quick 100)
  --fanout-streamed N  section 7: transitions streamed past the stuck clients (default 6000;
                       quick 1500: too few to fill their sockets' buffers)
";

/// One section of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// 1. Join propagation.
    Join,
    /// 2. Failure detection.
    Detect,
    /// 3. Write cost.
    Write,
    /// 4. Scale.
    Scale,
    /// 4b. Scale on shared leases (`WorkerGroup`).
    Groups,
    /// 5. Core.
    Core,
    /// 6. Callers: a tonic client through restarts, a crash and a join.
    Callers,
    /// 7. Fan-out: many subscribers and SSE clients of one master.
    Fanout,
}

impl Section {
    pub const ALL: [Section; 8] = [
        Section::Join,
        Section::Detect,
        Section::Write,
        Section::Scale,
        Section::Groups,
        Section::Core,
        Section::Callers,
        Section::Fanout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Join => "join",
            Section::Detect => "detect",
            Section::Write => "write",
            Section::Scale => "scale",
            Section::Groups => "groups",
            Section::Core => "core",
            Section::Callers => "callers",
            Section::Fanout => "fanout",
        }
    }
}

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Args {
    pub help: bool,
    pub quick: bool,
    pub sections: Vec<Section>,
    pub out: PathBuf,
    pub baseline: Option<PathBuf>,
    pub joins: usize,
    pub samples: usize,
    pub write_workers: usize,
    pub window: Duration,
    pub sizes: Vec<usize>,
    /// Section 4b: members on shared leases.
    pub group_sizes: Vec<usize>,
    pub soak: Duration,
    pub register_concurrency: usize,
    pub sim: usize,
    pub observations: usize,
    /// Section 6: requests per second.
    pub rate: u32,
    /// Section 6: the drain grace of each restart.
    pub drain_grace: Duration,
    /// Section 6: how long the clients go on after the crashed server's removal.
    pub crash_after: Duration,
    /// Section 7: in-process subscribers.
    pub fanout_subscribers: usize,
    /// Section 7: SSE clients.
    pub fanout_sse: usize,
    /// Section 7: SSE clients that never read.
    pub fanout_stuck: usize,
    /// Section 7: timed transitions per phase.
    pub fanout_transitions: usize,
    /// Section 7: transitions streamed with and without the stuck clients.
    pub fanout_streamed: usize,
    /// The command line as given, for the report.
    pub command: String,
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args> {
        let quick = argv.iter().any(|a| a == "--quick");
        let mut args = Args {
            help: false,
            quick,
            sections: Section::ALL.to_vec(),
            out: PathBuf::from(if quick {
                "target/bench/report-quick.json"
            } else {
                "target/bench/report.json"
            }),
            baseline: None,
            joins: if quick { 100 } else { 1000 },
            samples: if quick { 5 } else { 20 },
            write_workers: if quick { 200 } else { 1000 },
            window: Duration::from_secs(if quick { 10 } else { 60 }),
            sizes: if quick { vec![200] } else { vec![1000, 10_000] },
            group_sizes: if quick {
                vec![200]
            } else {
                vec![10_000, 100_000]
            },
            soak: Duration::from_secs(if quick { 10 } else { 300 }),
            register_concurrency: 256,
            sim: if quick { 1000 } else { 10_000 },
            observations: if quick { 100_000 } else { 2_000_000 },
            rate: if quick { 500 } else { 2000 },
            drain_grace: Duration::from_secs(if quick { 1 } else { 3 }),
            crash_after: Duration::from_secs(if quick { 2 } else { 5 }),
            fanout_subscribers: if quick { 20 } else { 1000 },
            fanout_sse: if quick { 20 } else { 1000 },
            fanout_stuck: if quick { 5 } else { 100 },
            fanout_transitions: if quick { 100 } else { 1000 },
            fanout_streamed: if quick { 1500 } else { 6000 },
            command: std::iter::once("muster-bench")
                .chain(argv.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut it = argv.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "-h" | "--help" => args.help = true,
                "--quick" => {}
                "--only" => {
                    args.sections = value("--only")?
                        .split(',')
                        .map(|name| {
                            Section::ALL
                                .into_iter()
                                .find(|s| s.name() == name.trim())
                                .with_context(|| format!("unknown section {name:?}"))
                        })
                        .collect::<Result<_>>()?
                }
                "--out" => args.out = PathBuf::from(value("--out")?),
                "--baseline" => args.baseline = Some(PathBuf::from(value("--baseline")?)),
                "--joins" => args.joins = number(&value("--joins")?)?,
                "--samples" => args.samples = number(&value("--samples")?)?,
                "--write-workers" => args.write_workers = number(&value("--write-workers")?)?,
                "--window" => args.window = Duration::from_secs(number(&value("--window")?)?),
                "--sizes" => {
                    args.sizes = value("--sizes")?
                        .split(',')
                        .map(|n| number(n.trim()))
                        .collect::<Result<_>>()?
                }
                "--group-sizes" => {
                    args.group_sizes = value("--group-sizes")?
                        .split(',')
                        .map(|n| number(n.trim()))
                        .collect::<Result<_>>()?
                }
                "--soak" => args.soak = Duration::from_secs(number(&value("--soak")?)?),
                "--register-concurrency" => {
                    args.register_concurrency = number(&value("--register-concurrency")?)?
                }
                "--sim" => args.sim = number(&value("--sim")?)?,
                "--observations" => args.observations = number(&value("--observations")?)?,
                "--rate" => args.rate = number(&value("--rate")?)?,
                "--drain-grace" => {
                    args.drain_grace = Duration::from_secs_f64(number(&value("--drain-grace")?)?)
                }
                "--crash-after" => {
                    args.crash_after = Duration::from_secs_f64(number(&value("--crash-after")?)?)
                }
                "--fanout-subscribers" => {
                    args.fanout_subscribers = number(&value("--fanout-subscribers")?)?
                }
                "--fanout-sse" => args.fanout_sse = number(&value("--fanout-sse")?)?,
                "--fanout-stuck" => args.fanout_stuck = number(&value("--fanout-stuck")?)?,
                "--fanout-transitions" => {
                    args.fanout_transitions = number(&value("--fanout-transitions")?)?
                }
                "--fanout-streamed" => args.fanout_streamed = number(&value("--fanout-streamed")?)?,
                other => bail!("unknown argument {other:?}"),
            }
        }
        if args.joins == 0
            || args.samples == 0
            || args.sizes.contains(&0)
            || args.group_sizes.contains(&0)
            || args.rate == 0
            || args.fanout_subscribers == 0
            || args.fanout_sse == 0
            || args.fanout_stuck == 0
            || args.fanout_transitions == 0
            || args.fanout_streamed == 0
        {
            bail!("counts must be at least 1");
        }
        Ok(args)
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a number"))
}
