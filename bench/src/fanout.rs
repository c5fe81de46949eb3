//! Section 7: fan-out. One master, many readers of its transitions.
//!
//! Why: a master is read by more than one consumer: in-process subscribers (balancers,
//! caches, a dashboard's feed) and, through `muster-master --http`, SSE clients in any
//! language. The other sections time one subscriber; this one asks what N of them cost: how
//! much later the N-th reader gets a transition than a lone reader would, how much CPU the
//! master spends per transition, and whether readers that stop reading (a hung dashboard, a
//! client behind a dead proxy) make the master's memory grow or hold up everyone else.
//!
//! Everything is real: etcd (a container), one `Master` on its own `EtcdStore` (through the
//! programs' `TimedStore`, as `muster-master` runs it), and the programs' HTTP API exactly as
//! `muster-master --http` serves it (`EventLog` fed by a subscription, `http::router`,
//! `server::serve`) on a loopback listener. The readers are:
//!
//! - **in-process subscribers**: `Master::subscribe()` streams, one task each;
//! - **SSE clients**: plain TCP connections that send `GET /v1/events` and parse the
//!   server-sent events as they arrive (no HTTP client library: a thousand of them must
//!   cost little on this side, and what the server sends is read byte for byte);
//! - **stuck SSE clients**: the same request on a socket with a 4 KiB receive buffer that,
//!   once the response head has arrived, is never read again.
//!
//! The transitions: [`MEMBERS`] members are written once (record and liveness key, no
//! lease), then each transition rewrites one record with a new `seq` label (`Updated`),
//! by a bare etcd-client put. Every latency runs from the moment that put is **sent** to the
//! moment a reader holds the transition: the same origin for every figure, so they compare
//! directly. The floor is the same put at a bare etcd-client watch of the records' prefix
//! (what any watcher of etcd gets; the master's own watch cannot do better), taken for every
//! transition in the same run; the put's ack is printed beside it.
//!
//! Phases, in this order, each with its own readers (the earlier ones are gone):
//!
//! 1. 1 in-process subscriber, transitions one at a time (the next put once every reader
//!    holds the previous one), so the figures are latencies, not queueing;
//! 2. N in-process subscribers, the same;
//! 3. 1 SSE client, the same;
//! 4. N SSE clients, the same. Goal (issue 14): p99 over every (reader, transition)
//!    delivery ≤ 2× the single reader's p99 of the same run;
//! 5. the N SSE clients under a stream of `--fanout-streamed` transitions with up to
//!    [`WINDOW`] not yet delivered to everyone (the reference load);
//! 6. the same load with M stuck SSE clients connected too: the healthy ones' delivery
//!    beside phase 5, the process's resident memory as the transitions flow, and then what
//!    each stuck client gets when it finally reads.
//!
//! **CPU.** The master, its event log and its HTTP server run on a tokio runtime of their
//! own whose threads are named `fanout-master`; the readers, the writer and the bare watch
//! run on another (`fanout-clients`) and on the main thread. The master's CPU is the sum of
//! utime + stime of the `fanout-master` threads (`/proc/self/task/*/stat`) over a phase,
//! divided by its transitions. It includes waking the in-process subscribers (the broadcast
//! send) and, with SSE, encoding and writing every event to every connection; it excludes
//! the readers' own work. Both runtimes and etcd share this machine's two cores, so the
//! readers' work still slows the master down.
//!
//! The server's connection cap is raised to the readers' count (the default, 512,
//! would hold the 1,001st stream in the kernel's backlog).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, Txn, TxnOp, WatchOptions};
use futures::StreamExt;
use muster_core::{Incarnation, Keyspace, Liveness, MemberInfo, Record};
use muster_etcd_backend::EtcdStore;
use muster_master::{Event, Master, MasterConfig};
use muster_programs::events::EventLog;
use muster_programs::http::{self, Api};
use muster_programs::metrics::{self, Group};
use muster_programs::server::{self, Limits};
use muster_programs::timed::{StoreMetrics, TimedStore};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::etcd::{process_rss, Node};
use crate::report::{count, human, ms, Headline, Report, Stats};

const PREFIX: &str = "/bench/fanout/";
/// The members the transitions rotate over.
const MEMBERS: usize = 100;
/// Transitions at the start of each phase that are not timed (connections warm up).
const WARM_UP: usize = 5;
/// The longest one transition may take to reach every reader before the bench gives up.
const WAIT: Duration = Duration::from_secs(20);
/// Phases 5 and 6: transitions not yet delivered to every healthy reader, at most.
const WINDOW: usize = 32;
/// A stuck client's receive buffer (the kernel doubles it).
const STUCK_RECV_BUFFER: u32 = 4096;
/// The incarnation of every record (one writer, never restarted).
const INCARNATION: Incarnation = Incarnation(0x00fa_0007_0000_0001);
/// The master's event buffer, as `muster-master --events-buffer`'s default.
const EVENTS_BUFFER: usize = 10_000;

/// A label that brings a record to about 1 KiB of JSON, the record size issue 14 plans for.
const PAD: &str = concat!(
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
);

