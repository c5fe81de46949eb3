//! `muster-master`: watch a group and print (and serve) its live membership; `list` and
//! `evict` one-shots for operators.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use muster_core::{MemberState, Transition, TransitionKind};
use muster_master::{Event, Master, MasterConfig, Subscription};

use crate::cli::{parse_duration, parse_name, parse_prefix, CommonArgs};
use crate::connect::connect;
use crate::events::EventLog;
use crate::fatal::Fatal;
use crate::http::{self, Api};
use crate::metrics::{self, Group};
use crate::render::{self, EventJson, SyncedJson, ViewJson};
use crate::signals::{self, Signals};
use crate::timed::{StoreMetrics, TimedStore};

/// The program's name in messages.
const NAME: &str = "muster-master";

const EXAMPLES: &str = "\
Examples:
  # Watch the group: a table, then one line per change (ctrl-c to stop):
  muster-master --endpoints http://127.0.0.1:2379 --prefix /muster/web/

  # One JSON object per transition per line, for scripts:
  muster-master --json | jq -c 'select(.kind == \"suspect\")'

  # Serve the HTTP API and Prometheus metrics:
  muster-master --http 127.0.0.1:8080
  curl -s 'http://127.0.0.1:8080/v1/members?state=alive&label=zone=a'
  curl -sN http://127.0.0.1:8080/v1/events

  # Operators, without a running master:
  muster-master list
  muster-master evict api-1              # its process is refused for an hour (--hold)

Output: a table when stdout is a terminal, JSON lines otherwise (or force with --table/--json).
JSON fields: kind, name, state, revision, addr, cpus, labels, incarnation, at_unix_ms; one
{\"kind\":\"synced\",...} line marks the end of the group's initial state.
HTTP: GET /v1/members[?state=alive&label=zone=a&draining=false], /v1/members/NAME,
/v1/events[?from_revision=N&epoch=E&label=zone=a] (server-sent events), /v1/endpoints
[?label=zone=a&wait_revision=R&epoch=E&wait=30s | watch=sse] (alive, not draining; long
poll or server-sent events), /metrics, /healthz.
Logs go to stderr, warnings only; RUST_LOG=info (or debug) says more.";

/// muster-master's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "muster-master",
    version,
    about = "Watch a muster group in etcd and show its live membership: who is alive, who is suspect, and every transition.",
    after_help = EXAMPLES
)]
pub struct MasterArgs {
    /// Where etcd is, and which group.
    #[command(flatten)]
    pub common: CommonArgs,

    /// How to watch (without a subcommand).
    #[command(flatten)]
    pub watch: WatchArgs,

    /// A one-shot instead of watching.
    #[command(subcommand)]
    pub command: Option<MasterCommand>,
}

/// Flags of the watching master.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Print one JSON object per transition per line (the default when stdout is not a
    /// terminal).
    #[arg(long, env = "MUSTER_JSON", conflicts_with = "table")]
    pub json: bool,

    /// Print a table, then one line per transition (the default on a terminal).
    #[arg(long, env = "MUSTER_TABLE")]
    pub table: bool,

    /// Serve the HTTP API and /metrics on this address, e.g. 127.0.0.1:8080 or :8080.
    #[arg(long, env = "MUSTER_HTTP", value_name = "ADDR")]
    pub http: Option<String>,

    /// With --http: connections served at once (event streams and long polls included);
    /// the next waits in the kernel's backlog until one closes.
    #[arg(long, env = "MUSTER_HTTP_MAX_CONNECTIONS", default_value_t = 512, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,

    /// With --http: how long a client may take to send a request's header before its
    /// connection is closed.
    #[arg(long, env = "MUSTER_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub http_header_timeout: std::time::Duration,

    /// How long a member may stay suspect before this master removes it (failed).
    #[arg(long, env = "MUSTER_REAP_AFTER", default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub reap_after: Duration,

    /// Never remove suspect members (another master or an operator may).
    #[arg(long, env = "MUSTER_NO_REAP")]
    pub no_reap: bool,

    /// How many recent transitions /v1/events keeps for clients resuming from a revision.
    #[arg(
        long,
        env = "MUSTER_EVENTS_BUFFER",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub events_buffer: usize,
}

