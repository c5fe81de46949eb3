//! # muster-programs
//!
//! The programs people run: `muster-worker` and `muster-master`, on real etcd.
//!
//! - `muster-worker --name api-1 --addr 10.0.0.5:8080 --label zone=a` registers a member
//!   and keeps it alive until SIGINT/SIGTERM, then leaves. `--addr HOST:PORT` is required;
//!   a member without an address is asked for with `--no-addr`. With `-- COMMAND...` it is the
//!   command's sidecar: registers while it runs (with `--wait-ready`, once `--addr` accepts
//!   connections), forwards signals, leaves when it exits and exits with its status.
//! - `muster-master` prints the live membership (a table on a terminal, JSON lines
//!   otherwise), serves it over HTTP with `--http ADDR` (members, server-sent events,
//!   Prometheus metrics, health), and has the one-shots `list` and `evict NAME`.
//!
//! Bad input (README, "What the programs accept": a blank `--endpoints`, a missing or
//! malformed `--addr`, a TTL outside 1 s to 1 hour, a label key given twice, a record too
//! large for etcd, ...) is one error line and exit status 2 before anything is written; the
//! rules themselves live in the library crates and are only applied here.
//!
//! # Layout
//!
//! - [`cmd`]: the two command lines (clap) and their `run(args, shutdown)`, mini-redis
//!   style: `main` parses the arguments, installs the signal handlers and calls `run`
//!   with them; a test (or an embedding program) calls `run` with
//!   [`Signals::channel`](signals::Signals::channel) instead. `src/bin/` only calls `main`.
//! - [`cli`]: flags both share (endpoints, prefix, connect timeout) and value parsers.
//! - [`connect`](mod@connect): reaching etcd with a bounded wait.
//! - [`child`], [`signals`]: the sidecar's command, and signal handling and forwarding.
//! - [`timed`]: [`TimedStore`](timed::TimedStore), a `Store` recording request latency.
//! - [`render`]: members and transitions as stable JSON and as tables.
//! - [`events`]: the ring buffer of recent transitions behind `/v1/events`.
//! - [`http`], [`metrics`]: the HTTP API (axum) and `/metrics` (prometheus-client).
//! - [`page`]: `GET /`, the group as a live web page (HTML, script and stylesheet
//!   embedded in the binary), served with a strict Content-Security-Policy.
//! - [`server`]: the HTTP server's connections: a cap, a header-read timeout, `accept`
//!   failures that neither spin nor flood the log.
//! - [`fatal`], [`logging`]: one-line errors with exit statuses; `tracing` setup.

pub mod child;
pub mod cli;
pub mod cmd;
pub mod connect;
pub mod events;
pub mod fatal;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod page;
pub mod render;
pub mod server;
pub mod signals;
pub mod timed;