fn name(m: usize) -> String {
    format!("fan-{m:03}")
}

fn record(seq: usize) -> Record {
    let m = seq % MEMBERS;
    Record {
        info: MemberInfo::new(name(m), format!("10.2.0.{}:8080", m + 1))
            .cpus(4)
            .label("zone", ["a", "b", "c"][m % 3])
            .label("seq", seq.to_string())
            .label("note", PAD),
        incarnation: INCARNATION,
    }
}

fn runtime(name: &str) -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// Runs the section on two runtimes of its own (see the module doc: CPU by thread).
pub fn run(args: &Args, report: &mut Report) -> Result<()> {
    println!(
        "== 7. fan-out: {} in-process subscribers, {} SSE clients, {} stuck SSE clients, one master ==",
        count(args.fanout_subscribers as f64),
        count(args.fanout_sse as f64),
        count(args.fanout_stuck as f64),
    );
    let master_rt = runtime(MASTER_THREADS)?;
    let client_rt = runtime("fanout-clients")?;
    let result = client_rt.block_on(bench(args, report, &master_rt));
    // The readers first (their connections close), then the master and its server.
    client_rt.shutdown_timeout(Duration::from_secs(5));
    master_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The name of the master's threads.
const MASTER_THREADS: &str = "fanout-master";

/// What a phase ran.
struct Phase {
    label: String,
    readers: usize,
    /// Every timed delivery, one per (reader, transition).
    all: Stats,
    /// Per transition, the last reader's delivery.
    last: Stats,
    floor: Stats,
    ack: Stats,
    transitions: usize,
    wall: Duration,
    master_cpu: Duration,
    process_cpu: Duration,
    etcd_cpu: Option<Duration>,
    /// Whether every reader received every transition of the phase.
    complete: bool,
    lagged: u64,
    /// Resident memory of this process at each tenth of the phase (and its end).
    rss: Vec<u64>,
}

impl Phase {
    fn master_cpu_per_transition(&self) -> Duration {
        self.master_cpu / self.transitions.max(1) as u32
    }

    fn json(&self) -> Value {
        json!({
            "readers": self.readers,
            "transitions": self.transitions,
            "deliveries": self.all.json(),
            "last_reader_per_transition": self.last.json(),
            "floor_put_to_bare_watch": self.floor.json(),
            "put_ack": self.ack.json(),
            "wall_ms": ms(self.wall),
            "transitions_per_s": self.transitions as f64 / self.wall.as_secs_f64(),
            "master_cpu_ms": ms(self.master_cpu),
            "master_cpu_per_transition_us": self.master_cpu_per_transition().as_secs_f64() * 1e6,
            "process_cpu_ms": ms(self.process_cpu),
            "etcd_cpu_ms": self.etcd_cpu.map(ms),
            "every_reader_got_every_transition": self.complete,
            "lagged": self.lagged,
            "rss_bytes_by_tenth": self.rss,
        })
    }

    fn print(&self) {
        println!(
            "   {:<34} {:>9} {:>9} {:>9} | last reader {:>9} {:>9} | floor {:>9} {:>9} | master CPU {}/transition",
            self.label,
            human(self.all.p50),
            human(self.all.p99),
            human(self.all.max),
            human(self.last.p50),
            human(self.last.p99),
            human(self.floor.p50),
            human(self.floor.p99),
            human(self.master_cpu_per_transition()),
        );
    }
}

/// What every reader records: when it held which transition.
#[derive(Default)]
struct Recorder {
    samples: Mutex<Vec<(u32, Instant)>>,
    bytes: AtomicU64,
    /// SSE events read (every `data:` line).
    events: AtomicU64,
    lagged: AtomicU64,
}

impl Recorder {
    /// Empties the samples and makes room for `count` more, touching the memory now so
    /// that recording does not show as resident-memory growth during the phase.
    fn prepare(&self, count: usize) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        *samples = vec![(0, Instant::now()); count + 64];
        samples.clear();
    }

    fn take(&self) -> Vec<(u32, Instant)> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// How many readers hold each transition, and a wake-up for the writer when one is
/// complete.
struct Tally {
    counts: Vec<AtomicU32>,
    /// The readers of the current phase.
    target: AtomicU32,
    complete: Notify,
}

impl Tally {
    fn new(transitions: usize) -> Tally {
        Tally {
            counts: (0..transitions).map(|_| AtomicU32::new(0)).collect(),
            target: AtomicU32::new(u32::MAX),
            complete: Notify::new(),
        }
    }

    fn seen(&self, seq: usize, rec: &Recorder, at: Instant) {
        rec.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((seq as u32, at));
        if let Some(c) = self.counts.get(seq) {
            if c.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
                self.complete.notify_one();
            }
        }
    }

    async fn wait(&self, seq: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let held = self.counts[seq].load(Ordering::Acquire);
            let target = self.target.load(Ordering::Acquire);
            if held >= target {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, self.complete.notified())
                .await
                .is_err()
            {
                bail!("transition {seq} reached {held} of {target} readers within {WAIT:?}");
            }
        }
    }
}