/// The one-shots.
#[derive(Debug, Clone, Subcommand)]
pub enum MasterCommand {
    /// Print the group straight from etcd (no running master needed) and exit.
    List {
        /// Print JSON: {"revision", "synced", "members": [...]}.
        #[arg(long, env = "MUSTER_JSON")]
        json: bool,
    },
    /// Remove a member and keep its process out: deletes its record and liveness key in one
    /// transaction, so masters report it left (or failed, if it was already suspect), and
    /// leaves an eviction marker that refuses that process's registrations for --hold. The
    /// evicted muster-worker stops (a sidecar stops its command) and exits with status 3; a
    /// new process under the name may join at once.
    Evict {
        /// The member's name.
        #[arg(value_parser = parse_name, env = "MUSTER_NAME")]
        name: String,
        /// How long the evicted process stays refused (its marker's lease). Long enough for a
        /// process cut off from etcd to come back and notice; a marker costs one key.
        #[arg(long, value_parser = parse_duration, default_value = "1h", value_name = "DURATION")]
        hold: Duration,
    },
}

/// How the watching master prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// Parses the command line, installs the stop signals' handlers and runs; returns the exit
/// status.
pub fn main() -> ExitCode {
    let args = MasterArgs::parse();
    crate::logging::init();
    super::block_on(NAME, async {
        let signals = Signals::install(signals::STOP)?;
        run(args, signals).await
    })
}

/// Runs the master (or a one-shot) until it ends or `shutdown` delivers SIGINT/SIGTERM;
/// returns the exit status (a one-shot interrupted by signal N: 128+N).
pub async fn run(args: MasterArgs, mut shutdown: Signals) -> Result<u8, Fatal> {
    let prefix = parse_prefix(&args.common.prefix).map_err(Fatal::usage)?;
    match &args.command {
        None => watch(&args, prefix, shutdown).await,
        Some(_) => tokio::select! {
            result = one_shot(&args, &prefix) => result,
            sig = shutdown.recv() => Ok(128 + sig as u8),
        },
    }
}

/// A one-shot's failure: bad input (exit status 2) when etcd refused the request itself
/// (e.g. "permission denied": the user's roles do not cover the group), which no retry can
/// fix; otherwise a failure (exit status 1).
fn ops_fatal(error: muster_master::OpsError) -> Fatal {
    match &error {
        muster_master::OpsError::Store {
            source: muster_core::Error::Rejected { .. },
            ..
        } => Fatal::usage(error.to_string()),
        _ => Fatal::failure(error.to_string()),
    }
}

/// `list` or `evict`.
async fn one_shot(args: &MasterArgs, prefix: &str) -> Result<u8, Fatal> {
    let prefix = prefix.to_owned();
    match &args.command {
        None => Ok(0),
        Some(MasterCommand::List { json }) => {
            let store = connect(&args.common).await?;
            let view = muster_master::list(&store, &prefix)
                .await
                .map_err(ops_fatal)?;
            let text = if *json {
                let mut text = serde_json::to_string_pretty(&ViewJson::new(&view, |_| true))
                    .expect("views always serialize");
                text.push('\n');
                text
            } else {
                render::members_table(&view, &prefix)
            };
            print(&text).map_err(|e| Fatal::failure(format!("writing to stdout: {e}")))?;
            Ok(0)
        }
        Some(MasterCommand::Evict { name, hold }) => {
            let store = connect(&args.common).await?;
            let eviction = muster_master::evict(&store, &prefix, name, *hold)
                .await
                .map_err(ops_fatal)?;
            if eviction.was == MemberState::Alive
                && !eviction.lease_revoked
                && !eviction.lease_shared
            {
                tracing::warn!(
                    member = %name,
                    "could not revoke the evicted process's lease: it learns of its eviction only when it next writes its record or loses its lease"
                );
            }
            let line = format!(
                "evicted {name} from {prefix} at revision {}: it was {}, so masters report it {}; incarnation {} is refused for {} ({})\n",
                eviction.revision,
                eviction.was,
                eviction.reported_as(),
                eviction.blocked,
                humantime_secs(eviction.hold),
                eviction.marker,
            );
            print(&line).map_err(|e| Fatal::failure(format!("writing to stdout: {e}")))?;
            Ok(0)
        }
    }
}

