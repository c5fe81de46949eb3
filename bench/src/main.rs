//! # muster-bench
//!
//! `cargo xtask bench [--quick]`: muster measured against the raw etcd floor, in one run, on
//! this machine. Every figure is printed beside its floor and the ratio (these machines are
//! shared and noisy: absolute times drift, ratios taken in the same run much less), and the
//! whole report is written as JSON so that a later run can be compared (`--baseline`).
//!
//! # Layout
//!
//! - `args`: the command line and the two sizes (full, `--quick`).
//! - `join` (section 1): registration commit → master `Joined`, beside a bare etcd-client
//!   put → prefix-watch event, interleaved sample by sample.
//! - `detect` (section 2): abandoned lease → master `Suspect` at TTL 2 s, beside the lease's
//!   remaining TTL plus etcd's 500 ms expiry tick, per sample.
//! - `scale` (sections 3 and 4): N workers in this process on one shared `EtcdStore`;
//!   registration, master cold start and memory (a separate process: `probe`), a keep-alive
//!   soak, raft proposals from etcd's `/metrics`, and the v2-style rewrite loop.
//! - `groups` (section 4b): N members on shared leases (`WorkerGroup`s of up to 10,000):
//!   registration beside bare etcd-client, the master's cold start and memory (`probe`), a
//!   soak, and the crash wave (one group abandoned: all its members `Suspect` at a
//!   subscriber, beside a bare watch).
//! - `core_bench` (section 5): the `Membership` state machine alone, and the whole system on
//!   the in-memory backend under tokio's paused clock.
//! - `callers` (section 6): a tonic client sending continuously through
//!   `muster_tonic::balanced_channel` to 3 `Who` servers while each is restarted the way
//!   `muster-worker` does on SIGTERM (drain, grace, stop, leave), one crashes and a fourth
//!   joins; failed requests per phase, beside a static endpoint list and a bare balanced
//!   channel told directly.
//! - `fanout` (section 7): one master read by N in-process subscribers and N SSE clients
//!   of the programs' HTTP API (`muster_programs::http` on loopback): delivery latency
//!   beside a single reader of the same run and a bare etcd watch, the master's CPU per
//!   transition (its runtime's threads), and memory and delivery with M stuck SSE clients.
//! - `probe`: the master probe, this binary run as a child process so a master's cold start
//!   and memory are measured on their own.
//! - `instrumented`: a thin `Store` wrapper that timestamps calls (what was sent when).
//! - `etcd`: a container per section, its `/metrics`, its process's CPU time.
//! - `report`: statistics, printing, the JSON report, the headline table.
//!
//! Benchmarks are not tests: nothing here fails on a slow figure. It fails only when a
//! measurement could not be taken (etcd missing, a worker that never registered, a
//! transition that never came).

mod args;
mod callers;
mod core_bench;
mod detect;
mod etcd;
mod fanout;
mod groups;
mod instrumented;
mod join;
mod probe;
mod report;
mod scale;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::args::{Args, Section};
use crate::report::Report;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The master probe is this same binary run as a child, so that its memory is its own.
    if argv.first().map(String::as_str) == Some(probe::SUBCOMMAND) {
        return exit(probe::main(&argv[1..]));
    }
    let args = match Args::parse(&argv) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("muster-bench: {err:#}\n\n{}", args::USAGE);
            return ExitCode::FAILURE;
        }
    };
    if args.help {
        print!("{}", args::USAGE);
        return ExitCode::SUCCESS;
    }
    exit(run(args))
}

fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("muster-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let mut report = Report::new(&args);
    report.print_preamble();
    // Two worker threads: this machine has two cores, and so would a real master or a
    // process hosting many workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for section in Section::ALL {
        if !args.sections.contains(&section) {
            continue;
        }
        let at = Instant::now();
        match section {
            Section::Join => runtime.block_on(join::run(&args, &mut report))?,
            Section::Detect => runtime.block_on(detect::run(&args, &mut report))?,
            Section::Write => runtime.block_on(scale::run_write(&args, &mut report))?,
            Section::Scale => runtime.block_on(scale::run_scale(&args, &mut report))?,
            Section::Groups => runtime.block_on(groups::run(&args, &mut report))?,
            // Single-threaded on purpose, and the simulation brings its own paused runtime.
            Section::Core => core_bench::run(&args, &mut report)?,
            Section::Callers => runtime.block_on(callers::run(&args, &mut report))?,
            // Two runtimes of its own, so the master's CPU is its threads'.
            Section::Fanout => fanout::run(&args, &mut report)?,
        }
        println!(
            "   ({} took {:.1} s)\n",
            section.name(),
            at.elapsed().as_secs_f64()
        );
    }
    drop(runtime);
    report.finish(started.elapsed());
    report.print_headline();
    report.write(&args.out)?;
    if let Some(baseline) = &args.baseline {
        report.compare(baseline)?;
    }
    Ok(())
}