/// The transitions' writer and the floor's bare watch.
struct Writer {
    client: Client,
    tally: Arc<Tally>,
    next: usize,
    /// Per transition: sent, acked, revision.
    sent: Vec<(Instant, Instant, i64)>,
    /// The bare watch: revision → when it arrived.
    watched: mpsc::UnboundedReceiver<(i64, Instant)>,
    floor_at: HashMap<i64, Instant>,
    etcd_pid: Option<u32>,
}

impl Writer {
    /// The first record of every member, with its liveness key, in one transaction each
    /// (a registration; no lease: they never expire). Before the master starts.
    async fn join_all(&mut self) -> Result<()> {
        let keyspace = Keyspace::new(PREFIX)?;
        let liveness = Liveness {
            incarnation: INCARNATION,
            shared: false,
        };
        for seq in 0..MEMBERS {
            let record = record(seq);
            let txn = Txn::new().and_then([
                TxnOp::put(
                    keyspace.liveness_key(&record.info.name),
                    liveness.to_json(),
                    None,
                ),
                TxnOp::put(
                    keyspace.record_key(&record.info.name),
                    record.to_json(),
                    None,
                ),
            ]);
            let sent = Instant::now();
            let response = self.client.txn(txn).await?;
            let revision = response.header().map_or(0, |h| h.revision());
            self.sent.push((sent, Instant::now(), revision));
            self.next += 1;
        }
        Ok(())
    }

    async fn put(&mut self) -> Result<usize> {
        let seq = self.next;
        self.next += 1;
        let record = record(seq);
        let key = format!("{PREFIX}members/{}", record.info.name);
        let sent = Instant::now();
        let response = self.client.put(key, record.to_json(), None).await?;
        let acked = Instant::now();
        let revision = response.header().map_or(0, |h| h.revision());
        self.sent.push((sent, acked, revision));
        Ok(seq)
    }

    /// `count` transitions (plus the warm-up) to `readers` readers, at most `window` of
    /// them not yet held by every reader; then the statistics from `recorders`.
    async fn phase(
        &mut self,
        label: String,
        recorders: &[Arc<Recorder>],
        count: usize,
        window: usize,
    ) -> Result<Phase> {
        let readers = recorders.len();
        self.tally.target.store(readers as u32, Ordering::Release);
        for _ in 0..WARM_UP {
            let seq = self.put().await?;
            self.tally.wait(seq).await?;
        }
        for r in recorders {
            r.prepare(count);
            r.lagged.store(0, Ordering::Relaxed);
        }
        let first = self.next;
        let cpu_master = threads_cpu(Some(MASTER_THREADS));
        let cpu_process = threads_cpu(None);
        let cpu_etcd = self.etcd_pid.and_then(crate::etcd::process_cpu);
        let started = Instant::now();
        let mut rss = Vec::new();
        let mut pending = std::collections::VecDeque::new();
        for i in 0..count {
            if i % (count / 10).max(1) == 0 {
                rss.push(process_rss(std::process::id()).unwrap_or(0));
            }
            pending.push_back(self.put().await?);
            while pending.len() >= window {
                let seq = pending.pop_front().expect("not empty");
                self.tally.wait(seq).await?;
            }
        }
        for seq in pending {
            self.tally.wait(seq).await?;
        }
        let wall = started.elapsed();
        rss.push(process_rss(std::process::id()).unwrap_or(0));
        let master_cpu = threads_cpu(Some(MASTER_THREADS)).saturating_sub(cpu_master);
        let process_cpu = threads_cpu(None).saturating_sub(cpu_process);
        let etcd_cpu = match (cpu_etcd, self.etcd_pid.and_then(crate::etcd::process_cpu)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        let range = first..self.next;

        // The floor: the bare watch's arrivals of this phase's revisions.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut floor = Vec::with_capacity(count);
        for seq in range.clone() {
            let (sent, _, revision) = self.sent[seq];
            let at = loop {
                if let Some(at) = self.floor_at.get(&revision) {
                    break *at;
                }
                match tokio::time::timeout_at(deadline, self.watched.recv()).await {
                    Ok(Some((revision, at))) => {
                        self.floor_at.insert(revision, at);
                    }
                    Ok(None) => bail!("the bare watch ended"),
                    Err(_) => bail!("the bare watch missed revision {revision} ({label})"),
                }
            };
            floor.push(at.saturating_duration_since(sent));
        }
        let ack: Vec<Duration> = range
            .clone()
            .map(|s| self.sent[s].1 - self.sent[s].0)
            .collect();

        let mut all = Vec::with_capacity(readers * count);
        let mut last = vec![Duration::ZERO; count];
        let mut held = vec![0usize; count];
        let mut lagged = 0;
        for r in recorders {
            lagged += r.lagged.load(Ordering::Relaxed);
            for (seq, at) in r.take() {
                let seq = seq as usize;
                if !range.contains(&seq) {
                    continue;
                }
                let took = at.saturating_duration_since(self.sent[seq].0);
                all.push(took);
                let i = seq - first;
                last[i] = last[i].max(took);
                held[i] += 1;
            }
        }
        let phase = Phase {
            label,
            readers,
            all: Stats::of(&all).context("no deliveries")?,
            last: Stats::of(&last).context("no transitions")?,
            floor: Stats::of(&floor).context("no floor")?,
            ack: Stats::of(&ack).context("no acks")?,
            transitions: count,
            wall,
            master_cpu,
            process_cpu,
            etcd_cpu,
            complete: held.iter().all(|&h| h == readers),
            lagged,
            rss,
        };
        phase.print();
        Ok(phase)
    }
}

/// CPU (utime + stime) of this process's threads whose name starts with `name` (all of
/// them for `None`), from `/proc/self/task/*/stat`.
fn threads_cpu(name: Option<&str>) -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let path = task.path();
        if let Some(name) = name {
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !comm.trim_end().starts_with(name) {
                continue;
            }
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        ticks += field(11).unwrap_or(0) + field(12).unwrap_or(0);
    }
    // USER_HZ is 100 on every architecture we run on (as in `etcd::process_cpu`).
    Duration::from_millis(ticks * 10)
}