/// A duration in whole seconds, as `3600s`.
fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Watches until SIGINT/SIGTERM: prints, and serves HTTP if asked.
async fn watch(args: &MasterArgs, prefix: String, mut signals: Signals) -> Result<u8, Fatal> {
    let output = if args.watch.json {
        Output::Json
    } else if args.watch.table || std::io::stdout().is_terminal() {
        Output::Table
    } else {
        Output::Json
    };
    // Bind first: a port in use is bad input, reported before anything else happens.
    let listener = match &args.watch.http {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let store = tokio::select! {
        store = connect(&args.common) => store?,
        _ = signals.recv() => return Ok(0),
    };
    let store_metrics = StoreMetrics::new();
    let reap_after = (!args.watch.no_reap).then_some(args.watch.reap_after);
    let config = MasterConfig::new(prefix.clone()).reap_after(reap_after);
    let master = Arc::new(
        Master::start(TimedStore::new(store, store_metrics.clone()), config)
            .map_err(|e| Fatal::usage(e.to_string()))?,
    );
    // Subscribed before the first listing: its transitions describe the initial group.
    let printed = master.subscribe();
    // A refusal before the first listing is configuration, not an outage (a role that does
    // not cover the prefix, say): say so and exit 2 rather than retry forever. Once synced,
    // a refusal is retried (a role may be fixed while the master runs) and shows in
    // /healthz and the log.
    let first = tokio::select! {
        first = master.wait_until_health(|h| h.synced || h.refused) => first,
        _ = signals.recv() => return Ok(0),
    };
    if let Ok(health) = first {
        if !health.synced {
            let why = health.last_error.unwrap_or_default();
            return Err(Fatal::usage(format!("cannot follow the group: {why}")));
        }
    }

    let mut server = None;
    if let Some(listener) = listener {
        let feed = master.subscribe();
        let events = Arc::new(
            EventLog::new(
                args.watch.events_buffer,
                feed.snapshot.epoch,
                feed.snapshot.revision,
            )
            .with_members(feed.snapshot.members.clone()),
        );
        tokio::spawn(events.clone().follow(master.clone(), feed));
        let group: Arc<dyn Group> = master.clone();
        let api = Api {
            group: group.clone(),
            prefix: prefix.clone(),
            events,
            registry: metrics::registry(group, &store_metrics),
        };
        let local = listener
            .local_addr()
            .map_err(|e| Fatal::failure(format!("--http: {e}")))?;
        eprintln!(
            "{NAME}: serving http://{local}/ (the web page), /v1/members, /v1/events, /v1/endpoints, /metrics, /healthz"
        );
        let limits = crate::server::Limits {
            max_connections: args.watch.http_max_connections as usize,
            header_read_timeout: args.watch.http_header_timeout,
        };
        server = Some(tokio::spawn(crate::server::serve(
            listener,
            http::router(Arc::new(api)),
            limits,
        )));
    }
    tokio::spawn(log_health(master.clone()));

    let printer = printer(master.clone(), printed, output, prefix);
    tokio::pin!(printer);
    let mut printing = true;
    let serving = server.is_some();
    let server = async {
        match server {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(server);
    loop {
        tokio::select! {
            sig = signals.recv() => {
                tracing::info!(signal = %sig, "stopping");
                return Ok(0);
            }
            () = &mut printer, if printing => {
                printing = false;
                if !serving {
                    return Ok(0);
                }
            }
            result = &mut server => {
                let why = match result {
                    Ok(Ok(())) => "it stopped".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(Fatal::failure(format!("the HTTP server failed: {why}")));
            }
        }
    }
}

/// Prints the group until stdout closes or the master stops.
async fn printer(
    master: Arc<Master>,
    mut subscription: Subscription,
    output: Output,
    prefix: String,
) {
    let result = match output {
        Output::Json => print_json(&master, &mut subscription).await,
        Output::Table => {
            drop(subscription);
            print_table(&master, &prefix).await
        }
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::error!(error = %e, "cannot write to stdout; no longer printing");
        }
    }
}

/// JSON lines: every transition since start (the first listing's `joined` lines describe
/// the initial group), and one `synced` line after those. A reader too slow to keep up gets
/// a `lagged` line, then the group again as `joined` / `suspect` lines and a `synced` line.
async fn print_json(master: &Master, subscription: &mut Subscription) -> std::io::Result<()> {
    let mut synced = false;
    if subscription.snapshot.synced {
        // The first listing beat the subscription: print what it emitted from the snapshot.
        print_snapshot(&subscription.snapshot)?;
        synced = true;
    }
    while let Some(event) = subscription.next().await {
        match event {
            Event::Transition { transition, .. } => print_event(&transition)?,
            Event::Synced {
                revision, members, ..
            } if !synced => {
                print_json_line(&SyncedJson {
                    kind: "synced".into(),
                    revision,
                    members,
                })?;
                synced = true;
            }
            Event::Synced { .. } => {}
            Event::Lagged { missed } => {
                tracing::warn!(
                    missed,
                    "stdout is too slow to keep up; printing the group again"
                );
                print_json_line(&serde_json::json!({ "kind": "lagged", "missed": missed }))?;
                *subscription = master.subscribe();
                print_snapshot(&subscription.snapshot)?;
                synced = true;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A view as the transitions that explain it from nothing (absent to alive: `joined`;
/// absent to suspect: `joined`, `suspect`), then the `synced` marker.
fn print_snapshot(view: &muster_master::View) -> std::io::Result<()> {
    for member in view.members.values() {
        let mut kinds = vec![TransitionKind::Joined];
        if member.state == MemberState::Suspect {
            kinds.push(TransitionKind::Suspect);
        }
        for kind in kinds {
            print_event(&Transition {
                kind,
                member: member.clone(),
                revision: member.since,
                at: std::time::Instant::now(),
            })?;
        }
    }
    print_json_line(&SyncedJson {
        kind: "synced".into(),
        revision: view.revision,
        members: view.members.len(),
    })
}

fn print_event(t: &Transition) -> std::io::Result<()> {
    print_json_line(&EventJson::from(t))
}

fn print_json_line(value: &impl serde::Serialize) -> std::io::Result<()> {
    print_line(&serde_json::to_string(value).expect("muster's JSON types always serialize"))
}

/// A table of the group once synced, then one line per transition.
async fn print_table(master: &Master, prefix: &str) -> std::io::Result<()> {
    let stopped = || std::io::Error::other("the master stopped");
    master.ready().await.map_err(|_| stopped())?;
    let mut subscription = master.subscribe();
    let view = &subscription.snapshot;
    print(&render::members_table(view, prefix))?;
    print_line(&format!(
        "-- watching {prefix} from revision {}; changes follow (ctrl-c to stop)",
        view.revision
    ))?;
    while let Some(event) = subscription.next().await {
        match event {
            Event::Transition { transition, .. } => {
                print_line(&render::transition_line(&transition))?
            }
            Event::Lagged { missed } => {
                print_line(&format!(
                    "-- this terminal fell {missed} changes behind; the group now:"
                ))?;
                subscription = master.subscribe();
                print(&render::members_table(&subscription.snapshot, prefix))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Logs when the master loses or regains its watch (it keeps retrying on its own).
async fn log_health(master: Arc<Master>) {
    loop {
        let Ok(lost) = master
            .wait_until_health(|h| h.unhealthy_since.is_some())
            .await
        else {
            return;
        };
        tracing::warn!(
            error = lost.last_error.as_deref().unwrap_or("unknown"),
            "lost the watch on etcd; retrying (the view may be stale meanwhile, see /healthz)"
        );
        let Ok(back) = master
            .wait_until_health(|h| h.unhealthy_since.is_none())
            .await
        else {
            return;
        };
        tracing::warn!(revision = back.revision, "watching etcd again");
    }
}