/// An in-process subscriber: records every transition it receives.
fn subscriber(master: &Master, tally: &Arc<Tally>) -> (Arc<Recorder>, JoinHandle<()>) {
    let mut events = master.subscribe();
    let rec = Arc::new(Recorder::default());
    let (tally, r) = (tally.clone(), rec.clone());
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Transition { transition, .. } => {
                    let at = Instant::now();
                    if let Some(seq) = transition
                        .member
                        .info
                        .labels
                        .get("seq")
                        .and_then(|s| s.parse().ok())
                    {
                        tally.seen(seq, &r, at);
                    }
                }
                Event::Lagged { missed } => {
                    r.lagged.fetch_add(missed, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    (rec, task)
}

/// Opens `GET /v1/events` and reads the response head. Returns the connection and what
/// was read after the head. `recv_buffer`: the socket's receive buffer, if set;
/// `last_event_id`: resume after that event, as a reconnecting browser does.
async fn sse_connect(
    addr: SocketAddr,
    recv_buffer: Option<u32>,
    last_event_id: Option<&str>,
) -> Result<(TcpStream, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(addr).await?;
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .context("no response head")??;
        if n == 0 {
            bail!("the server closed the event stream before its head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                bail!(
                    "GET /v1/events answered {:?}",
                    String::from_utf8_lossy(&buf[..end])
                );
            }
            return Ok((stream, buf.split_off(end + 4)));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a reader of an event stream has seen in what it read so far (complete lines only).
#[derive(Default)]
struct SseParse {
    /// Unparsed bytes after the last complete line.
    rest: Vec<u8>,
    events: u64,
    first: Option<usize>,
    last: Option<usize>,
    /// The last event's `id:`, for a resume.
    last_id: Option<String>,
    /// The body's last chunk (`0`) was read: the server ended the stream.
    ended: bool,
}

impl SseParse {
    /// Takes `bytes`, calling `on_event` with each event's `seq`.
    fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(usize)) {
        self.rest.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.rest[start..].iter().position(|&b| b == b'\n') {
            let line = &self.rest[start..start + nl];
            if line.starts_with(b"data:") {
                self.events += 1;
                if let Some(seq) = seq_of(line) {
                    self.first.get_or_insert(seq);
                    self.last = Some(seq);
                    on_event(seq);
                }
            } else if let Some(id) = line.strip_prefix(b"id: ") {
                self.last_id = Some(String::from_utf8_lossy(id).into_owned());
            } else if line == b"0\r" {
                // The terminating chunk of a chunked body: event chunks are never empty.
                self.ended = true;
            }
            start += nl + 1;
        }
        self.rest.drain(..start);
    }
}

/// The `seq` label in an event's JSON.
fn seq_of(line: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""seq":""#;
    let at = find(line, KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// A healthy SSE client: reads and records every event until the stream ends.
fn sse_reader(
    mut stream: TcpStream,
    head_rest: Vec<u8>,
    tally: &Arc<Tally>,
) -> (Arc<Recorder>, JoinHandle<()>) {
    let rec = Arc::new(Recorder::default());
    let (tally, r) = (tally.clone(), rec.clone());
    let task = tokio::spawn(async move {
        let mut parse = SseParse::default();
        let mut take = |bytes: &[u8], at: Instant| {
            let before = parse.events;
            parse.feed(bytes, |seq| tally.seen(seq, &r, at));
            r.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            r.events.fetch_add(parse.events - before, Ordering::Relaxed);
            if parse.ended {
                // The server cut the stream (it fell too far behind).
                r.lagged.fetch_add(1, Ordering::Relaxed);
            }
            !parse.ended
        };
        let mut chunk = vec![0u8; 16 * 1024];
        let mut open = take(&head_rest, Instant::now());
        while open {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => open = take(&chunk[..n], Instant::now()),
            }
        }
    });
    (rec, task)
}

/// `n` SSE clients, connected 64 at a time.
async fn sse_clients(
    addr: SocketAddr,
    n: usize,
    recv_buffer: Option<u32>,
) -> Result<Vec<(TcpStream, Vec<u8>)>> {
    futures::stream::iter(0..n)
        .map(|_| sse_connect(addr, recv_buffer, None))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// What a stuck client got when it finally read, and after it reconnected.
struct StuckEnd {
    events: u64,
    first: Option<usize>,
    last: Option<usize>,
    ended: bool,
    last_id: Option<String>,
    /// After a reconnect with `Last-Event-ID`: the first event replayed, and whether the
    /// stream then reached the last transition written.
    resumed: Option<(Option<usize>, bool)>,
}

/// Reads what a stuck client's connection holds until the stream ends or nothing comes
/// for a second.
async fn drain_stuck(mut stream: TcpStream, head_rest: Vec<u8>) -> StuckEnd {
    let mut parse = SseParse::default();
    parse.feed(&head_rest, |_| {});
    let mut chunk = vec![0u8; 64 * 1024];
    while !parse.ended {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => parse.feed(&chunk[..n], |_| {}),
            _ => break,
        }
    }
    StuckEnd {
        events: parse.events,
        first: parse.first,
        last: parse.last,
        ended: parse.ended,
        last_id: parse.last_id,
        resumed: None,
    }
}

/// Reconnects a client whose stream was ended with `Last-Event-ID: last_id` and reads until
/// transition `until` arrives. `Err`: refused (e.g. `410`, the resume point is no longer
/// buffered) or never reached.
async fn resume(addr: SocketAddr, last_id: &str, until: usize) -> Result<(Option<usize>, bool)> {
    let (mut stream, rest) = sse_connect(addr, None, Some(last_id)).await?;
    let mut parse = SseParse::default();
    parse.feed(&rest, |_| {});
    let mut chunk = vec![0u8; 64 * 1024];
    while !matches!(parse.last, Some(s) if s >= until) && !parse.ended {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => parse.feed(&chunk[..n], |_| {}),
            _ => break,
        }
    }
    Ok((parse.first, parse.last == Some(until)))
}

/// Bytes the kernel holds for the connections between the server's `port` and the
/// clients' `ports`: (server side send queues, the largest of them, client side receive
/// queues), from `/proc/net/tcp`.
fn kernel_queues(port: u16, ports: &HashSet<u16>) -> (u64, u64, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.split(':')
            .nth(1)
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let (mut sent, mut largest, mut received) = (0, 0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues)) = (
            fields.get(1).and_then(|a| port_of(a)),
            fields.get(2).and_then(|a| port_of(a)),
            fields.get(4),
        ) else {
            continue;
        };
        let mut q = queues
            .split(':')
            .map(|q| u64::from_str_radix(q, 16).unwrap_or(0));
        let (tx, rx) = (q.next().unwrap_or(0), q.next().unwrap_or(0));
        if local == port && ports.contains(&remote) {
            sent += tx;
            largest = largest.max(tx);
        } else if remote == port && ports.contains(&local) {
            received += rx;
        }
    }
    (sent, largest, received)
}

async fn bench(args: &Args, report: &mut Report, master_rt: &Runtime) -> Result<()> {
    let node = Node::start().await?;
    let readers = args.fanout_sse + args.fanout_stuck + 1;
    let streamed = args.fanout_streamed;
    let total = 4 * (args.fanout_transitions + WARM_UP) + 2 * (streamed + WARM_UP);
    let tally = Arc::new(Tally::new(total + MEMBERS));

    let mut client = Client::connect([node.endpoint()], None).await?;
    // The floor's bare watch of the records.
    let mut watch = client
        .watch(
            format!("{PREFIX}members/"),
            Some(WatchOptions::new().with_prefix()),
        )
        .await?;
    let (watched_tx, watched) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(response)) = watch.message().await {
            let at = Instant::now();
            for event in response.events() {
                if let Some(kv) = event.kv() {
                    let _ = watched_tx.send((kv.mod_revision(), at));
                }
            }
        }
    });
    let mut writer = Writer {
        client: client.clone(),
        tally: tally.clone(),
        next: 0,
        sent: Vec::new(),
        watched,
        floor_at: HashMap::new(),
        etcd_pid: node.pid(),
    };
    // The members, written once, before the master starts: its first listing holds them.
    writer.join_all().await?;

    // The master and its HTTP API, as `muster-master --http` runs them, on their runtime.
    let config = node.config();
    let (master, addr) = master_rt
        .spawn(async move {
            let store_metrics = StoreMetrics::new();
            let store = TimedStore::new(EtcdStore::connect(config).await?, store_metrics.clone());
            let master = Arc::new(Master::start(
                store,
                MasterConfig::new(PREFIX).reap_after(None),
            )?);
            master.ready().await?;
            master.wait_until(|v| v.alive().count() == MEMBERS).await?;
            let feed = master.subscribe();
            let events = Arc::new(
                EventLog::new(EVENTS_BUFFER, feed.snapshot.epoch, feed.snapshot.revision)
                    .with_members(feed.snapshot.members.clone()),
            );
            tokio::spawn(events.clone().follow(master.clone(), feed));
            let group: Arc<dyn Group> = master.clone();
            let api = Api {
                group: group.clone(),
                prefix: PREFIX.into(),
                events,
                registry: metrics::registry(group, &store_metrics),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let limits = Limits {
                max_connections: readers + 16,
                ..Limits::default()
            };
            tokio::spawn(server::serve(listener, http::router(Arc::new(api)), limits));
            Ok::<_, anyhow::Error>((master, addr))
        })
        .await??;

    if master.view().alive().count() != MEMBERS {
        bail!("the master's first view does not hold the {MEMBERS} members");
    }
    let rss_start = process_rss(std::process::id()).unwrap_or(0);
    let t = args.fanout_transitions;
    let (n, m) = (args.fanout_subscribers, args.fanout_sse);
    println!(
        "   {:<34} {:>9} {:>9} {:>9} | {:>23} | {:>21} |",
        "delivery, from the put sent", "p50", "p99", "max", "p50 / p99", "p50 / p99"
    );

    // 1 and 2: in-process subscribers.
    let (recs, tasks) = split(vec![subscriber(&master, &tally)]);
    let sub1 = writer
        .phase("1 in-process subscriber".into(), &recs, t, 1)
        .await?;
    tasks.iter().for_each(JoinHandle::abort);
    let (recs, tasks) = split((0..n).map(|_| subscriber(&master, &tally)).collect());
    let sub_n = writer
        .phase(
            format!("{} in-process subscribers", count(n as f64)),
            &recs,
            t,
            1,
        )
        .await?;
    tasks.iter().for_each(JoinHandle::abort);
    drop(recs);

    // 3 and 4: SSE clients.
    let (recs, tasks) = split(
        sse_clients(addr, 1, None)
            .await?
            .into_iter()
            .map(|(s, rest)| sse_reader(s, rest, &tally))
            .collect(),
    );
    let sse1 = writer.phase("1 SSE client".into(), &recs, t, 1).await?;
    tasks.iter().for_each(JoinHandle::abort);
    let connecting = Instant::now();
    let (recs, tasks) = split(
        sse_clients(addr, m, None)
            .await?
            .into_iter()
            .map(|(s, rest)| sse_reader(s, rest, &tally))
            .collect(),
    );
    let connect_took = connecting.elapsed();
    let sse_n = writer
        .phase(format!("{} SSE clients", count(m as f64)), &recs, t, 1)
        .await?;

    // 5 and 6: a stream of transitions, without and with stuck clients.
    let reference = writer
        .phase(
            format!("{} SSE, {streamed} streamed", count(m as f64)),
            &recs,
            streamed,
            WINDOW,
        )
        .await?;
    let rss_before_stuck = process_rss(std::process::id()).unwrap_or(0);
    let stuck = sse_clients(addr, args.fanout_stuck, Some(STUCK_RECV_BUFFER)).await?;
    let rss_stuck_connected = process_rss(std::process::id()).unwrap_or(0);
    let with_stuck = writer
        .phase(
            format!("  the same, {} stuck", count(args.fanout_stuck as f64)),
            &recs,
            streamed,
            WINDOW,
        )
        .await?;
    let bytes_per_event = recs[0].bytes.load(Ordering::Relaxed) as f64
        / recs[0].events.load(Ordering::Relaxed).max(1) as f64;
    let stuck_first_seq = writer.next - streamed - WARM_UP;
    let ports: HashSet<u16> = stuck
        .iter()
        .filter_map(|(s, _)| s.local_addr().ok().map(|a| a.port()))
        .collect();
    let (queued_send, queued_largest, queued_recv) = kernel_queues(addr.port(), &ports);
    let until = writer.next - 1;
    let mut stuck_ends: Vec<StuckEnd> = futures::future::join_all(
        stuck
            .into_iter()
            .map(|(stream, rest)| drain_stuck(stream, rest)),
    )
    .await;
    for end in &mut stuck_ends {
        if let (true, Some(id)) = (end.ended, end.last_id.clone()) {
            end.resumed = Some(resume(addr, &id, until).await.unwrap_or((None, false)));
        }
    }
    tasks.iter().for_each(JoinHandle::abort);
    watcher.abort();
    let health = master.health();
    drop(master);
    drop(node);

    // What the stuck clients got, and the memory.
    let ended = stuck_ends.iter().filter(|s| s.ended).count();
    let got: Vec<u64> = stuck_ends.iter().map(|s| s.events).collect();
    let (got_min, got_max) = (
        got.iter().copied().min().unwrap_or(0),
        got.iter().copied().max().unwrap_or(0),
    );
    let last_seen = stuck_ends.iter().filter_map(|s| s.last).max();
    let first_seen = stuck_ends.iter().filter_map(|s| s.first).min();
    let half = with_stuck.rss.len() / 2;
    let second_half = with_stuck.rss.last().copied().unwrap_or(0) as f64
        - with_stuck.rss.get(half).copied().unwrap_or(0) as f64;
    let ref_second_half = reference.rss.last().copied().unwrap_or(0) as f64
        - reference.rss.get(half).copied().unwrap_or(0) as f64;
    let growth = with_stuck.rss.last().copied().unwrap_or(0) as f64 - rss_before_stuck as f64;
    // Unbounded would be every event of the second half kept for every stuck client.
    let unbounded = args.fanout_stuck as f64 * (streamed / 2) as f64 * bytes_per_event;
    println!(
        "   {} SSE clients connected in {}; {:.0} bytes per event on the wire",
        count(m as f64),
        human(connect_took),
        bytes_per_event
    );
    println!(
        "   resident memory: {} MB at the start, {} MB before the stuck clients, {} MB once they connected, {} MB after {streamed} transitions (second half: {:+.2} MB; without stuck clients {:+.2} MB; keeping every event for them would be {:.1} MB)",
        mb(rss_start as f64),
        mb(rss_before_stuck as f64),
        mb(rss_stuck_connected as f64),
        mb(with_stuck.rss.last().copied().unwrap_or(0) as f64),
        second_half / 1e6,
        ref_second_half / 1e6,
        unbounded / 1e6,
    );
    // A resume is whole when it starts right after the last event the stream delivered
    // and reaches the last transition written.
    let resumed_whole = stuck_ends
        .iter()
        .filter(|e| match (e.resumed, e.last) {
            (Some((Some(first), true)), Some(last)) => first == last + 1,
            _ => false,
        })
        .count();
    println!(
        "   stuck clients, before they read: the kernel held {:.2} MB in the server's send queues of their connections (largest {:.0} KB) and {:.0} KB in their receive queues",
        queued_send as f64 / 1e6,
        queued_largest as f64 / 1e3,
        queued_recv as f64 / 1e3,
    );
    println!(
        "   reading at last, each got {got_min}..{got_max} events (seq {}..{}; written since they connected: {stuck_first_seq}..{until}); {ended} of {} streams then ended by the server; reconnected with Last-Event-ID, {resumed_whole} of {ended} resumed at the next event and reached the last one",
        first_seen.map_or("-".into(), |s| s.to_string()),
        last_seen.map_or("-".into(), |s| s.to_string()),
        stuck_ends.len(),
    );

    report.section(
        "fanout",
        json!({
            "subscribers": n,
            "sse_clients": m,
            "stuck_clients": args.fanout_stuck,
            "transitions_per_phase": t,
            "streamed_transitions": streamed,
            "window": WINDOW,
            "members": MEMBERS,
            "origin": "every latency from the put being sent; floor: the same put at a bare etcd-client prefix watch",
            "cpu": "master CPU = utime+stime of the threads of the master's runtime (master, event log, HTTP server); readers, writer and bare watch run on another runtime",
            "phases": {
                "subscribers_1": sub1.json(),
                "subscribers_n": sub_n.json(),
                "sse_1": sse1.json(),
                "sse_n": sse_n.json(),
                "sse_n_streamed": reference.json(),
                "sse_n_streamed_with_stuck": with_stuck.json(),
            },
            "sse_connect_ms": ms(connect_took),
            "bytes_per_event": bytes_per_event,
            "rss_start_bytes": rss_start,
            "rss_before_stuck_bytes": rss_before_stuck,
            "rss_stuck_connected_bytes": rss_stuck_connected,
            "rss_second_half_growth_bytes": second_half,
            "rss_second_half_growth_without_stuck_bytes": ref_second_half,
            "rss_growth_with_stuck_bytes": growth,
            "stuck_streams_ended_by_server": ended,
            "stuck_events_received_min": got_min,
            "stuck_events_received_max": got_max,
            "stuck_recv_buffer": STUCK_RECV_BUFFER,
            "stuck_kernel_send_queue_bytes": queued_send,
            "stuck_kernel_send_queue_largest_bytes": queued_largest,
            "stuck_kernel_recv_queue_bytes": queued_recv,
            "stuck_resumed_whole_with_last_event_id": resumed_whole,
            "master_health_at_end": format!("{health:?}"),
        }),
    );

    let section = "7. fan-out";
    let ratio_row =
        |id: &str, metric: String, value: Duration, floor: Duration, goal: Option<f64>| Headline {
            id: id.into(),
            section,
            metric,
            value: ms(value),
            shown: human(value),
            unit: "ms",
            floor: Some((ms(floor), human(floor))),
            goal: goal.map_or("—".into(), |g| format!("≤ {g}× floor")),
            met: goal.map(|g| ms(value) <= g * ms(floor)),
        };
    let (subs, sses) = (count(n as f64), count(m as f64));
    for row in [
        ratio_row(
            "fanout.subscriber1_p99_ms",
            format!(
                "delivery p99, 1 in-process subscriber ({t} transitions; floor: bare etcd watch)"
            ),
            sub1.all.p99,
            sub1.floor.p99,
            None,
        ),
        ratio_row(
            "fanout.subscribers_p50_ms",
            format!("delivery p50, {subs} in-process subscribers (floor: 1 subscriber)"),
            sub_n.all.p50,
            sub1.all.p50,
            None,
        ),
        ratio_row(
            "fanout.subscribers_p99_ms",
            format!("delivery p99, {subs} in-process subscribers (floor: 1 subscriber)"),
            sub_n.all.p99,
            sub1.all.p99,
            Some(2.0),
        ),
        ratio_row(
            "fanout.sse1_p99_ms",
            format!("delivery p99, 1 SSE client ({t} transitions; floor: bare etcd watch)"),
            sse1.all.p99,
            sse1.floor.p99,
            None,
        ),
        ratio_row(
            "fanout.sse_p50_ms",
            format!("delivery p50, {sses} SSE clients (floor: 1 SSE client)"),
            sse_n.all.p50,
            sse1.all.p50,
            None,
        ),
        ratio_row(
            "fanout.sse_p99_ms",
            format!("delivery p99, {sses} SSE clients (floor: 1 SSE client)"),
            sse_n.all.p99,
            sse1.all.p99,
            Some(2.0),
        ),
    ] {
        report.headline(row);
    }
    for (id, metric, phase, base) in [
        (
            "fanout.cpu_subscribers_us",
            format!("master CPU per transition, {subs} in-process subscribers (floor: 1)"),
            &sub_n,
            &sub1,
        ),
        (
            "fanout.cpu_sse_us",
            format!("master CPU per transition, {sses} SSE clients (floor: 1)"),
            &sse_n,
            &sse1,
        ),
    ] {
        let us = |p: &Phase| p.master_cpu_per_transition().as_secs_f64() * 1e6;
        let floor = us(base);
        report.headline(Headline {
            id: id.into(),
            section,
            metric,
            value: us(phase),
            shown: human(phase.master_cpu_per_transition()),
            unit: "µs",
            floor: (floor > 0.0).then(|| (floor, human(base.master_cpu_per_transition()))),
            goal: "—".into(),
            met: None,
        });
    }
    // The bench's own bookkeeping grows the same in both streamed phases: the stuck
    // clients' share is the difference.
    let stuck_share = second_half - ref_second_half;
    report.headline(Headline {
        id: "fanout.stuck_rss_second_half_bytes".into(),
        section,
        metric: format!(
            "RSS growth over the second half of {streamed} transitions with {} stuck SSE clients, minus the same without them ({:+.2} − {:+.2} MB)",
            count(args.fanout_stuck as f64),
            second_half / 1e6,
            ref_second_half / 1e6
        ),
        value: stuck_share,
        shown: format!("{:+.2} MB", stuck_share / 1e6),
        unit: "B",
        floor: None,
        goal: format!(
            "bounded: ≤ 10% of keeping every event ({:.1} MB)",
            unbounded / 1e6
        ),
        met: Some(stuck_share <= 0.1 * unbounded),
    });
    report.headline(ratio_row(
        "fanout.stuck_healthy_p99_ms",
        format!(
            "delivery p99 to {sses} healthy SSE clients beside {} stuck ones, {streamed} streamed (floor: the same without stuck clients)",
            count(args.fanout_stuck as f64)
        ),
        with_stuck.all.p99,
        reference.all.p99,
        None,
    ));
    report.headline(Headline {
        id: "fanout.stuck_healthy_complete".into(),
        section,
        metric: format!(
            "healthy SSE clients that got every transition beside {} stuck ones",
            count(args.fanout_stuck as f64)
        ),
        value: if with_stuck.complete { m as f64 } else { 0.0 },
        shown: if with_stuck.complete {
            format!("{sses} of {sses}")
        } else {
            "not all".into()
        },
        unit: "",
        floor: None,
        goal: "all".into(),
        met: Some(with_stuck.complete),
    });
    report.headline(Headline {
        id: "fanout.stuck_streams_ended".into(),
        section,
        metric: format!(
            "stuck SSE streams the server ended (lagged) once they read again, after {got_min}..{got_max} of {} events; resumed whole with Last-Event-ID: {resumed_whole}",
            streamed + WARM_UP
        ),
        value: ended as f64,
        shown: format!("{ended} of {}", stuck_ends.len()),
        unit: "",
        floor: None,
        goal: "—".into(),
        met: None,
    });
    Ok(())
}

/// Readers' recorders apart from their tasks.
fn split(
    readers: Vec<(Arc<Recorder>, JoinHandle<()>)>,
) -> (Vec<Arc<Recorder>>, Vec<JoinHandle<()>>) {
    readers.into_iter().unzip()
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_streams_parse_across_reads() {
        let body = b"1a\r\nid: 1-2.0\ndata: {\"labels\":{\"seq\":\"42\"}}\n\n\r\n";
        let mut parse = SseParse::default();
        let mut seen = Vec::new();
        for piece in body.chunks(7) {
            parse.feed(piece, |s| seen.push(s));
        }
        parse.feed(b"0\r\n\r\n", |s| seen.push(s));
        assert_eq!(seen, vec![42]);
        assert!(parse.ended);
        assert_eq!(seq_of(br#"data: {"seq":"7","zone":"a"}"#), Some(7));
    }
}
